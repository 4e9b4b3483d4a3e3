"""What happens before a stdio server answers ``initialize`` (the host waits for it): no
Docker SDK import and no Docker call; the session manager's start follows the answer."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest
from fastmcp import Client

import coderx_mcp.sessions as sessions_mod
from coderx_mcp.config import Settings
from coderx_mcp.sandbox.local import LocalBackend
from coderx_mcp.server import build_server
from coderx_mcp.sessions import SessionManager


def test_start_path_imports_no_docker_sdk() -> None:
    """The CLI, the server and the Docker backend load without the Docker SDK (~75 ms):
    it loads with the backend's first use, after ``initialize``."""
    code = ("import sys, coderx_mcp.cli, coderx_mcp.server.build, coderx_mcp.server.app, "
            "coderx_mcp.sandbox.docker_backend; print(sorted(m for m in sys.modules "
            "if m == 'docker' or m.startswith('docker.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout


class _Spy(LocalBackend):
    """The local backend, noting when the manager's start first touches it."""

    checked = 0

    async def check(self) -> None:
        self.checked += 1
        await super().check()


def _manager(settings: Settings) -> tuple[SessionManager, _Spy]:
    backend = _Spy(settings)
    return SessionManager(settings, backend), backend


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_start_waits_for_initialize_then_goes(settings: Settings) -> None:
    manager, backend = _manager(settings)
    manager.start_soon(after_initialize=True)
    try:
        await _settle()
        assert backend.checked == 0  # nothing before the answer
        manager.begin()
        await manager.ready()
        assert backend.checked == 1
    finally:
        await manager.shutdown()


async def test_a_call_needing_a_session_does_not_wait_for_initialize(
        settings: Settings) -> None:
    manager, backend = _manager(settings)
    manager.start_soon(after_initialize=True)
    try:
        await asyncio.wait_for(manager.ready(), 10)  # opens the gate itself
        assert backend.checked == 1
    finally:
        await manager.shutdown()


async def test_start_goes_anyway_without_a_client(settings: Settings,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions_mod, "CLIENT_WAIT", 0.05)
    manager, backend = _manager(settings)
    manager.start_soon(after_initialize=True)
    try:
        for _ in range(100):
            if backend.checked:
                break
            await asyncio.sleep(0.02)
        assert backend.checked == 1
    finally:
        await manager.shutdown()


async def test_server_starts_its_sessions_once_initialize_is_answered(
        make_settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions_mod, "CLIENT_WAIT", 600.0)  # only the answer can start it
    started: list[SessionManager] = []
    mcp = build_server(make_settings(backend="local"), backend_factory=lambda s, i: _Spy(s),
                       on_ready=lambda app: started.append(app.sessions))
    async with Client(mcp) as client:  # initialize answered
        [manager] = started
        backend = manager.backend
        assert isinstance(backend, _Spy)
        for _ in range(200):
            if backend.checked:
                break
            await asyncio.sleep(0.02)
        assert backend.checked == 1
        assert (await client.call_tool("session_list", {})).content
