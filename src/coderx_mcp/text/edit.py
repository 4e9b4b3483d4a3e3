"""Exact-string edits (edit_file, multi_edit) on decoded text.

Edits work on the text with its original line endings so every byte outside
the edited region survives. When ``old_string`` only differs from the file in
line-ending style (an LF snippet for a CRLF file, or the reverse), matching
ignores that difference. Either way the inserted text takes the line endings
of the region it replaces (or of its line): the model never sees CRs, so its
LFs must never land bare in a CRLF file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from pydantic import BaseModel, ConfigDict

from coderx_mcp.text.diagnose import not_found_message
from coderx_mcp.text.errors import AmbiguousEditError, EditNotFoundError, NoOpEditError, TextError
from coderx_mcp.text.render import count_lines, render_numbered

_MAX_LISTED_MATCHES: Final = 20
_SNIPPET_CONTEXT: Final = 2
_SNIPPET_MAX_LINES: Final = 12
_SNIPPET_LINE_CHARS: Final = 500


class EditSpec(BaseModel):
    """One edit of a multi_edit request."""

    model_config = ConfigDict(extra="forbid")

    old_string: str
    new_string: str
    replace_all: bool = False


@dataclass(frozen=True, slots=True)
class EditOutcome:
    """Result of applying one or more edits.

    Attributes:
        new_text: The full edited text (original line endings kept).
        replacements: How many occurrences were replaced in total.
        first_line: 1-based line in ``new_text`` where the first change starts.
        last_line: 1-based line in ``new_text`` where the last change ends.
        snippet: Numbered lines around the first change (read_file's ``  1|text``).
        newline_adapted: True if line endings of old/new were adapted to the file.
    """

    new_text: str
    replacements: int
    first_line: int
    last_line: int
    snippet: str
    newline_adapted: bool = False


@dataclass(frozen=True, slots=True)
class _Applied:
    """One applied edit reduced to a single changed span, in the new text."""

    text: str
    count: int
    start: int  # span start in the new text
    end: int  # span end (exclusive) in the new text
    adapted: bool
    last: int  # position of the last char on a changed line, in the new text


def _applied(text: str, out: str, count: int, start: int, old_end: int, adapted: bool) -> _Applied:
    """Describe a change of ``text[start:old_end]`` that produced ``out``."""
    end = len(out) - (len(text) - old_end)  # the unchanged suffix starts here
    # The line holding the suffix's first char is untouched only if the
    # suffix starts a line on both sides; otherwise that line changed too.
    starts_line = (end == 0 or out[end - 1] == "\n") and text[old_end - 1] == "\n"
    return _Applied(out, count, start, end, adapted, end - 1 if starts_line else end)


def _line_at(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _match_lines(text: str, starts: Sequence[int]) -> list[int]:
    """1-based line numbers of sorted positions, counting incrementally."""
    lines: list[int] = []
    line, prev = 1, 0
    for pos in starts:
        line += text.count("\n", prev, pos)
        prev = pos
        lines.append(line)
    return lines


def _newline_pattern(old: str, newline: str) -> re.Pattern[str] | None:
    """Regex matching ``old`` with any line-ending style, or None if not needed."""
    old_lf = old.replace("\r\n", "\n")
    if "\n" not in old_lf:
        return None
    # Lone CR only counts as a line break in CR-dominant files; elsewhere a
    # lone CR inside a line is content and must never be matched as a break.
    sep = r"(?:\r\n|\n|\r)" if newline == "\r" else r"\r?\n"
    return re.compile(sep.join(re.escape(part) for part in old_lf.split("\n")))


def _region_newline(region: str, default: str) -> str:
    crlf = region.count("\r\n")
    lf = region.count("\n") - crlf
    cr = region.count("\r") - crlf
    counts = {"\r\n": crlf, "\n": lf, "\r": cr}
    best = max(counts.values())
    styles = [nl for nl, n in counts.items() if n == best]
    # A mixed region gives no clear answer: fall back to the file's dominant style.
    return styles[0] if len(styles) == 1 else default


def _ambiguous(text: str, starts: Sequence[int], count: int) -> AmbiguousEditError:
    lines = _match_lines(text, starts[:_MAX_LISTED_MATCHES])
    shown = ", ".join(map(str, lines)) + (", …" if count > len(lines) else "")
    return AmbiguousEditError(
        f"old_string matches {count} places (lines {shown}), so the edit is "
        "ambiguous; include more surrounding lines in old_string to make it "
        "unique, or set replace_all to true to change every occurrence.",
        count,
        lines,
    )


def _validate(old: str, new: str) -> None:
    if not old:
        raise TextError(
            "old_string must not be empty; use write_file to create a file or to "
            "replace its whole content."
        )
    if old == new:
        raise NoOpEditError(
            "old_string and new_string are identical, so the edit would change "
            "nothing; pass the new text you want as new_string."
        )


def _no_op_newlines() -> NoOpEditError:
    return NoOpEditError(
        "old_string and new_string differ only in line endings, which always "
        "follow the file, so the edit would change nothing; change the text itself."
    )


def _style_at(text: str, start: int, end: int, default: str) -> str:
    """The line ending new text should use when it replaces ``text[start:end]``.

    The region's own breaks decide; a region inside one line takes the ending
    of that line (the model never sees CRs, so its LF must become the file's).
    A lone CR inside a line is content, not a break, unless the file is CR-only.
    """
    if default == "\r":
        return default
    region = text[start:end]
    crlf = region.count("\r\n")
    lf = region.count("\n") - crlf
    if crlf != lf:
        return "\r\n" if crlf > lf else "\n"
    if crlf:
        return default
    nl = text.find("\n", end)
    if nl < 0:  # the last line has no ending: follow the file
        return default
    return "\r\n" if nl > 0 and text[nl - 1] == "\r" else "\n"


def follow_newlines(new: str, style: str) -> str:
    """``new`` with every line break (LF or CRLF) written in ``style``.

    Args:
        new: Text from the model (which never sees CRs in read_file).
        style: The line ending it must use (``"\\n"``, ``"\\r\\n"`` or ``"\\r"``).

    Returns:
        The text with its line breaks rewritten; a lone CR inside a line is kept.
    """
    if "\n" not in new:
        return new
    lf = new.replace("\r\n", "\n")
    return lf if style == "\n" else lf.replace("\n", style)


def _apply_exact(
    text: str, old: str, new: str, replace_all: bool, newline: str
) -> _Applied | None:
    first = text.find(old)
    if first < 0:
        return None
    if not replace_all:
        second = text.find(old, first + len(old))
        if second >= 0:
            count = text.count(old)
            starts, pos = [first, second], second
            while len(starts) < _MAX_LISTED_MATCHES:
                pos = text.find(old, pos + len(old))
                if pos < 0:
                    break
                starts.append(pos)
            raise _ambiguous(text, starts, count)
        starts = [first]
    else:
        starts, pos = [], first
        while pos >= 0:
            starts.append(pos)
            pos = text.find(old, pos + len(old))
    pieces: list[str] = []
    prev, adapted = 0, False
    for pos in starts:
        end = pos + len(old)
        if old[0] == "\n" and pos > 0 and text[pos - 1] == "\r" and newline != "\r":
            # The model sees no CRs: its leading LF is the whole CRLF break. Replacing the
            # LF alone would leave a lone CR glued to the previous line.
            pos -= 1
        rep = follow_newlines(new, _style_at(text, pos, end, newline))
        adapted = adapted or rep != new
        pieces += (text[prev:pos], rep)
        prev = end
    pieces.append(text[prev:])
    out = "".join(pieces)
    if out == text:
        raise _no_op_newlines()
    return _applied(text, out, len(starts), first, starts[-1] + len(old), adapted)


def _apply_adapted(
    text: str, old: str, new: str, replace_all: bool, newline: str
) -> _Applied | None:
    pattern = _newline_pattern(old, newline)
    if pattern is None:
        return None
    matches = list(pattern.finditer(text))
    if not matches:
        return None
    if len(matches) > 1 and not replace_all:
        raise _ambiguous(text, [m.start() for m in matches], len(matches))
    new_lf = new.replace("\r\n", "\n")
    pieces: list[str] = []
    prev = 0
    for m in matches:
        style = _region_newline(m.group(), newline)
        pieces += (text[prev : m.start()], new_lf.replace("\n", style))
        prev = m.end()
    pieces.append(text[prev:])
    out = "".join(pieces)
    if out == text:
        raise _no_op_newlines()
    return _applied(text, out, len(matches), matches[0].start(), matches[-1].end(), True)


def _apply_one(text: str, old: str, new: str, replace_all: bool, newline: str) -> _Applied:
    _validate(old, new)
    applied = _apply_exact(text, old, new, replace_all, newline)
    if applied is None:
        applied = _apply_adapted(text, old, new, replace_all, newline)
    if applied is None:
        raise EditNotFoundError(not_found_message(text, old))
    return applied


def _outcome(text: str, count: int, start: int, last_pos: int, adapted: bool) -> EditOutcome:
    total = count_lines(text)
    # Positions at the very end of the text (deleted last line) clamp to the
    # last line that still exists.
    first = min(_line_at(text, start), max(total, 1))
    last = max(first, min(_line_at(text, last_pos), max(total, 1)))
    snippet = ""
    if total:
        offset = max(1, first - _SNIPPET_CONTEXT)
        limit = min(last + _SNIPPET_CONTEXT, total) - offset + 1
        snippet = render_numbered(
            text, offset, min(limit, _SNIPPET_MAX_LINES), _SNIPPET_LINE_CHARS
        ).content
    return EditOutcome(text, count, first, last, snippet, adapted)


def apply_edit(
    text: str, old: str, new: str, replace_all: bool = False, newline: str = "\n"
) -> EditOutcome:
    """Replace ``old`` with ``new`` in ``text``, exactly once or everywhere.

    Exact match first; if there is none and ``old`` contains line breaks,
    matching is retried ignoring line-ending style, and the inserted text gets
    the line endings of the region it replaces (the file's dominant
    ``newline`` for mixed regions). Bytes outside the edited region never change.

    Args:
        text: Decoded file text with original line endings.
        old: Text to find (old_string).
        new: Replacement text (new_string).
        replace_all: Replace every occurrence instead of requiring exactly one.
        newline: The file's dominant line ending (``Decoded.newline``).

    Returns:
        The edited text, the number of replacements, and a numbered snippet.

    Raises:
        TextError: ``old`` is empty.
        NoOpEditError: ``old`` equals ``new``, or they differ only in line
            endings (which always follow the file).
        EditNotFoundError: ``old`` does not occur; the message shows the closest
            region with invisible characters made visible.
        AmbiguousEditError: Several occurrences and ``replace_all`` is False.
    """
    a = _apply_one(text, old, new, replace_all, newline)
    return _outcome(a.text, a.count, a.start, a.last, a.adapted)


def apply_edits(text: str, edits: Sequence[EditSpec], newline: str = "\n") -> EditOutcome:
    """Apply several edits in order to the running text, all or nothing.

    Args:
        text: Decoded file text with original line endings.
        edits: The edits; each sees the result of the previous ones.
        newline: The file's dominant line ending (``Decoded.newline``).

    Returns:
        The combined outcome; the snippet covers the first changed line.

    Raises:
        TextError: No edits, or any edit failed. The error keeps the failing
            edit's class, names its 1-based index, and nothing is applied.
    """
    if not edits:
        raise TextError("edits must contain at least one edit; pass one or more edits.")
    current, total, adapted = text, 0, False
    span: tuple[int, int] | None = None  # (start, last changed char) in `current`
    for index, spec in enumerate(edits, start=1):
        try:
            a = _apply_one(current, spec.old_string, spec.new_string, spec.replace_all, newline)
        except TextError as exc:
            raise exc.for_edit(index, len(edits)) from None
        if span is None:
            span = (a.start, a.last)
        else:
            # Map the earlier region into the new text's coordinates: text
            # before a.start and after the replaced span is unchanged, a point
            # inside the replaced span moves to that edge of the new span.
            delta = len(a.text) - len(current)
            old_end = a.end - delta
            lo, hi = span
            lo = lo if lo <= a.start else lo + delta if lo >= old_end else a.start
            hi = hi if hi < a.start else hi + delta if hi >= old_end else a.last
            span = (min(lo, a.start), max(hi, a.last))
        current, total, adapted = a.text, total + a.count, adapted or a.adapted
    assert span is not None
    return _outcome(current, total, span[0], span[1], adapted)
