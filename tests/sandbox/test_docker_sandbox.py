"""Sandbox behaviour through sessions: commands, output, files, confinement, recovery.

Behaviour that does not depend on the container runs twice, on Docker and (as the fast [U]
twin) on the local backend; isolation, recovery and clean-up tests need Docker.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import random
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import docker
import pytest
from tests.sandbox.conftest import out, sh

from coderx_mcp.config import Settings
from coderx_mcp.errors import (
    FileAlreadyExists,
    NotRegularFile,
    OutsideWorkspace,
    ProtectedPath,
    SandboxGone,
    StaleFile,
    UnknownProcess,
)
from coderx_mcp.ops import ReadResult
from coderx_mcp.sandbox.instance import LABEL_INSTANCE, LABEL_SESSION
from coderx_mcp.sessions import Session, SessionManager

MakeManager = Callable[..., Awaitable[SessionManager]]
SANDBOX_UID = 1000
BACKENDS = [pytest.param("docker", marks=pytest.mark.docker), "local"]


@pytest.fixture(params=BACKENDS)
async def manager(request: pytest.FixtureRequest, make_manager: MakeManager) -> SessionManager:
    """A started manager, once per backend."""
    return await make_manager(request.param)


@pytest.fixture
async def session(manager: SessionManager, workspace: Path) -> Session:
    """A session on the ``workspace`` fixture (so the test can look at the host side)."""
    return await manager.open("tester", workspace=str(workspace))






def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unique_sleep() -> str:
    """A ``sleep`` argument no other process has, to find leftovers in ``ps``."""
    return f"{300 + random.randint(1, 999_999) / 1_000_000:.6f}"


async def leftovers(session: Session, needle: str) -> list[str]:
    """Live processes whose command line contains ``needle``."""
    ps = await sh(session, "ps -eo stat=,args=")
    return [ln for ln in out(ps).splitlines() if needle in ln and not ln.lstrip().startswith("Z")]


async def eventually_none(session: Session, needle: str, tries: int = 30) -> list[str]:
    """``leftovers`` once they are gone, or after ``tries`` polls 0.1 s apart."""
    for _ in range(tries):
        if not (found := await leftovers(session, needle)):
            break
        await asyncio.sleep(0.1)
    return found


def containers_labelled(client: docker.DockerClient, label: str) -> list[Any]:
    return list(client.containers.list(all=True, filters={"label": label}, ignore_removed=True))


def instance_of(client: docker.DockerClient, session: Session) -> str:
    """The server instance id stamped on a session's container."""
    (container,) = containers_labelled(client, f"{LABEL_SESSION}={session.id}")
    return str(container.labels[LABEL_INSTANCE])


# -- commands ---------------------------------------------------------------------------------


async def test_ce03_timeout_kills_process_group(session: Session) -> None:
    arg = unique_sleep()
    t0 = time.monotonic()
    r = await sh(session, f"sleep {arg} & echo started; sleep {arg}", timeout=2)
    elapsed = time.monotonic() - t0
    assert elapsed < 5, f"timeout 2 s returned after {elapsed:.1f} s"
    assert r["timed_out"] is True and r["running"] is False and r["exit_code"] is None
    assert out(r) == "started\n"
    assert await eventually_none(session, f"sleep {arg}") == []
    assert out(await sh(session, "echo next")) == "next\n"


async def test_ce04_background_child_does_not_hold_the_call(session: Session) -> None:
    arg = unique_sleep()
    t0 = time.monotonic()
    r = await sh(session, f"sleep {arg} & echo started", timeout=60)
    assert time.monotonic() - t0 < 2
    assert out(r) == "started\n" and r["exit_code"] == 0 and not r["timed_out"]
    # Adopted, not killed: named in the reply, listed as a running process, killable.
    assert any(f"sleep {arg}" in p for p in r["left_running"]), r["left_running"]
    procs = (await session.call("procs"))["processes"]
    assert [p["running"] for p in procs if p["output_id"] == r["output_id"]] == [True]
    await session.call("kill", output_id=r["output_id"])
    assert await eventually_none(session, f"sleep {arg}") == []


