"""Replace granted secret values in text and structured data with ``[redacted:NAME]``.

A value is also caught in its base64 (standard and URL-safe) and URL-encoded forms. Output
reaches the client in chunks (pages, progress tails, head and tail of a stream), so a
chunk's first and last characters are also checked for the tail or the head of a value
cut at the chunk's edge (fragments of at least :data:`MIN_FRAGMENT` characters).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

MIN_SECRET = 4
"""Shorter values cannot be redacted without mangling ordinary text; grants refuse them."""
MIN_FRAGMENT = 3
# Where the runner cut a long output into head and tail (``procs.py:excerpt``): two edges.
_CUT = re.compile(r"\n\[… \d+ bytes omitted: read_output\(output_id='[0-9A-Za-z]+'\) "
                  r"shows them …\]\n")


def _forms(value: str) -> set[str]:
    raw = value.encode("utf-8")
    forms = {value, quote(value, safe=""), quote_plus(value, safe="")}
    for enc in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
        forms.add(enc)
        forms.add(enc.rstrip("="))
    return {f for f in forms if len(f) >= MIN_SECRET}


class Redactor:
    """Redacts a fixed set of named values.

    Args:
        secrets: (name, value) pairs; values shorter than :data:`MIN_SECRET` are ignored.
    """

    def __init__(self, secrets: Iterable[tuple[str, str]]) -> None:
        self._name: dict[str, str] = {}
        for name, value in secrets:
            if len(value) >= MIN_SECRET:
                for form in _forms(value):
                    self._name.setdefault(form, name)
        forms = sorted(self._name, key=len, reverse=True)
        self._rx = re.compile("|".join(re.escape(f) for f in forms)) if forms else None
        self._forms = forms
        self.longest = len(forms[0]) if forms else 0
        """Length of the longest form: how much context decides a chunk's edges."""

    def __bool__(self) -> bool:
        return self._rx is not None

    def redact(self, text: str, edges: bool = True) -> str:
        """``text`` with every form of every value replaced by ``[redacted:NAME]``.

        Args:
            text: Any text leaving the server.
            edges: Also redact a value's head at the very end of ``text`` and its tail at
                the very start (the text is a chunk of a longer output).
        """
        if self._rx is None or not text:
            return text
        out = self._mask(text, 0, len(text))
        if not edges:
            return out
        parts = _CUT.split(out)
        if len(parts) == 1:
            return self._edges(out)
        cuts = _CUT.findall(out)
        pieces = [self._edges(p) for p in parts]
        return "".join(p + c for p, c in zip(pieces, [*cuts, ""], strict=True))

    def _spans(self, text: str) -> list[tuple[int, int, str]]:
        """Every occurrence of every form, overlapping ones included, merged: a periodic
        value (``abab…``) has several alignments and each character of each must go."""
        found: list[tuple[int, int, str]] = []
        assert self._rx is not None
        if self._rx.search(text) is None:
            return found
        for form in self._forms:
            i = text.find(form)
            while i >= 0:
                found.append((i, i + len(form), self._name[form]))
                i = text.find(form, i + 1)
        found.sort()
        merged: list[tuple[int, int, str]] = []
        for start, end, name in found:
            if merged and start <= merged[-1][1]:
                s0, e0, n0 = merged[-1]
                merged[-1] = (s0, max(e0, end), n0)
            else:
                merged.append((start, end, name))
        return merged

    def _mask(self, full: str, lo: int, hi: int) -> str:
        """``full[lo:hi]`` with every character that belongs to an occurrence in ``full``
        replaced, one marker per run."""
        out: list[str] = []
        pos = lo
        for start, end, name in self._spans(full):
            if end <= lo or start >= hi:
                continue
            out.append(full[pos:max(start, lo)])
            out.append(f"[redacted:{name}]")
            pos = min(end, hi)
        out.append(full[pos:hi])
        return "".join(out)

    def redact_between(self, before: str, text: str, after: str) -> str:
        """``text`` redacted as part of ``before + text + after`` (its neighbours in the
        stream): a value cut by the chunk's edges is masked whatever the cut."""
        if self._rx is None:
            return text
        masked = self._mask(before + text + after, len(before), len(before) + len(text))
        return self.redact(masked, edges=True)

    def _edges(self, text: str) -> str:
        for form in self._forms:
            name = self._name[form]
            for k in range(min(len(form) - 1, len(text)), MIN_FRAGMENT - 1, -1):
                if text.endswith(form[:k]):
                    text = text[:-k] + f"[redacted:{name}]"
                    break
            for k in range(min(len(form) - 1, len(text)), MIN_FRAGMENT - 1, -1):
                if text.startswith(form[-k:]):
                    text = f"[redacted:{name}]" + text[k:]
                    break
        return text

    def redact_data(self, data: Any) -> Any:
        """A copy of JSON-like ``data`` with every string (keys too) redacted."""
        if self._rx is None:
            return data
        if isinstance(data, str):
            return self.redact(data)
        if isinstance(data, dict):
            return {self.redact(k, False) if isinstance(k, str) else k: self.redact_data(v)
                    for k, v in data.items()}
        if isinstance(data, (list, tuple)):
            return [self.redact_data(v) for v in data]
        return data
