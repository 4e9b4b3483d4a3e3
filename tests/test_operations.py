"""Operating the server: doctor, the operator's sessions CLI, and the faults of a real
machine (a container removed or killed from outside, the server SIGKILLed mid-command, the
state directory's disk full). Real server subprocesses and Docker."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from fastmcp import Client
from tests.conftest import CLI, MakeServer, Server, child_env, containers_of, facts, free_port

pytestmark = pytest.mark.docker


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def doctor_env(tmp_path: Path) -> dict[str, str]:
    return child_env(CODERX_DATA_DIR=str(tmp_path / "data"),
                     CODERX_STATE_DIR=str(tmp_path / "state"),
                     CODERX_KEY_FILE=str(tmp_path / "keys.enc"))


def test_doctor_all_good_exits_zero(doctor_env: dict[str, str]) -> None:
    done = cli(doctor_env, "doctor", "--port", str(free_port()))
    assert done.returncode == 0, done.stdout + done.stderr
    names = [line.split(":")[0] for line in done.stdout.splitlines()]
    assert names == ["ok   docker", "ok   image", "ok   clock", "ok   data directory",
                     "ok   state directory", "ok   tokens", "ok   key store", "ok   port",
                     "ok   workspace roots"]


def test_doctor_names_each_problem_with_its_fix(doctor_env: dict[str, str],
                                               tmp_path: Path) -> None:
    assert cli(doctor_env, "tokens", "create", "alice").returncode == 0
    tokens = tmp_path / "state" / "tokens.json"
    tokens.chmod(0o644)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = cli({**doctor_env, "CODERX_IMAGE": "coderx-sandbox:no-such-tag",
                    "CODERX_WORKSPACE_ROOTS": f'["{tmp_path / "gone"}"]'},
                   "doctor", "--port", str(port))
    assert done.returncode == 1
    lines = {line.split(":")[0]: line for line in done.stdout.splitlines()}
    assert "→ coderx-mcp image build --image coderx-sandbox:no-such-tag" in lines["FAIL image"]
    assert f"→ chmod 600 {tokens}" in lines["FAIL tokens"]
    assert f"port {port} is in use" in lines["FAIL port"]
    assert "FAIL workspace roots" in lines
    assert lines["ok   docker"]


@pytest.mark.parametrize("fault", ["sessions kill", "docker kill"])
async def test_container_lost_from_outside_is_reported_once_then_reopened(
        make_server: MakeServer, docker_client: docker.DockerClient, fault: str) -> None:
    server = make_server()
    token = server.create("alice")
    await server.start()
    async with Client(server.url, auth=token) as c:
        first = await c.call_tool("run_command", {"command": "echo kept > notes.txt"})
        assert facts(first) is not None
        sid = facts(first)["session"]
        listed = cli(server.env, "sessions", "list")
        assert sid in listed.stdout and "(running)" in listed.stdout
        if fault == "sessions kill":
            done = cli(server.env, "sessions", "kill", sid)
            assert done.returncode == 0, done.stderr
        else:
            (box,) = docker_client.containers.list(filters={"label": f"coderx.session={sid}"})
            box.kill()
        lost = await c.call_tool("run_command", {"command": "true"}, raise_on_error=False)
        message = lost.content[0].text  # type: ignore[union-attr]
        assert lost.is_error and "stopped" in message and "same workspace" in message
        assert message.count(". ") <= 2, message  # a short explanation, not a traceback
        again = await c.call_tool("run_command", {"command": "cat notes.txt"})
        assert facts(again) is not None
        assert facts(again)["stdout"] == "kept\n"
        assert facts(again)["session"] == sid
    unknown = cli(server.env, "sessions", "kill", "s-nope")
    assert unknown.returncode == 1 and "no sandbox of session 's-nope'" in unknown.stderr


async def test_cr01_sigkilled_server_mid_command_leaves_nothing_and_history_says_so(
        make_server: MakeServer) -> None:
    server = make_server()
    token = server.create("alice")
    await server.start()
    assert server.proc is not None
    dead = server.proc.pid
    with pytest.raises(Exception):  # noqa: B017 - the connection dies with the server
        async with Client(server.url, auth=token) as c:
            await c.call_tool("run_command", {"command": "true"})
            running = asyncio.ensure_future(c.call_tool("run_command", {"command": "sleep 60"}))
            await asyncio.sleep(1.0)
            os.kill(dead, signal.SIGKILL)
            server.proc.wait(10)
            server.proc = None  # nothing left to stop
            await asyncio.wait_for(running, 30)
    assert containers_of(dead)
    scratch = list((server.tmp / "data").glob("scratch/*"))
    assert scratch
    listed = cli(server.env, "sessions", "list")
    if containers_of(dead):  # still there after the listing: any starting server may reap it
        assert f"server {dead} (gone)" in listed.stdout
    pruned = cli(server.env, "sessions", "prune")
    # Any server starting on this machine meanwhile may reap the container first.
    assert pruned.returncode == 0 and "workspace(s) of servers that are gone" in \
        pruned.stderr, pruned.stderr
    assert containers_of(dead) == []
    assert not any(p.exists() for p in scratch)
    # A new server on the same history records the call cut short as interrupted.
    await server.start()
    async with Client(server.url, auth=token) as c:
        r = await c.call_tool("history", {"tool": "run_command"})
    calls = [(e["args"]["command"], e["outcome"]) for e in facts(r)["entries"]]
    assert calls == [("sleep 60", "interrupted"), ("true", "ok")]


@pytest.fixture
def full_state(make_server: MakeServer) -> Iterator[tuple[Server, str]]:
    """A server (not started) with a token, whose state directory is a full 64 KiB tmpfs."""
    server = make_server()
    token = server.create("alice")
    state = server.tmp / "state"
    saved = {p.name: p.read_bytes() for p in state.iterdir()}
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(state)], check=True)
    try:
        for name, data in saved.items():
            (state / name).write_bytes(data)
            (state / name).chmod(0o600)
        subprocess.run(["dd", "if=/dev/zero", f"of={state / 'fill'}", "bs=1k", "count=128"],
                       capture_output=True)
        assert os.statvfs(state).f_bavail == 0
        yield server, token
        server.stop()
        server.proc = None
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)


async def test_state_disk_full_tool_calls_still_work(full_state: tuple[Server, str]) -> None:
    server, token = full_state
    await server.start()
    async with Client(server.url, auth=token) as c:
        for i in range(3):
            r = await c.call_tool("run_command", {"command": f"echo {i}"})
            assert facts(r) is not None
            assert facts(r)["stdout"] == f"{i}\n"
