"""Stateless replicas (#12): two ``serve --http`` processes on loopback against the same
engine share sessions through container labels (``CODERX_SHARED_SESSIONS``)."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
from pathlib import Path
from typing import Any

import docker
import pytest
from fastmcp import Client
from tests.conftest import MakeManager, Server, child_env, facts

from coderx_mcp.sandbox.docker import remove_container
from coderx_mcp.sandbox.instance import LABEL_OWNER, LABEL_PID, LABEL_SESSION

pytestmark = pytest.mark.docker


def text(result: Any) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content)


async def test_two_replicas_share_sessions_and_killing_one_loses_none(
        tmp_path: Path, docker_client: docker.DockerClient) -> None:
    token = secrets.token_hex(16)
    env = child_env(CODERX_SHARED_SESSIONS="true", CODERX_STATE_DIR=str(tmp_path / "state"),
                    CODERX_DATA_DIR=str(tmp_path / "data"),
                    CODERX_HTTP_TOKENS=json.dumps({"alice": token}))
    servers = []
    for name in ("one", "two", "three"):
        (tmp_path / name).mkdir()
        servers.append(Server(tmp_path / name, env))
    one, two, three = servers
    sids: list[str] = []
    await one.start()
    await two.start()
    try:
        async with Client(one.url, auth=token) as a, Client(two.url, auth=token) as b:
            sid = facts(await a.call_tool("session_open", {"mode": "scratch"}))["session"]
            sids.append(sid)
            await a.call_tool("run_command", {"command": "echo from-one > note.txt; "
                                              "mkdir -p sub && cd sub && export MARK=kept",
                                              "session": sid})
            used = await b.call_tool("run_command", {"command": "cat ../note.txt; pwd; "
                                                     "echo mark=$MARK", "session": sid})
            # The adopting replica's runner carries the shell state on (cwd, exports).
            assert "from-one" in text(used), text(used)
            assert "/workspace/sub" in text(used) and "mark=kept" in text(used), text(used)
            listed = facts(await b.call_tool("session_list", {}))["sessions"]
            assert [s["session"] for s in listed] == [sid]
            closed = await b.call_tool("session_close", {"session": sid})
            assert not closed.is_error, text(closed)
            gone = await a.call_tool("run_command", {"command": "true", "session": sid},
                                     raise_on_error=False)
            assert gone.is_error and "no open session" in text(gone), text(gone)
            assert docker_client.containers.list(
                all=True, filters={"label": f"{LABEL_SESSION}={sid}"}) == []

            kept = facts(await b.call_tool("session_open", {"mode": "scratch"}))["session"]
            sids.append(kept)
            await b.call_tool("run_command", {"command": "echo survives > k.txt",
                                              "session": kept})
        assert two.proc is not None
        two.proc.send_signal(signal.SIGKILL)
        two.proc.wait(30)
        await three.start()  # a replica starting now must not reap the dead one's session
        async with Client(one.url, auth=token) as a, Client(three.url, auth=token) as c:
            r = await a.call_tool("run_command", {"command": "cat k.txt", "session": kept})
            assert "survives" in text(r)
            r = await c.call_tool("run_command", {"command": "cat k.txt", "session": kept})
            assert "survives" in text(r)
            diff = facts(await c.call_tool("session_diff", {"session": kept}))
            assert [f["path"] for f in diff["files"]] == ["k.txt"]  # the baseline carried over
            await c.call_tool("session_close", {"session": kept})
    finally:
        for s in (one, three):
            if s.proc is not None and s.proc.poll() is None:
                s.proc.send_signal(signal.SIGTERM)
                s.proc.wait(30)
        for sid in sids:
            for c in docker_client.containers.list(
                    all=True, filters={"label": f"{LABEL_SESSION}={sid}"}):
                remove_container(docker_client, c.id)


async def test_orphans_reaped_by_heartbeat_not_by_creator_pid(
        make_manager: MakeManager, docker_client: docker.DockerClient) -> None:
    """A shared session outlives its creator (no pid labels, so no server reaps it for a
    dead pid); once no replica used it for idle_timeout_s it goes, workspace and all. An
    unshared server's sandbox on the same engine is never the replicas' to reap."""
    unshared = await (await make_manager()).open("local", mode="scratch")
    first = await make_manager(shared_sessions=True)
    s = await first.open("principal:alice", mode="scratch")
    await first.resolve(s.id, "principal:alice")  # a heartbeat
    await first.shutdown()  # lets go of the stream only
    labels = docker_client.containers.get(s.sandbox.ident).labels
    assert LABEL_PID not in labels and labels[LABEL_OWNER] == "principal:alice"
    assert s.workspace.host.is_dir()

    second = await make_manager(shared_sessions=True, idle_timeout_s=3)
    assert await second.reap_orphans_shared() == 0  # used a moment ago
    await asyncio.sleep(3.5)
    assert await second.reap_orphans_shared() == 1
    assert unshared.sandbox.alive and docker_client.containers.get(unshared.sandbox.ident)
    assert docker_client.containers.list(
        all=True, filters={"label": f"{LABEL_SESSION}={s.id}"}) == []
    assert not s.workspace.host.exists()
