"""The runner protocol without Docker: the real runner as a local subprocess, and the host
client against a scripted stream. Fast; runs everywhere."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.sandbox.conftest import ScriptedRunner, echo_runner, scripted_client

from coderx_mcp.errors import (
    BadRequest,
    PathNotFound,
    RunnerProtocolError,
    SandboxGone,
    StaleFile,
    UnknownProcess,
)
from coderx_mcp.sandbox.base import SandboxSpec
from coderx_mcp.sandbox.local import LocalSandbox
from coderx_mcp.sandbox.protocol import PROTOCOL_VERSION
from coderx_mcp.sessions import SessionManager


@pytest.fixture
async def sandbox(workspace: Path) -> AsyncIterator[LocalSandbox]:
    """A started local runner (no Session around it: no restart logic)."""
    sb = LocalSandbox(SandboxSpec(workspace=workspace), "s-runner-test", start_timeout=30)
    await sb.start()
    try:
        yield sb
    finally:
        await sb.close()


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != b"Z"


async def _wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


# -- the real runner, local backend -------------------------------------------------------


async def test_hello_reports_protocol_and_root(sandbox: LocalSandbox, workspace: Path) -> None:
    hello = await sandbox.call("hello")
    assert hello["protocol"] == PROTOCOL_VERSION
    assert hello["root"] == str(workspace)  # tmp_path is already resolved
    assert _alive(hello["pid"])


async def test_ten_parallel_execs_are_multiplexed(sandbox: LocalSandbox) -> None:
    # Later requests finish first: replies come back out of order and must still match.
    t0 = time.monotonic()
    results = await asyncio.gather(*(
        sandbox.call("exec", command=f"sleep {(10 - i) * 0.05:.2f}; echo reply-{i}", timeout=30)
        for i in range(10)))
    elapsed = time.monotonic() - t0
    assert [r["stdout"]["text"] for r in results] == [f"reply-{i}\n" for i in range(10)]
    assert all(r["exit_code"] == 0 for r in results)
    assert elapsed < 2.0, f"10 execs of ≤0.5 s took {elapsed:.2f} s: not run concurrently"


async def test_ce17_cancel_kills_process_group(sandbox: LocalSandbox, workspace: Path) -> None:
    task = asyncio.create_task(sandbox.call(
        "exec", command="echo $$ > leader.pid; sleep 300 & echo $! > child.pid; wait",
        timeout=120))
    leader_file, child_file = workspace / "leader.pid", workspace / "child.pid"
    assert await _wait_for(lambda: child_file.exists() and child_file.read_text().strip() != "",
                           10)
    leader, child = int(leader_file.read_text()), int(child_file.read_text())
    assert _alive(leader) and _alive(child)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _wait_for(lambda: not _alive(leader) and not _alive(child), 2.0), \
        "cancelled command's process group survived"
    procs = await sandbox.call("procs", all=True)
    assert [p["running"] for p in procs["processes"]] == [False]
    ok = await sandbox.call("exec", command="echo still usable", timeout=10)
    assert ok["stdout"]["text"] == "still usable\n"


async def test_unknown_op_is_bad_request(sandbox: LocalSandbox) -> None:
    with pytest.raises(BadRequest, match="unknown op"):
        await sandbox.call("frobnicate")
    with pytest.raises(BadRequest):
        await sandbox.call("exec")  # no command
    with pytest.raises(BadRequest):
        await sandbox.call("read", path="")
    assert (await sandbox.call("hello"))["protocol"] == PROTOCOL_VERSION


async def test_runner_errors_keep_their_type(sandbox: LocalSandbox) -> None:
    with pytest.raises(PathNotFound):
        await sandbox.call("read", path="missing.txt")
    with pytest.raises(UnknownProcess):
        await sandbox.call("output", output_id="deadbeef")
    await sandbox.call("write", path="f.txt", data="YQ==")  # "a"
    with pytest.raises(StaleFile) as info:
        await sandbox.call("write", path="f.txt", data="Yg==", expect_sha256="0" * 64)
    assert info.value.current == \
        "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"


async def test_runner_death_fails_pending_and_next_calls(sandbox: LocalSandbox,
                                                         workspace: Path) -> None:
    pid = (await sandbox.call("hello"))["pid"]
    pending = asyncio.create_task(
        sandbox.call("exec", command="echo $$ > cmd.pid; sleep 30", timeout=60))
    pid_file = workspace / "cmd.pid"
    assert await _wait_for(lambda: pid_file.exists() and pid_file.read_text().strip() != "", 10)
    command_pid = int(pid_file.read_text())
    try:
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(SandboxGone):
            await asyncio.wait_for(pending, 5)
        assert time.monotonic() - t0 < 2.0
        assert not sandbox.alive
        t0 = time.monotonic()
        with pytest.raises(SandboxGone, match="stopped"):
            await sandbox.call("hello")
        assert time.monotonic() - t0 < 0.5
    finally:  # a SIGKILLed runner cannot end its commands; on the host nobody else will
        with contextlib.suppress(ProcessLookupError):
            os.killpg(command_pid, signal.SIGKILL)


async def test_session_reports_runner_death_once_then_restarts(
        local_manager: SessionManager, workspace: Path) -> None:
    session = await local_manager.open("tester", workspace=str(workspace))
    await session.call("exec", command="echo kept > marker", timeout=10)
    old_pid = (await session.call("hello"))["pid"]
    os.kill(old_pid, signal.SIGKILL)
    assert await _wait_for(lambda: not session.sandbox.alive, 5)
    with pytest.raises(SandboxGone, match="stopped") as info:
        await session.call("exec", command="true", timeout=10)
    assert "next call" in str(info.value)
    fresh = await session.call("exec", command="cat marker", timeout=10)
    assert fresh["stdout"]["text"] == "kept\n"
    assert (await session.call("hello"))["pid"] != old_pid


# -- the host client against a scripted stream ---------------------------------------------


@pytest.mark.parametrize("framed", [True, False], ids=["docker-framed", "plain-pipes"])
async def test_client_demultiplexes_replies(framed: bool) -> None:
    fake = ScriptedRunner(echo_runner, framed)
    client = scripted_client(fake)
    await client.start(5)
    try:
        results = await asyncio.gather(*(client.call("echo", value=i) for i in range(20)))
        assert [r["echo"] for r in results] == list(range(20))
        with pytest.raises(PathNotFound, match="gone"):
            await client.call("fail")
        if framed:
            assert "runner says hi" in client.stderr_tail
    finally:
        await client.close()


async def test_client_fails_pending_calls_when_stream_ends() -> None:
    fake = ScriptedRunner(echo_runner, framed=True)
    client = scripted_client(fake)
    await client.start(5)
    lost: list[bool] = []

    async def on_lost() -> None:
        lost.append(True)

    client.on_lost = on_lost
    pending = asyncio.create_task(client.call("hang"))
    await asyncio.sleep(0.05)
    fake.reader.feed_eof()
    with pytest.raises(SandboxGone):
        await asyncio.wait_for(pending, 2)
    with pytest.raises(SandboxGone):
        await client.call("echo", value=1)
    assert lost == [True]
    await client.close()


async def test_client_cancel_sends_cancel_for_the_request() -> None:
    fake = ScriptedRunner(echo_runner, framed=False)
    client = scripted_client(fake)
    await client.start(5)
    try:
        task = asyncio.create_task(client.call("hang"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        hang = next(r for r in fake.requests if r["op"] == "hang")
        assert {"op": "cancel", "target": hang["id"]}.items() <= fake.requests[-1].items()
    finally:
        await client.close()


async def test_client_rejects_other_protocol_version() -> None:
    def old_runner(req: dict[str, Any]) -> dict[str, Any]:
        return {"id": req["id"], "ok": True, "result": {"protocol": PROTOCOL_VERSION + 1}}

    client = scripted_client(ScriptedRunner(old_runner, framed=True))
    with pytest.raises(RunnerProtocolError, match="rebuild the image"):
        await client.start(5)
    assert not client.alive


async def test_client_hello_timeout_is_sandbox_gone() -> None:
    client = scripted_client(ScriptedRunner(lambda req: None, framed=True))
    t0 = time.monotonic()
    with pytest.raises(SandboxGone, match="did not answer"):
        await client.start(0.3)
    assert time.monotonic() - t0 < 2


def test_runner_does_not_spin_when_bash_cannot_start(tmp_path: Path) -> None:
    """A missing workspace makes every bash start fail: the runner must idle, not retry."""
    import select
    import subprocess
    import sys

    runner_dir = Path(__file__).resolve().parents[2] / "containers" / "runner"
    proc = subprocess.Popen(
        [sys.executable, "-B", "-m", "coderx_runner"], cwd=runner_dir,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        env={"CODERX_ROOT": str(tmp_path / "missing"), "CODERX_STATE": str(tmp_path / "st"),
             "PATH": "/usr/bin:/bin"})
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps({"id": 1, "op": "hello"}).encode() + b"\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        assert ready, "the runner did not answer hello"
        assert json.loads(proc.stdout.readline())["ok"] is True
        time.sleep(1.0)
        with open(f"/proc/{proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        assert cpu_s < 0.5, f"runner used {cpu_s:.2f} s of CPU while idle"
    finally:
        proc.kill()
        proc.wait()


# -- output paging: no byte lost or duplicated across pages (issue #13 properties) --------

_RUNNER_PKG = Path(__file__).resolve().parents[2] / "containers" / "runner"


def _runner_utf8() -> Any:
    import importlib
    import sys
    if str(_RUNNER_PKG) not in sys.path:
        sys.path.insert(0, str(_RUNNER_PKG))
    return importlib.import_module("coderx_runner.procs")


@settings(max_examples=500, deadline=None)
@given(text=st.text(max_size=40), cut=st.integers(min_value=0, max_value=200))
def test_utf8_cuts_split_any_text_at_character_boundaries(text: str, cut: int) -> None:
    procs = _runner_utf8()
    data = text.encode()
    cut = min(cut, len(data))
    head = data[:cut][:procs.utf8_whole(data[:cut])]
    assert head.decode() + data[len(head):].decode() == text  # nothing lost, both decode
    assert cut - len(head) < 4
    rest = data[cut:]
    skip = procs.utf8_start(rest)
    assert skip < 4
    rest[skip:].decode()  # the tail from the first whole character decodes


@pytest.mark.parametrize("seed", range(8))
async def test_read_output_pages_lose_and_repeat_no_byte(sandbox: LocalSandbox,
                                                         workspace: Path, seed: int) -> None:
    import random
    rng = random.Random(seed)
    text = "".join(rng.choice(["a", "é", "€", "😀", "\n", "ж"]) for _ in range(400))
    (workspace / "out.txt").write_text(text, encoding="utf-8")
    r = await sandbox.call("exec", command="cat out.txt", timeout=30)
    pages, offset = [], 0
    while True:
        page = await sandbox.call("output", output_id=r["output_id"], offset=offset,
                                  limit=rng.randint(4, 23))
        if page["next_offset"] == offset:
            break
        assert page["offset"] == offset
        pages.append(page["text"])
        offset = page["next_offset"]
    assert "\ufffd" not in "".join(pages)
    assert "".join(pages) == text
    assert offset == page["total_bytes"] == len(text.encode())
