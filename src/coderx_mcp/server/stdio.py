"""stdio transport without worker threads.

The MCP SDK's stdio server reads and writes through ``anyio.wrap_file``: three thread hops
per call (readline, write, flush), about 0.35 ms of a 2 ms round trip. Here the same SDK
server loop gets asyncio pipe streams instead. Like the SDK, fd 0 and fd 1 are taken away
from the rest of the process while serving (fd 0 reads the null device, fd 1 goes to
stderr), so a stray ``print`` or child process can never corrupt the protocol stream.
When stdin or stdout is not a pipe or socket (a terminal, a file), the SDK's own transport
is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import sys
from collections.abc import Iterator

import mcp_types as types
from fastmcp import FastMCP

_LINE_LIMIT = 256 << 20  # one JSON-RPC message; tools bound their own arguments lower


def _problem(line: str) -> tuple[bool, int | str | None, int, str] | None:
    """Why a line is not a JSON-RPC message the SDK can take, or None if it is.

    Returns (reply?, id, code, message). The SDK drops such lines without an answer,
    which leaves a client waiting forever for its request id; we answer instead.
    """
    try:
        types.jsonrpc_message_adapter.validate_json(line, by_name=False)
        if "null" not in line:
            return None
        # The SDK takes `"id": null` for a notification and stays silent; MCP forbids it.
        obj = json.loads(line)
        if not (isinstance(obj, dict) and "id" in obj and obj["id"] is None):
            return None
    except Exception:  # classified below
        pass
    if not line.strip():
        return (False, None, 0, "")
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return (True, None, types.PARSE_ERROR, "Parse error: the line is not valid JSON")
    rid = obj.get("id") if isinstance(obj, dict) else None
    if isinstance(obj, dict) and "id" not in obj:
        return (False, None, 0, "")  # a broken notification gets no answer (JSON-RPC 2.0)
    if not isinstance(rid, (int, str)) or isinstance(rid, bool):
        rid = None
    return (True, rid, types.INVALID_REQUEST,
            "Invalid Request: not a valid JSON-RPC 2.0 message (ids must not be null; "
            "strings must be valid Unicode; batches are not supported)")


class _Lines:
    """Async iterator of the text lines the SDK reads stdin as; bad lines are answered."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    def __aiter__(self) -> _Lines:
        return self

    async def __anext__(self) -> str:
        while True:
            try:
                raw = await self._reader.readline()
            except ValueError:  # longer than _LINE_LIMIT (asyncio drops what it buffered)
                self._answer(None, types.INVALID_REQUEST, "Invalid Request: message too large")
                continue
            if not raw:
                raise StopAsyncIteration
            line = raw.decode("utf-8", "replace")
            problem = _problem(line)
            if problem is None:
                return line
            answer, rid, code, message = problem
            if answer:
                self._answer(rid, code, message)

    def _answer(self, rid: int | str | None, code: int, message: str) -> None:
        reply = {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}
        self._writer.write(json.dumps(reply).encode() + b"\n")


class _Writer:
    """The ``write``/``flush`` pair the SDK writes stdout through."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    async def write(self, text: str) -> None:
        self._writer.write(text.encode("utf-8"))

    async def flush(self) -> None:
        await self._writer.drain()


def _streamable(fd: int) -> bool:
    # Pipes and sockets only: asyncio makes the fd non-blocking, which on a terminal
    # shared with the parent shell would leak into that shell.
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


@contextlib.contextmanager
def _claim_stdio() -> Iterator[tuple[int, int]]:
    """Move the protocol to private fds; point fd 0 at /dev/null and fd 1 at stderr."""
    sys.stdout.flush()
    proto_in, proto_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    try:
        yield os.dup(proto_in), os.dup(proto_out)
    finally:
        os.dup2(proto_in, 0)
        os.dup2(proto_out, 1)
        os.close(proto_in)
        os.close(proto_out)


async def run_stdio(mcp: FastMCP) -> None:
    """Serve ``mcp`` over this process's stdin/stdout until stdin closes."""
    from fastmcp.server.context import reset_transport, set_transport
    from mcp.server.stdio import stdio_server

    if not (_streamable(0) and _streamable(1)):
        await mcp.run_async("stdio", show_banner=False)
        return
    loop = asyncio.get_running_loop()
    token = set_transport("stdio")
    try:
        with _claim_stdio() as (proto_in, proto_out):
            reader = asyncio.StreamReader(limit=_LINE_LIMIT)
            read_transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(proto_in, "rb", 0))
            write_transport, write_protocol = await loop.connect_write_pipe(
                asyncio.streams.FlowControlMixin, os.fdopen(proto_out, "wb", 0))
            writer = asyncio.StreamWriter(write_transport, write_protocol, None, loop)
            try:
                async with mcp._lifespan_manager(), stdio_server(
                        stdin=_Lines(reader, writer), stdout=_Writer(writer)) as (rs, ws):  # type: ignore[arg-type]
                    await mcp._mcp_server.run(rs, ws,
                                              mcp._mcp_server.create_initialization_options())
            finally:
                read_transport.close()
                write_transport.close()
    finally:
        reset_transport(token)
