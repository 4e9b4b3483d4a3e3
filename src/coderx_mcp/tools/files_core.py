"""Pure helpers behind the file tools: paths, read views, hashes and the tree (no I/O).

The tools in :mod:`coderx_mcp.tools.files` call the runner and hand its replies to these
functions, so everything here is testable without MCP or a sandbox.
"""

from __future__ import annotations

import base64
import codecs
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from coderx_mcp.errors import ToolInputError
from coderx_mcp.ops import ReadResult
from coderx_mcp.text import (
    SNIFF_BYTES,
    BinaryFileError,
    Decoded,
    TextError,
    UnsupportedEncodingError,
    decode,
    follow_newlines,
    is_binary,
    newline_stats,
    render_numbered,
)

WORKSPACE: Final = "/workspace"
MAX_LINE_CHARS: Final = 2000
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_NEWLINE_NAMES: Final = {"\n": "LF", "\r\n": "CRLF", "\r": "CR"}
_UTF16_BOMS: Final = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def check_path(path: str, name: str = "path") -> str:
    """Refuse paths with NUL or other control characters (the value is not echoed).

    Raises:
        ToolInputError: The path holds a control character.
    """
    if _CONTROL.search(path):
        raise ToolInputError(f"{name} must not contain NUL bytes, newlines or other control "
                             "characters; use a shell command for such file names")
    return path


def lock_key(path: str) -> str:
    """The per-session lock key of ``path``: normalised and relative to /workspace."""
    p = posixpath.normpath(path)
    if p == WORKSPACE:
        return "."
    return p[len(WORKSPACE) + 1:] if p.startswith(WORKSPACE + "/") else p


def short(digest: str | None) -> str:
    """A hash shortened for messages (``deleted`` when the file is gone)."""
    return digest[:12] if digest else "deleted"


def expected(expected_hash: str | None, current: str) -> str | None:
    """The full hash an ``expected_hash`` argument names (it may be a prefix of ``current``).

    A prefix of the current hash can only mean the current hash; any other value is
    returned as given (lower-cased) and fails the freshness check with a clear message.
    """
    if expected_hash is None:
        return None
    want = expected_hash.lower()
    return current if current.startswith(want) else want


def not_read_error(path: str) -> ToolInputError:
    """The refusal for overwriting or editing a file this session never read."""
    return ToolInputError(f"refusing to overwrite {path}: read it first with read_file (or pass "
                          "expected_hash) so changes made since are not lost")


def stale_message(path: str, known: str, current: str | None) -> str:
    """The refusal for a file that changed since this session read it."""
    now = "it was deleted" if current is None else f"now {short(current)}"
    return (f"{path} changed since this session read it (hash {short(known)}, {now}); re-read it "
            "with read_file and apply your change again; nothing was written")


def newline_name(newline: str) -> str:
    """``LF``, ``CRLF`` or ``CR``."""
    return _NEWLINE_NAMES.get(newline, repr(newline))


def binary_error(path: str, size: int) -> BinaryFileError:
    """The refusal for showing or editing a binary file."""
    return BinaryFileError(f"{path} is a binary file, {size} bytes; it cannot be shown or edited "
                           "as text (inspect it with a shell command such as xxd or file)")


def decode_whole(path: str, data: bytes) -> Decoded:
    """Decode a whole file, naming the path and size when it is binary."""
    try:
        return decode(data)
    except BinaryFileError:
        raise binary_error(path, len(data)) from None


SHORT_HASH: Final = 16
"""Hex digits of the sha256 a read's text shows (64 bits: no collision in one workspace)."""


@dataclass(frozen=True, slots=True)
class ReadView:
    """A rendered window of a file plus the facts read_file reports."""

    path: str
    sha256: str
    size: int
    total_lines: int
    first_line: int
    last_line: int
    truncated: bool
    next_offset: int | None
    encoding: str
    bom: bool
    newline: str
    mixed_newlines: bool
    content: str
    cut_lines: int
    whole: bool
    decoded: Decoded | None = None  # the whole file, when it was read whole


def b64(text: str | None) -> bytes:
    """Bytes of a base64 field of a runner reply (empty when absent)."""
    return base64.b64decode(text or "")