async def test_ce05_stdin_is_at_eof(session: Session) -> None:
    t0 = time.monotonic()
    r = await sh(session, "cat; grep foo; read -r line; echo read=$?", timeout=30)
    assert time.monotonic() - t0 < 2
    assert out(r) == "read=1\n" and r["exit_code"] == 0


async def test_ce08_binary_output_is_valid_text(session: Session) -> None:
    r = await sh(session, "head -c 65536 /dev/urandom")
    assert r["stdout"]["total_bytes"] == 65536
    json.dumps(r, ensure_ascii=False).encode("utf-8")  # no lone surrogates
    page = await session.call("output", output_id=r["output_id"], stream="stdout")
    assert page["total_bytes"] == 65536
    page["text"].encode("utf-8")


async def test_ce07_output_over_cap_truncated_in_reply_complete_in_spool(
        session: Session) -> None:
    expected = "".join(f"{i:08d}\n" for i in range(30000)).encode()
    r = await sh(session, "python3 -c \"import sys; "
                          "sys.stdout.write(''.join('%08d\\n' % i for i in range(30000)))\"",
                 cap=2000)
    reply = r["stdout"]
    assert reply["total_bytes"] == len(expected)
    assert reply["omitted_bytes"] > 0
    assert len(reply["text"].encode()) < 2000 + 200
    assert reply["text"].startswith("00000000\n") and reply["text"].endswith("00029999\n")
    assert "omitted" in reply["text"]
    data, offset = b"", 0
    while True:
        page = await session.call("output", output_id=r["output_id"], stream="stdout",
                                  offset=offset, limit=65536)
        assert page["total_bytes"] == len(expected)
        data += page["text"].encode()
        if page["next_offset"] == offset:
            break
        offset = page["next_offset"]
    assert len(data) == len(expected)
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(expected).hexdigest()


async def test_cd_and_export_persist_in_session_only(manager: SessionManager,
                                                      session: Session) -> None:
    other = await manager.open("tester")
    await sh(session, "mkdir -p sub/dir && cd sub/dir && export CODERX_T_FOO=bar && X_LOCAL=1")
    root = (await session.call("hello"))["root"]
    r = await sh(session, "pwd; echo ${CODERX_T_FOO:-unset}")
    assert out(r) == f"{root}/sub/dir\nbar\n"
    assert r["cwd"].endswith("/sub/dir")
    r = await sh(other, "pwd; echo ${CODERX_T_FOO:-unset}")
    assert out(r).splitlines()[1] == "unset"
    assert not out(r).splitlines()[0].endswith("/sub/dir")


async def test_return_after_hands_over_running_command(session: Session) -> None:
    t0 = time.monotonic()
    r = await sh(session, "echo first; sleep 1.5; echo second", timeout=30, return_after=0.3)
    assert time.monotonic() - t0 < 1.2
    assert r["running"] is True and r["exit_code"] is None and r["output_id"]
    assert out(r) == "first\n"
    procs = (await session.call("procs"))["processes"]
    assert [p["output_id"] for p in procs if p["running"]] == [r["output_id"]]
    done = await session.call("output", output_id=r["output_id"], stream="stdout", wait=10)
    assert done["running"] is False and done["exit_code"] == 0
    assert done["text"] == "first\nsecond\n"


async def test_return_after_keeps_the_command_timeout(session: Session) -> None:
    arg = unique_sleep()
    r = await sh(session, f"sleep {arg}", timeout=1.0, return_after=0.2)
    assert r["running"] is True
    done = await session.call("output", output_id=r["output_id"], wait=10)
    assert done["running"] is False and done["timed_out"] is True
    assert await eventually_none(session, f"sleep {arg}") == []


