"""Helpers shared by the sandbox tests."""

import asyncio
import json
import struct
from collections.abc import Callable
from typing import Any

from coderx_mcp.sandbox.protocol import PROTOCOL_VERSION, RunnerClient
from coderx_mcp.sessions import Session


async def sh(session: Session, command: str, timeout: float = 30, **kw: Any) -> dict[str, Any]:
    """Run one ``exec`` in the session."""
    return await session.call("exec", command=command, timeout=timeout, **kw)


def out(result: dict[str, Any]) -> str:
    """The stdout text of an ``exec`` result."""
    return str(result["stdout"]["text"])


class ScriptedRunner:
    """Our fake of the runner's end of the stream: answers each request with ``reply(req)``.

    It is the writer the client writes to and feeds the reader the client reads from,
    optionally in Docker's multiplexed framing, cut into small frames with stderr between.
    """

    def __init__(self, reply: Callable[[dict[str, Any]], dict[str, Any] | None],
                 framed: bool) -> None:
        self.reader = asyncio.StreamReader()
        self.reply = reply
        self.framed = framed
        self.requests: list[dict[str, Any]] = []

    def write(self, data: bytes) -> None:
        for line in data.splitlines():
            req = json.loads(line)
            self.requests.append(req)
            answer = self.reply(req)
            if answer is not None:
                self.emit(json.dumps(answer).encode() + b"\n")

    def emit(self, data: bytes) -> None:
        if not self.framed:
            self.reader.feed_data(data)
            return
        for i in range(0, len(data), 7):  # tiny frames: lines span many of them
            piece = data[i:i + 7]
            self.reader.feed_data(bytes([1, 0, 0, 0]) + struct.pack(">I", len(piece)) + piece)
            note = b"runner says hi"
            self.reader.feed_data(bytes([2, 0, 0, 0]) + struct.pack(">I", len(note)) + note)

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        self.reader.feed_eof()


def echo_runner(req: dict[str, Any]) -> dict[str, Any] | None:
    """Answers hello, fails ``fail``, never answers ``hang``, echoes anything else."""
    if req["op"] == "hello":
        return {"id": req["id"], "ok": True, "result": {"protocol": PROTOCOL_VERSION}}
    if req["op"] == "fail":
        return {"id": req["id"], "ok": False, "error": {"type": "NotFound", "message": "gone"}}
    if req["op"] == "hang":
        return None
    return {"id": req["id"], "ok": True, "result": {"echo": req.get("value")}}


def scripted_client(fake: ScriptedRunner, **kw: Any) -> RunnerClient:
    """A client on ``fake``'s stream (``kw``: the client's own options, e.g. ``max_line``)."""
    return RunnerClient(fake.reader, fake, docker_framed=fake.framed,  # type: ignore[arg-type]
                        name="scripted", **kw)
