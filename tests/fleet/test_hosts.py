"""Sessions over several Docker engines (``CODERX_DOCKER_HOSTS``), tested on two real extra
engines with mutual TLS (tests/fleet/conftest.py)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import tarfile
from collections import Counter
from pathlib import Path

import docker
import pytest
from fastmcp import Client
from pydantic import ValidationError
from tests.conftest import CLI, IMAGE, MakeManager, MakeSettings, child_env
from tests.fleet.conftest import CA, Engine
from tests.sandbox.conftest import out, sh

from coderx_mcp.config import DockerHostConfig, SandboxLimits, Settings
from coderx_mcp.errors import SandboxGone, SandboxUnavailable
from coderx_mcp.sandbox.base import SandboxSpec
from coderx_mcp.sandbox.docker_backend import DockerBackend
from coderx_mcp.sandbox.docker_hosts import make_client
from coderx_mcp.sandbox.fleet import FleetBackend
from coderx_mcp.sandbox.host_image import ensure_image
from coderx_mcp.sandbox.instance import LABEL_SESSION, Instance
from coderx_mcp.server import build_server
from coderx_mcp.sessions import SessionManager


def _hosts(*engines: Engine) -> list[DockerHostConfig]:
    return [e.config for e in engines]


def _context(files: dict[str, bytes]) -> io.BytesIO:
    """A build context (a tar) holding ``files``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def _dead_pid() -> int:
    """The pid of a process that has exited."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    return dead.pid


def _sessions_on(engine: Engine) -> set[str]:
    client = engine.local_client()
    try:
        return {c.labels[LABEL_SESSION] for c in client.containers.list(
            filters={"label": LABEL_SESSION}, ignore_removed=True)}
    finally:
        client.close()


@pytest.mark.parametrize(("host", "problem"), [
    ({"url": "tcp://10.0.0.5:2376"}, "needs \"tls\""),
    ({"url": "http://10.0.0.5:2376"}, "must start with tcp://, ssh:// or unix://"),
    ({"url": "tcp://10.0.0.5"}, "needs a port"),
    ({"url": "ssh://coder@h", "tls": "/tmp"}, "applies to tcp:// only"),
    ({"url": "tcp://h:2376", "tls": "/nonexistent"}, "ca.pem, cert.pem, key.pem missing"),
    ({"url": "ssh://h", "colour": "red"}, "Extra inputs are not permitted"),
])
def test_docker_hosts_setting_rejects_bad_entries(host: dict[str, str], problem: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODERX_DOCKER_HOSTS", json.dumps([host]))
    with pytest.raises(ValidationError, match=problem):
        Settings()


def test_doctor_says_what_is_wrong_with_docker_hosts_in_one_line(tmp_path: Path) -> None:
    env = child_env(CODERX_DOCKER_HOSTS='[{"url": "tcp://10.0.0.5:2376"}]',
                    CODERX_STATE_DIR=str(tmp_path))
    done = subprocess.run([*CLI, "doctor"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "docker_hosts.0" in lines[0] and "needs \"tls\"" in lines[0]


@pytest.mark.docker
async def test_sessions_spread_over_both_engines(fleet_engines: list[Engine],
                                                 make_manager: MakeManager) -> None:
    a, b = fleet_engines
    manager = await make_manager(docker_hosts=_hosts(a, b))
    sessions = [await manager.open("local", mode="scratch") for _ in range(4)]
    placed = Counter(s.sandbox.ident.rsplit("@", 1)[1] for s in sessions)
    assert placed == {"a": 2, "b": 2}
    assert _sessions_on(a) | _sessions_on(b) == {s.id for s in sessions}
    for s in sessions:  # the runner's stream runs over TLS to each engine
        assert out(await sh(s, "echo hi-$((6*7)); head -c 3000000 /dev/urandom > big")) \
            == "hi-42\n"
        assert (await s.call("read", path="big"))["size"] == 3000000
    for s in sessions:
        await manager.close(s.id, "local")
    assert _sessions_on(a) == _sessions_on(b) == set()


@pytest.mark.docker
async def test_least_loaded_engine_takes_the_next_session(fleet_engines: list[Engine],
                                                          make_manager: MakeManager) -> None:
    a, b = fleet_engines
    first = await make_manager(docker_hosts=_hosts(a))  # another server, on a only
    busy = [await first.open("local", mode="scratch") for _ in range(2)]
    second = await make_manager(docker_hosts=_hosts(a, b))
    s = await second.open("local", mode="scratch")
    assert s.sandbox.ident.endswith("@b")  # a already runs two sandboxes (of another server)
    assert {x.id for x in busy} <= _sessions_on(a)


@pytest.mark.docker
async def test_engine_refuses_a_client_of_another_ca(fleet_engines: list[Engine],
                                                     fleet_ca: CA, tmp_path: Path) -> None:
    a = fleet_engines[0]
    stranger = DockerHostConfig(url=a.config.url, name="a",
                                tls=fleet_ca.issue(tmp_path / "tls", "intruder", server=False))
    fleet = FleetBackend(Settings(docker_hosts=[stranger]), Instance.current())
    with pytest.raises(SandboxUnavailable, match=r"docker host a \(tcp://127\.0\.0\.1:\d+\) "
                                                 "does not answer"):
        await fleet.check()


@pytest.mark.docker
def test_image_copied_to_an_engine_that_lacks_it(fleet_engines: list[Engine]) -> None:
    tag = f"coderx-fleet-probe:{os.getpid()}"
    source = docker.from_env(timeout=60)
    target = make_client(fleet_engines[1].config, 60)
    seen: list[tuple[int, int]] = []
    try:
        source.images.build(fileobj=_context({"Dockerfile": b"FROM scratch\nCOPY f /f\n",
                                              "f": os.urandom(2 << 20)}),
                            custom_context=True, tag=tag, rm=True)
        assert ensure_image("b", target, tag, source, lambda d, t: seen.append((d, t)))
        assert target.images.get(tag).id == source.images.get(tag).id
        assert seen and seen[-1][0] > 0
        assert not ensure_image("b", target, tag, source)  # the same image: no copy
    finally:
        for c in (source, target):
            with contextlib.suppress(docker.errors.ImageNotFound):
                c.images.remove(tag, force=True)
            c.close()


@pytest.mark.docker
def test_image_missing_everywhere_is_one_clear_error(fleet_engines: list[Engine]) -> None:
    target = make_client(fleet_engines[1].config, 60)
    try:
        with pytest.raises(SandboxUnavailable, match="coderx-nope:1 is missing on docker host "
                                                     "b and no local engine has it"):
            ensure_image("b", target, "coderx-nope:1", None)
    finally:
        target.close()


@pytest.mark.docker
async def test_cr03_engine_restart_one_clear_error_then_reopen(fleet_engines: list[Engine],
                                                          make_manager: MakeManager) -> None:
    """#9 fault: the daemon restarts under open sessions (engine b, never the shared one)."""
    b = fleet_engines[1]
    manager = await make_manager(docker_hosts=_hosts(b))
    s = await manager.open("local", mode="scratch")
    await sh(s, "echo still here > kept.txt")
    b.stop()
    try:
        problem = await manager.problem()
        assert problem is not None and "docker host b" in problem and "does not answer" in problem
        with pytest.raises(SandboxGone, match=r"docker host b \(tcp://127\.0\.0\.1:\d+\) does "
                                              r"not answer \(stopped or restarted\?\)"):
            await sh(s, "true")
        with pytest.raises(SandboxUnavailable, match=r"no docker host can start the sandbox: "
                                                     r"docker host b .* does not answer"):
            await sh(s, "true")
    finally:
        b.start()
    assert await manager.problem() is None
    # A fresh container on the same workspace.
    assert out(await sh(s, "cat kept.txt")) == "still here\n"
    assert _sessions_on(b) == {s.id}


