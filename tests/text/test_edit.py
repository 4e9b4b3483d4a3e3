"""Tests for coderx_mcp.text.edit: exact edits, line-ending care, diagnostics."""

from __future__ import annotations

import random

import pydantic
import pytest

from coderx_mcp.text import (
    AmbiguousEditError,
    EditNotFoundError,
    EditSpec,
    NoOpEditError,
    TextError,
    apply_edit,
    apply_edits,
    decode,
    encode,
)


def _edit_bytes(data: bytes, old: str, new: str, **kwargs: bool) -> bytes:
    """The tool layer's flow: decode, edit with the file's newline, encode."""
    decoded = decode(data)
    outcome = apply_edit(decoded.text, old, new, newline=decoded.newline, **kwargs)
    return encode(outcome.new_text, decoded)


# --- exact edits and byte preservation -------------------------------------


def test_simple_edit_reports_line_and_snippet() -> None:
    text = "".join(f"line {i}\n" for i in range(1, 21))
    outcome = apply_edit(text, "line 10\n", "ten\n")
    assert outcome.new_text == text.replace("line 10\n", "ten\n")
    assert (outcome.replacements, outcome.first_line, outcome.last_line) == (1, 10, 10)
    assert outcome.newline_adapted is False
    assert outcome.snippet.split("\n") == [
        "  8|line 8",
        "  9|line 9",
        " 10|ten",
        " 11|line 11",
        " 12|line 12",
    ]


def test_crlf_file_single_line_edit_changes_only_that_line() -> None:
    data = b"first\r\nsecond\r\nthird\r\n"
    assert _edit_bytes(data, "second", "2nd") == b"first\r\n2nd\r\nthird\r\n"


def test_crlf_file_edited_with_lf_strings_keeps_crlf() -> None:
    data = b"def f():\r\n    return 1\r\n\r\nprint(f())\r\n"
    decoded = decode(data)
    outcome = apply_edit(
        decoded.text,
        "def f():\n    return 1\n",
        "def f():\n    x = 1\n    return x\n",
        newline=decoded.newline,
    )
    assert outcome.newline_adapted
    assert encode(outcome.new_text, decoded) == (
        b"def f():\r\n    x = 1\r\n    return x\r\n\r\nprint(f())\r\n"
    )


def test_lf_file_edited_with_crlf_strings_keeps_lf() -> None:
    data = b"a\nb\nc\n"
    assert _edit_bytes(data, "a\r\nb\r\n", "A\r\nB\r\n") == b"A\nB\nc\n"


def test_mixed_file_with_lone_cr_keeps_every_other_byte() -> None:
    data = b"one\ntwo\r\nthr\ree\nfour\r\nfive\r\nsix\rseven"
    result = _edit_bytes(data, "four\nfive", "4\n5")
    assert result == b"one\ntwo\r\nthr\ree\n4\r\n5\r\nsix\rseven"
    # An LF region of the same mixed file keeps LF.
    assert _edit_bytes(data, "thr\ree\nfour", "T\nF") == data.replace(b"thr\ree\nfour", b"T\nF")


def test_lone_cr_is_not_treated_as_line_break_in_lf_file() -> None:
    data = b"progress\rdone\nnext\n"
    with pytest.raises(EditNotFoundError):
        _edit_bytes(data, "progress\ndone", "x")


def test_cr_only_file_is_matched_and_keeps_cr() -> None:
    data = b"a\rb\rc\r"
    assert _edit_bytes(data, "a\nb\n", "A\nB\n") == b"A\rB\rc\r"


def test_bom_preserved_and_never_added() -> None:
    assert _edit_bytes(b"\xef\xbb\xbfx = 1\n", "1", "2") == b"\xef\xbb\xbfx = 2\n"
    assert _edit_bytes(b"x = 1\n", "1", "\u4e2d") == "x = \u4e2d\n".encode()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"a\nb\n", b"a\nB\n"),
        (b"a\nb", b"a\nB"),
        (b"a\r\nb", b"a\r\nB"),
        (b"a\r\nb\r\n", b"a\r\nB\r\n"),
    ],
)
def test_final_newline_state_preserved(data: bytes, expected: bytes) -> None:
    assert _edit_bytes(data, "b", "B") == expected


