"""The container is the security boundary: check it from outside (inspect) and inside,
and attack it (memory bomb, fork bomb, egress, environment). Real Docker throughout."""

from __future__ import annotations

import asyncio
import os
import select
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import docker
import pytest
from tests.sandbox.conftest import out, sh

from coderx_mcp.config import parse_size
from coderx_mcp.errors import SandboxGone
from coderx_mcp.sandbox.instance import (
    LABEL_INSTANCE,
    LABEL_PID,
    LABEL_SESSION,
    Instance,
    owner_is_gone,
)
from coderx_mcp.sessions import Session, SessionManager

MakeManager = Callable[..., Awaitable[SessionManager]]
pytestmark = pytest.mark.docker


@pytest.fixture
async def session(docker_manager: SessionManager, workspace: Path) -> Session:
    return await docker_manager.open("tester", workspace=str(workspace))






def container_of(client: docker.DockerClient, session: Session) -> Any:
    found = client.containers.list(all=True, filters={"label": f"{LABEL_SESSION}={session.id}"},
                                   ignore_removed=True)
    assert len(found) == 1
    return found[0]


async def test_ce15_container_config_is_hardened(
        session: Session, docker_client: docker.DockerClient, workspace: Path) -> None:
    attrs = container_of(docker_client, session).attrs
    cfg, hc = attrs["Config"], attrs["HostConfig"]
    assert cfg["User"] and cfg["User"].split(":")[0] not in ("0", "root")
    assert "ALL" in hc["CapDrop"] and not hc.get("CapAdd")
    opts = hc.get("SecurityOpt") or []
    assert any(o.startswith("no-new-privileges") and not o.endswith("false") for o in opts)
    assert not any("unconfined" in o for o in opts)
    assert hc["Privileged"] is False and hc["ReadonlyRootfs"] is True and hc["Init"] is True
    assert hc["NetworkMode"] == "none"
    for mode in ("PidMode", "IpcMode", "UTSMode", "UsernsMode"):
        assert hc.get(mode) != "host", mode
    assert hc["Memory"] == parse_size("512m")
    assert hc["MemorySwap"] == hc["Memory"]
    assert hc["NanoCpus"] > 0
    assert hc["PidsLimit"] == 128
    nofile = [u for u in hc["Ulimits"] or [] if u["Name"] == "nofile"]
    assert nofile and nofile[0]["Soft"] == nofile[0]["Hard"] > 0
    assert not hc.get("Devices")
    tmp = hc["Tmpfs"]["/tmp"].split(",")
    assert {"noexec", "nosuid"} <= set(tmp) and any(o.startswith("size=") for o in tmp)
    assert hc["RestartPolicy"]["Name"] in ("no", "")
    forbidden = {"/", "/etc", "/proc", "/sys", "/dev", "/boot", "/usr", "/lib", "/root",
                 "/var/run", "/run"}
    for m in attrs["Mounts"]:
        assert "docker.sock" not in m.get("Source", "")
        assert m.get("Source") not in forbidden
    binds = {m["Destination"]: m for m in attrs["Mounts"] if m["Type"] == "bind"}
    assert binds["/workspace"]["Source"] == str(session.spec.workspace)
    labels = cfg["Labels"]
    assert labels[LABEL_SESSION] == session.id
    assert labels[LABEL_INSTANCE]
    assert labels[LABEL_PID] == str(os.getpid())
    assert not owner_is_gone(labels, Instance.current())  # names this live server


async def test_ce15_inside_not_root_no_caps_no_new_privs(session: Session) -> None:
    r = await sh(session, "id -u; id -g; grep -E '^(CapEff|CapPrm|NoNewPrivs):' /proc/self/status")
    lines = out(r).split("\n")
    assert lines[0] != "0" and lines[1] != "0"
    status = dict(line.split(":\t") for line in lines[2:] if line)
    assert status == {"CapEff": "0000000000000000", "CapPrm": "0000000000000000",
                      "NoNewPrivs": "1"}


async def test_ce15_root_filesystem_read_only(session: Session) -> None:
    r = await sh(session, "touch /etc/x; touch /usr/local/x; touch /x")
    assert r["exit_code"] != 0
    assert r["stderr"]["text"].count("Read-only file system") == 3
    w = await sh(session, "touch /workspace/ok /tmp/ok $HOME/ok && echo writable")
    assert out(w) == "writable\n"


async def test_ce02_no_privilege_escalation(session: Session) -> None:
    r = await sh(session, "ls /var/run/docker.sock /run/docker.sock 2>&1; "
                          "sudo -n id -u 2>&1; su -c 'id -u' root </dev/null 2>&1; id -u")
    assert out(r).splitlines()[-1] != "0"
    assert "\n0\n" not in out(r)
    assert "No such file" in out(r)


async def test_ce12_tmp_is_capped_and_noexec(make_manager: MakeManager) -> None:
    manager = await make_manager("docker", limits={"tmp_size": "16m"})
    session = await manager.open("tester")
    r = await sh(session, "head -c 32M /dev/zero > /tmp/fill")
    assert r["exit_code"] != 0 and "No space left on device" in r["stderr"]["text"]
    r = await sh(session, "rm -f /tmp/fill; cp /bin/true /tmp/t && chmod +x /tmp/t && /tmp/t")
    assert r["exit_code"] == 126 and "Permission denied" in r["stderr"]["text"]


