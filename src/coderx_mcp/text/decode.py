"""Bytes <-> text with the encoding, BOM and line-ending facts needed to write back.

The contract is byte-exact round trips: ``encode(d.text, d) == data`` for
``d = decode(data)`` whenever ``d.editable``. Line endings are never
normalised here; the edit layer works on the original text.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import Final, Literal

from coderx_mcp.text.errors import BinaryFileError, UnsupportedEncodingError

Encoding = Literal["utf-8", "utf-8-sig", "utf-16-le", "utf-16-be", "latin-1"]
Newline = Literal["\n", "\r\n", "\r"]

# How many leading bytes the binary sniffer looks at (git uses ~8000).
SNIFF_BYTES: Final = 8192

_BOM_UTF8: Final = codecs.BOM_UTF8
_BOM_UTF16_LE: Final = codecs.BOM_UTF16_LE
_BOM_UTF16_BE: Final = codecs.BOM_UTF16_BE
_BOM_UTF32: Final = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)

# Formats that can start without a NUL in the first bytes but are never text.
_MAGIC: Final = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",  # JPEG
    b"GIF87a",
    b"GIF89a",
    b"\x7fELF",
    b"PK\x03\x04",  # zip, jar, docx, wheel
    b"PK\x05\x06",  # empty zip
    b"PK\x07\x08",  # spanned zip
    b"\x1f\x8b",  # gzip
    b"\xfd7zXZ\x00",
    b"7z\xbc\xaf\x27\x1c",
    b"\x28\xb5\x2f\xfd",  # zstd
    b"%PDF-",
    b"\xca\xfe\xba\xbe",  # Java class / Mach-O fat
    b"\xfe\xed\xfa\xce",
    b"\xfe\xed\xfa\xcf",
    b"\xce\xfa\xed\xfe",
    b"\xcf\xfa\xed\xfe",
    b"\x00asm",
    b"SQLite format 3\x00",
)

# C0 controls that do not occur in ordinary text. Tab, LF, VT, FF, CR, BS and
# ESC are allowed: they show up in Makefiles, man pages and ANSI-coloured logs.
_CONTROL_BYTES: Final = (
    bytes(b for b in range(0x20) if b not in b"\t\n\x0b\x0c\r\x08\x1b") + b"\x7f"
)
_CONTROL_CHARS: Final = {b: None for b in _CONTROL_BYTES}

# Valid UTF-8 tolerates more control bytes than undecodable data: random
# binary has ~11 % control bytes, real 8-bit text files have almost none.
_MAX_CONTROL_RATIO_UTF8: Final = 0.30
_MAX_CONTROL_RATIO_OTHER: Final = 0.05


@dataclass(frozen=True, slots=True)
class Decoded:
    """Decoded file text plus everything needed to encode it back byte-exactly.

    Attributes:
        text: The text with the BOM stripped and line endings untouched.
        encoding: Codec label; "latin-1" is the read-only fallback.
        bom: Whether the file starts with a byte-order mark.
        newline: The dominant line ending ("\\n" when the file has none).
        editable: False for the latin-1 fallback, which must never be written.
        mixed_newlines: True when more than one line-ending style occurs.
    """

    text: str
    encoding: Encoding
    bom: bool
    newline: Newline
    editable: bool
    mixed_newlines: bool = False


def _control_ratio(sample: bytes) -> float:
    """Share of bytes in ``sample`` that are unusual C0 controls."""
    return (len(sample) - len(sample.translate(None, _CONTROL_BYTES))) / len(sample)


def is_utf8_prefix(sample: bytes) -> bool:
    """Tell whether ``sample`` is valid UTF-8, allowing a cut-off final character.

    A sample taken from the start of a file can end in the middle of a
    multi-byte character; an incomplete trailing sequence of up to 3 bytes is
    ignored so that such a cut never makes text look invalid.

    Args:
        sample: Leading bytes of a file (or the whole file).

    Returns:
        True if every complete sequence is valid UTF-8.
    """
    # The incremental decoder buffers an incomplete tail instead of failing,
    # which is exactly "ignore a cut character" and runs at C speed.
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
    except UnicodeDecodeError:
        return False
    return True


def is_binary(sample: bytes) -> bool:
    """Guess whether a file is binary from its leading bytes.

    Binary means: a known binary magic number, a NUL byte (unless the sample
    starts with a UTF-16/32 BOM, where NULs are normal), or too many control
    bytes. A multi-byte UTF-8 character cut at the end of the sample is ignored.

    Args:
        sample: Leading bytes of the file, typically ``data[:SNIFF_BYTES]``.

    Returns:
        True if the sample should be treated as binary.
    """
    if not sample:
        return False
    if sample.startswith((_BOM_UTF16_LE, _BOM_UTF16_BE)) or sample.startswith(_BOM_UTF32):
        return False
    if sample.startswith(_MAGIC):
        return True
    if b"\x00" in sample:
        return True
    limit = _MAX_CONTROL_RATIO_UTF8 if is_utf8_prefix(sample) else _MAX_CONTROL_RATIO_OTHER
    return _control_ratio(sample) > limit


def newline_stats(text: str) -> tuple[Newline, bool]:
    """Find the dominant line ending of ``text`` and whether endings are mixed.

    Args:
        text: Decoded text with original line endings.

    Returns:
        ``(dominant, mixed)``; ties prefer "\\n", then "\\r\\n"; a text without
        line breaks reports ``("\\n", False)``.
    """
    if "\r" not in text:  # most files: one scan instead of three
        return "\n", False
    crlf = text.count("\r\n")
    lf = text.count("\n") - crlf
    cr = text.count("\r") - crlf
    mixed = sum(1 for n in (crlf, lf, cr) if n) > 1
    dominant: Newline = "\n"
    best = lf
    if crlf > best:
        dominant, best = "\r\n", crlf
    if cr > best:
        dominant = "\r"
    return dominant, mixed


def _decoded(text: str, encoding: Encoding, bom: bool, editable: bool = True) -> Decoded:
    newline, mixed = newline_stats(text)
    return Decoded(text, encoding, bom, newline, editable, mixed)


def _decode_utf16(data: bytes, encoding: Literal["utf-16-le", "utf-16-be"]) -> Decoded:
    body = data[2:]
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError as exc:
        raise UnsupportedEncodingError(
            f"The file starts with a {encoding.upper()} byte-order mark but is not "
            f"valid {encoding.upper()} ({exc.reason} at byte {exc.start + 2}), so it "
            "cannot be edited safely; inspect it with a shell command instead."
        ) from None
    # A binary file may start with FF FE by chance; decoded garbage is full of
    # control characters, real UTF-16 text is not.
    controls = len(text) - len(text.translate(_CONTROL_CHARS))
    if text and controls / len(text) > _MAX_CONTROL_RATIO_UTF8:
        raise BinaryFileError(
            "The file looks binary (mostly control characters after a UTF-16 "
            "byte-order mark), so it cannot be shown as text; use a shell command "
            "such as xxd to inspect it."
        )
    return _decoded(text, encoding, bom=True)


def decode(data: bytes) -> Decoded:
    """Decode file bytes, detecting BOM, encoding, line endings and editability.

    Order: UTF-32 BOM (rejected), UTF-16 BOM, UTF-8 BOM, binary sniffing,
    strict UTF-8, and finally a read-only latin-1 fallback (latin-1 never fails,
    so the agent can still read odd 8-bit files but never write them back).

    Args:
        data: The complete raw file contents.

    Returns:
        The decoded text with its encoding facts.

    Raises:
        BinaryFileError: The data looks binary.
        UnsupportedEncodingError: UTF-32, or a UTF-16 BOM with invalid data.
    """
    if data.startswith(_BOM_UTF32):
        raise UnsupportedEncodingError(
            "The file is UTF-32 encoded, which this tool does not support; convert "
            "it with iconv in a shell command if you need to edit it."
        )
    if data.startswith(_BOM_UTF16_LE):
        return _decode_utf16(data, "utf-16-le")
    if data.startswith(_BOM_UTF16_BE):
        return _decode_utf16(data, "utf-16-be")
    bom = data.startswith(_BOM_UTF8)
    body = data[len(_BOM_UTF8) :] if bom else data
    # NUL anywhere is checked on the whole file (cheap, C speed): a NUL past
    # the sniff window still means the file is not text we should edit.
    if is_binary(body[:SNIFF_BYTES]) or b"\x00" in body:
        raise BinaryFileError(
            "The file looks binary (NUL bytes, control bytes or a binary file "
            "signature), so it cannot be shown or edited as text; use a shell "
            "command such as xxd or file to inspect it."
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        # Not UTF-8: show it losslessly via latin-1 but forbid writing, since
        # we do not know the real encoding and could corrupt it.
        return _decoded(data.decode("latin-1"), "latin-1", bom=False, editable=False)
    return _decoded(text, "utf-8-sig" if bom else "utf-8", bom=bom)


def encode(text: str, like: Decoded) -> bytes:
    """Encode ``text`` back to bytes exactly as the original file was encoded.

    Restores the BOM and encoding of ``like``; line endings are taken from
    ``text`` as is. ``encode(decode(b).text, decode(b)) == b`` for every
    editable input.

    Args:
        text: The (possibly edited) text.
        like: The ``Decoded`` of the original file.

    Returns:
        The bytes to write.

    Raises:
        UnsupportedEncodingError: ``like`` is read-only (latin-1 fallback) or
            ``text`` contains characters the encoding cannot represent.
    """
    if not like.editable:
        raise UnsupportedEncodingError(
            "The file is not valid UTF-8 or UTF-16 (it was shown via a latin-1 "
            "fallback), so writing it could corrupt it; convert it to UTF-8 with "
            "iconv in a shell command first."
        )
    codec = "utf-8" if like.encoding in ("utf-8", "utf-8-sig") else like.encoding
    try:
        body = text.encode(codec)
    except UnicodeEncodeError as exc:
        raise UnsupportedEncodingError(
            f"The new text cannot be encoded as {like.encoding} ({exc.reason} at "
            f"character {exc.start}), so nothing was written; remove lone surrogate "
            "characters from the text."
        ) from None
    if not like.bom:
        return body
    bom = {"utf-16-le": _BOM_UTF16_LE, "utf-16-be": _BOM_UTF16_BE}.get(like.encoding, _BOM_UTF8)
    return bom + body