def view_whole(reply: ReadResult, offset: int, limit: int, max_chars: int) -> ReadView:
    """Render a window of a file the runner sent whole, at most ``max_chars`` characters.

    Raises:
        BinaryFileError: The file is binary.
        TextError: ``offset`` is past the last line.
    """
    path, data = reply.path, reply.payload()
    d = decode_whole(path, data)
    r = render_numbered(d.text, 1 if not d.text else offset, limit, MAX_LINE_CHARS, max_chars)
    return ReadView(path, reply.sha256, reply.size, r.total_lines, r.first_line,
                    r.last_line, r.truncated, r.next_offset, d.encoding, d.bom, d.newline,
                    d.mixed_newlines, r.content, r.cut_lines, True, d)


def _window_text(window: bytes, cut: bool) -> tuple[str, str]:
    """Decode a window of UTF-8 lines (a final character may be cut); latin-1 otherwise."""
    try:
        return window.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        if cut:
            try:
                return codecs.getincrementaldecoder("utf-8")().decode(window), "utf-8"
            except UnicodeDecodeError:
                pass
        return window.decode("latin-1"), "latin-1"


def view_window(reply: ReadResult, offset: int, limit: int, max_bytes: int,
                max_chars: int) -> ReadView:
    """Render the line window the runner sent for a file above ``max_bytes``.

    Raises:
        BinaryFileError: The file is binary.
        UnsupportedEncodingError: A UTF-16/32 file too big to page by lines.
        TextError: ``offset`` is past the last line.
    """
    path, size, total = reply.path, reply.size, reply.total_lines or 0
    head, window = b64(reply.head), b64(reply.data)
    if head.startswith(_UTF16_BOMS):
        raise UnsupportedEncodingError(
            f"{path} is UTF-16/32 encoded and {size} bytes, above the {max_bytes}-byte limit "
            "for whole reads; convert it with iconv in a shell command to page through it")
    if is_binary(head) or b"\x00" in window:
        raise binary_error(path, size)
    if offset > max(total, 1):
        raise TextError(f"offset {offset} is beyond the end of the file (total_lines={total}); "
                        f"use an offset between 1 and {total}.")
    bom = head.startswith(codecs.BOM_UTF8)
    if bom and offset == 1:
        window = window[len(codecs.BOM_UTF8):]
    text, encoding = _window_text(window, len(window) >= max_bytes)
    newline, mixed = newline_stats(text)
    r = (render_numbered(text, 1, limit, MAX_LINE_CHARS, max_chars, shift=offset - 1)
         if text else None)
    content = "" if r is None else r.content
    last = offset - 1 + (r.last_line if r else 0)
    more = last < total
    return ReadView(path, reply.sha256, size, total, offset, last, more,
                    last + 1 if more else None,
                    "utf-8-sig" if bom and encoding == "utf-8" else encoding, bom, newline, mixed,
                    content, r.cut_lines if r else 0, False)


def read_text(v: ReadView) -> str:
    """The text rendering of read_file: a header line, numbered lines, a paging hint.

    The header shows the hash's first ``SHORT_HASH`` digits: ``expected_hash`` takes any
    unambiguous prefix, and the full hash travels in the facts.
    """
    sha = v.sha256[:SHORT_HASH]
    if v.total_lines == 0:
        return f"{v.path} is empty ({v.size} bytes, sha256 {sha})"
    facts = [f"{v.total_lines} lines", f"{v.size} bytes", v.encoding + (" BOM" if v.bom else ""),
             "mixed line endings" if v.mixed_newlines else newline_name(v.newline),
             f"sha256 {sha}"]
    if v.encoding == "latin-1":
        facts.append("not UTF-8: shown as latin-1, read-only")
    if v.cut_lines:
        facts.append(f"{v.cut_lines} long lines cut at {MAX_LINE_CHARS} chars")
    header = f"{v.path} ({', '.join(facts)})"
    if v.first_line > 1 or v.truncated:
        header += f": lines {v.first_line}-{v.last_line}"
    if not v.truncated:
        return f"{header}\n{v.content}"
    return (f"{header}\n{v.content}\n[{v.total_lines - v.last_line} more lines: call read_file "
            f"with offset={v.next_offset} to continue]")  # also when the size cap stopped it


def like_for_write(existing_head: bytes | None) -> Decoded:
    """How to encode write_file content: keep an existing file's BOM, else UTF-8 without one.

    Args:
        existing_head: The first bytes of the file being replaced, or None for a new file.
    """
    head = existing_head or b""
    if head.startswith(codecs.BOM_UTF16_LE):
        return Decoded("", "utf-16-le", True, "\n", True)
    if head.startswith(codecs.BOM_UTF16_BE):
        return Decoded("", "utf-16-be", True, "\n", True)
    if head.startswith(codecs.BOM_UTF8):
        return Decoded("", "utf-8-sig", True, "\n", True)
    return Decoded("", "utf-8", False, "\n", True)


