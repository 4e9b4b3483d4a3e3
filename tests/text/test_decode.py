"""Tests for coderx_mcp.text.decode: byte-exact round trips and binary sniffing."""

from __future__ import annotations

import dataclasses
import random

import pytest

from coderx_mcp.text import (
    BinaryFileError,
    Decoded,
    TextError,
    UnsupportedEncodingError,
    decode,
    encode,
    is_binary,
    is_utf8_prefix,
    newline_stats,
)

BOMS = {
    "utf-8": b"",
    "utf-8-sig": b"\xef\xbb\xbf",
    "utf-16-le": b"\xff\xfe",
    "utf-16-be": b"\xfe\xff",
}
PIECES = ["a", "Z", " ", "\t", "é", "中", "😀", "\n", "\r\n", "\r", "x = 1", "\u00a0"]


def _encode_as(text: str, encoding: str) -> bytes:
    codec = "utf-8" if encoding.startswith("utf-8") else encoding
    return BOMS[encoding] + text.encode(codec)


def _random_text(rng: random.Random) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randrange(0, 40)))


def test_round_trip_property_random_inputs() -> None:
    rng = random.Random(20240611)
    for _ in range(400):
        text = _random_text(rng)
        encoding = rng.choice(list(BOMS))
        data = _encode_as(text, encoding)
        decoded = decode(data)
        assert decoded.text == text
        assert decoded.editable
        assert decoded.bom == (encoding != "utf-8")
        # A BOM-less empty or ASCII file is plain utf-8, never utf-8-sig.
        assert decoded.encoding == encoding
        assert encode(decoded.text, decoded) == data


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\n",
        b"no final newline",
        b"a\r\nb\r\n",
        b"a\r\nb",
        b"lone\rcr\rfile\r",
        b"mixed\nline\r\nends\rhere",
        b"\xef\xbb\xbf",
        b"\xef\xbb\xbfbom\r\n",
        b"\xef\xbb\xbf\xef\xbb\xbfdouble bom",
        b"\xff\xfe",
        b"\xff\xfe" + "utf16 \u4e2d\U0001f600\r\n".encode("utf-16-le"),
    ],
)
def test_round_trip_edge_cases(data: bytes) -> None:
    decoded = decode(data)
    assert encode(decoded.text, decoded) == data


def test_bom_is_stripped_from_text_and_restored() -> None:
    decoded = decode(b"\xef\xbb\xbfhello\n")
    assert decoded.text == "hello\n"
    assert (decoded.encoding, decoded.bom) == ("utf-8-sig", True)
    assert encode("bye\n", decoded) == b"\xef\xbb\xbfbye\n"


def test_file_without_bom_never_gains_one() -> None:
    decoded = decode(b"hello\n")
    assert (decoded.encoding, decoded.bom) == ("utf-8", False)
    assert encode("\u4e2d\n", decoded) == "\u4e2d\n".encode()


def test_line_endings_are_not_normalized() -> None:
    data = b"a\r\nb\nc\rd"
    assert decode(data).text == "a\r\nb\nc\rd"


@pytest.mark.parametrize(
    ("text", "newline", "mixed"),
    [
        ("", "\n", False),
        ("no breaks", "\n", False),
        ("a\nb\n", "\n", False),
        ("a\r\nb\r\n", "\r\n", False),
        ("a\rb\r", "\r", False),
        ("a\r\nb\r\nc\n", "\r\n", True),
        ("a\nb\nc\r\n", "\n", True),
        ("a\r\nb\n", "\n", True),  # tie prefers LF
        ("x\ry\rz\r\n", "\r", True),
    ],
)
def test_newline_detection(text: str, newline: str, mixed: bool) -> None:
    assert newline_stats(text) == (newline, mixed)
    decoded = decode(text.encode())
    assert (decoded.newline, decoded.mixed_newlines) == (newline, mixed)


def test_invalid_utf8_falls_back_to_read_only_latin1() -> None:
    data = b"caf\xe9 au lait\n"
    decoded = decode(data)
    assert decoded.encoding == "latin-1"
    assert decoded.text == "café au lait\n"
    assert decoded.editable is False
    assert decoded.bom is False
    with pytest.raises(UnsupportedEncodingError, match="latin-1"):
        encode(decoded.text, decoded)


def test_truncated_utf8_at_end_of_whole_file_is_not_utf8() -> None:
    # A whole file (not a sample) that ends mid-character is really invalid.
    decoded = decode("ok \u4e2d".encode()[:-1])
    assert decoded.encoding == "latin-1"
    assert not decoded.editable


