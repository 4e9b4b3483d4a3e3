"""The runner's channel (catalogue IS-13): unreachable from the sandbox, and bounded should
bytes arrive on it anyway.

Docker tests attack the real runner from a command; the host side is driven in-process by
streams we control: the scripted runner (tests/sandbox/conftest.py) and our fake runner
subprocess (fake_runner.py) behind the real ``LocalSandbox``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import docker
import pytest
from structlog.testing import capture_logs
from tests.sandbox.conftest import (
    MakeFake,
    ScriptedRunner,
    echo_runner,
    out,
    scripted_client,
    sh,
)

from coderx_mcp.config import Settings
from coderx_mcp.errors import RunnerProtocolError, SandboxGone
from coderx_mcp.sandbox.base import SandboxSpec
from coderx_mcp.sandbox.channel import LineSplitter, RateLimit, StderrLog, reply_line_cap
from coderx_mcp.sandbox.docker import DockerSandbox
from coderx_mcp.sandbox.instance import LABEL_SESSION, Instance
from coderx_mcp.sessions import Session, SessionManager

RUNNER_DIR = Path(__file__).resolve().parents[2] / "containers" / "runner"


# -- unreachable: the real runner in Docker ------------------------------------------------


@pytest.mark.docker
async def test_is13_runner_descriptors_unreachable_from_sandbox(
        docker_manager: SessionManager, workspace: Path) -> None:
    session = await docker_manager.open("tester", workspace=str(workspace))
    hello = await session.call("hello")
    assert hello["undumpable"] is True
    # An attacker finds the runner by its command line (readable for every process).
    found = out(await sh(session, "grep -l coderx_runner /proc/[0-9]*/cmdline 2>/dev/null "
                                  "| grep -v self | cut -d/ -f3"))
    assert str(hello["pid"]) in found.split()
    attacks = {
        "write a forged reply into its stdout": 'echo \'{"id":1,"ok":true}\' > /proc/$R/fd/1',
        "flood its stdout": "head -c 10M /dev/zero > /proc/$R/fd/1",
        "write into its stderr": "echo noise > /proc/$R/fd/2",
        "read requests from its stdin": "head -c 1 < /proc/$R/fd/0",
        "list its descriptors": "ls /proc/$R/fd",
        "read its environment": "cat /proc/$R/environ",
        "read its memory": "head -c 1 /proc/$R/mem",
    }
    for what, attack in attacks.items():
        r = await sh(session, f"R={hello['pid']}; {attack}")
        assert r["exit_code"] != 0, f"a command could {what}"
        assert "Permission denied" in r["stderr"]["text"], (what, r["stderr"]["text"])
    assert out(await sh(session, "echo still here")) == "still here\n"
    assert (await session.call("hello"))["pid"] == hello["pid"]


@pytest.mark.docker
async def test_is13_container_output_reaches_no_host_log(
        session_for_logs: tuple[Session, Any]) -> None:
    """Init and ``sleep`` run as the sandbox uid: their stdout must not be a host log file."""
    session, container = session_for_logs
    assert container.attrs["HostConfig"]["LogConfig"]["Type"] == "none"
    await sh(session, "head -c 4M /dev/zero > /proc/1/fd/1; head -c 4M /dev/zero > /proc/1/fd/2")
    assert out(await sh(session, "echo ok")) == "ok\n"


@pytest.fixture
async def session_for_logs(docker_manager: SessionManager, workspace: Path,
                           docker_client: docker.DockerClient) -> tuple[Session, Any]:
    session = await docker_manager.open("tester", workspace=str(workspace))
    [container] = docker_client.containers.list(
        filters={"label": f"{LABEL_SESSION}={session.id}"}, ignore_removed=True)
    return session, container


# -- unreachable: no process the runner starts inherits its stream -------------------------


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    parents[int(name)] = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        found += kids
        todo += kids
    return found


def _fd_targets(pid: int) -> dict[str, str]:
    targets = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets[fd] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
    return targets


def test_is13_commands_inherit_no_runner_descriptor(tmp_path: Path) -> None:
    """Waiting bashes, a finished command's leftovers, a backgrounded exec and a spawned
    process hold none of the runner's stream pipes (nor the runner's stdin/stdout fds)."""
    (tmp_path / "ws").mkdir()
    runner = subprocess.Popen(
        [sys.executable, "-u", "-B", "-m", "coderx_runner"], cwd=RUNNER_DIR,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={"CODERX_ROOT": str(tmp_path / "ws"), "CODERX_STATE": str(tmp_path / "st"),
             "PATH": "/usr/bin:/bin"})
    assert runner.stdin is not None and runner.stdout is not None and runner.stderr is not None
    stream = {f"pipe:[{os.fstat(p.fileno()).st_ino}]"
              for p in (runner.stdin, runner.stdout, runner.stderr)}

    def ask(rid: int, op: str, **args: Any) -> dict[str, Any]:
        assert runner.stdin is not None and runner.stdout is not None
        runner.stdin.write(json.dumps({"id": rid, "op": op, **args}).encode() + b"\n")
        runner.stdin.flush()
        reply: dict[str, Any] = json.loads(runner.stdout.readline())
        assert reply["id"] == rid and reply["ok"], reply
        return reply["result"]

    try:
        assert ask(1 << 61, "hello")["undumpable"] is True  # a 62-bit id, as the server sends
        ask(7, "exec", command="sleep 30 &", timeout=10)  # a leftover (killed with its group)
        ask(8, "exec", command="sleep 31", timeout=30, return_after=0.2)  # backgrounded
        ask(9, "spawn", command="sleep 32")
        ask(10, "exec", command="true", timeout=10)
        time.sleep(0.3)  # the replacement waiting bashes start a moment after a reply
        kids = _descendants(runner.pid)
        commands = {p: Path(f"/proc/{p}/cmdline").read_bytes() for p in kids}
        assert sum(b"sleep" in c for c in commands.values()) >= 2, commands
        assert sum(b"__coderx_s" in c for c in commands.values()) >= 1, commands
        for pid in kids:
            fds = _fd_targets(pid)
            leaked = set(fds.values()) & stream
            assert not leaked, f"{commands[pid][:80]!r} holds the runner's stream {leaked}"
            if b"__coderx_s" not in commands[pid]:  # a waiting bash also has its trigger pipe
                assert set(fds) <= {"0", "1", "2"}, (commands[pid][:80], fds)
            # No spool file, pidfd, socket or state file of the runner either.
            assert all(t == os.devnull or t.startswith("pipe:[") for t in fds.values()), fds
        if os.geteuid() != 0:  # the runner is non-dumpable: only root may look inside
            with pytest.raises(PermissionError):
                os.listdir(f"/proc/{runner.pid}/fd")
            return
        # The runner itself keeps its stream off fds 0 and 1 (a child started without
        # redirections would get /dev/null).
        own = _fd_targets(runner.pid)
        assert own["0"] == own["1"] == os.devnull
        assert stream <= set(own.values())
    finally:
        runner.kill()
        runner.wait()
        for p in (runner.stdin, runner.stdout, runner.stderr):
            p.close()


# -- bounded: line cap ---------------------------------------------------------------------


def test_is13_line_splitter_splits_across_chunks_and_caps_lines() -> None:
    lines = LineSplitter(cap=10)
    assert lines.feed(b"ab") == []
    assert lines.feed(b"c\nde\n\nfg") == [b"abc", b"de", b""]
    assert lines.feed(b"h" * 8 + b"\n") == [b"fg" + b"h" * 8]  # exactly the cap: accepted
    assert lines.feed(b"0123456789") == [] and lines.pending_bytes == 10
    with pytest.raises(RunnerProtocolError, match=r"oversized line \(over 10 bytes"):
        lines.feed(b"x")
    assert lines.pending_bytes == 0  # the partial line is freed at once
    with pytest.raises(RunnerProtocolError, match="oversized line"):
        LineSplitter(cap=10).feed(b"0123456789a\n")


def test_is13_line_splitter_scans_each_byte_once() -> None:
    """A 48 MiB reply in 64 KiB chunks: rescanning the buffer per chunk would search about
    18 GiB; the incremental search reads each byte once."""
    lines = LineSplitter(cap=reply_line_cap(16 << 20))
    chunk = b"A" * (64 << 10)
    t0 = time.perf_counter()
    for _ in range(768):
        assert lines.feed(chunk) == []
    [line] = lines.feed(b"\n")
    elapsed = time.perf_counter() - t0
    assert len(line) == 48 << 20
    assert elapsed < 3, f"splitting took {elapsed:.2f} s"


def test_is13_reply_cap_fits_the_largest_legitimate_reply() -> None:
    """The worst legitimate reply: a whole-file read of max_file_bytes control characters."""
    max_file = 1 << 20
    text = "\x01" * max_file
    reply = json.dumps({"id": (1 << 62) - 1, "ok": True, "result": {
        "path": "p" * 4096, "size": max_file, "mode": 420, "sha256": "0" * 64, "whole": True,
        "text": text}}, separators=(",", ":"), ensure_ascii=False).encode()
    assert len(reply) <= reply_line_cap(max_file)
    assert reply_line_cap(16 << 20) == 112 << 20


@pytest.mark.parametrize("framed", [True, False], ids=["docker-framed", "plain-pipes"])
async def test_is13_oversized_line_fails_the_session(framed: bool) -> None:
    fake = ScriptedRunner(echo_runner, framed)
    client = scripted_client(fake, max_line=1000)
    await client.start(5)
    try:
        pending = asyncio.create_task(client.call("hang"))
        await asyncio.sleep(0.02)
        fake.emit(b"x" * 5000 + b"\n")
        with pytest.raises(SandboxGone, match="the runner sent an oversized line"):
            await asyncio.wait_for(pending, 5)
        assert client.violation is not None and "oversized line" in client.violation
        with pytest.raises(SandboxGone, match="oversized line"):
            await client.call("echo", value=1)
    finally:
        await client.close()


async def test_is13_endless_line_costs_bounded_memory(fake: MakeFake) -> None:
    """Our fake runner writes an endless line: the session fails once the cap is passed,
    and the server's memory grows by about the cap, not by what was sent."""
    cap = 4 << 20
    sb = await fake(max_line=cap)
    assert (await sb.call("echo", value=1))["echo"] == 1
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        with pytest.raises(SandboxGone, match="oversized line"):
            await asyncio.wait_for(sb.call("endless_line"), 30)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < cap + (8 << 20), f"the server grew by {peak >> 20} MiB for a {cap >> 20} MiB cap"
    with pytest.raises(SandboxGone, match="oversized line"):
        await sb.call("echo", value=2)