@pytest.mark.docker
async def test_cr03_health_and_run_command_through_an_engine_restart(
        fleet_engines: list[Engine], workspace: Path, tmp_path: Path) -> None:
    """#9 fault through MCP: health reports the stopped engine, the call gives one clear
    error, and the session works again once the engine is back."""
    b = fleet_engines[1]
    settings = Settings(docker_hosts=_hosts(b), workspace=workspace, image=IMAGE,
                        pool_size=0, data_dir=tmp_path / "data", state_dir=tmp_path / "state",
                        limits=SandboxLimits(memory="512m"))
    async with Client(build_server(settings)) as c:
        first = await c.call_tool("run_command", {"command": "echo one"})
        assert "one" in first.content[0].text  # type: ignore[union-attr]
        b.stop()
        try:
            health = await c.call_tool("health", {})
            assert health.structured_content is not None
            assert health.structured_content["ok"] is False
            assert [h["ok"] for h in health.structured_content["docker_hosts"]] == [False]
            failed = await c.call_tool("run_command", {"command": "echo two"},
                                       raise_on_error=False)
            assert failed.is_error
            text = failed.content[0].text  # type: ignore[union-attr]
            assert "docker host b" in text and "does not answer" in text, text
            assert "Traceback" not in text and "\n" not in text
        finally:
            b.start()
        health = await c.call_tool("health", {})
        assert health.structured_content is not None and health.structured_content["ok"]
        again = await c.call_tool("run_command", {"command": "echo three"})
        assert "three" in again.content[0].text  # type: ignore[union-attr]


