"""Diagnostics for an edit whose old_string was not found.

The message shows the closest region of the file next to old_string, with
invisible characters made visible on both sides, and names what differs. The
search is bounded: a linear token-overlap pass ranks windows, and only the best
few are compared character by character with difflib.
"""

from __future__ import annotations

import heapq
import re
from difflib import SequenceMatcher
from itertools import accumulate
from typing import Any, Final

from coderx_mcp.text.render import GUTTER_SEP, starts_with_read_prefix

_MAX_SCAN_LINES: Final = 200_000  # lines ranked in huge files
_REFINE: Final = 20  # windows compared with SequenceMatcher
_MIN_SIMILARITY: Final = 0.3
_MAX_CHAR_COMPARE: Final = 5_000
_MAX_SHOWN: Final = 30  # lines shown per side

_ZERO_WIDTH: Final = "\u200b\u200c\u200d\u2060\ufeff\u00ad"
_ODD_SPACES: Final = "\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u202f\u205f\u3000"
_VISIBLE: Final = str.maketrans(
    {"\t": "→", "\xa0": "⍽", "\r": "␍"}
    | {c: f"<U+{ord(c):04X}>" for c in _ZERO_WIDTH + _ODD_SPACES}
)
_DROP_ZERO_WIDTH: Final = str.maketrans("", "", _ZERO_WIDTH)
_TYPOGRAPHIC: Final = str.maketrans(
    {"‘": "'", "’": "'", "‚": "'", "“": '"', "”": '"', "„": '"', "–": "-", "—": "-", "−": "-"}
)
_WORD_RE: Final = re.compile(r"\w+")
LEGEND: Final = (
    "Invisible characters are shown as: → tab, · trailing space, ⍽ no-break "
    "space, ␍ carriage return, <U+XXXX> zero-width or unusual space."
)


def make_visible(line: str) -> str:
    """Show tabs, NBSP, CR, zero-width chars and trailing spaces of one line.

    Args:
        line: A single line without its line break.

    Returns:
        The line with invisible characters replaced by visible markers.
    """
    body = line.rstrip(" ")
    return body.translate(_VISIBLE) + "·" * (len(line) - len(body))


def _lines(text: str) -> list[str]:
    """Split into lines without breaks; each line's trailing CR is dropped."""
    parts = text.split("\n")
    if parts and parts[-1] == "" and len(parts) > 1:
        parts.pop()
    return [p[:-1] if p.endswith("\r") else p for p in parts]


def _squash(line: str) -> str:
    """Line with all whitespace and zero-width characters removed."""
    return "".join(line.translate(_DROP_ZERO_WIDTH).split())


def _best_window(file_lines: list[str], old_lines: list[str]) -> tuple[int, float]:
    """Find the start of the window most similar to old_lines, and its ratio."""
    n = len(old_lines)
    scan = file_lines[:_MAX_SCAN_LINES]
    windows = max(1, len(scan) - n + 1)
    old_words = set(_WORD_RE.findall("\n".join(old_lines)))
    old_squashed = {_squash(x) for x in old_lines} - {""}
    # Per-line score: shared words, plus a bonus when the line equals an old
    # line up to whitespace. Window scores are sliding sums via prefix sums.
    scores = [len(old_words.intersection(_WORD_RE.findall(line))) for line in scan]
    for j, score in enumerate(scores):
        # A line equal up to whitespace shares words, so only those are squashed.
        if score and _squash(scan[j]) in old_squashed:
            scores[j] += 3
    sums = [0, *accumulate(scores)]
    ranked = heapq.nlargest(
        _REFINE, range(windows), key=lambda j: sums[min(j + n, len(scan))] - sums[j]
    )
    # Character-level similarity is quadratic in the worst case, so a large
    # old_string is compared line by line instead.
    by_chars = sum(map(len, old_lines)) <= _MAX_CHAR_COMPARE
    matcher: SequenceMatcher[Any] = SequenceMatcher(None, autojunk=False)
    matcher.set_seq2("\n".join(old_lines) if by_chars else old_lines)
    best, best_ratio = 0, -1.0
    for j in sorted(ranked):
        window = scan[j : j + n]
        matcher.set_seq1("\n".join(window) if by_chars else window)
        if matcher.real_quick_ratio() > best_ratio and matcher.quick_ratio() > best_ratio:
            ratio = matcher.ratio()
            if ratio > best_ratio:
                best, best_ratio = j, ratio
    return best, best_ratio