@pytest.mark.docker
async def test_is13_oversized_reply_ends_a_docker_session_with_one_clear_error(
        settings: Settings, workspace: Path, docker_client: docker.DockerClient) -> None:
    """Through Docker's framed stream: a reply past the cap (here a 4 KiB cap and a 64 KiB
    file) ends the session with one sentence, and the runner, hung up on, exits."""
    (workspace / "big.txt").write_text("z" * 65536)
    sb = DockerSandbox(docker_client, SandboxSpec(workspace=workspace), settings.image,
                       Instance.current(), "s-is13-cap", max_line=4096)
    try:
        await sb.start()
        pid = (await sb.call("hello"))["pid"]
        with pytest.raises(SandboxGone) as info:
            await sb.call("read", path="big.txt")
        message = str(info.value)
        assert message.startswith("the sandbox was stopped because the runner sent an "
                                  "oversized line (over 4096 bytes"), message
        assert message.count(".") == 1 and message.endswith(".")
        assert not sb.alive
        container = docker_client.containers.get(sb.ident)
        for _ in range(50):  # the runner sees the end of its input and exits
            ps = container.exec_run(["cat", f"/proc/{pid}/cmdline"], user="1000")
            if ps.exit_code != 0:
                break
            await asyncio.sleep(0.1)
        assert ps.exit_code != 0, "the runner kept running after the server hung up"
    finally:
        await sb.close()


