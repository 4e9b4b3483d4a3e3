"""What happens before a stdio server answers ``initialize`` (the host waits for it): no
Docker SDK import and no Docker call; the session manager's start follows the answer."""

from __future__ import annotations

import asyncio
import json
import os
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


_GC_DRIVER = """
import atexit, gc, io, json, os, sys
before = []  # generations collected before the first byte of the answer
answered = []

def on_gc(phase, info):
    if phase == "start" and not answered:
        before.append(info["generation"])

gc.callbacks.append(on_gc)

class Out(io.RawIOBase):
    def writable(self):
        return True

    def write(self, b):
        answered.append(1)
        return os.write(1, b)

sys.stdout = io.TextIOWrapper(io.BufferedWriter(Out()), encoding="utf-8", line_buffering=True)
atexit.register(lambda: sys.stderr.write("GC " + json.dumps({
    "before": before, "enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}) + "\\n"))
sys.argv = ["coderx-mcp", "serve"]
from coderx_mcp.startup import main
main()
"""


def test_collector_waits_for_the_first_answer_then_start_up_is_frozen(
        tmp_path: Any) -> None:
    """The console entry (``startup.py``) keeps the garbage collector off while the server
    starts (it walked ~100,000 start-up objects some 300 times, ~0.2 s); once the first
    message is answered the start-up's objects are frozen and the collector is back on."""
    init = ('{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {'
            '"protocolVersion": "2025-06-18", "capabilities": {}, '
            '"clientInfo": {"name": "t", "version": "1"}}}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODERX_")}
    (tmp_path / "ws").mkdir()
    env.update(CODERX_BACKEND="local", CODERX_WORKSPACE=str(tmp_path / "ws"),
               CODERX_POOL_SIZE="0", CODERX_LOG_LEVEL="error",
               CODERX_STATE_DIR=str(tmp_path / "state"))
    done = subprocess.run([sys.executable, "-c", _GC_DRIVER], input=init, env=env,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert '"id":1' in done.stdout.replace(" ", ""), done.stderr[-2000:]
    [line] = [x for x in done.stderr.splitlines() if x.startswith("GC ")]
    report = json.loads(line[3:])
    # At most young collections after the collector came back, just before the write.
    assert [g for g in report["before"] if g > 0] == [], report
    assert report["enabled"] is True
    assert report["frozen"] > 50_000, report  # the start-up's objects, out of later scans


def test_other_commands_turn_the_collector_back_on_at_once() -> None:
    code = ("import gc, sys; sys.argv = ['coderx-mcp', 'version']; "
            "import atexit; atexit.register(lambda: print('enabled', gc.isenabled())); "
            "from coderx_mcp.startup import main; main()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"coderx-mcp {_version()}", "enabled True"]


def _version() -> str:
    from coderx_mcp import __version__

    return __version__