def _has(lines: list[str], chars: str) -> bool:
    return any(c in line for line in lines for c in chars)


def _hints(old_lines: list[str], region: list[str], first: int) -> list[str]:
    """Name the likely differences between old_string and the file region."""
    hints: list[str] = []
    if any(starts_with_read_prefix(line) for line in old_lines):
        hints.append(
            "old_string seems to include read_file line-number prefixes; copy only "
            f"the text after the number and its '{GUTTER_SEP}'"
        )
    if _has(region, "\t") and not _has(old_lines, "\t"):
        hints.append("the file uses tabs (→) where old_string has spaces")
    elif _has(old_lines, "\t") and not _has(region, "\t"):
        hints.append("old_string has tabs (→) where the file has spaces")
    if _has(region, "\xa0") != _has(old_lines, "\xa0"):
        side = "the file" if _has(region, "\xa0") else "old_string"
        hints.append(f"{side} contains non-breaking spaces (⍽) where the other has plain spaces")
    for side, lines in (("the file", region), ("old_string", old_lines)):
        if _has(lines, _ZERO_WIDTH + _ODD_SPACES):
            hints.append(f"{side} contains zero-width or unusual space characters (<U+…>)")
    if _has(region, "\r") != _has(old_lines, "\r"):
        hints.append("a carriage return (␍) inside a line differs")
    if len(region) == len(old_lines):
        if [x.rstrip() for x in region] == [x.rstrip() for x in old_lines]:
            hints.append("only trailing whitespace differs (shown as · or →)")
        elif [_squash(x) for x in region] == [_squash(x) for x in old_lines]:
            if not hints:
                hints.append("only whitespace differs (indentation or spacing)")
        elif [x.translate(_TYPOGRAPHIC) for x in region] == [
            x.translate(_TYPOGRAPHIC) for x in old_lines
        ]:
            hints.append("quotes or dashes differ (typographic vs ASCII)")
    if not hints:
        pairs = enumerate(zip(region, old_lines, strict=False))
        diff = next((i for i, (a, b) in pairs if a != b), None)
        if diff is not None:
            hints.append(
                f"the text differs starting at line {diff + 1} of old_string "
                f"(file line {first + diff})"
            )
        else:
            hints.append("the number of lines differs")
    return hints


def _show(lines: list[str], first: int | None) -> list[str]:
    shown = [
        f"{first + i:>6}{GUTTER_SEP}{make_visible(x)}" if first is not None
        else f"  {make_visible(x)}"
        for i, x in enumerate(lines[:_MAX_SHOWN])
    ]
    if len(lines) > _MAX_SHOWN:
        shown.append(f"  … ({len(lines) - _MAX_SHOWN} more lines)")
    return shown


def not_found_message(text: str, old: str) -> str:
    """Build the EditNotFoundError message for ``old`` missing from ``text``.

    Args:
        text: The decoded file text.
        old: The old_string that was not found.

    Returns:
        A one-sentence summary followed by old_string, the closest file region
        (with line numbers) and hints on what differs.
    """
    head = (
        "old_string was not found in the file, so nothing was changed; re-read the "
        "file and copy old_string exactly, including whitespace."
    )
    old_lines = _lines(old)
    file_lines = _lines(text) if text else []
    out = [head, "", "old_string:", *_show(old_lines, None), ""]
    if not file_lines:
        return "\n".join([*out, "The file is empty."])
    start, ratio = _best_window(file_lines, old_lines)
    if len(file_lines) > _MAX_SCAN_LINES:
        out.append(f"(Only the first {_MAX_SCAN_LINES} lines were searched.)")
    if ratio < _MIN_SIMILARITY:
        note = f"No similar region was found (best similarity {ratio:.0%})."
        return "\n".join([*out, note, LEGEND])
    region = file_lines[start : start + len(old_lines)]
    end = start + len(region)
    out += [
        f"Closest region of the file, lines {start + 1}-{end} (similarity {ratio:.0%}):",
        *_show(region, start + 1),
        "",
        "Likely difference: " + "; ".join(_hints(old_lines, region, start + 1)) + ".",
        LEGEND,
    ]
    return "\n".join(out)
