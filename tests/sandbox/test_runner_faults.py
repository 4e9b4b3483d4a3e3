"""Fault injection on the runner protocol (issue #13): truncated frames, garbage bytes, a
runner that dies mid-reply, a reply for an unknown id, a runner that never answers.

The host side never hangs or crashes, and the failure is one sentence. In-process cases
drive the real ``RunnerClient`` over a scripted stream (both framings); the process cases
run our misbehaving fake runner (fake_runner.py) behind the real ``LocalSandbox``.
"""

from __future__ import annotations

import asyncio
import struct
import time
from typing import Any

import pytest
from structlog.testing import capture_logs
from tests.sandbox.conftest import MakeFake, ScriptedRunner, echo_runner, scripted_client

from coderx_mcp.errors import SandboxGone

pytestmark = pytest.mark.timeout(60)


def _one_sentence(message: str) -> None:
    assert message and "\n" not in message and "Traceback" not in message, message


@pytest.mark.parametrize("framed", [False, True])
async def test_runner_that_never_answers_fails_the_session_after_its_grace(
        framed: bool) -> None:
    fake = ScriptedRunner(echo_runner, framed=framed)
    client = scripted_client(fake, reply_grace=0.5)
    await client.start(5)
    t0 = time.monotonic()
    others = [asyncio.create_task(client.call("hang")) for _ in range(3)]
    with pytest.raises(SandboxGone) as err:
        await client.call("hang", timeout=0.5)
    assert time.monotonic() - t0 < 10
    _one_sentence(str(err.value))
    assert "did not answer a 'hang' request within 0.5 s" in str(err.value)
    for task in others:  # every other waiting caller is released too
        with pytest.raises(SandboxGone):
            await asyncio.wait_for(task, 5)
    with pytest.raises(SandboxGone, match="did not answer"):
        await client.call("echo", value=1)  # and later calls fail at once


async def test_a_slow_reply_within_its_own_timeout_is_not_wedged() -> None:
    def late(req: dict[str, Any]) -> dict[str, Any] | None:
        if req["op"] == "slow":
            loop.call_later(0.8, fake.emit,
                            b'{"id": %d, "ok": true, "result": {"done": 1}}\n' % req["id"])
            return None
        return echo_runner(req)

    loop = asyncio.get_running_loop()
    fake = ScriptedRunner(late, framed=False)
    client = scripted_client(fake, reply_grace=0.3)
    await client.start(5)
    assert await client.call("slow", timeout=2) == {"done": 1}
    assert client.alive


@pytest.mark.parametrize("cut", [3, 8, 12])
async def test_truncated_docker_frame_ends_the_session_without_hanging(cut: int) -> None:
    fake = ScriptedRunner(echo_runner, framed=True)
    client = scripted_client(fake)
    await client.start(5)
    pending = asyncio.create_task(client.call("hang"))
    frame = bytes([1, 0, 0, 0]) + struct.pack(">I", 40) + b'{"id": 1, "ok": true}'
    fake.reader.feed_data(frame[:cut])
    fake.reader.feed_eof()
    with pytest.raises(SandboxGone) as err:
        await asyncio.wait_for(pending, 5)
    _one_sentence(str(err.value))
    assert not client.alive


@pytest.mark.parametrize("framed", [False, True])
async def test_garbage_between_replies_is_dropped_and_logged(framed: bool) -> None:
    fake = ScriptedRunner(echo_runner, framed=framed)
    client = scripted_client(fake)
    await client.start(5)
    with capture_logs() as logs:
        fake.emit(b"\x00\xff\xfe binary noise\n[1, 2]\n\"text\"\nnull\n{\"id\": \"7\"}\n"
                  b"{\"ok\": true}\n")
        assert await client.call("echo", value="still here") == {"echo": "still here"}
    events = [e["event"] for e in logs]
    assert events.count("runner sent a non-JSON line") == 1
    assert events.count("runner reply for an unknown request id ignored") == 5
    assert client.alive


async def test_runner_dying_mid_reply_fails_pending_calls_in_one_sentence(
        fake: MakeFake) -> None:
    sb = await fake()
    with pytest.raises(SandboxGone) as err:
        await asyncio.wait_for(sb.call("die_mid_reply"), 10)
    _one_sentence(str(err.value))
    with pytest.raises(SandboxGone):
        await asyncio.wait_for(sb.call("echo", value=1), 5)


async def test_runner_garbage_from_a_real_process_is_survived(fake: MakeFake) -> None:
    sb = await fake()
    with capture_logs() as logs:
        assert (await sb.call("garbage", value="ok"))["echo"] == "ok"
    assert sum(e["event"] == "runner reply for an unknown request id ignored" for e in logs) == 3
    assert (await sb.call("echo", value=2))["echo"] == 2
