"""Host side of the runner protocol: one stream, many concurrent requests.

Requests are JSON lines ``{"id", "op", ...}``; replies carry the same id and are matched to
the waiting caller, so any number of calls share the single stream. The stream is either
plain pipes (local backend) or a Docker exec socket whose output is multiplexed in 8-byte
framed chunks (stdout = 1, stderr = 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from coderx_mcp.errors import RunnerProtocolError, SandboxGone, error_from_runner

PROTOCOL_VERSION = 1
_log = structlog.get_logger("coderx.runner")


class RunnerClient:
    """Talks to one runner over an asyncio stream pair.

    Args:
        reader: The stream the runner's output arrives on.
        writer: The stream that reaches the runner's stdin.
        docker_framed: True when ``reader`` carries Docker's multiplexed exec frames.
        name: A label for logs (the session id).
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        docker_framed: bool,
        name: str,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._framed = docker_framed
        self._name = name
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed_reason: str | None = None
        self._stderr_tail: list[str] = []
        self.on_lost: Callable[[], Awaitable[None]] | None = None
        self.hello: dict[str, Any] = {}

    @property
    def alive(self) -> bool:
        """Whether the stream is still open."""
        return self._closed_reason is None

    @property
    def stderr_tail(self) -> str:
        """The last lines the runner wrote to stderr (diagnostics for a crash)."""
        return "\n".join(self._stderr_tail[-20:])

    async def start(self, timeout: float) -> dict[str, Any]:
        """Start reading replies and check the runner's protocol version.

        Args:
            timeout: Seconds to wait for the runner's hello.

        Returns:
            The runner's hello (pid, uid, root, python version).
        """
        self._task = asyncio.create_task(self._read_loop(), name=f"runner-read-{self._name}")
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
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        line = json.dumps({"id": rid, "op": op, **args}, separators=(",", ":")).encode() + b"\n"
        try:
            self._writer.write(line)
            if len(line) > 65536:
                await self._writer.drain()
            reply = await fut
        except asyncio.CancelledError:
            if self.alive and (fut.cancelled() or not fut.done()):
                with contextlib.suppress(Exception):
                    self._writer.write(
                        json.dumps({"id": next(self._ids), "op": "cancel", "target": rid}).encode()
                        + b"\n"
                    )
            raise
        except (ConnectionError, RuntimeError) as exc:
            self._lost(f"write failed: {exc}")
            raise SandboxGone(f"the sandbox is gone: {self._closed_reason}") from None
        finally:
            self._pending.pop(rid, None)
        if reply.get("ok"):
            result: dict[str, Any] = reply.get("result") or {}
            return result
        raise error_from_runner(reply.get("error") or {})

    async def close(self) -> None:
        """Close the stream; the runner exits on end of input."""
        self._lost("closed by the server")
        with contextlib.suppress(Exception):
            self._writer.close()
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def _lost(self, reason: str) -> None:
        if self._closed_reason is not None:
            return
        self._closed_reason = reason
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(SandboxGone(f"the sandbox is gone: {reason}", reason))
        self._pending.clear()

    async def _read_loop(self) -> None:
        buf = bytearray()
        reason = "the runner closed its output (container stopped or runner exited)"
        try:
            while True:
                if self._framed:
                    header = await self._reader.readexactly(8)
                    kind, size = header[0], struct.unpack(">I", header[4:])[0]
                    chunk = await self._reader.readexactly(size)
                    if kind == 2:
                        self._on_stderr(chunk)
                        continue
                else:
                    chunk = await self._reader.read(1 << 16)
                    if not chunk:
                        break
                buf += chunk
                while (nl := buf.find(b"\n")) >= 0:
                    self._dispatch(bytes(buf[:nl]))
                    del buf[: nl + 1]
        except asyncio.IncompleteReadError:
            pass
        except asyncio.CancelledError:
            return
        except (ConnectionError, OSError) as exc:
            reason = f"connection to the runner failed: {exc}"
        was_alive = self.alive
        self._lost(reason)
        if was_alive and self.on_lost is not None:
            await self.on_lost()

    def _on_stderr(self, chunk: bytes) -> None:
        text = chunk.decode("utf-8", "replace").rstrip()
        if text:
            self._stderr_tail.extend(text.splitlines())
            del self._stderr_tail[:-50]
            _log.warning("runner stderr", session_id=self._name, text=text[:2000])

    def feed_stderr(self, chunk: bytes) -> None:
        """Record runner stderr that arrives on a separate pipe (local backend)."""
        self._on_stderr(chunk)

    def _dispatch(self, line: bytes) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            _log.warning("runner sent a non-JSON line", session_id=self._name, line=line[:200])
            return
        rid = msg.get("id") if isinstance(msg, dict) else None
        fut = self._pending.get(rid) if isinstance(rid, int) else None
        if fut is not None and not fut.done():
            fut.set_result(msg)