async def test_spawn_send_kill_and_procs(session: Session) -> None:
    cat = await session.call("spawn", command="cat")
    oid = cat["output_id"]
    await session.call("send", output_id=oid, text="hello\n")
    end = time.monotonic() + 5
    while "hello" not in (page := await session.call("output", output_id=oid))["text"]:
        assert time.monotonic() < end, "spawned cat never echoed its input"
        await asyncio.sleep(0.05)
    assert page["running"] is True
    listed = {p["output_id"]: p for p in (await session.call("procs"))["processes"]}
    assert listed[oid]["running"] is True
    await session.call("send", output_id=oid, text="bye\n", eof=True)
    done = await session.call("output", output_id=oid, wait=5)
    assert done["running"] is False and done["exit_code"] == 0
    assert done["text"] == "hello\nbye\n"
    with pytest.raises(UnknownProcess):
        await session.call("send", output_id=oid, text="late\n")

    sleeper = await session.call("spawn", command=f"sleep {unique_sleep()}")
    killed = await session.call("kill", output_id=sleeper["output_id"])
    assert killed["was_running"] is True
    listed = {p["output_id"]: p for p in (await session.call("procs"))["processes"]}
    assert listed[sleeper["output_id"]]["running"] is False
    assert (await session.call("kill", output_id=sleeper["output_id"]))["was_running"] is False
    with pytest.raises(UnknownProcess):
        await session.call("output", output_id="0000dead")


@pytest.mark.parametrize("backend", BACKENDS)
async def test_ce19_server_environment_not_passed_to_sandbox(
        backend: str, make_manager: MakeManager, monkeypatch: pytest.MonkeyPatch) -> None:
    token = "sentinel-" + secrets.token_hex(8)
    monkeypatch.setenv("CODERX_TEST_SENTINEL", token)
    monkeypatch.setenv("OPENAI_API_KEY", token)
    monkeypatch.setenv("ANTHROPIC_API_KEY", token)
    monkeypatch.setenv("DOCKER_HOST", "unix:///var/run/docker.sock")  # valid: the SDK uses it
    manager = await make_manager(backend)
    session = await manager.open("tester")
    r = await sh(session, "env")
    names = [line.split("=", 1)[0] for line in out(r).splitlines() if "=" in line]
    assert token not in out(r)
    assert not [n for n in names if n.startswith(("CODERX_", "DOCKER_")) or n.endswith("_API_KEY")]
    if backend == "docker":  # every process of the container, the runner included
        r = await sh(session, "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'")
        assert r["stdout"]["total_bytes"] > 0
        assert token not in out(r) and "DOCKER_HOST" not in out(r)


# -- files ------------------------------------------------------------------------------------


async def test_write_then_read_round_trips(session: Session, workspace: Path) -> None:
    data = bytes(range(256)) * 40
    w = await session.call("write", path="dir/new.bin", data=b64(data))
    assert w["created"] is True and w["size"] == len(data)
    assert w["sha256"] == hashlib.sha256(data).hexdigest()
    assert (workspace / "dir" / "new.bin").read_bytes() == data
    r = await session.call("read", path="dir/new.bin")
    assert ReadResult.model_validate(r).payload() == data and r["sha256"] == w["sha256"]
    again = await session.call("write", path="dir/new.bin", data=b64(b"v2"),
                               expect_sha256=w["sha256"])
    assert again["created"] is False


async def test_stale_and_existing_writes_refused(session: Session, workspace: Path) -> None:
    w = await session.call("write", path="f.txt", data=b64(b"one"))
    await sh(session, "echo changed > f.txt")
    with pytest.raises(StaleFile) as info:
        await session.call("write", path="f.txt", data=b64(b"two"), expect_sha256=w["sha256"])
    assert info.value.current == hashlib.sha256(b"changed\n").hexdigest()
    with pytest.raises(FileAlreadyExists):
        await session.call("write", path="f.txt", data=b64(b"three"), expect_absent=True)
    assert (workspace / "f.txt").read_bytes() == b"changed\n"


