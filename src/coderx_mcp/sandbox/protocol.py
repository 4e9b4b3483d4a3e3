"""Host side of the runner protocol: one stream, many concurrent requests.

Requests are JSON lines ``{"id", "op", ...}``; replies carry the same id and are matched to
the waiting caller, so any number of calls share the single stream. The stream is any
:class:`~coderx_mcp.sandbox.stream.RunnerStream` a backend hands out: the framing of each
transport (plain pipes, Docker's multiplexed exec frames, Kubernetes' WebSocket channels)
is its adapter's business, not this client's.

The stream comes from inside a sandbox, so it is read defensively: request ids are random
(a reply cannot be forged by guessing the next one), a reply to an id nobody waits for is
dropped, lines are capped (:func:`~coderx_mcp.sandbox.channel.reply_line_cap`; past the cap
the session fails with one clear error) and stderr is logged at a bounded rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from coderx_mcp.errors import RunnerProtocolError, SandboxGone, error_from_runner
from coderx_mcp.sandbox.channel import LineSplitter, RateLimit, StderrLog, reply_line_cap
from coderx_mcp.sandbox.stream import STDERR, RunnerStream

PROTOCOL_VERSION = 1
DEFAULT_LINE_CAP = reply_line_cap(16 << 20)
_ID_BITS = 62  # random, yet an exact integer in every JSON implementation's eyes
_ABANDONED_KEPT = 4096  # ids of given-up requests remembered, so their late replies are quiet
REPLY_GRACE = 120.0
"""Seconds a reply may take beyond the request's own ``timeout``/``wait``: past that the
runner is wedged (a healthy one answers a file op in a millisecond), and the session fails
instead of hanging its callers forever."""
_log = structlog.get_logger("coderx.runner")


class _Expired(Exception):
    """A request's reply did not come within its budget (see ``RunnerClient.call``)."""


