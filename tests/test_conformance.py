"""The official MCP conformance scenarios against `coderx-mcp serve --http` (catalogue PR-13).

The runner (`@modelcontextprotocol/conformance`, pinned) is installed once from the npm
registry into ~/.cache/coderx/conformance. Only the scenarios that mean something for a
tools-only server run (see shared/security-catalogue.md).
"""

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import npm_install, serve_http

# No Docker needed: these scenarios only speak the protocol (no tool runs a sandbox).
VERSION = "0.1.13"  # the last release that runs on Node 20
SCENARIOS = ["server-initialize", "ping", "tools-list", "server-sse-multiple-streams",
             "dns-rebinding-protection", "logging-set-level"]


@pytest.fixture(scope="module")
def conformance() -> Path:
    return npm_install("@modelcontextprotocol/conformance", VERSION,
                       "node_modules/@modelcontextprotocol/conformance/dist/index.js")


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    ws = tmp_path_factory.mktemp("conformance")
    os.chown(ws, 1000, 1000)
    with serve_http(ws) as url:
        yield url


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pr13_conformance_scenario(conformance: Path, server_url: str, scenario: str,
                                   tmp_path: Path) -> None:
    r = subprocess.run(["node", str(conformance), "server", "--url", server_url,
                        "--scenario", scenario, "-o", str(tmp_path)],
                       capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "0 failed" in r.stdout
