"""Numbered-line rendering for read_file (``  1|text``), and detection of its artifacts.

Rendering is on the hot path of every read, so it avoids per-line Python work:
lines come from one bounded ``str.split``, the number prefixes come from a
small cache, and the output is assembled by a single ``str.join``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from coderx_mcp.text.errors import TextError

# Shown after a cut line; looks_like_read_artifact() searches for it, so the
# format and the regex below must stay in sync.
TRUNCATION_MARKER: Final = "… [line truncated: {length} chars]"
_TRUNCATION_RE: Final = re.compile(r"… \[line truncated: \d+ chars\]")

# What separates a line's number from its text. "|" (Cursor's LINE_NUMBER|LINE_CONTENT)
# rather than cat -n's tab: a tab is escaped to two bytes in the JSON of every reply.
GUTTER_SEP: Final = "|"
# Candidate read_file prefixes: a right-aligned number then the separator at line start.
_PREFIX_RE: Final = re.compile(r"^ *\d+\|", re.MULTILINE)
_MIN_ARTIFACT_RUN: Final = 3
# Line numbers are right-aligned to the widest number shown, at least this wide: narrow
# enough to keep a read close to the file's size on the wire, wide enough that ordinary
# pipe-separated rows ("1|x") do not look like pasted read_file output.
MIN_NUMBER_WIDTH: Final = 3

_BLOCK: Final = 1024


@dataclass(frozen=True, slots=True)
class Rendered:
    """A window of numbered lines.

    Attributes:
        content: The numbered lines joined by "\\n" (no trailing newline).
        total_lines: Number of lines in the whole text.
        first_line: 1-based number of the first rendered line (0 if none).
        last_line: 1-based number of the last rendered line (0 if none).
        truncated: True when lines exist after ``last_line``.
        next_offset: The offset to pass to read the next window, or None.
        cut_lines: How many rendered lines were shortened to max_line_chars.
    """

    content: str
    total_lines: int
    first_line: int
    last_line: int
    truncated: bool
    next_offset: int | None
    cut_lines: int = 0


def number_width(last: int) -> int:
    """How wide the line numbers of a window whose last number is ``last`` are."""
    return max(MIN_NUMBER_WIDTH, len(str(last)))


@lru_cache(maxsize=32)
def _prefix_block(block: int, width: int) -> tuple[str, ...]:
    # Formatting ints costs ~100 ns each; caching blocks of prefixes keeps a
    # 2000-line render well under 0.2 ms. 32 blocks bound memory to ~2 MB.
    start = block * _BLOCK
    return tuple(f"\n{n:>{width}}{GUTTER_SEP}" for n in range(start, start + _BLOCK))


def _prefixes(first: int, count: int) -> list[str]:
    out: list[str] = []
    n, end = first, first + count
    width = number_width(end - 1)
    while n < end:
        block, idx = divmod(n, _BLOCK)
        take = min(end - n, _BLOCK - idx)
        out.extend(_prefix_block(block, width)[idx : idx + take])
        n += take
    return out


def count_lines(text: str) -> int:
    """Count lines the way read_file does: "a\\nb\\n" and "a\\nb" have 2, "" has 0.

    Args:
        text: Decoded text.

    Returns:
        The number of lines.
    """
    if not text:
        return 0
    return text.count("\n") + (0 if text.endswith("\n") else 1)


def _advance(text: str, pos: int, n: int) -> int:
    """Index just after the ``n``-th "\\n" at or after ``pos`` (len(text) if fewer).

    Bisects with ``str.count`` (memchr speed) instead of splitting, so deep
    offsets into big files cost a few scans rather than one object per line.
    """
    lo, hi, seen = pos, len(text), 0
    # Invariant: text[pos:lo] holds `seen` < n newlines.
    while hi - lo > 512:
        mid = (lo + hi) // 2
        found = text.count("\n", lo, mid)
        if seen + found >= n:
            hi = mid
        else:
            lo, seen = mid, seen + found
    for _ in range(n - seen):
        lo = text.find("\n", lo) + 1
        if lo == 0:
            return len(text)
    return lo


def _has_long_line(segment: str, max_len: int) -> bool:
    """Cheap gate: may any line of ``segment`` be longer than ``max_len``?

    Jumps from a line start to the last newline within ``max_len`` chars, so
    it runs ~len/max_len C-level searches instead of touching every line. A
    trailing CR can make it answer True spuriously; callers recheck lines.
    """
    pos, end = 0, len(segment)
    while pos + max_len < end:
        nl = segment.rfind("\n", pos, pos + max_len + 1)
        if nl < 0:
            return True
        pos = nl + 1
    return False


def _display_lines(segment: str, count: int) -> list[str]:
    """Split a window into ``count`` lines with each line's trailing CR hidden."""
    if "\r" not in segment:
        return segment.split("\n")[:count]
    if segment.count("\r\n") == segment.count("\n"):
        # Pure CRLF window: splitting on CRLF hides the CRs at C speed and
        # leaves any lone CR inside a line untouched.
        lines = segment.split("\r\n")[:count]
        if not segment.endswith("\n") and lines[-1].endswith("\r"):
            lines[-1] = lines[-1][:-1]  # the file's last line ends in a lone CR
        return lines
    return [ln[:-1] if ln.endswith("\r") else ln for ln in segment.split("\n")[:count]]


