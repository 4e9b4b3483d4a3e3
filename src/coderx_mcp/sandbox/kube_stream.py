"""A Kubernetes pod-exec WebSocket as a :class:`~coderx_mcp.sandbox.stream.RunnerStream`.

The official client's ``stream()`` gives a blocking ``WSClient`` speaking the channel
protocol: every message starts with a channel byte (0 stdin, 1 stdout, 2 stderr, 3 the
exec's final status). ``v5.channel.k8s.io`` adds message 255 + channel, which closes one
direction: the client half-closes stdin with it, so the runner sees end of input while its
last output and exit status still arrive. Under ``v4.channel.k8s.io`` only closing the
whole connection ends the runner's input.

One reader thread blocks on the socket and hands chunks to the event loop through a
bounded queue (back-pressure, as a socket's buffer gives); one writer thread sends what
:meth:`write` queued, in order, so the event loop never blocks on the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import threading
from typing import Any

from coderx_mcp.sandbox.channel import oversized_line_error
from coderx_mcp.sandbox.stream import STDERR, STDOUT

V5 = "v5.channel.k8s.io"
STDIN_CHANNEL = 0
STATUS_CHANNEL = 3
CLOSE_CHANNEL = 255
_QUEUED = 64  # chunks read ahead of the event loop at most
_OPCODE_CLOSE = 0x8
_OPCODE_DATA = (0x1, 0x2)  # text, binary
_CLOSE = object()  # writer sentinel: end stdin and the connection after what is queued
_HALF_CLOSE = object()  # writer sentinel (v5): end stdin, keep reading


class KubeExecStream:
    """The runner's stdin/stdout/stderr over one pod-exec WebSocket.

    Args:
        ws: The client's ``WSClient`` (``stream(..., _preload_content=False, binary=True)``).
        max_frame: The largest message accepted (the reply line cap).
        loop: The event loop :meth:`read` is awaited on.
    """

    def __init__(self, ws: Any, max_frame: int, loop: asyncio.AbstractEventLoop) -> None:
        self._ws = ws
        self._max_frame = max_frame
        self._loop = loop
        self.v5 = ws.subprotocol == V5
        """Whether stdin can be half-closed (else only the whole connection ends it)."""
        self.status: dict[str, Any] | None = None
        """The exec's final status (channel 3): the runner ended, not just the connection."""
        self._chunks: asyncio.Queue[tuple[int, bytes] | BaseException] = asyncio.Queue(_QUEUED)
        self._out: queue.Queue[bytes | object] = queue.Queue()
        self._closing = False
        self._writer_gone = False
        self._lock = threading.Lock()
        self._ended = threading.Event()
        threading.Thread(target=self._pump_in, name="kube-exec-read", daemon=True).start()
        threading.Thread(target=self._pump_out, name="kube-exec-write", daemon=True).start()

    @property
    def dropped(self) -> bool:
        return self._ended.is_set() and self.status is None and not self._closing

    async def read(self) -> tuple[int, bytes]:
        item = await self._chunks.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def write(self, data: bytes) -> None:
        # Never raises: a broken connection shows as the end of the output instead.
        self._put(data)

    def _put(self, item: bytes | object) -> None:
        with self._lock:  # nothing is queued once the writer has gone (drain would hang)
            if not self._writer_gone:
                self._out.put(item)

    async def drain(self) -> None:
        await asyncio.to_thread(self._out.join)

    def hang_up(self) -> None:
        self.close()

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._put(_CLOSE)

    async def close_input(self, timeout: float) -> bool:
        """Half-close stdin (v5) and wait for the runner's exit status.

        Returns:
            Whether the runner ended within ``timeout`` (False under v4: nothing to wait for).
        """
        if not self.v5:
            return False
        self._put(_HALF_CLOSE)
        ended = await asyncio.to_thread(self._ended.wait, timeout)
        return ended and self.status is not None

    def _deliver(self, item: tuple[int, bytes] | BaseException) -> None:
        """Hand one item to the event loop, waiting while the queue is full."""
        try:
            fut = asyncio.run_coroutine_threadsafe(self._chunks.put(item), self._loop)
        except RuntimeError:  # the loop is closed: nobody reads anymore
            return
        while True:
            try:
                fut.result(0.5)
                return
            except TimeoutError:
                if self._closing:  # closed while the queue is full: nobody will read it
                    fut.cancel()
                    return

    def _pump_in(self) -> None:
        end: tuple[int, bytes] | BaseException = (STDOUT, b"")
        try:
            while True:
                opcode, frame = self._ws.sock.recv_data_frame(True)
                if opcode == _OPCODE_CLOSE:
                    break
                data = bytes(frame.data) if opcode in _OPCODE_DATA else b""
                if len(data) < 2:
                    continue
                channel, payload = data[0], data[1:]
                if channel == STATUS_CHANNEL:
                    with contextlib.suppress(ValueError):
                        self.status = json.loads(payload)
                elif channel in (STDOUT, STDERR):
                    if len(payload) > self._max_frame:
                        end = oversized_line_error(self._max_frame)
                        break
                    self._deliver((STDERR if channel == STDERR else STDOUT, payload))
                # CLOSE_CHANNEL from the server (v5: it closed stdout/stderr): the status follows.
        except Exception as exc:  # any transport failure ends the stream
            if not self._closing and self.status is None:
                end = ConnectionError(f"the pod exec stream broke: {exc}")
        finally:
            self._ended.set()
            self._deliver(end)
            self._put(_CLOSE)  # wake the writer so it ends too

    def _pump_out(self) -> None:
        ws = self._ws
        while True:
            item = self._out.get()
            try:
                if item is _CLOSE:
                    self._end_writer()
                    if self.v5 and not self._ended.is_set():
                        ws.sock.send(bytes([CLOSE_CHANNEL, STDIN_CHANNEL]), opcode=0x2)
                    ws.sock.abort()  # wakes the reader thread; the runner's input ends
                    ws.sock.shutdown()
                    return
                if self._ended.is_set():
                    continue
                if item is _HALF_CLOSE:
                    ws.sock.send(bytes([CLOSE_CHANNEL, STDIN_CHANNEL]), opcode=0x2)
                elif isinstance(item, bytes):
                    ws.sock.send(bytes([STDIN_CHANNEL]) + item, opcode=0x2)
            except Exception:  # the reader reports the broken connection
                pass
            finally:
                self._out.task_done()

    def _end_writer(self) -> None:
        """Refuse further items and mark the queued ones done (nobody will send them)."""
        with self._lock:
            self._writer_gone = True
            while True:
                try:
                    self._out.get_nowait()
                except queue.Empty:
                    return
                self._out.task_done()
