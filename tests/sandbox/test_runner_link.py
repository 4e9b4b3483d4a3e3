"""The runner link (``sandbox/link.py``): calls skip the engine's exec relay, nothing in the
sandbox can reach the link, and where the link cannot be made the exec stream carries on.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from tests.conftest import MakeManager
from tests.sandbox.conftest import out, sh

import coderx_mcp.sandbox.docker as docker_mod
from coderx_mcp.sandbox.docker import DockerSandbox
from coderx_mcp.sandbox.link import LINK_DIR, SOCKET_NAME, RunnerLink
from coderx_mcp.sessions import SessionManager


def _sandbox(session: Any) -> DockerSandbox:
    sandbox = session.sandbox
    assert isinstance(sandbox, DockerSandbox)
    return sandbox


@pytest.mark.docker
async def test_is13_link_is_closed_to_the_sandbox(docker_manager: SessionManager,
                                                  workspace: Path) -> None:
    """The runner answers on the link; once it connected, the socket is gone, its directory
    is read-only and unlistable, and no command holds a socket of the runner's."""
    session = await docker_manager.open("tester", workspace=str(workspace))
    assert _sandbox(session).linked
    connect = (f"python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); "
               f"s.connect(\"{LINK_DIR}/{SOCKET_NAME}\")'")
    r = await sh(session, connect)
    assert r["exit_code"] != 0 and "FileNotFoundError" in r["stderr"]["text"]
    r = await sh(session, f"ls {LINK_DIR}; touch {LINK_DIR}/x; mkfifo {LINK_DIR}/{SOCKET_NAME}")
    err = r["stderr"]["text"]
    assert "Permission denied" in err and err.count("Read-only file system") == 2, err
    # A command (and what it leaves running) inherits no socket of the runner's.
    r = await sh(session, "sleep 60 & ls -l /proc/self/fd /proc/$!/fd")
    assert "socket:" not in out(r), out(r)
    assert (await session.call("hello"))["undumpable"] is True


@pytest.mark.docker
async def test_link_directory_goes_with_the_sandbox(docker_manager: SessionManager,
                                                    workspace: Path) -> None:
    session = await docker_manager.open("tester", workspace=str(workspace))
    sandbox = _sandbox(session)
    link = sandbox._link
    assert link is not None and link.directory.is_dir()
    assert not (link.directory / SOCKET_NAME).exists()  # removed once the runner connected
    assert link.directory.stat().st_mode & 0o777 == 0o711
    await docker_manager.close(session.id, owner="tester")
    assert not link.directory.exists()


@pytest.mark.docker
async def test_link_keeps_the_exec_stream_for_stderr_and_exit(
        docker_manager: SessionManager, workspace: Path) -> None:
    """The runner's stderr still arrives on the exec stream, and the runner's death is seen
    on the link: the session reports the sandbox gone."""
    session = await docker_manager.open("tester", workspace=str(workspace))
    runner = _sandbox(session)._runner
    assert runner is not None and runner.linked
    with capture_logs() as logs:
        runner._streams[0].write(b"not json\n")  # to the runner's stdin: it complains on stderr
        for _ in range(100):
            if any(e.get("event") == "runner stderr" for e in logs):
                break
            await asyncio.sleep(0.05)
    said = [e["text"] for e in logs if e.get("event") == "runner stderr"]
    assert said and "bad request line" in said[0]
    assert out(await sh(session, "echo fine")) == "fine\n"


