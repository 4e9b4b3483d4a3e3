"""Bounds on what a runner's stream may cost the server: line size, log volume.

The runner's stream is the one thing from inside a sandbox that the server reads. The runner
keeps it private (non-dumpable, close-on-exec descriptors), but should bytes arrive on it
anyway they must cost bounded memory and CPU: replies are split into lines incrementally
under a size cap, and the runner's stderr is logged at a bounded rate with a bounded tail.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from coderx_mcp.errors import RunnerProtocolError

# What a reply may hold beyond a whole-file read: a command's two output excerpts
# (each <= output_cap <= 1 MiB), an output page (<= 1 MiB), a listing (<= 8000 entries),
# grep_output's matches (200 x 2000 characters), each up to 6x when JSON-escaped.
REPLY_SLACK = 16 << 20
# Each control character of a file read as UTF-8 text becomes a 6-byte ``\u00XX`` escape.
JSON_ESCAPE_FACTOR = 6
_LOGGED_CHARS = 2000


def reply_line_cap(max_file_bytes: int) -> int:
    """The longest line a legitimate runner sends, for a server reading files up to
    ``max_file_bytes``.

    The biggest reply is a whole-file read: the file travels as JSON text, at worst every
    byte a control character escaped to six bytes (base64, for other bytes, is only 4/3).
    Everything else a reply carries fits in ``REPLY_SLACK``. With the default 16 MiB file
    limit the cap is 112 MiB: far above any real reply, yet a bound per session.
    """
    return JSON_ESCAPE_FACTOR * max_file_bytes + REPLY_SLACK


class LineSplitter:
    """Splits a byte stream into lines no longer than ``cap``, scanning each byte once.

    Only the newly arrived chunk is searched for newlines (a partial line is never
    rescanned), so a long line costs linear time, and the partial line is refused as soon
    as it would pass the cap, so memory stays at most ``cap`` plus one chunk.

    Args:
        cap: The longest line accepted, in bytes, without its newline.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._partial = bytearray()

    def feed(self, chunk: bytes) -> list[bytes]:
        """The lines ``chunk`` completes, without their newlines.

        Raises:
            RunnerProtocolError: A line is longer than the cap.
        """
        lines: list[bytes] = []
        start = 0
        view = memoryview(chunk)
        while (nl := chunk.find(b"\n", start)) >= 0:
            if len(self._partial) + nl - start > self.cap:
                self._refuse()
            if self._partial:
                self._partial += view[start:nl]
                lines.append(bytes(self._partial))
                self._partial.clear()
            else:
                lines.append(chunk[start:nl])
            start = nl + 1
        if len(self._partial) + len(chunk) - start > self.cap:
            self._refuse()
        if start < len(chunk):
            self._partial += view[start:]
        return lines

    @property
    def pending_bytes(self) -> int:
        """Bytes of the line not yet complete (what the splitter holds in memory)."""
        return len(self._partial)

    def _refuse(self) -> None:
        self._partial = bytearray()  # free it now, not when the client is collected
        raise self.oversized()

    def oversized(self) -> RunnerProtocolError:
        """The error for a line longer than the cap."""
        return oversized_line_error(self.cap)


def oversized_line_error(cap: int) -> RunnerProtocolError:
    """The error for a line (or a frame that would hold one) longer than ``cap`` bytes."""
    return RunnerProtocolError(
        f"the runner sent an oversized line (over {cap} bytes without a newline), "
        "which no legitimate reply needs, so its channel was closed")


class RateLimit:
    """A token bucket: ``burst`` events at once, then ``rate`` per second.

    Args:
        rate: Events per second allowed on average.
        burst: Events allowed at once after a quiet period.
        clock: Monotonic seconds (injected so tests can step time).
    """

    def __init__(self, rate: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self.suppressed = 0

    def available(self) -> int:
        """Events that may happen now (whole tokens after the refill)."""
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now
        return int(self._tokens)

    def allow(self) -> bool:
        """Whether one more event may be logged now; refusals are counted in
        ``suppressed``."""
        if self.available() >= 1:
            self._tokens -= 1.0
            return True
        self.suppressed += 1
        return False

    def take_suppressed(self) -> int:
        """How many events were refused since the last call (and reset the count)."""
        n, self.suppressed = self.suppressed, 0
        return n


class StderrLog:
    """Logs a runner's stderr lines at a bounded rate and keeps a bounded tail.

    A crashing runner's traceback (tens of lines) is logged whole; a flood is logged at
    ``rate`` lines per second, with a line saying how many were suppressed. The tail keeps
    the last ``tail_lines`` lines (each at most 2000 characters) for crash reports.

    Args:
        emit: Logs one event: ``emit(text, suppressed)``; ``text`` is None for a summary of
            ``suppressed`` lines alone.
        limit: The rate limit of logged lines.
        tail_lines: Lines kept for :attr:`tail`.
    """

    def __init__(self, emit: Callable[[str | None, int], None], limit: RateLimit,
                 tail_lines: int = 50) -> None:
        self._emit = emit
        self._limit = limit
        self._tail: deque[str] = deque(maxlen=tail_lines)

    @property
    def tail(self) -> str:
        """The last lines the runner wrote to stderr."""
        return "\n".join(self._tail)

    def feed(self, chunk: bytes) -> None:
        """Record one chunk of stderr (any size; a line split across chunks counts twice)."""
        # Only as many lines are split off as may be logged, and only the last ones are
        # kept for the tail: a flood is counted, never split into millions of objects.
        keep = self._tail.maxlen or 0
        for raw in chunk.rsplit(b"\n", keep)[-keep:] if keep else ():
            if raw.strip():
                self._tail.append(_text(raw))
        budget = self._limit.available()
        parts = chunk.split(b"\n", budget)
        for raw in parts[:budget]:
            if raw.strip() and self._limit.allow():
                suppressed = self._limit.take_suppressed()
                if suppressed:
                    self._emit(None, suppressed)
                self._emit(_text(raw), 0)
        if len(parts) > budget and parts[budget].strip():
            rest = parts[budget]
            self._limit.suppressed += rest.count(b"\n") + int(not rest.endswith(b"\n"))

    def flush(self) -> None:
        """Log how many lines were suppressed since the last logged one, if any."""
        suppressed = self._limit.take_suppressed()
        if suppressed:
            self._emit(None, suppressed)


def _text(raw: bytes) -> str:
    return raw[: _LOGGED_CHARS * 4].decode("utf-8", "replace").rstrip()[:_LOGGED_CHARS]