def test_utf16_file_edit_round_trip() -> None:
    data = b"\xff\xfe" + "x = '\u4e2d'\r\ny = 2\r\n".encode("utf-16-le")
    assert _edit_bytes(data, "y = 2\n", "y = 3\nz = 4\n") == b"\xff\xfe" + (
        "x = '\u4e2d'\r\ny = 3\r\nz = 4\r\n".encode("utf-16-le")
    )


def test_edit_can_delete_everything() -> None:
    outcome = apply_edit("only\n", "only\n", "")
    assert (outcome.new_text, outcome.snippet, outcome.first_line) == ("", "", 1)


def test_delete_last_line_snippet_is_clamped() -> None:
    outcome = apply_edit("a\nb\nc\n", "c\n", "")
    assert outcome.new_text == "a\nb\n"
    assert outcome.first_line == 2
    assert outcome.snippet == "  1|a\n  2|b"


def test_snippet_is_capped() -> None:
    new = "".join(f"n{i}\n" for i in range(40))
    outcome = apply_edit("top\nX\nbottom\n", "X\n", new)
    assert len(outcome.snippet.split("\n")) == 12
    assert outcome.snippet.startswith("  1|top\n  2|n0")
    assert (outcome.first_line, outcome.last_line) == (2, 41)


# --- errors -------------------------------------------------------------------


def test_empty_old_string_is_rejected() -> None:
    with pytest.raises(TextError, match="old_string must not be empty; use write_file") as info:
        apply_edit("x", "", "y")
    assert type(info.value) is TextError


def test_noop_edit_is_rejected() -> None:
    with pytest.raises(NoOpEditError, match="identical"):
        apply_edit("abc", "b", "b")


def test_noop_after_newline_adaptation_is_rejected() -> None:
    with pytest.raises(NoOpEditError, match="line endings"):
        apply_edit("a\r\nb\r\n", "a\nb", "a\r\nb", newline="\r\n")


def test_ambiguous_edit_lists_count_and_lines() -> None:
    text = "x = 1\ny = 2\nx = 1\n\nx = 1\n"
    with pytest.raises(AmbiguousEditError) as info:
        apply_edit(text, "x = 1", "x = 9")
    assert info.value.count == 3
    assert info.value.lines == (1, 3, 5)
    assert "3 places (lines 1, 3, 5)" in str(info.value)
    assert "replace_all" in str(info.value)


def test_ambiguous_edit_lists_first_twenty_lines_only() -> None:
    text = "hit\nmiss\n" * 25
    with pytest.raises(AmbiguousEditError) as info:
        apply_edit(text, "hit", "HIT")
    assert info.value.count == 25
    assert info.value.lines == tuple(range(1, 40, 2))
    assert str(info.value).count(",") >= 19 and "…" in str(info.value)


def test_ambiguous_after_newline_adaptation() -> None:
    with pytest.raises(AmbiguousEditError) as info:
        apply_edit("a\r\nb\r\na\r\nb\r\n", "a\nb", "c", newline="\r\n")
    assert info.value.lines == (1, 3)


def test_replace_all_counts_replacements() -> None:
    outcome = apply_edit("a.b.a.c.a\n", "a", "Z", replace_all=True)
    assert (outcome.new_text, outcome.replacements) == ("Z.b.Z.c.Z\n", 3)
    crlf = apply_edit("k\r\nv\r\nk\r\nv\r\n", "k\nv", "K\nV", replace_all=True, newline="\r\n")
    assert (crlf.new_text, crlf.replacements) == ("K\r\nV\r\nK\r\nV\r\n", 2)


# --- not-found diagnostics ----------------------------------------------------------


def test_not_found_shows_tabs_nbsp_and_trailing_spaces_visibly() -> None:
    text = "import os\n\ndef f():\n\tif x:\n\t\treturn 1\xa0 \n\treturn 2\n"
    with pytest.raises(EditNotFoundError) as info:
        apply_edit(text, "    if x:\n        return 1 \n", "pass\n")
    message = str(info.value)
    assert message.startswith("old_string was not found in the file")
    assert "lines 4-5" in message
    assert "     4|→if x:" in message
    assert "     5|→→return 1⍽·" in message  # tab, NBSP and trailing space visible
    assert "          return 1·" in message  # expected side: trailing space visible
    assert "the file uses tabs (→) where old_string has spaces" in message
    assert "non-breaking spaces (⍽)" in message