@pytest.mark.docker
def test_doctor_shows_each_engine(fleet_engines: list[Engine], tmp_path: Path) -> None:
    hosts = json.dumps([e.config.model_dump(mode="json") for e in fleet_engines])
    env = child_env(CODERX_DOCKER_HOSTS=hosts, CODERX_STATE_DIR=str(tmp_path / "state"),
                    CODERX_DATA_DIR=str(tmp_path / "data"))
    done = subprocess.run([*CLI, "doctor", "--port", "1"], env=env, capture_output=True,
                          text=True, timeout=120)
    lines = [x for x in done.stdout.splitlines() if "docker host" in x]
    assert lines == [f"ok   docker host {n}: answers; {IMAGE} is current" for n in "ab"], \
        done.stdout


@pytest.mark.docker
async def test_sandboxes_of_a_dead_server_reaped_by_label_on_every_engine(
        fleet_engines: list[Engine], workspace: Path) -> None:
    settings = Settings(docker_hosts=_hosts(*fleet_engines), image=IMAGE)
    here = Instance.current()
    gone = Instance(id="f" * 16, pid=_dead_pid(), start="1", host=here.host)
    left = FleetBackend(settings, gone)
    sandboxes = [left.make(SandboxSpec(workspace=workspace), f"s-{i:032x}") for i in (1, 2)]
    try:
        for sb in sandboxes:
            await sb.start()
        assert {sb.ident.rsplit("@", 1)[1] for sb in sandboxes} == {"a", "b"}
        assert await FleetBackend(settings, here).reap_orphans() == 2
        assert _sessions_on(fleet_engines[0]) == _sessions_on(fleet_engines[1]) == set()
    finally:
        for sb in sandboxes:
            await sb.close()


@pytest.mark.docker
async def test_cr03_single_engine_restart_one_clear_error_then_reopen(
        fleet_engines: list[Engine], make_settings: MakeSettings) -> None:
    """#9 fault on the plain Docker backend (one engine: engine b's unix socket, never the
    shared engine): health says the engine is away, one clear error, then a reopen."""
    b = fleet_engines[1]
    settings = make_settings()
    manager = SessionManager(settings, DockerBackend(settings, Instance.current(),
                                                     client=b.local_client()))
    await manager.start()
    try:
        s = await manager.open("local", mode="scratch")
        await sh(s, "echo still here > kept.txt")
        b.stop()
        try:
            problem = await manager.problem()
            assert problem is not None and "the Docker engine does not answer" in problem
            with pytest.raises(SandboxGone, match=r"stopped: the Docker engine does not answer "
                                                  r"\(stopped or restarted\?\)\. The next call"):
                await sh(s, "true")
            with pytest.raises(SandboxUnavailable, match="could not start the sandbox container"):
                await sh(s, "true")
        finally:
            b.start()
        assert await manager.problem() is None
        assert out(await sh(s, "cat kept.txt")) == "still here\n"
    finally:
        await manager.shutdown()
