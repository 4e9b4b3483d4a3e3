"""Property tests (hypothesis) of redaction: no granted value survives any chunking,
encoding or split of the output (catalogue SE-05 and the #13 property list).

The secret's alphabet (upper case and digits) is disjoint from the filler's (lower case,
spaces, newlines) and from the marker ``[redacted:key]``, so any secret character in a
redacted page is a leak, not a coincidence.
"""

from __future__ import annotations

import base64
from itertools import pairwise
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coderx_mcp.redact import MIN_FRAGMENT, Redactor

_SECRET = st.text(st.sampled_from("ABCDEFGHJKLMNPQRSTUVWXYZ23456789"), min_size=8, max_size=40)
_FILLER = st.text(st.sampled_from("abcdefg \n"), max_size=80)
_SETTINGS = settings(max_examples=300, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])
_SECRET_CHARS = set("ABCDEFGHJKLMNPQRSTUVWXYZ23456789")


def _pages(text: str, cuts: list[int]) -> list[tuple[int, int]]:
    points = sorted({0, len(text), *(c % (len(text) + 1) for c in cuts)})
    return list(pairwise(points))


@_SETTINGS
@given(secret=_SECRET, parts=st.lists(_FILLER, min_size=1, max_size=4),
       cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_se05_paged_output_redacted_with_neighbours_leaks_no_secret_character(
        secret: str, parts: list[str], cuts: list[int]) -> None:
    # read_output's path (tools/shell.py:_unsplit): each page is redacted together with
    # `longest` characters of the stream on each side.
    redactor = Redactor([("key", secret)])
    stream = secret.join(parts)
    n = redactor.longest
    for lo, hi in _pages(stream, cuts):
        page = redactor.redact_between(stream[max(0, lo - n):lo], stream[lo:hi],
                                       stream[hi:hi + n])
        assert not _SECRET_CHARS & set(page), (stream[lo:hi], page)


@_SETTINGS
@given(secret=_SECRET, parts=st.lists(_FILLER, min_size=2, max_size=4),
       cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_se05_chunks_redacted_alone_show_no_whole_value_and_no_long_edge_fragment(
        secret: str, parts: list[str], cuts: list[int]) -> None:
    # Progress tails and head/tail excerpts are redacted alone (no neighbours): no chunk
    # shows the whole value, and a fragment of it at a chunk's edge is masked from
    # MIN_FRAGMENT characters on (shorter ones cannot be told from ordinary text).
    redactor = Redactor([("key", secret)])
    stream = secret.join(parts)
    for lo, hi in _pages(stream, cuts):
        chunk = redactor.redact(stream[lo:hi])
        assert secret not in chunk
        head = len(chunk) - len(chunk.lstrip("".join(_SECRET_CHARS)))
        tail = len(chunk) - len(chunk.rstrip("".join(_SECRET_CHARS)))
        if head < len(chunk):  # a chunk wholly inside the value is a middle piece
            assert head < MIN_FRAGMENT or not secret.endswith(chunk[:head]), chunk
            assert tail < MIN_FRAGMENT or not secret.startswith(chunk[len(chunk) - tail:]), chunk


@_SETTINGS
@given(secret=st.text(min_size=8, max_size=30).filter(lambda s: s.strip() == s),
       before=_FILLER, after=_FILLER)
def test_se05_encoded_forms_of_any_value_are_redacted(
        secret: str, before: str, after: str) -> None:
    # Any Unicode value, in the forms a command may print it: raw, base64 (both
    # alphabets, padded or not) and URL-encoded.
    redactor = Redactor([("key", secret)])
    raw = secret.encode()
    forms = {secret, quote(secret, safe=""), base64.b64encode(raw).decode(),
             base64.urlsafe_b64encode(raw).decode().rstrip("=")}
    for form in forms:
        out = redactor.redact(before + " " + form + " " + after)
        assert form not in out
        assert "[redacted:key]" in out


@_SETTINGS
@given(secret=_SECRET, data=st.recursive(
    _FILLER, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_FILLER, inner,
                                                                          max_size=3),
    max_leaves=8))
def test_se05_structured_results_keep_no_secret_in_keys_or_values(secret: str,
                                                                  data: object) -> None:
    redactor = Redactor([("key", secret)])
    planted = {"out": [data, f"x{secret}y"], f"k{secret}": data}
    assert secret not in repr(redactor.redact_data(planted))