async def test_concurrent_writes_are_atomic(session: Session, workspace: Path) -> None:
    payloads = [bytes([65 + i]) * (200_000 + i) for i in range(8)]
    await session.call("write", path="big.txt", data=b64(payloads[0]))
    ops = [session.call("write", path="big.txt", data=b64(p)) for p in payloads]
    ops += [session.call("read", path="big.txt") for _ in range(8)]
    results = await asyncio.gather(*ops)
    for read in results[len(payloads):]:
        assert ReadResult.model_validate(read).payload() in payloads  # never a mix or a prefix
    assert (workspace / "big.txt").read_bytes() in payloads
    assert [n for n in os.listdir(workspace) if n.startswith(".coderx-tmp-")] == []


async def test_pf_paths_outside_workspace_refused(session: Session, tmp_path: Path) -> None:
    for bad in ("../outside.txt", "sub/../../outside.txt", "/etc/passwd", "/workspace/../etc"):
        with pytest.raises(OutsideWorkspace):
            await session.call("read", path=bad)
    with pytest.raises(OutsideWorkspace):
        await session.call("write", path="../outside.txt", data=b64(b"x"))
    assert not (tmp_path / "outside.txt").exists()


async def test_pf_symlink_planted_in_sandbox_refused(session: Session) -> None:
    await sh(session, "ln -s /etc/shadow leak && ln -s / rootlink && ln -s /dev/zero zero")
    for bad in ("leak", "rootlink/etc/passwd", "zero"):
        with pytest.raises(OutsideWorkspace):
            await session.call("read", path=bad)
    with pytest.raises(OutsideWorkspace):
        await session.call("write", path="leak", data=b64(b"owned"))


async def test_pf13_fifo_read_fails_immediately(session: Session) -> None:
    await sh(session, "mkfifo pipe && mkdir adir")
    t0 = time.monotonic()
    with pytest.raises(NotRegularFile):
        await asyncio.wait_for(session.call("read", path="pipe"), 5)
    with pytest.raises(NotRegularFile):
        await session.call("read", path="adir")
    assert time.monotonic() - t0 < 1


async def test_pf12_protected_metadata_writes_refused(session: Session, workspace: Path) -> None:
    for path in (".git/hooks/pre-commit", ".git/config", ".coderx/settings"):
        with pytest.raises(ProtectedPath):
            await session.call("write", path=path, data=b64(b"#!/bin/sh\nid\n"))
        assert not (workspace / path).exists()


# -- Docker only --------------------------------------------------------------------------------


def _git_workspace(workspace: Path) -> tuple[Path, Path]:
    hooks = workspace / ".git" / "hooks"
    hooks.mkdir(parents=True)
    hook = hooks / "pre-commit"
    hook.write_text("#!/bin/sh\nexit 0\n")
    config = workspace / ".git" / "config"
    config.write_text("[core]\n\tbare = false\n")
    if os.geteuid() == 0:  # the sandbox user owns them: only the mounts stop it
        for p in (workspace / ".git", hooks, hook, config):
            os.chown(p, SANDBOX_UID, SANDBOX_UID)
    return hook, config


@pytest.mark.docker
async def test_pf12_git_hooks_and_config_read_only_in_container(
        docker_manager: SessionManager, workspace: Path) -> None:
    hook, config = _git_workspace(workspace)
    session = await docker_manager.open("tester", workspace=str(workspace))
    for cmd in ("echo x >> .git/config", "echo evil > .git/hooks/pre-commit",
                "touch .git/hooks/post-checkout", "rm -f .git/hooks/pre-commit"):
        r = await sh(session, cmd)
        assert r["exit_code"] != 0, f"{cmd!r} succeeded"
        assert "Read-only file system" in r["stderr"]["text"]
    assert config.read_text() == "[core]\n\tbare = false\n"
    assert hook.read_text() == "#!/bin/sh\nexit 0\n"
    assert sorted(p.name for p in hook.parent.iterdir()) == ["pre-commit"]