# -- unpredictable ids, forged and late replies --------------------------------------------


async def test_is13_request_ids_are_random_and_unique() -> None:
    fake = ScriptedRunner(echo_runner, framed=False)
    client = scripted_client(fake)
    await client.start(5)
    try:
        await asyncio.gather(*(client.call("echo", value=i) for i in range(300)))
    finally:
        await client.close()
    ids = [r["id"] for r in fake.requests]
    assert len(set(ids)) == len(ids)
    assert all(isinstance(i, int) and 0 <= i < 1 << 62 for i in ids)
    steps = {b - a for a, b in itertools.pairwise(ids)}
    assert len(steps) > 250, "request ids follow a pattern"
    assert max(ids) - min(ids) > 1 << 50


async def test_is13_forged_reply_is_ignored_and_logged(fake: MakeFake) -> None:
    sb = await fake()
    with capture_logs() as logs:
        assert (await sb.call("forge", value="real"))["echo"] == "real"
    dropped = [e for e in logs if e["event"] == "runner reply for an unknown request id ignored"]
    assert len(dropped) == 1


async def test_is13_flood_of_forged_replies_is_logged_at_a_bounded_rate() -> None:
    fake = ScriptedRunner(echo_runner, framed=False)
    client = scripted_client(fake, log_rate=5.0)
    await client.start(5)
    try:
        with capture_logs() as logs:
            fake.emit(b"".join(b'{"id":%d,"ok":true,"result":{}}\n' % i for i in range(5000))
                      + b"not json\n" * 5000)
            assert (await client.call("echo", value="after"))["echo"] == "after"
        dropped = [e for e in logs if e["event"].startswith("runner")]
        assert 0 < len(dropped) <= 60, len(dropped)
    finally:
        await client.close()