async def test_ce16_no_network_but_loopback(session: Session) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        r = await sh(session, "ls /sys/class/net", timeout=10)
        assert out(r).split() == ["lo"]
        for attempt in (f"bash -c 'echo hi > /dev/tcp/127.0.0.1/{port}'",
                        f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', "
                        f"{port}), timeout=2)\"",
                        "getent hosts localhost.invalid"):
            r = await sh(session, attempt, timeout=10)
            assert r["exit_code"] not in (0, None), f"{attempt!r} succeeded"
        readable, _, _ = await asyncio.to_thread(select.select, [listener], [], [], 0.5)
        assert readable == [], "the host's loopback listener got a connection from the sandbox"
    finally:
        listener.close()


async def test_ce10_memory_bomb_oom_killed_and_reported(make_manager: MakeManager) -> None:
    manager = await make_manager("docker", limits={"memory": "256m"})
    session = await manager.open("tester")
    try:
        r = await sh(session, 'python3 -c "b = bytearray(2 << 30)"', timeout=60)
    except SandboxGone as exc:  # the OOM killer may take the runner instead
        assert "out of memory" in (exc.reason or "")
    else:
        assert r["oom_killed"] is True and r["exit_code"] == 137, r
        oom = await sh(session, "cat /sys/fs/cgroup/memory.events "
                                "/sys/fs/cgroup/memory/memory.oom_control 2>/dev/null")
        assert any(ln.startswith("oom_kill ") and int(ln.split()[1]) >= 1
                   for ln in out(oom).splitlines())  # the container's cgroup did the killing
    assert out(await sh(session, "echo ok", timeout=10)) == "ok\n"


async def test_ce09_fork_bomb_contained(docker_manager: SessionManager,
                                        docker_client: docker.DockerClient) -> None:
    a, b = await asyncio.gather(docker_manager.open("tester"), docker_manager.open("tester"))
    # The classic bomb, then a loop of builtins only (no fork) that keeps the call running
    # until its 3 s timeout while the bomb churns at the pid limit.
    bomb = asyncio.create_task(sh(
        a, ":(){ :|:& };: ; SECONDS=0; while ((SECONDS < 60)); do true; done", timeout=3))
    await asyncio.sleep(0.5)
    latencies = []
    for _ in range(3):
        t0 = time.monotonic()
        r = await sh(b, "echo ok", timeout=5)
        latencies.append(time.monotonic() - t0)
        assert out(r) == "ok\n"
    assert max(latencies) < 2.0, latencies
    recreated = False
    try:
        r = await asyncio.wait_for(bomb, 30)
        assert r["timed_out"] is True and r["running"] is False
    except SandboxGone:
        recreated = True  # the runner could not fork either: the session restarts
    # Every process of the bomb lives in A's container (its pid cgroup); none is left there.
    # (The host-wide count is not compared: other work runs on this machine meanwhile.)
    for _ in range(20):
        if len(container_of(docker_client, a).top()["Processes"]) <= 6:
            break
        await asyncio.sleep(0.1)
    top = container_of(docker_client, a).top()["Processes"]
    assert len(top) <= 6, top  # init, sleep, runner, its spare bash (+ a restart's)
    end = time.monotonic() + 10
    while True:
        try:
            r = await sh(a, "echo again; cat /sys/fs/cgroup/pids.events "
                            "/sys/fs/cgroup/pids/pids.events 2>/dev/null", timeout=5)
            break
        except SandboxGone:
            assert time.monotonic() < end
    lines = out(r).splitlines()
    assert lines[0] == "again"
    if not recreated:  # the pid limit did the stopping
        assert lines[1].startswith("max ") and int(lines[1].split()[1]) > 0


@pytest.mark.docker
async def test_is03_bridge_sessions_cannot_reach_each_other(
        make_manager: MakeManager, docker_client: docker.DockerClient) -> None:
    docker_manager = await make_manager("docker", allow_network=True)
    a = await docker_manager.open("tester", network="bridge")
    b = await docker_manager.open("tester", network="bridge")
    nets = {n: docker_client.api.inspect_container(s.sandbox.ident)["NetworkSettings"]["Networks"]
            for n, s in (("a", a), ("b", b))}
    assert list(nets["a"]) == [f"coderx-{a.id}"] and list(nets["b"]) == [f"coderx-{b.id}"]
    ip_a = nets["a"][f"coderx-{a.id}"]["IPAddress"]
    await a.call("spawn", command="python3 -c \"import socket; s=socket.socket(); "
                 "s.bind(('0.0.0.0', 8099)); s.listen(); s.accept()\"")
    await asyncio.sleep(0.5)
    own = await sh(a, "timeout 3 bash -c 'echo > /dev/tcp/127.0.0.1/8099' && echo reached")
    assert out(own) == "reached\n"  # the listener is up
    r = await sh(b, f"timeout 3 bash -c 'echo > /dev/tcp/{ip_a}/8099' && echo reached")
    assert "reached" not in out(r) and r["exit_code"] != 0
    await docker_manager.close(a.id, "tester")
    assert not docker_client.networks.list(names=[f"coderx-{a.id}"])