def test_not_found_shows_zero_width_and_lone_cr() -> None:
    text = "alpha\nbe\u200bta = 1\nga\rmma\n"
    with pytest.raises(EditNotFoundError) as info:
        apply_edit(text, "beta = 1\ngamma", "x")
    message = str(info.value)
    assert "be<U+200B>ta = 1" in message
    assert "ga␍mma" in message
    assert "zero-width" in message
    assert "carriage return" in message


def test_not_found_hints_trailing_whitespace_and_quotes() -> None:
    with pytest.raises(EditNotFoundError, match="only trailing whitespace differs"):
        apply_edit("a = 1  \nb = 2\n", "a = 1\nb = 2\n", "x")
    with pytest.raises(EditNotFoundError, match="quotes or dashes differ"):
        apply_edit("msg = “hello”\n", 'msg = "hello"\n', "x")


def test_not_found_hints_read_file_prefixes() -> None:
    text = "def f():\n    return 1\n"
    with pytest.raises(EditNotFoundError, match="line-number prefixes"):
        apply_edit(text, "  1|def f():\n  2|    return 1\n", "x")


def test_not_found_without_similar_region() -> None:
    with pytest.raises(EditNotFoundError, match="No similar region was found"):
        apply_edit("completely\ndifferent\n", "zzz qqq www", "x")
    with pytest.raises(EditNotFoundError, match="The file is empty"):
        apply_edit("", "anything", "x")


def test_not_found_search_is_bounded_on_big_files() -> None:
    text = "".join(f"    item_{i} = make({i}, flag=True)\n" for i in range(20_000))
    with pytest.raises(EditNotFoundError) as info:
        apply_edit(text, "    item_12345 = make(12345, flag=False)\n", "x")
    assert "lines 12346-12346" in str(info.value)


# --- multi_edit -----------------------------------------------------------------------


def test_multi_edit_applies_in_order_to_running_text() -> None:
    edits = [
        EditSpec(old_string="alpha", new_string="beta"),
        EditSpec(old_string="beta beta", new_string="gamma"),  # sees edit 1's result
        EditSpec(old_string="x", new_string="y", replace_all=True),
    ]
    outcome = apply_edits("alpha beta\nx x\n", edits)
    assert outcome.new_text == "gamma\ny y\n"
    assert outcome.replacements == 4
    assert (outcome.first_line, outcome.last_line) == (1, 2)


def test_multi_edit_is_all_or_nothing_and_names_failing_edit() -> None:
    text = "a\nb\nc\n"
    edits = [
        EditSpec(old_string="a", new_string="A"),
        EditSpec(old_string="b", new_string="B"),
        EditSpec(old_string="missing", new_string="M"),
    ]
    with pytest.raises(EditNotFoundError) as info:
        apply_edits(text, edits)
    assert info.value.edit_index == 3
    assert str(info.value).startswith(
        "Edit 3 of 3 failed, so none of the 3 edits were applied (line numbers refer "
        "to the text after edits 1-2): old_string was not found"
    )
    assert text == "a\nb\nc\n"


def test_multi_edit_keeps_error_class_and_attributes() -> None:
    edits = [EditSpec(old_string="q", new_string="Q"), EditSpec(old_string="z", new_string="Z")]
    with pytest.raises(AmbiguousEditError) as info:
        apply_edits("q z z\n", edits)
    assert (info.value.edit_index, info.value.count, info.value.lines) == (2, 2, (1, 1))
    with pytest.raises(NoOpEditError, match=r"^Edit 1 of 1 failed"):
        apply_edits("x", [EditSpec(old_string="x", new_string="x")])


def test_multi_edit_rejects_empty_list_and_extra_fields() -> None:
    with pytest.raises(TextError, match="at least one edit"):
        apply_edits("x", [])
    with pytest.raises(pydantic.ValidationError):
        EditSpec.model_validate({"old_string": "a", "new_string": "b", "bogus": 1})


def test_multi_edit_span_covers_all_changes() -> None:
    text = "".join(f"row {i}\n" for i in range(1, 11))
    edits = [
        EditSpec(old_string="row 8\n", new_string="eight\n"),
        EditSpec(old_string="row 3\n", new_string="three\nthree-b\n"),
    ]
    outcome = apply_edits(text, edits)
    assert (outcome.first_line, outcome.last_line) == (3, 9)
    assert outcome.snippet.split("\n")[0] == "  1|row 1"