@pytest.mark.docker
async def test_pf12_git_config_not_replaceable_by_renaming_git_dir(
        docker_manager: SessionManager, workspace: Path) -> None:
    _hook, config = _git_workspace(workspace)
    session = await docker_manager.open("tester", workspace=str(workspace))
    r = await sh(session, "mv .git .git-moved && mkdir -p .git/hooks && "
                          "printf '[core]\\n\\thooksPath = /tmp\\n' > .git/config")
    assert r["exit_code"] != 0
    assert config.read_text() == "[core]\n\tbare = false\n"


@pytest.mark.docker
async def test_ce14_zombies_are_reaped(docker_manager: SessionManager) -> None:
    session = await docker_manager.open("tester")
    for _ in range(20):
        await sh(session, "for i in $(seq 50); do (sleep 0.01 &); done")
    await asyncio.sleep(0.3)
    r = await sh(session, "ps -eo stat= | grep -c ^Z || true")
    assert int(out(r)) <= 5
    assert out(await sh(session, "echo alive", timeout=5)) == "alive\n"


@pytest.mark.docker
async def test_is01_sessions_cannot_see_each_others_files(docker_manager: SessionManager) -> None:
    a, b = await asyncio.gather(docker_manager.open("tester"), docker_manager.open("tester"))
    await sh(a, "echo secret-a > marker-a-7c1e")
    r = await sh(b, "ls -a /workspace; find / -name 'marker-a-*' -not -path '/proc/*' "
                    "2>/dev/null; cat /proc/mounts")
    assert "marker-a-7c1e" not in out(r)
    assert str(a.spec.workspace) not in out(r)
    assert out(await sh(a, "cat marker-a-7c1e")) == "secret-a\n"


@pytest.mark.docker
async def test_is02_sessions_cannot_see_or_kill_each_others_processes(
        docker_manager: SessionManager) -> None:
    a, b = await asyncio.gather(docker_manager.open("tester"), docker_manager.open("tester"))
    arg = unique_sleep()
    job = await a.call("spawn", command=f"sleep {arg}")
    ps = await sh(b, "ps aux")
    assert f"sleep {arg}" not in out(ps)
    with pytest.raises(SandboxGone):  # kills B's own runner, nothing of A
        await sh(b, "kill -9 -1; sleep 5")
    assert await leftovers(a, f"sleep {arg}") != []
    listed = {p["output_id"]: p for p in (await a.call("procs"))["processes"]}
    assert listed[job["output_id"]]["running"] is True
    assert out(await sh(b, "echo b again")) == "b again\n"  # B recovered


@pytest.mark.docker
async def test_is06_parallel_opens_give_one_container_each(
        docker_manager: SessionManager, docker_client: docker.DockerClient) -> None:
    opened = await asyncio.gather(*(docker_manager.open("tester") for _ in range(4)),
                                  docker_manager.default("tester"),
                                  docker_manager.default("tester"))
    sessions = list({s.id: s for s in opened}.values())
    assert len(sessions) == 5
    instance = instance_of(docker_client, sessions[0])
    assert len(containers_labelled(docker_client, f"{LABEL_INSTANCE}={instance}")) == 5
    await asyncio.gather(*(sh(s, f"echo {s.id} > marker") for s in sessions))
    for s in sessions:
        assert (s.spec.workspace / "marker").read_text() == f"{s.id}\n"
        assert sorted(p.name for p in s.spec.workspace.iterdir()) == ["marker"]


@pytest.mark.docker
async def test_cr04_container_killed_from_outside_reported_then_recreated(
        docker_manager: SessionManager, workspace: Path,
        docker_client: docker.DockerClient) -> None:
    session = await docker_manager.open("tester", workspace=str(workspace))
    await sh(session, "echo kept > marker")
    old = session.sandbox.ident
    docker_client.containers.get(old).kill()
    with pytest.raises(SandboxGone, match="stopped") as info:
        await sh(session, "echo hi")
    assert "next call" in str(info.value)
    r = await sh(session, "cat marker")
    assert out(r) == "kept\n"
    assert session.sandbox.ident != old
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(old)


