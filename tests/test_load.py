"""A short version of bench/bench_load.py: six agents with their own tokens and sessions
(half in worktree mode on one repository) on one HTTP server, no errors, no leakage between
sessions, no lost edits."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.bench_load import prepare, run_agents
from tests.conftest import MakeServer, chown_tree

pytestmark = pytest.mark.docker


async def test_six_agents_share_a_server_without_leaks_or_lost_edits(
        make_server: MakeServer, tmp_path: Path) -> None:
    server = make_server(CODERX_MAX_SESSIONS="16", CODERX_LOG_LEVEL="warning")
    specs = prepare(tmp_path / "work", 6, server.tmp / "state" / "tokens.json")
    chown_tree(tmp_path / "work")
    await server.start()
    report = await run_agents(server.url, specs, seconds=8)
    summary = report.summary()
    assert report.errors == [] and report.leaks == [] and report.lost_edits == [], summary
    for tool in ("read_file", "edit_file", "grep", "run_command"):
        assert summary["per_tool"][tool]["n"] >= 6, summary