def content_for_write(content: str, existing: bytes) -> str:
    """write_file content with the line endings of the file it replaces.

    The model never sees CRs in read_file, so rewriting a CRLF file with the
    text it read must not silently turn the file into LF. Content that holds a
    CR was written deliberately and is kept as is, as is content for a file
    whose style cannot be told (binary, UTF-16 head, no line breaks).

    Args:
        content: The new text from the model.
        existing: The replaced file's bytes (whole, or its first bytes).
    """
    if "\r" in content or "\n" not in content or existing.startswith(_UTF16_BOMS):
        return content
    sample = existing[:SNIFF_BYTES]
    if is_binary(sample):
        return content
    newline, _ = newline_stats(sample.decode("utf-8", "replace"))
    return follow_newlines(content, newline)


def edit_check(path: str, d: Decoded) -> None:
    """Refuse edits of files that cannot be written back byte-exactly.

    Raises:
        UnsupportedEncodingError: The file was only shown via the latin-1 fallback.
    """
    if not d.editable:
        raise UnsupportedEncodingError(
            f"{path} is not valid UTF-8 or UTF-16 (read_file shows it via a read-only latin-1 "
            "fallback), so editing it could corrupt it; convert it to UTF-8 with iconv in a "
            "shell command first")


# --- list_dir ------------------------------------------------------------------------------

def human_size(n: int) -> str:
    """Bytes as ``512 B``, ``3.4 KB``, ``12.0 MB``."""
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KB", "MB", "GB", "TB"):
        size /= 1024
        if size < 1024 or unit == "TB":
            break
    return f"{size:.1f} {unit}"


def check_ignore_batches(entries: Sequence[dict[str, Any]],
                         budget: int = 100_000) -> list[list[str]]:
    """Entry paths for ``git check-ignore``, split so one argv stays under ``budget`` chars.

    Directories get a trailing slash so ``dir/`` patterns match them.
    """
    batches: list[list[str]] = [[]]
    used = 0
    for e in entries:
        p = e["path"] + ("/" if e["type"] == "dir" else "")
        if used + len(p) > budget and batches[-1]:
            batches.append([])
            used = 0
        batches[-1].append(p)
        used += len(p) + 1
    return [b for b in batches if b]


def _unquote(line: str) -> str:
    """Undo git's C-style quoting of a path (used for quotes, backslashes, controls)."""
    if len(line) < 2 or not line.startswith('"') or not line.endswith('"'):
        return line
    raw: Any = codecs.escape_decode(line[1:-1].encode("utf-8"))[0]  # bytes (typeshed: str)
    return bytes(raw).decode("utf-8", "replace")


def parse_check_ignore(stdout: str) -> set[str]:
    """Paths printed by ``git check-ignore`` one a line (trailing slashes removed)."""
    return {_unquote(p).rstrip("/") for p in stdout.split("\n") if p}


def drop_ignored(entries: Iterable[dict[str, Any]], ignored: set[str]) -> list[dict[str, Any]]:
    """Entries that are neither ignored nor below an ignored directory."""
    if not ignored:
        return list(entries)
    out = []
    for e in entries:
        parts = e["path"].split("/")
        if not any("/".join(parts[:i]) in ignored for i in range(1, len(parts) + 1)):
            out.append(e)
    return out


def tree_text(root: str, entries: Sequence[dict[str, Any]], truncated: bool, cap: int,
              ignored: int) -> str:
    """An indented tree (directories end in ``/``, files show their size)."""
    base = "" if root == "." else root + "/"
    depth0 = 0 if root == "." else root.count("/") + 1
    lines = [f"{'./' if root == '.' else base} ({len(entries)} entries"
             + (f", {ignored} gitignored hidden" if ignored else "") + ")"]
    for e in entries:
        rel = e["path"]
        indent = "  " * (rel.count("/") - depth0 + 1)
        name = rel.rsplit("/", 1)[-1]
        if e["type"] == "dir":
            lines.append(f"{indent}{name}/")
        elif e["type"] == "symlink":
            lines.append(f"{indent}{name} -> (symlink)")
        else:
            lines.append(f"{indent}{name}  {human_size(e.get('size') or 0)}")
    if truncated:
        lines.append(f"[listing stopped at {cap} entries: list a subdirectory, lower depth or "
                     "raise max_entries (up to 2000)]")
    return "\n".join(lines)