def test_multi_edit_span_property_random() -> None:
    rng = random.Random(99)
    words = ["ab", "cd", "ef", "gh", "ij", "kl"]
    for _ in range(300):
        lines = [" ".join(rng.choices(words, k=3)) + f" {i}" for i in range(30)]
        text = "\n".join(lines) + "\n"
        current, edits = text, []
        for _ in range(rng.randrange(1, 4)):
            if rng.random() < 0.3:  # replace_all of a word, possibly across lines
                target, new = rng.choice(words) + " " + rng.choice(words), rng.choice(["", "Q\n"])
                if target not in current:
                    continue
                edits.append(EditSpec(old_string=target, new_string=new, replace_all=True))
                current = current.replace(target, new)
                continue
            target = rng.choice(current.split("\n")[:-1])
            new = rng.choice(["", "X", "Y\nZ", target + "\nextra"])
            if not target or new == target or current.count(target) != 1:
                continue
            edits.append(EditSpec(old_string=target, new_string=new))
            current = current.replace(target, new, 1)
        if not edits:
            continue
        outcome = apply_edits(text, edits)
        assert outcome.new_text == current
        # Outside the reported span the final text equals the original: the
        # lines before it are the original's head, the lines after its tail.
        before, after = text.split("\n"), current.split("\n")
        head = outcome.first_line - 1
        tail = len(after) - outcome.last_line
        assert after[:head] == before[:head]
        assert tail <= len(before) and after[len(after) - tail :] == before[len(before) - tail :]
        assert 1 <= outcome.first_line <= outcome.last_line


# --- inserted line breaks follow the file (issue 8 regression) --------------


def test_inserted_lf_in_single_line_edit_becomes_crlf() -> None:
    data = b"alpha\r\nbeta\r\ngamma\r\n"
    assert _edit_bytes(data, "beta", "BETA\nDELTA") == b"alpha\r\nBETA\r\nDELTA\r\ngamma\r\n"


def test_inserted_lf_on_unterminated_last_line_follows_the_file() -> None:
    assert _edit_bytes(b"a\r\nb", "b", "B\nC") == b"a\r\nB\r\nC"


def test_replace_all_follows_each_lines_style_in_a_mixed_file() -> None:
    data = b"k=1\r\nk=1\nk=1\r\n"
    assert _edit_bytes(data, "k=1", "k=2\nk=3", replace_all=True) == (
        b"k=2\r\nk=3\r\nk=2\nk=3\nk=2\r\nk=3\r\n"
    )


def test_exact_crlf_old_and_lf_new_differing_only_in_endings_is_a_no_op() -> None:
    with pytest.raises(NoOpEditError, match="only in line endings"):
        apply_edit("a\r\nb\r\n", "a\r\nb", "a\nb", newline="\r\n")


def test_multi_edit_inserts_crlf_in_a_crlf_file() -> None:
    decoded = decode(b"x\r\ny\r\n")
    out = apply_edits(
        decoded.text,
        [EditSpec(old_string="x", new_string="x1\nx2"), EditSpec(old_string="y", new_string="\ny")],
        newline=decoded.newline,
    )
    assert encode(out.new_text, decoded) == b"x1\r\nx2\r\n\r\ny\r\n"


@pytest.mark.parametrize("seed", range(300))
def test_edits_never_mix_line_endings_property(seed: int) -> None:
    """Random edits on a uniform-style file keep it uniform and do what LF text says."""
    rng = random.Random(seed)
    style = rng.choice(["\n", "\r\n"])
    words = ["foo", "bar", "baz", "qux", "x = 1", "  return y", ""]
    lines = [f"{rng.choice(words)}{i}" for i in range(rng.randint(1, 8))]
    lf = "\n".join(lines) + rng.choice(["", "\n"])
    text = lf.replace("\n", style)
    # old_string as the model would copy it from read_file: LF, one or more lines.
    i = rng.randrange(len(lines))
    j = min(len(lines), i + rng.randint(1, 3))
    old = "\n".join(lines[i:j])
    new = rng.choice(["NEW", "A\nB", "\nC\n", "D\n\nE", "F\r\nG"])
    if lf.count(old) != 1:
        old = "\n".join(lines)  # a short line can occur inside another; the whole text cannot
    out = apply_edit(text, old, new, newline=style).new_text
    assert out.replace("\r\n", "\n") == lf.replace(old, new.replace("\r\n", "\n"), 1)
    if style == "\r\n":
        assert out.count("\n") == out.count("\r\n")
    else:
        assert "\r" not in out