def test_bom_with_invalid_utf8_is_read_only() -> None:
    decoded = decode(b"\xef\xbb\xbfbad \xff byte")
    assert decoded.encoding == "latin-1"
    assert not decoded.editable


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_with_bom_round_trips_and_is_editable(encoding: str) -> None:
    text = "first \u4e2d\u6587\r\nsecond \U0001f600\r\nno final newline"
    data = _encode_as(text, encoding)
    decoded = decode(data)
    assert decoded.text == text
    assert (decoded.encoding, decoded.bom, decoded.editable) == (encoding, True, True)
    assert decoded.newline == "\r\n"
    assert encode(decoded.text, decoded) == data
    edited = encode(decoded.text.replace("second", "2nd"), decoded)
    assert edited == _encode_as(text.replace("second", "2nd"), encoding)


def test_utf16_without_bom_is_binary() -> None:
    with pytest.raises(BinaryFileError):
        decode("plain ascii text\n".encode("utf-16-le"))


def test_utf16_bom_with_odd_length_is_unsupported() -> None:
    with pytest.raises(UnsupportedEncodingError, match="UTF-16-LE"):
        decode(b"\xff\xfea\x00b")


def test_utf16_bom_followed_by_binary_garbage_is_binary() -> None:
    garbage = bytes([1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0])
    with pytest.raises(BinaryFileError):
        decode(b"\xff\xfe" + garbage)


def test_utf32_is_unsupported() -> None:
    with pytest.raises(UnsupportedEncodingError, match="UTF-32"):
        decode(b"\xff\xfe\x00\x00" + "hi".encode("utf-32-le"))


def test_encode_rejects_lone_surrogates() -> None:
    with pytest.raises(UnsupportedEncodingError, match="surrogate"):
        encode("bad \ud800", decode(b"x"))


@pytest.mark.parametrize(
    "data",
    [
        b"\x89PNG\r\n\x1a\n" + b"IHDR" + bytes(range(32, 200)),
        b"\x7fELF\x02\x01\x01",
        b"PK\x03\x04zipdata",
        b"\x1f\x8b\x08compressed",
        b"%PDF-1.7\n",
        b"text with a NUL \x00 byte",
        bytes([1, 2, 3, 4, 5, 6, 7, 14, 15, 16]) * 50,
        b"mostly text" + bytes([1, 2, 3]) * 10 + b"\xff\xfe\xfd" * 20,
    ],
)
def test_binary_detection_positive(data: bytes) -> None:
    assert is_binary(data)
    with pytest.raises(BinaryFileError):
        decode(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"plain ascii\n",
        "unicode \u4e2d\u6587 \U0001f600\n".encode(),
        b"\x1b[31mred ANSI log\x1b[0m\n\tform\x0cfeed\n",
        b"\xff\xfe" + "utf16 text".encode("utf-16-le"),
        b"\xfe\xff" + "utf16 text".encode("utf-16-be"),
        b"caf\xe9 latin-1 text\n",
    ],
)
def test_binary_detection_negative(data: bytes) -> None:
    assert not is_binary(data)


def test_nul_after_sniff_window_is_still_binary() -> None:
    with pytest.raises(BinaryFileError, match="binary"):
        decode(b"a" * 20_000 + b"\x00")


@pytest.mark.parametrize("boundary", [1023, 1024, 8191, 8192])
@pytest.mark.parametrize("char", ["\u4e2d", "\U0001f600", "\u00e9", "\u20ac"])
def test_multibyte_text_cut_at_sample_boundary_is_text(boundary: int, char: str) -> None:
    for shift in range(4):  # shift the cut through every byte of the character
        data = ("a" * shift + char * 4000 + "\n").encode()
        sample = data[:boundary]
        assert is_utf8_prefix(sample), (boundary, char, shift)
        assert not is_binary(sample), (boundary, char, shift)


def test_utf8_prefix_rejects_invalid_bytes_before_the_end() -> None:
    assert not is_utf8_prefix(b"ok \xff then more text")
    assert is_utf8_prefix(b"")
    assert is_utf8_prefix(b"\xe4\xb8")  # an incomplete 3-byte char at the end
    assert not is_utf8_prefix(b"\xe4\xb8a")  # incomplete char followed by more data


def test_decoded_is_frozen() -> None:
    decoded = decode(b"x")
    assert isinstance(decoded, Decoded)
    with pytest.raises(dataclasses.FrozenInstanceError):
        decoded.text = "y"  # type: ignore[misc]


def test_errors_are_value_errors_with_one_line_messages() -> None:
    for data in (b"\x00\x01", b"\xff\xfe\x00\x00"):
        with pytest.raises(TextError) as info:
            decode(data)
        assert isinstance(info.value, ValueError)
        message = str(info.value)
        assert "\n" not in message and message.endswith(".")
