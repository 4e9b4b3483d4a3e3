"""Property tests (hypothesis) of the edit engine: any old/new strings on any text.

The promise: the result equals Python's string replacement or a clear refusal; line
endings and a BOM are kept; inserted newlines follow the file's style. A CRLF file is
edited as the model sees it (read_file shows no CRs), so its result must equal the LF
edit with every line break written back as CRLF.
"""

from __future__ import annotations

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

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

# A small alphabet makes matches, repeats and overlaps likely; no CR: line endings are
# the file's business, written by the file's style below.
_CHARS = st.sampled_from("ab \n\tä€")
_TEXT = st.text(_CHARS, max_size=60)
_NEEDLE = st.text(_CHARS, min_size=1, max_size=6)
_SETTINGS = settings(max_examples=400, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


def _expected(text: str, old: str, new: str, replace_all: bool) -> str | type[Exception]:
    """What Python's replacement says the edit must do, or the refusal it must give."""
    count = text.count(old)
    if old == new:
        return NoOpEditError
    if count == 0:
        return EditNotFoundError
    if count > 1 and not replace_all:
        return AmbiguousEditError
    return text.replace(old, new) if replace_all else text.replace(old, new, 1)


def _edit_file(data: bytes, old: str, new: str, replace_all: bool) -> bytes:
    """The tool layer's flow: decode, edit with the file's newline, encode."""
    decoded = decode(data)
    outcome = apply_edit(decoded.text, old, new, replace_all=replace_all,
                         newline=decoded.newline)
    return encode(outcome.new_text, decoded)


@_SETTINGS
@given(text=_TEXT, old=_NEEDLE, new=st.text(_CHARS, max_size=6), replace_all=st.booleans())
def test_lf_edit_equals_python_replace_or_refuses_clearly(
        text: str, old: str, new: str, replace_all: bool) -> None:
    want = _expected(text, old, new, replace_all)
    try:
        got = apply_edit(text, old, new, replace_all=replace_all).new_text
    except TextError as exc:
        assert isinstance(want, type) and isinstance(exc, want), (want, exc)
        assert str(exc).strip(), "a refusal says why"
        return
    assert got == want


@_SETTINGS
@given(text=_TEXT, old=_NEEDLE, new=st.text(_CHARS, max_size=6), replace_all=st.booleans(),
       bom=st.booleans())
@example(text="a\nb", old="\nb", new="c", replace_all=False, bom=False)
@example(text="a\nb\n", old="a\n", new="x", replace_all=False, bom=False)
def test_crlf_file_edit_equals_the_lf_edit_written_back_in_crlf(
        text: str, old: str, new: str, replace_all: bool, bom: bool) -> None:
    assume("\n" in text)  # a file with no line break has no style to follow
    data = (b"\xef\xbb\xbf" if bom else b"") + text.replace("\n", "\r\n").encode()
    want = _expected(text, old, new, replace_all)
    try:
        got = _edit_file(data, old, new, replace_all)
    except TextError as exc:
        assert isinstance(want, type) and isinstance(exc, want), (want, exc)
        return
    assert not isinstance(want, type), f"edit applied where {want.__name__} was due"
    assert got == (b"\xef\xbb\xbf" if bom else b"") + want.replace("\n", "\r\n").encode()


@_SETTINGS
@given(lines=st.lists(st.text(st.sampled_from("ab ä"), max_size=5), min_size=1, max_size=8),
       crlf=st.lists(st.booleans(), min_size=8, max_size=8),
       new=st.text(st.sampled_from("xy\n"), min_size=1, max_size=6))
def test_inserted_newlines_follow_the_replaced_lines_style(
        lines: list[str], crlf: list[bool], new: str) -> None:
    # A mixed file: each line keeps its own ending; text inserted into a line takes it.
    data = "".join(line + ("\r\n" if c else "\n") for line, c in zip(lines, crlf, strict=False))
    target = next((i for i, line in enumerate(lines) if line and data.count(line) == 1), None)
    if target is None:
        return
    decoded = decode(data.encode())
    out = apply_edit(decoded.text, lines[target], new, newline=decoded.newline).new_text
    ending = "\r\n" if crlf[target] else "\n"
    before = "".join(line + ("\r\n" if c else "\n")
                     for line, c in zip(lines[:target], crlf, strict=False))
    assert out.startswith(before)
    assert out[len(before):].startswith(new.replace("\n", ending))


@_SETTINGS
@given(text=_TEXT, edits=st.lists(st.tuples(_NEEDLE, st.text(_CHARS, max_size=4)),
                                  min_size=1, max_size=4))
def test_multi_edit_is_all_or_nothing_and_sequential(
        text: str, edits: list[tuple[str, str]]) -> None:
    want: str | None = text
    for old, new in edits:
        step = _expected(want, old, new, False) if want is not None else None
        want = step if isinstance(step, str) else None
    specs = [EditSpec(old_string=o, new_string=n) for o, n in edits]
    try:
        got = apply_edits(text, specs).new_text
    except TextError:
        assert want is None
        return
    assert got == want