class RunnerClient:
    """Talks to one runner over one byte stream.

    Args:
        stream: The runner's stdin and output (see ``stream.py``).
        name: A label for logs (the session id).
        max_line: The longest reply line accepted (see ``reply_line_cap``).
        log_rate: Runner stderr lines (and dropped replies) logged per second at most,
            after a burst of ten times as many.
        reply_grace: Seconds a reply may take beyond the request's own time limit.
    """

    def __init__(
        self,
        stream: RunnerStream,
        *,
        name: str,
        max_line: int = DEFAULT_LINE_CAP,
        log_rate: float = 5.0,
        reply_grace: float = REPLY_GRACE,
    ) -> None:
        self._streams = [stream]  # the first, then a link (add_link); requests use the last
        self._name = name
        self._grace = reply_grace
        self._max_line = max_line
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        # Requests given up on (cancelled): their replies may still come and are expected.
        self._abandoned: OrderedDict[int, None] = OrderedDict()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed_reason: str | None = None
        self._stderr = StderrLog(self._log_stderr, RateLimit(log_rate, int(10 * log_rate)),
                                 tail_lines=20)
        self._dropped = RateLimit(log_rate, int(10 * log_rate))
        self.violation: str | None = None
        """Why the channel was closed, when the runner broke the protocol (oversized line)."""
        self.on_lost: Callable[[], Awaitable[None]] | None = None
        self.hello: dict[str, Any] = {}

    @property
    def alive(self) -> bool:
        """Whether the stream is still open."""
        return self._closed_reason is None

    @property
    def stderr_tail(self) -> str:
        """The last lines the runner wrote to stderr (diagnostics for a crash)."""
        return self._stderr.tail

    async def start(self, timeout: float) -> dict[str, Any]:
        """Start reading replies and check the runner's protocol version.

        Args:
            timeout: Seconds to wait for the runner's hello.

        Returns:
            The runner's hello (pid, uid, root, python version).
        """
        self._tasks.append(asyncio.create_task(self._read_loop(self._streams[0]),
                                               name=f"runner-read-{self._name}"))
        try:
            self.hello = await asyncio.wait_for(self.call("hello"), timeout)
        except TimeoutError:
            await self.close()
            raise SandboxGone(
                f"the sandbox runner did not answer within {timeout:.0f} s"
                + (f": {self.stderr_tail}" if self.stderr_tail else "")
            ) from None
        if self.hello.get("protocol") != PROTOCOL_VERSION:
            await self.close()
            raise RunnerProtocolError(
                f"the sandbox runner speaks protocol {self.hello.get('protocol')}, this server "
                f"needs {PROTOCOL_VERSION}: rebuild the image with `coderx-mcp image build`"
            )
        return self.hello

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        """Send one request and wait for its reply.

        If the caller is cancelled, the runner is told to cancel the request too (a
        running command's process group is killed).

        Raises:
            SandboxGone: The runner or its container died.
            SandboxError: The runner reported an error (re-raised by its type).
        """
        if self._closed_reason is not None:
            raise SandboxGone(f"the sandbox is gone: {self._closed_reason}", self._closed_reason)
        rid = self._new_id()
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        line = json.dumps({"id": rid, "op": op, **args}, separators=(",", ":")).encode() + b"\n"
        budget = self._grace + sum(float(args.get(k) or 0) for k in ("timeout", "wait"))
        # A timer rather than asyncio.wait: the reply wakes this call directly (each extra
        # event-loop turn is a measurable part of a millisecond round trip).
        timer = fut.get_loop().call_later(budget, self._expire, fut, op, budget)
        try:
            self._stream.write(line)
            if len(line) > 65536:
                await self._stream.drain()
            reply = await fut
        except _Expired:
            await self._wedged(op, budget)
            reason = self._closed_reason or "no reply"
            raise SandboxGone(f"the sandbox is gone: {reason}", reason) from None
        except asyncio.CancelledError:
            if self.alive and (fut.cancelled() or not fut.done()):
                cancel_id = self._new_id()
                self._abandon(rid)
                self._abandon(cancel_id)
                with contextlib.suppress(Exception):
                    self._stream.write(
                        json.dumps({"id": cancel_id, "op": "cancel", "target": rid}).encode()
                        + b"\n"
                    )
            raise
        except (ConnectionError, RuntimeError) as exc:
            self._lost(f"write failed: {exc}")
            raise SandboxGone(f"the sandbox is gone: {self._closed_reason}") from None
        finally:
            timer.cancel()
            self._pending.pop(rid, None)
        if reply.get("ok"):
            result: dict[str, Any] = reply.get("result") or {}
            return result
        raise error_from_runner(reply.get("error") or {})

    @staticmethod
    def _expire(fut: asyncio.Future[dict[str, Any]], op: str, budget: float) -> None:
        if not fut.done():
            fut.set_exception(_Expired(op, budget))

    async def _wedged(self, op: str, budget: float) -> None:
        """No reply in time: the runner is stuck; fail every caller and hang up (the runner
        exits on end of input; the session's next call starts a fresh sandbox)."""
        reason = f"the sandbox runner did not answer a {op!r} request within {budget:g} s"
        _log.error("runner wedged", session_id=self._name, op=op, seconds=round(budget, 1))
        self.violation = reason
        self._lost(reason)
        self._hang_up()
        if self.on_lost is not None:
            await self.on_lost()

    def _new_id(self) -> int:
        """A random request id, unique among the requests that may still get a reply."""
        while True:
            rid = secrets.randbits(_ID_BITS)
            if rid not in self._pending and rid not in self._abandoned:
                return rid

    def _abandon(self, rid: int) -> None:
        self._abandoned[rid] = None
        while len(self._abandoned) > _ABANDONED_KEPT:
            self._abandoned.popitem(last=False)

    def add_link(self, stream: RunnerStream) -> None:
        """Send every later request on ``stream`` (a direct link to the runner, see
        ``link.py``) and read its replies; the first stream stays open and read: its stderr
        is still logged, and its end still means the runner ended."""
        self._streams.append(stream)
        self._tasks.append(asyncio.create_task(self._read_loop(stream),
                                               name=f"runner-link-{self._name}"))

    @property
    def _stream(self) -> RunnerStream:
        """The stream requests are written to: the link once there is one."""
        return self._streams[-1]

    @property
    def linked(self) -> bool:
        """Whether requests travel on a direct link rather than the first stream."""
        return len(self._streams) > 1

    def _hang_up(self) -> None:
        for stream in self._streams:
            with contextlib.suppress(Exception):
                stream.hang_up()

    async def close(self) -> None:
        """Close the streams; the runner exits on end of input."""
        self._lost("closed by the server")
        self.flush_stderr()
        for stream in self._streams:
            stream.close()
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def _lost(self, reason: str) -> None:
        if self._closed_reason is not None:
            return
        self._closed_reason = reason
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(SandboxGone(f"the sandbox is gone: {reason}", reason))
        self._pending.clear()

    async def _read_loop(self, stream: RunnerStream) -> None:
        reason = "the runner closed its output (container stopped or runner exited)"
        lines = LineSplitter(self._max_line)
        try:
            while True:
                kind, chunk = await stream.read()
                if not chunk:
                    break
                if kind == STDERR:
                    self._stderr.feed(chunk)
                    continue
                for line in lines.feed(chunk):
                    self._dispatch(line)
        except asyncio.CancelledError:
            return
        except RunnerProtocolError as exc:
            # Read no more and hang up: the runner sees end of input and exits.
            reason = self.violation = str(exc)
            _log.error("runner channel closed", session_id=self._name, reason=reason)
            self._hang_up()
        except (ConnectionError, OSError) as exc:
            reason = f"connection to the runner failed: {exc}"
        was_alive = self.alive
        self._lost(reason)
        if was_alive and self.on_lost is not None:
            await self.on_lost()

    def _log_stderr(self, text: str | None, suppressed: int) -> None:
        if text is None:
            _log.warning("runner stderr lines suppressed (rate limit)", session_id=self._name,
                         suppressed=suppressed)
        else:
            _log.warning("runner stderr", session_id=self._name, text=text)

    def flush_stderr(self) -> None:
        """Log how many stderr lines the rate limit suppressed, if any are unreported."""
        self._stderr.flush()

    def feed_stderr(self, chunk: bytes) -> None:
        """Record runner stderr that arrives on a separate pipe (local backend)."""
        self._stderr.feed(chunk)

    def _dispatch(self, line: bytes) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            self._drop("runner sent a non-JSON line", line=line[:200])
            return
        rid = msg.get("id") if isinstance(msg, dict) else None
        fut = self._pending.get(rid) if isinstance(rid, int) else None
        if fut is not None and not fut.done():
            fut.set_result(msg)
        elif isinstance(rid, int) and rid in self._abandoned:
            del self._abandoned[rid]  # the late reply of a cancelled request
        else:
            self._drop("runner reply for an unknown request id ignored", id=rid)

    def _drop(self, event: str, **fields: Any) -> None:
        """Log a dropped line at a bounded rate (a flood of them must not flood the log)."""
        if self._dropped.allow():
            suppressed = self._dropped.take_suppressed()
            _log.warning(event, session_id=self._name, **fields,
                         **({"suppressed_before": suppressed} if suppressed else {}))