@pytest.mark.docker
async def test_cr04_container_killed_during_command_fails_the_call_fast(
        docker_manager: SessionManager, docker_client: docker.DockerClient) -> None:
    session = await docker_manager.open("tester")
    call = asyncio.create_task(sh(session, "sleep 60", timeout=90))
    await asyncio.sleep(0.3)
    t0 = time.monotonic()
    docker_client.containers.get(session.sandbox.ident).kill()
    with pytest.raises(SandboxGone, match="stopped"):
        await asyncio.wait_for(call, 10)
    assert time.monotonic() - t0 < 2
    assert out(await sh(session, "echo back")) == "back\n"


_ORPHAN_HELPER = """
import asyncio, sys
from pathlib import Path
from coderx_mcp.config import SandboxLimits, Settings
from coderx_mcp.sandbox.docker_backend import DockerBackend
from coderx_mcp.sandbox.instance import Instance
from coderx_mcp.sessions import SessionManager

async def main():
    root = Path(sys.argv[1])
    s = Settings(image=sys.argv[2], pool_size=1, data_dir=root / "data", use_cwd=False,
                 state_dir=root / "state", limits=SandboxLimits(memory="256m", pids=64))
    inst = Instance.current()
    manager = SessionManager(s, DockerBackend(s, inst), instance=inst)
    await manager.start()
    session = await manager.open("orphan-test")
    await session.call("spawn", command="sleep 120")
    assert await manager.pool.wait_full(60)
    print("READY", inst.id, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.mark.docker
async def test_cr01_containers_of_killed_server_removed_at_next_start(
        make_manager: MakeManager, docker_client: docker.DockerClient, tmp_path: Path,
        settings: Settings) -> None:
    helper = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _ORPHAN_HELPER, str(tmp_path / "orphan"), settings.image,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    instance = None
    try:
        assert helper.stdout is not None
        seen: list[str] = []
        async with asyncio.timeout(60):
            while line := (await helper.stdout.readline()).decode():
                seen.append(line)
                if line.startswith("READY "):
                    instance = line.split()[1]
                    break
        assert instance is not None, "helper server never got ready:\n" + "".join(seen[-20:])
        label = f"{LABEL_INSTANCE}={instance}"
        assert len(containers_labelled(docker_client, label)) == 2  # session + pool
        helper.send_signal(signal.SIGKILL)
        await helper.wait()  # reaped: its pid no longer names a live process
        assert len(containers_labelled(docker_client, label)) == 2  # left behind
        t0 = time.monotonic()
        await make_manager("docker")
        assert time.monotonic() - t0 < 10
        assert containers_labelled(docker_client, label) == []
    finally:
        if helper.returncode is None:
            helper.kill()
            await helper.wait()
        if instance is not None:
            for c in containers_labelled(docker_client, f"{LABEL_INSTANCE}={instance}"):
                c.remove(force=True)


@pytest.mark.docker
async def test_close_removes_container_and_scratch(
        docker_manager: SessionManager, docker_client: docker.DockerClient) -> None:
    session = await docker_manager.open("tester")
    label = f"{LABEL_SESSION}={session.id}"
    assert len(containers_labelled(docker_client, label)) == 1
    scratch = session.spec.workspace
    assert scratch.is_dir()
    await docker_manager.close(session.id, "tester")
    assert containers_labelled(docker_client, label) == []
    assert not scratch.exists()


@pytest.mark.docker
async def test_warm_pool_serves_and_refills(make_manager: MakeManager,
                                            docker_client: docker.DockerClient) -> None:
    manager = await make_manager("docker", pool_size=1)
    assert await manager.pool.wait_full(30)
    assert manager.pool.ready == 1
    t0 = time.monotonic()
    session = await manager.open("tester")
    assert time.monotonic() - t0 < 0.1  # served from the pool, not started
    assert manager.pool.ready == 0
    assert out(await sh(session, "echo pooled")) == "pooled\n"
    assert await manager.pool.wait_full(30)
    assert manager.pool.ready == 1
    instance = instance_of(docker_client, session)
    assert len(containers_labelled(docker_client, f"{LABEL_INSTANCE}={instance}")) == 2