def _fit(lines: list[str], max_chars: int, width: int) -> int:
    """How many leading lines fit in ``max_chars`` rendered characters (at least one)."""
    used = 0
    for i, line in enumerate(lines):
        used += len(line) + width + 2  # the number, the separator and the newline
        if used > max_chars:
            return max(i, 1)
    return len(lines)


def render_numbered(
    text: str,
    offset: int = 1,
    limit: int = 2000,
    max_line_chars: int = 2000,
    max_chars: int | None = None,
    shift: int = 0,
) -> Rendered:
    """Render a window of ``text`` as ``cat -n`` style numbered lines.

    Numbers are right-aligned to the widest one shown (at least ``MIN_NUMBER_WIDTH``),
    then ``|``: ``  9|x`` / `` 10|y``.

    Lines are split on "\\n" only. A trailing "\\r" of a line is hidden; a lone
    "\\r" inside a line is shown as is. Lines longer than ``max_line_chars``
    are cut and end with a ``… [line truncated: N chars]`` marker.

    Args:
        text: Decoded text with original line endings.
        offset: 1-based number of the first line to show.
        limit: Maximum number of lines to show.
        max_line_chars: Maximum characters shown per line.
        max_chars: Maximum characters of the whole rendering; fewer lines than
            ``limit`` are shown when it is reached (always at least one), and
            ``next_offset`` names the first line left out.
        shift: Added to every line number shown (``text`` is a window that starts at
            line ``shift + 1`` of its file); ``Rendered``'s numbers stay unshifted.

    Returns:
        The rendered window and its position in the text.

    Raises:
        TextError: A non-positive argument, or ``offset`` past the last line.
    """
    if offset < 1 or limit < 1 or max_line_chars < 1:
        raise TextError(
            f"offset, limit and max_line_chars must be positive integers (got "
            f"offset={offset}, limit={limit}, max_line_chars={max_line_chars}); "
            "pass values of 1 or more."
        )
    total = count_lines(text)
    if total == 0:
        if offset > 1:
            raise TextError(
                f"offset {offset} is beyond the end of the file, which is empty "
                "(total_lines=0); read it with offset 1."
            )
        return Rendered("", 0, 0, 0, False, None)
    if offset > total:
        raise TextError(
            f"offset {offset} is beyond the end of the file (total_lines={total}); "
            f"use an offset between 1 and {total}."
        )
    count = min(limit, total - offset + 1)
    last = offset + count - 1
    start = 0 if offset == 1 else _advance(text, 0, offset - 1)
    end = len(text) if last == total else _advance(text, start, count)
    segment = text[start:end]
    lines = _display_lines(segment, count)
    cut_at: list[int] = []
    if _has_long_line(segment, max_line_chars):
        for i, line in enumerate(lines):
            if len(line) > max_line_chars:
                lines[i] = line[:max_line_chars] + TRUNCATION_MARKER.format(length=len(line))
                cut_at.append(i)
    # The segment's length bounds the rendering (cut lines only get shorter), so
    # the per-line count runs only for windows that may be over the cap.
    width = number_width(last + shift) + 2
    if max_chars is not None and len(segment) + width * count > max_chars:
        count = _fit(lines, max_chars, width - 2)
        del lines[count:]
        last = offset + count - 1
    cut = sum(1 for i in cut_at if i < count)
    parts: list[str] = [""] * (2 * count)
    parts[0::2] = _prefixes(offset + shift, count)
    parts[1::2] = lines
    more = last < total
    return Rendered("".join(parts)[1:], total, offset, last, more, last + 1 if more else None, cut)


def _gutter_width(token: str) -> int:
    """Width of a candidate gutter number ``token`` (the digits and their left padding), or
    0 unless it has read_file's exact shape: right aligned, no zero padding, wide enough."""
    width = len(token)
    if width < MIN_NUMBER_WIDTH or token != f"{int(token):>{width}}":
        return 0
    return width


def starts_with_read_prefix(line: str) -> bool:
    """Tell whether ``line`` starts with a read_file line-number prefix such as ``" 12|"``.

    Args:
        line: One line of text.

    Returns:
        True if the line begins with a right-aligned number at least ``MIN_NUMBER_WIDTH``
        wide followed by ``|``.
    """
    match = _PREFIX_RE.match(line)
    return match is not None and _gutter_width(match.group()[:-1]) > 0


def looks_like_read_artifact(content: str) -> bool:
    """Tell whether ``content`` contains pasted read_file output.

    True when the content has our truncation marker, or at least 3 consecutive
    lines (or every line, for shorter content) that start with the exact
    ``f"{n:>{w}}|"`` prefix (one width ``w`` of at least ``MIN_NUMBER_WIDTH``)
    with numbers increasing by one. Ordinary pipe-separated rows ("1|x") are narrower.

    Args:
        content: Text an agent wants to write.

    Returns:
        True if the write tool should refuse the content.
    """
    if _TRUNCATION_RE.search(content):
        return True
    run, prev_num, prev_end, prev_width = 0, -2, -2, 0
    for match in _PREFIX_RE.finditer(content):
        token = match.group()[:-1]
        width = _gutter_width(token)
        if not width:
            run = 0
            continue
        num = int(token)
        start = match.start()
        adjacent = prev_end >= 0 and content.find("\n", prev_end) + 1 == start
        same = adjacent and num == prev_num + 1 and width == prev_width
        run = run + 1 if same else 1
        prev_width = width
        if run >= _MIN_ARTIFACT_RUN:
            return True
        prev_num, prev_end = num, start
    # Short content (1-2 lines) counts if every line has the prefix.
    return 0 < run == count_lines(content)
