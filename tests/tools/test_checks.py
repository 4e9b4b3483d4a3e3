"""run_tests, lint and format through a real MCP client in real containers."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from tests.tools.conftest import err, ok, write_host_file

from coderx_mcp.config import Settings
from coderx_mcp.server import build_server

pytestmark = pytest.mark.docker

SUITE = b'''import time
import pytest

def test_ok():
    assert 1

def test_bad():
    x = 1
    assert x == 2, "nope"

@pytest.fixture
def broken():
    raise RuntimeError("fixture broke")

def test_error(broken):
    pass

@pytest.mark.skip(reason="later")
def test_skip():
    pass

@pytest.mark.xfail(reason="known")
def test_xf():
    assert 0

class TestK:
    @pytest.mark.parametrize("v", [1, 2])
    def test_p(self, v):
        assert v == 1
'''
JUNIT = b'''<?xml version="1.0"?>
<testsuites><testsuite name="node" tests="3" failures="1" time="0.25">
<testcase classname="math" name="adds" time="0.1"/>
<testcase classname="math" name="divides" time="0.1">
  <failure message="expected 2, got 3">AssertionError: expected 2, got 3
    at math.test.js:7:3</failure></testcase>
<testcase classname="math" name="later" time="0"><skipped/></testcase>
</testsuite></testsuites>
'''


async def run_ok(c: Client[Any], **args: Any) -> dict[str, Any]:
    return await ok(c, "run_tests", **args)


async def test_structured_results_for_every_outcome(client: Client[Any],
                                                    tool_workspace: Path) -> None:
    write_host_file(tool_workspace, "t/test_suite.py", SUITE)
    r = await run_ok(client, path="t")
    assert r["status"] == "failed" and r["exit_code"] == 1
    c = r["counts"]
    assert (c["tests"], c["passed"], c["failed"], c["errors"], c["skipped"], c["xfailed"]) == (
        7, 2, 2, 1, 1, 1)
    by_id = {f["id"]: f for f in r["failures"]}
    assert set(by_id) == {"t/test_suite.py::test_bad", "t/test_suite.py::test_error",
                          "t/test_suite.py::TestK::test_p[2]"}
    bad = by_id["t/test_suite.py::test_bad"]
    assert (bad["kind"], bad["file"], bad["line"]) == ("failed", "t/test_suite.py", 9)
    assert "nope" in bad["message"] and "assert x == 2" in bad["traceback"]
    error = by_id["t/test_suite.py::test_error"]
    assert error["kind"] == "error" and "fixture broke" in error["traceback"]
    assert "short test summary" in r["console_tail"]
    full = await ok(client, "read_output", output_id=r["output_id"], grep="collected")
    assert full["total_matches"] == 1


async def test_passing_run_and_args_are_argv(client: Client[Any], tool_workspace: Path) -> None:
    write_host_file(tool_workspace, "t/test_suite.py", SUITE)
    r = await run_ok(client, path="t", args=["-k", "test_ok or test_p"])
    assert r["status"] == "failed" and r["counts"]["passed"] == 2  # test_p[2] still fails
    r = await run_ok(client, path="t", args=["-k", "test_ok"])
    assert (r["status"], r["counts"]["passed"], r["failures"]) == ("passed", 1, [])


async def test_collection_error_no_tests_and_usage_error(client: Client[Any],
                                                         tool_workspace: Path) -> None:
    write_host_file(tool_workspace, "broken/test_broken.py", b"import no_such_module\n")
    r = await run_ok(client, path="broken")
    assert r["status"] == "collection_error"
    assert "no_such_module" in r["failures"][0]["traceback"]
    write_host_file(tool_workspace, "empty/helper.py", b"x = 1\n")
    assert (await run_ok(client, path="empty"))["status"] == "no_tests"
    r = await run_ok(client, path="t; touch /tmp/pwn")  # a path, never a shell string
    assert r["status"] == "usage_error"
    assert "file or directory not found: t; touch /tmp/pwn" in r["console_tail"]
    probe = await ok(client, "run_command", command="test -e /tmp/pwn; echo $?")
    assert probe["stdout"] == "1\n"
    assert "must not start with '-'" in await err(client, "run_tests", path="--help")


async def test_missing_pytest_is_its_own_result(make_settings: Callable[..., Settings],
                                                tool_workspace: Path) -> None:
    # `python3 -S` has no site-packages: exactly an image without pytest.
    settings = make_settings(pytest_command=["python3", "-S", "-m", "pytest"])
    write_host_file(tool_workspace, "test_a.py", b"def test_a(): pass\n")
    async with Client(build_server(settings)) as c:
        r = await run_ok(c)
    assert r["status"] == "no_pytest"


async def test_timeout_and_background_result(client: Client[Any], tool_workspace: Path) -> None:
    write_host_file(tool_workspace, "slow/test_slow.py",
                    b"import time\ndef test_slow():\n    time.sleep(3)\n")
    r = await run_ok(client, path="slow", timeout=1)
    assert r["status"] == "timeout" and r["exit_code"] is None
    bg = await run_ok(client, path="slow", return_after=1)
    assert bg["status"] == "running"
    done = await ok(client, "run_tests_result", output_id=bg["output_id"], wait=20)
    assert (done["status"], done["counts"]["passed"]) == ("passed", 1)


async def test_progress_while_tests_run(client: Client[Any], tool_workspace: Path) -> None:
    write_host_file(tool_workspace, "slow/test_slow.py",
                    b"import time\ndef test_slow():\n    time.sleep(2.5)\n")
    messages: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message or "")

    r = await client.call_tool("run_tests", {"path": "slow"}, progress_handler=on_progress)
    assert not r.is_error and messages and any("collected" in m or "test_slow" in m
                                               for m in messages)


async def test_junit_from_another_runner(client: Client[Any], tool_workspace: Path) -> None:
    write_host_file(tool_workspace, "fixture.xml", JUNIT)
    r = await run_ok(client, command=["sh", "-c", "cp fixture.xml report.xml; exit 1"],
                    junit="report.xml")
    assert r["status"] == "failed"
    c = r["counts"]
    assert (c["tests"], c["passed"], c["failed"], c["skipped"]) == (3, 1, 1, 1)
    assert r["failures"][0]["id"] == "math::divides"
    assert r["failures"][0]["message"] == "expected 2, got 3"
    missing = await run_ok(client, command=["true"], junit="nothing.xml")
    assert missing["status"] == "no_report"
    assert "pass `command` and `junit` together" in await err(client, "run_tests",
                                                              command=["true"])


async def test_lint_diagnostics_and_fixes(client: Client[Any], tool_workspace: Path) -> None:
    src = write_host_file(tool_workspace, "pkg/mod.py", b"import os\nimport sys\n\n"
                          b"print(sys.argv)\nx = [i for i in range(3)] == None\n")
    r = await ok(client, "lint", path="pkg", select=["F", "E"])
    found = {(d["code"], d["line"]) for d in r["diagnostics"]}
    assert found == {("F401", 1), ("E711", 5)}
    f401 = next(d for d in r["diagnostics"] if d["code"] == "F401")
    assert (f401["file"], f401["column"], f401["fixable"]) == ("pkg/mod.py", 8, True)
    assert f401["url"].startswith("https://docs.astral.sh/ruff/rules/")
    fixed = await ok(client, "lint", path="pkg", select=["F", "E"], fix=True)
    assert "-import os" in fixed["diff"]
    assert [d["code"] for d in fixed["diagnostics"]] == ["E711"]  # no safe fix for it
    assert not src.read_bytes().startswith(b"import os")
    assert "ruff could not read nope" in await err(client, "lint", path="nope")


async def test_format_check_and_write(client: Client[Any], tool_workspace: Path) -> None:
    src = write_host_file(tool_workspace, "fmt.py", b"x=1\nprint( x )\n")
    write_host_file(tool_workspace, "ok.py", b"y = 2\n")
    checked = await ok(client, "format")
    assert checked["files"] == ["fmt.py"] and src.read_bytes() == b"x=1\nprint( x )\n"
    written = await ok(client, "format", check=False)
    assert written["changed"] and "+x = 1" in written["diff"]
    assert src.read_bytes() == b"x = 1\nprint(x)\n"
    assert (await ok(client, "format"))["files"] == []
