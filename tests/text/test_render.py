"""Tests for coderx_mcp.text.render: numbered windows and read-artifact detection."""

from __future__ import annotations

import random

import pytest

from coderx_mcp.text import TextError, count_lines, looks_like_read_artifact, render_numbered
from coderx_mcp.text.render import TRUNCATION_MARKER


def _reference(text: str, offset: int, limit: int, max_chars: int) -> str:
    """Obviously-correct (slow) rendering to compare the fast path against."""
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    out = []
    width = max(3, len(str(min(len(lines), offset + limit - 1))))
    for n, line in enumerate(lines[offset - 1 : offset - 1 + limit], start=offset):
        if line.endswith("\r"):
            line = line[:-1]
        if len(line) > max_chars:
            line = line[:max_chars] + TRUNCATION_MARKER.format(length=len(line))
        out.append(f"{n:>{width}}|{line}")
    return "\n".join(out)


def test_numbered_format() -> None:
    rendered = render_numbered("alpha\n\tbeta\n\ngamma\n")
    assert rendered.content == "  1|alpha\n  2|\tbeta\n  3|\n  4|gamma"
    assert (rendered.total_lines, rendered.first_line, rendered.last_line) == (4, 1, 4)
    assert rendered.truncated is False
    assert rendered.next_offset is None
    assert rendered.cut_lines == 0


@pytest.mark.parametrize(
    ("text", "total"),
    [("", 0), ("\n", 1), ("a", 1), ("a\nb\n", 2), ("a\nb", 2), ("a\n\n", 2), ("a\r\nb\r\n", 2)],
)
def test_total_lines(text: str, total: int) -> None:
    assert count_lines(text) == total
    assert render_numbered(text).total_lines == total


def test_empty_text_renders_nothing() -> None:
    rendered = render_numbered("")
    assert (rendered.content, rendered.total_lines, rendered.next_offset) == ("", 0, None)
    assert (rendered.first_line, rendered.last_line, rendered.truncated) == (0, 0, False)
    with pytest.raises(TextError, match="total_lines=0"):
        render_numbered("", offset=2)


def test_offset_limit_and_next_offset() -> None:
    text = "".join(f"line {i}\n" for i in range(1, 11))
    window = render_numbered(text, offset=3, limit=4)
    assert window.content.splitlines() == [f"{n:>3}|line {n}" for n in range(3, 7)]
    assert (window.first_line, window.last_line, window.truncated, window.next_offset) == (
        3,
        6,
        True,
        7,
    )
    tail = render_numbered(text, offset=window.next_offset or 0, limit=4)
    assert (tail.first_line, tail.last_line, tail.truncated, tail.next_offset) == (
        7,
        10,
        False,
        None,
    )
    middle = render_numbered(text, offset=7, limit=3)
    assert (middle.last_line, middle.truncated, middle.next_offset) == (9, True, 10)
    end = render_numbered(text, offset=10, limit=4)
    assert (end.first_line, end.last_line, end.truncated, end.next_offset) == (10, 10, False, None)
    assert end.content == " 10|line 10"


def test_offset_beyond_end_names_total_lines() -> None:
    with pytest.raises(TextError, match=r"offset 12 .*total_lines=10"):
        render_numbered("x\n" * 10, offset=12)


@pytest.mark.parametrize("kwargs", [{"offset": 0}, {"limit": 0}, {"max_line_chars": 0}])
def test_non_positive_arguments_are_rejected(kwargs: dict[str, int]) -> None:
    with pytest.raises(TextError, match="positive"):
        render_numbered("x\n", **kwargs)


def test_trailing_cr_hidden_lone_cr_kept() -> None:
    text = "crlf line\r\nlone\rcr inside\nplain\ndouble\r\r\nlast\r"
    assert render_numbered(text).content.split("\n") == [
        "  1|crlf line",
        "  2|lone\rcr inside",
        "  3|plain",
        "  4|double\r",
        "  5|last",
    ]
    pure_crlf = "a\r\nb\rc\r\n"
    assert render_numbered(pure_crlf).content == "  1|a\n  2|b\rc"


def test_long_lines_are_cut_with_marker() -> None:
    text = "short\n" + "x" * 12345 + "\r\n" + "y" * 100 + "\n"
    rendered = render_numbered(text, max_line_chars=100)
    lines = rendered.content.split("\n")
    assert lines[0] == "  1|short"
    assert lines[1] == "  2|" + "x" * 100 + "… [line truncated: 12345 chars]"
    assert lines[2] == "  3|" + "y" * 100  # exactly at the limit: not cut
    assert rendered.cut_lines == 1


