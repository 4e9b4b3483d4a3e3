"""The byte stream between the server and one runner, and its plainest adapter.

A backend starts the runner and hands out a :class:`RunnerStream`; ``RunnerClient``
(``protocol.py``) speaks JSON lines over any of them. Each transport's framing is one small
adapter: plain pipes (:class:`PipeStream`, the local backend), Docker's multiplexed exec
frames (``docker_stream.py``), Kubernetes' channel-prefixed WebSocket messages
(``kube_stream.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

STDOUT = 1
STDERR = 2
READ_CHUNK = 1 << 16


class RunnerStream(Protocol):
    """The runner's stdin one way, its output back; one instance per runner process."""

    @property
    def dropped(self) -> bool:
        """True once the transport ended while the runner may still run (a timed-out or
        broken connection, not the runner's exit): a new stream may be attached then."""

    async def read(self) -> tuple[int, bytes]:
        """The next chunk of output and its channel (``STDOUT`` or ``STDERR``).

        Returns ``(STDOUT, b"")`` at the end of the stream.

        Raises:
            RunnerProtocolError: A frame is larger than any legitimate reply line.
            OSError: The connection failed.
        """

    def write(self, data: bytes) -> None:
        """Queue bytes for the runner's stdin."""

    async def drain(self) -> None:
        """Wait until the queued bytes are handed to the transport."""

    def hang_up(self) -> None:
        """End the runner's input and the connection itself (after a protocol violation)."""

    def close(self) -> None:
        """Close the stream; the runner sees end of input."""


class PipeStream:
    """Plain pipes: ``reader`` is the runner's stdout (its stderr is read elsewhere).

    Args:
        reader: The runner's stdout.
        writer: The runner's stdin.
    """

    dropped = False

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self) -> tuple[int, bytes]:
        return STDOUT, await self._reader.read(READ_CHUNK)

    def write(self, data: bytes) -> None:
        self._writer.write(data)

    async def drain(self) -> None:
        await self._writer.drain()

    def hang_up(self) -> None:
        # write_eof shuts the connection itself down: Docker's socket is shared with the
        # exec's HTTP response, so closing our descriptor alone would not end its input.
        with contextlib.suppress(Exception):
            self._writer.write_eof()
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()
