"""Docker's multiplexed exec stream as a :class:`~coderx_mcp.sandbox.stream.RunnerStream`.

Without a TTY, ``docker exec`` output arrives in frames: an 8-byte header (stream kind
1 = stdout, 2 = stderr; three zero bytes; the payload size, big-endian) then the payload.
"""

from __future__ import annotations

import asyncio
import struct

from coderx_mcp.sandbox.channel import oversized_line_error
from coderx_mcp.sandbox.stream import STDERR, STDOUT, PipeStream


class DockerExecStream(PipeStream):
    """Demultiplexes Docker's exec frames; writing is plain.

    Args:
        reader: The exec socket's read side.
        writer: The exec socket's write side.
        max_frame: The largest frame accepted (the reply line cap): Docker's frames are
            small, so a larger header is refused before anything is buffered.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 max_frame: int) -> None:
        super().__init__(reader, writer)
        self._max_frame = max_frame

    async def read(self) -> tuple[int, bytes]:
        try:
            header = await self._reader.readexactly(8)
            size = struct.unpack(">I", header[4:])[0]
            if size > self._max_frame:
                raise oversized_line_error(self._max_frame)
            chunk = await self._reader.readexactly(size)
        except asyncio.IncompleteReadError:
            return STDOUT, b""
        return (STDERR if header[0] == 2 else STDOUT), chunk