def test_numbers_are_as_wide_as_the_widest_shown() -> None:
    text = "\n" * 1_000_001
    rendered = render_numbered(text, offset=999_999, limit=3)
    assert rendered.content == " 999999|\n1000000|\n1000001|"
    assert render_numbered("a\n" * 12, offset=8, limit=3).content == "  8|a\n  9|a\n 10|a"
    shifted = render_numbered("a\nb\n", shift=98)  # a window starting at line 99
    assert (shifted.content, shifted.first_line) == (" 99|a\n100|b", 1)
    assert rendered.next_offset is None


def test_matches_reference_on_random_inputs() -> None:
    rng = random.Random(7)
    pieces = ["a", "bb", " ", "\t", "|", "7", "\n", "\n", "\r\n", "\r", "中", "z" * 30]
    for _ in range(300):
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 200)))
        total = count_lines(text)
        if total == 0:
            continue
        offset = rng.randrange(1, total + 1)
        limit = rng.randrange(1, total + 3)
        max_chars = rng.choice([5, 20, 2000])
        rendered = render_numbered(text, offset, limit, max_chars)
        assert rendered.content == _reference(text, offset, limit, max_chars), repr(text)
        expected_last = min(total, offset + limit - 1)
        assert rendered.last_line == expected_last
        assert rendered.next_offset == (expected_last + 1 if expected_last < total else None)


def test_deep_offset_in_big_file_matches_reference() -> None:
    text = "".join(f"row {i}\r\n" if i % 3 else f"row {i}\n" for i in range(1, 60_001))
    rendered = render_numbered(text, offset=45_678, limit=50)
    assert rendered.content == _reference(text, 45_678, 50, 2000)
    assert rendered.content.startswith("45678|row 45678\n")


def test_artifact_detected_in_rendered_output() -> None:
    content = render_numbered("import os\n\nprint(os.getcwd())\n").content
    assert looks_like_read_artifact(content)
    assert looks_like_read_artifact(content + "\n")


def test_artifact_detected_in_middle_of_content() -> None:
    window = render_numbered("".join(f"x{i}\n" for i in range(1, 30)), offset=20, limit=3)
    content = "def f():\n    pass\n" + window.content + "\nmore text\n"
    assert looks_like_read_artifact(content)


def test_artifact_short_content_fully_prefixed() -> None:
    assert looks_like_read_artifact("     1|only line\n")
    assert looks_like_read_artifact("    41|foo\n    42|bar")  # wider numbers (big files)
    assert looks_like_read_artifact(" 41|foo\n 42|bar")


def test_artifact_pasted_code_lines_detected() -> None:
    # What a model copies out of a read of an indented module, gutter included.
    pasted = "  12|    def f(self):\n  13|        return self.x | 1\n  14|\n"
    assert looks_like_read_artifact(pasted)
    assert looks_like_read_artifact("  12|    return x\n")


def test_artifact_truncation_marker() -> None:
    assert looks_like_read_artifact("x = '" + "a" * 50 + "… [line truncated: 4096 chars]\n")


@pytest.mark.parametrize(
    "content",
    [
        "",
        "def f():\n    return 1\n",
        "1|2\n2|3\n3|4\n4|5\n",  # plain pipe-separated numbers
        "id|name\n1|alice\n2|bob\n3|carol\n",
        "1\talice\n2\tbob\n3\tcarol\n",  # TSV rows
        "  1\ta\n  2\tb\n  3\tc\n",  # cat -n's tab, not read_file's gutter
        "| 1 | a |\n| 2 | b |\n| 3 | c |\n",  # a Markdown table
        "x = a | b\ny = 1 | 2\nflags = 0x1|0x2\n",  # bitwise or
        "     1|a\n     5|b\n     9|c\n",  # right-aligned but not consecutive
        "000001|a\n000002|b\n000003|c\n",  # zero padded
        "  1|a\n   2|b\n    3|c\n",  # not one width
        "1|a\n2|b\n3|c\n",  # narrower than read_file's numbers
        " 1|a\n 2|b\n 3|c\n",  # still narrower
        "     1|a\nplain\n     2|b\nplain\n     3|c\n",  # not on consecutive lines
        "     1|first\n     2|second\nthen normal text\nand more\n",  # 2 of 4 lines
        "line truncated: 5 chars\n",
    ],
)
def test_artifact_negative(content: str) -> None:
    assert not looks_like_read_artifact(content)
