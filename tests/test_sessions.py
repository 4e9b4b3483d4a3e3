"""SessionManager: limits, ownership, default sessions, idle reaping, workspaces.

The local backend is enough here: none of this depends on what isolates the sandbox.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from coderx_mcp.errors import ConfigError, SessionLimitReached, SessionNotFound
from coderx_mcp.sessions import SessionManager

MakeManager = Callable[..., Awaitable[SessionManager]]


async def test_max_sessions_enforced(make_manager: MakeManager) -> None:
    manager = await make_manager("local", max_sessions=2)
    first = await manager.open("alice")
    await manager.open("bob")
    with pytest.raises(SessionLimitReached, match="session_close"):
        await manager.open("alice")
    await manager.close(first.id, "alice")
    await manager.open("alice")  # a closed session frees its slot


async def test_max_sessions_holds_under_concurrent_opens(make_manager: MakeManager) -> None:
    manager = await make_manager("local", max_sessions=3)
    results = await asyncio.gather(*(manager.open("alice") for _ in range(6)),
                                   return_exceptions=True)
    opened = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, SessionLimitReached)]
    assert len(opened) == 3 and len(refused) == 3
    assert len(manager.list("alice")) == 3


async def test_sessions_of_other_owners_are_not_found(make_manager: MakeManager) -> None:
    manager = await make_manager("local")
    mine = await manager.open("alice")
    assert manager.get(mine.id, "alice") is mine
    with pytest.raises(SessionNotFound):
        manager.get(mine.id, "mallory")
    with pytest.raises(SessionNotFound):
        await manager.close(mine.id, "mallory")
    with pytest.raises(SessionNotFound):
        await manager.resolve(mine.id, "mallory")
    assert manager.list("mallory") == []
    assert (await mine.call("exec", command="echo still mine", timeout=10))["exit_code"] == 0


async def test_session_ids_are_unguessable(make_manager: MakeManager) -> None:
    manager = await make_manager("local")
    a, b = await manager.open("alice"), await manager.open("alice")
    assert a.id != b.id
    assert a.id.startswith("s-") and len(a.id) == 2 + 32


async def test_closed_session_refuses_calls(make_manager: MakeManager) -> None:
    manager = await make_manager("local")
    session = await manager.open("alice")
    await manager.close(session.id, "alice")
    with pytest.raises(SessionNotFound):
        await session.call("hello")
    with pytest.raises(SessionNotFound):
        manager.get(session.id, "alice")


async def test_is06_default_session_opened_once_under_races(make_manager: MakeManager) -> None:
    manager = await make_manager("local")
    sessions = await asyncio.gather(*(manager.default("alice") for _ in range(5)))
    assert len({s.id for s in sessions}) == 1
    assert len(manager.list("alice")) == 1
    bob = await manager.default("bob")
    assert bob.id != sessions[0].id
    assert await manager.resolve(None, "alice") is sessions[0]
    await manager.close(sessions[0].id, "alice")
    again = await manager.default("alice")
    assert again.id != sessions[0].id  # a closed default is replaced by a new one


async def test_idle_reaper_closes_only_idle_sessions(make_manager: MakeManager) -> None:
    manager = await make_manager("local", idle_timeout_s=0.2)
    idle = await manager.open("alice")
    busy = await manager.open("alice")
    call = asyncio.create_task(busy.call("exec", command="sleep 0.6; echo done", timeout=10))
    await asyncio.sleep(0.3)
    assert await manager.reap_idle_once() == 1
    with pytest.raises(SessionNotFound):
        manager.get(idle.id, "alice")
    assert (await call)["stdout"]["text"] == "done\n"  # a running call is never reaped
    assert manager.get(busy.id, "alice") is busy
    assert await manager.reap_idle_once() == 0  # just used
    await asyncio.sleep(0.3)
    assert await manager.reap_idle_once() == 1


@pytest.mark.parametrize("bad", ["relative/dir", "missing", "/", "/etc", "file", "tmp",
                                 "home"])
async def test_bad_workspace_rejected(bad: str, make_manager: MakeManager,
                                      tmp_path: Path) -> None:
    manager = await make_manager("local")
    (tmp_path / "file").write_text("not a directory")
    path = {"missing": str(tmp_path / "missing"), "file": str(tmp_path / "file"),
            "tmp": str(tmp_path),  # holds the server's state_dir
            "home": str(Path.home())}.get(bad, bad)
    with pytest.raises(ConfigError):
        await manager.open("alice", workspace=path)
    assert manager.list("alice") == []
    await manager.open("alice")  # a refused open leaves no slot taken


async def test_bad_limits_rejected(make_manager: MakeManager) -> None:
    manager = await make_manager("local", max_cpus=2.0, allow_network=False)
    for kwargs in ({"cpus": 3.0}, {"cpus": 0.0}, {"memory": "1k"}, {"memory": "64g"},
                   {"memory": "lots"}, {"network": "bridge"}):
        with pytest.raises(ConfigError):
            await manager.open("alice", **kwargs)  # type: ignore[arg-type]


async def test_scratch_workspace_removed_on_close(make_manager: MakeManager) -> None:
    manager = await make_manager("local")
    session = await manager.open("alice")
    scratch = session.spec.workspace
    assert scratch.parent == (manager.settings.data_dir / "scratch").resolve()
    await session.call("exec", command="mkdir -p a/b && echo x > a/b/f", timeout=10)
    assert (scratch / "a" / "b" / "f").exists()
    await manager.close(session.id, "alice")
    assert not scratch.exists()


async def test_given_workspace_kept_on_close(make_manager: MakeManager, workspace: Path) -> None:
    manager = await make_manager("local")
    session = await manager.open("alice", workspace=str(workspace))
    await session.call("exec", command="echo keep > kept.txt", timeout=10)
    await manager.close(session.id, "alice")
    assert (workspace / "kept.txt").read_text() == "keep\n"


async def test_shutdown_closes_sessions_and_pool_scratch(make_manager: MakeManager) -> None:
    manager = await make_manager("local", pool_size=1)
    assert await manager.pool.wait_full(10)
    session = await manager.open("alice")
    assert manager.pool.ready == 0
    assert await manager.pool.wait_full(10)
    root = manager.settings.data_dir / "scratch"
    assert len(os.listdir(root)) == 2  # the session's scratch and the pooled one
    await manager.shutdown()
    assert os.listdir(root) == []
    with pytest.raises(SessionNotFound):
        await session.call("hello")