async def test_is13_late_reply_of_a_cancelled_request_is_expected() -> None:
    """Replies to a cancelled request and to the cancel itself are not reported as forged."""
    fake = ScriptedRunner(echo_runner, framed=False)  # it answers the cancel request at once
    client = scripted_client(fake)
    await client.start(5)
    try:
        with capture_logs() as logs:
            task = asyncio.create_task(client.call("hang"))
            await asyncio.sleep(0.02)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            hang, cancel = fake.requests[-2:]
            assert cancel["op"] == "cancel" and cancel["target"] == hang["id"]
            fake.emit(json.dumps({"id": hang["id"], "ok": False, "error": {
                "type": "Cancelled", "message": "request cancelled"}}).encode() + b"\n")
            assert (await client.call("echo", value=1))["echo"] == 1
        assert not [e for e in logs if "unknown request id" in e["event"]]
    finally:
        await client.close()


# -- bounded: stderr -----------------------------------------------------------------------


def test_is13_stderr_log_is_rate_limited_with_a_bounded_tail() -> None:
    now = [0.0]
    events: list[tuple[str | None, int]] = []
    log = StderrLog(lambda text, n: events.append((text, n)),
                    RateLimit(rate=5, burst=20, clock=lambda: now[0]), tail_lines=50)
    log.feed(b"".join(b"line %d\n" % i for i in range(100_000)))
    assert [t for t, _ in events] == [f"line {i}" for i in range(20)]  # the burst
    now[0] = 1.0  # five more tokens: the summary comes first, then the new lines
    log.feed(b"next a\nnext b\n")
    assert events[20:] == [(None, 100_000 - 20), ("next a", 0), ("next b", 0)]
    log.feed(b"y" * (10 << 20))  # one huge line without an end: logged and kept capped
    assert events[-1] == ("y" * 2000, 0)
    log.feed(b"z\n" * 10)  # two tokens left
    log.flush()
    assert events[-3:] == [("z", 0), ("z", 0), (None, 8)]
    assert len(log.tail.splitlines()) <= 50 and len(log.tail) < 50 * 2001
    assert log.tail.endswith("\n" + "y" * 2000 + "\nz" * 10)


async def test_is13_runner_stderr_flood_is_logged_at_a_bounded_rate(
        fake: MakeFake) -> None:
    """Our fake runner floods stderr through the real local-backend pipe pump."""
    sb = await fake()
    n = 200_000
    t0 = time.monotonic()
    with capture_logs() as logs:
        assert (await sb.call("stderr_flood", lines=n))["written"] == n
        await sb.close()
    elapsed = time.monotonic() - t0
    lines = [e for e in logs if e["event"] == "runner stderr"]
    summaries = [e for e in logs if e["event"] == "runner stderr lines suppressed (rate limit)"]
    assert len(lines) <= 50 + 5 * elapsed + 1, (len(lines), elapsed)
    assert summaries, "no line says how many were suppressed"
    counted = len(lines) + sum(e["suppressed"] for e in summaries)
    assert n <= counted <= n * 1.01  # a line cut between two reads is counted twice
