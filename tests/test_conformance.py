"""The official MCP conformance suite against `coderx-mcp serve --http` (catalogue PR-13).

The runner (`@modelcontextprotocol/conformance`, pinned with a lockfile in
tests/conformance/) is installed by `.ci/run` with `npm ci` (or here, when missing). Every
server scenario runs; tests/conformance/baseline.json holds the expected outcome of each,
with the reason for each expected failure. A scenario that newly passes or newly fails,
or one the baseline does not know, fails the test: update the baseline on purpose.
"""

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tests.conftest import serve_http

# No Docker needed: these scenarios only speak the protocol (no tool runs a sandbox).
HERE = Path(__file__).parent / "conformance"
ENTRY = HERE / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
BASELINE: dict[str, str] = {k: v for k, v in json.loads((HERE / "baseline.json").read_text())
                            .items() if not k.startswith("_")}


def _install() -> Path:
    if not ENTRY.exists():
        npm = shutil.which("npm")
        assert npm, "npm is needed for the conformance suite (Debian: apt-get install npm)"
        subprocess.run([npm, "ci", "--prefix", str(HERE), "--no-audit", "--no-fund"],
                       check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                       timeout=600)
    return ENTRY


def _server_scenarios(entry: Path) -> list[str]:
    out = subprocess.run(["node", str(entry), "list"], capture_output=True, text=True,
                         timeout=60, stdin=subprocess.DEVNULL, check=True).stdout
    section = out.split("Server scenarios", 1)[1].split("Client scenarios", 1)[0]
    return [line.strip()[2:] for line in section.splitlines() if line.strip().startswith("- ")]


def _run(entry: Path, url: str, scenario: str, out: Path) -> tuple[bool, str]:
    r = subprocess.run(["node", str(entry), "server", "--url", url, "--scenario", scenario,
                        "-o", str(out / scenario)],
                       capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    text = r.stdout + r.stderr
    return r.returncode == 0 and " 0 failed" in r.stdout, text[-2500:]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[bool, str]]]:
    entry = _install()
    ws = tmp_path_factory.mktemp("conformance")
    os.chown(ws, 1000, 1000)
    out = tmp_path_factory.mktemp("conformance-out")
    scenarios = _server_scenarios(entry)
    with serve_http(ws) as url, ThreadPoolExecutor(4) as pool:
        results = dict(zip(scenarios, pool.map(lambda s: _run(entry, url, s, out), scenarios),
                           strict=True))
    yield results


def test_pr13_baseline_covers_exactly_the_suites_scenarios(
        outcomes: dict[str, tuple[bool, str]]) -> None:
    assert sorted(outcomes) == sorted(BASELINE), (
        "tests/conformance/baseline.json does not match the suite's server scenarios")


@pytest.mark.parametrize("scenario", sorted(BASELINE))
def test_pr13_conformance_scenario_matches_baseline(
        outcomes: dict[str, tuple[bool, str]], scenario: str) -> None:
    expected = BASELINE[scenario]
    passed, output = outcomes.get(scenario, (False, "not run"))
    if expected == "pass":
        assert passed, f"{scenario} newly fails:\n{output}"
    else:
        assert not passed, (f"{scenario} newly passes: change its baseline entry "
                            f"({expected!r}) to \"pass\"")


def test_pr13_the_baseline_passes_the_scenarios_a_tools_server_must_pass() -> None:
    must = {"server-initialize", "ping", "tools-list", "tools-call-error",
            "dns-rebinding-protection", "server-sse-multiple-streams", "logging-set-level"}
    assert {s for s in must if BASELINE.get(s) != "pass"} == set()
    assert all(v == "pass" or v.startswith("fail: ") for v in BASELINE.values())