@pytest.mark.docker
async def test_link_thread_answers_file_ops_while_a_command_runs(
        docker_manager: SessionManager, workspace: Path) -> None:
    """The runner's link thread answers file ops where it reads them (no event-loop turn)
    and hands everything else to the loop: many reads, writes and stats at once come back
    right, with their errors, while a command holds the loop's attention, and a read past
    the quick size still goes the loop's way."""
    session = await docker_manager.open("tester", workspace=str(workspace))
    assert _sandbox(session).linked
    command = asyncio.ensure_future(sh(session, "sleep 5; echo slept", timeout=30))
    await asyncio.sleep(0.3)

    async def write_then_read(n: int) -> str:
        data = base64.b64encode(f"file {n}\n".encode()).decode()
        await session.call("write", path=f"many/f{n}.txt", data=data)
        got = await session.call("read", path=f"many/f{n}.txt", max_bytes=1 << 20)
        stat = await session.call("stat", path=f"many/f{n}.txt")
        assert stat["size"] == got["size"]
        return str(got["text"])

    texts = await asyncio.gather(*(write_then_read(n) for n in range(40)))
    assert texts == [f"file {n}\n" for n in range(40)]
    assert not command.done()  # answered while the command still ran
    errors = await asyncio.gather(
        session.call("read", path="missing.txt", max_bytes=1 << 20),
        session.call("read", path="../../etc/passwd", max_bytes=1 << 20),
        session.call("read", max_bytes=1 << 20),
        session.call("write", path="x.txt", data=7),
        return_exceptions=True)
    kinds = [type(e).__name__ for e in errors]
    assert kinds == ["PathNotFound", "OutsideWorkspace", "BadRequest", "BadRequest"], \
        [(type(e).__name__, str(e)) for e in errors]
    big = "y" * 99 + "\n"
    (workspace / "big.txt").write_text(big * 20_000)  # 2 MB: past QUICK_BYTES
    got = await session.call("read", path="big.txt", max_bytes=4 << 20)
    assert got["size"] == 2_000_000 and got["text"] == big * 20_000
    assert out(await command) == "slept\n"


@pytest.mark.docker
async def test_link_unreachable_falls_back_to_the_exec_stream(
        make_manager: MakeManager, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the engine cannot share a socket with the host (Docker Desktop's VM: here, the
    link's mount is left out), the first session says why once and works over the exec
    stream; later sessions do not try again."""
    real = docker_mod.container_kwargs

    def without_link(*args: Any, **kw: Any) -> dict[str, Any]:
        made = real(*args, **kw)
        made["mounts"] = [m for m in made["mounts"] if m["Target"] != LINK_DIR]
        return made

    monkeypatch.setattr(docker_mod, "container_kwargs", without_link)
    manager = await make_manager("docker")
    with capture_logs() as logs:
        first = await manager.open("tester", workspace=str(workspace))
        second = await manager.open("tester", workspace=str(workspace))
    for session in (first, second):
        assert not _sandbox(session).linked
        assert _sandbox(session)._link is None
        assert out(await sh(session, "echo over exec")) == "over exec\n"
    warned = [e for e in logs if e.get("event", "").startswith("runner link unavailable")]
    assert len(warned) == 1 and "No such file" in warned[0]["reason"], warned


async def test_link_accepts_only_the_token(tmp_path: Path) -> None:
    """A connection without the token is closed and the link keeps waiting; the one with
    it is kept, and then nothing else can connect."""
    link = await RunnerLink.open()
    path = str(link.directory / SOCKET_NAME)
    try:
        r1, w1 = await asyncio.open_unix_connection(path)
        w1.write(b"guess\n")
        assert await asyncio.wait_for(r1.read(), 5) == b""  # closed on us
        w1.close()
        r2, w2 = await asyncio.open_unix_connection(path)
        w2.write(link.token.encode() + b"\n")
        _reader, writer = await link.accepted(5)
        writer.write(b"hi\n")
        assert await r2.readline() == b"hi\n"
        assert not os.path.exists(path)
        with pytest.raises(OSError):
            await asyncio.open_unix_connection(path)
        w2.close()
    finally:
        link.close()
    assert not link.directory.exists()


async def test_link_without_the_runner_times_out(tmp_path: Path) -> None:
    link = await RunnerLink.open()
    try:
        with pytest.raises(TimeoutError):
            await link.accepted(0.2)
        assert not (link.directory / SOCKET_NAME).exists()
    finally:
        link.close()


@pytest.mark.docker
async def test_link_directory_the_engine_cannot_see_is_left_out(
        make_manager: MakeManager, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server in a container (compose) makes the link's directory in its own /tmp, which
    the engine cannot mount: the container is created again without it, once, and the
    session works over the exec stream."""
    real_open = RunnerLink.open

    async def invisible() -> RunnerLink:
        link = await real_open()
        shutil.rmtree(link.directory)  # as the engine sees it: no such path
        return link

    monkeypatch.setattr(RunnerLink, "open", staticmethod(invisible))
    manager = await make_manager("docker", allow_network=True)  # a network: made once
    with capture_logs() as logs:
        session = await manager.open("tester", workspace=str(workspace), network="bridge")
    assert not _sandbox(session).linked
    assert out(await sh(session, "echo made")) == "made\n"
    warned = [e for e in logs if e.get("event", "").startswith("runner link unavailable")]
    assert len(warned) == 1 and "cannot mount" in warned[0]["reason"], warned
