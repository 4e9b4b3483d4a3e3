"""The `coderx-mcp` command line as a newcomer uses it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import child_env, chown_tree

CLI = [sys.executable, "-m", "coderx_mcp"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, cwd=cwd,
                          env=child_env(), stdin=subprocess.DEVNULL)


def test_tools_lists_every_tool_with_its_kind() -> None:
    r = run("tools")
    assert r.returncode == 0, r.stderr
    names = {line.split()[0]: line.split()[1] for line in r.stdout.splitlines()}
    assert names["read_file"] == "read-only"
    assert names["run_command"] == "writes"
    assert len(names) >= 19


def test_serve_refuses_public_http_bind_without_auth() -> None:
    r = run("serve", "--http", "--host", "0.0.0.0")
    assert r.returncode != 0
    assert "without authentication" in r.stderr
    assert r.stdout == ""


def test_bad_setting_is_one_readable_line() -> None:
    r = run("serve", "--backend", "nope")
    assert r.returncode != 0
    assert "backend" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.docker
def test_call_runs_a_tool_in_a_throwaway_session() -> None:
    r = run("call", "run_command", "--arg", "command=id -u; echo hi")
    assert r.returncode == 0, r.stderr
    assert "1000\nhi\n" in r.stdout
    assert "exit 0" in r.stdout


@pytest.mark.docker
def test_call_error_exits_nonzero_with_the_whole_message(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("alpha\nbeta\n")
    chown_tree(tmp_path)
    r = run("call", "--workspace", str(tmp_path), "read_file", "--arg", "path=missing.txt")
    assert r.returncode == 1
    assert "does not exist" in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""
    # A multi-line error (an edit miss's diagnosis) arrives whole, not its first line only.
    r = run("call", "--workspace", str(tmp_path), "edit_file", "--arg", "path=a.txt",
            "--arg", "old_string=betta", "--arg", "new_string=x", "--arg",
            "expected_hash=" + __import__("hashlib").sha256(b"alpha\nbeta\n").hexdigest())
    assert r.returncode == 1 and r.stderr.count("\n") > 1 and "beta" in r.stderr, r.stderr


@pytest.mark.docker
def test_call_propagates_a_commands_exit_status() -> None:
    r = run("call", "run_command", "--arg", "command=echo out; exit 3")
    assert r.returncode == 3 and "out" in r.stdout
    assert run("call", "run_command", "--arg", "command=false").returncode == 1


def test_version_option_tools_json_and_plain_help() -> None:
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("coderx-mcp ")
    listed = json.loads(run("tools", "--json").stdout)
    by_name = {t["name"]: t for t in listed}
    assert by_name["edit_file"]["inputSchema"]["properties"]["old_string"]
    assert "outputSchema" not in by_name["read_file"]  # sent once, as text
    assert "outputSchema" in by_name["edit_file"]
    for line in run("tools").stdout.splitlines():
        assert line.rstrip().endswith((".", ")")), line  # whole first sentences
    for args in (["--help"], ["serve", "--help"], ["call", "--help"]):
        assert "<bool>" not in run(*args).stdout


@pytest.mark.docker
def test_call_json_prints_structured_result(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x\n")
    chown_tree(tmp_path)
    r = run("call", "--workspace", str(tmp_path), "--json", "read_file", "--arg", "path=a.txt")
    assert r.returncode == 0, r.stderr
    assert '"total_lines": 1' in r.stdout


def test_serve_refuses_root_owned_workspace_in_one_line(tmp_path: Path) -> None:
    """No chown of the user's files: a workspace the sandbox uid cannot use is refused at
    start, with the fix, and left exactly as it was."""
    (tmp_path / "a.txt").write_text("x\n")
    before = [(p, p.stat().st_uid) for p in (tmp_path, tmp_path / "a.txt")]
    r = run("serve", "--workspace", str(tmp_path))
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "owned by root" in r.stderr
    assert "--sandbox-uid" in r.stderr
    assert [(p, p.stat().st_uid) for p, _ in before] == before


@pytest.mark.docker
def test_call_types_arguments_by_the_tool_schema() -> None:
    r = run("call", "run_command", "--arg", "command=true", "--arg", "timeout=5")
    assert r.returncode == 0, r.stderr  # "true" stays a command, "5" becomes a number
    assert "exit 0" in r.stdout
    bad = run("call", "run_command", "--arg", "command=true", "--arg", "timeout=soon")
    assert bad.returncode != 0 and "timeout" in bad.stderr


@pytest.mark.docker
def test_cr10_missing_image_names_the_build_command() -> None:
    env = child_env(CODERX_IMAGE="coderx-no-such-image:latest")
    r = subprocess.run([*CLI, "call", "run_command", "--arg", "command=true"], env=env,
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "coderx-mcp image build" in last
    assert r.stderr.count("is missing or out of date") == 1  # said once, not logged too


def test_serve_logs_to_a_file_and_exits_cleanly_at_eof(tmp_path: Path) -> None:
    """--log-file takes the logs off stderr; the end of stdin ends the server without a
    traceback."""
    init = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}})
    env = child_env(CODERX_LOG_LEVEL="debug")
    log = tmp_path / "server.log"
    r = subprocess.run([*CLI, "serve", "--log-file", str(log)], input=init + "\n",
                       capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert '"id":1' in r.stdout.replace(" ", "")
    assert "Traceback" not in r.stderr and "Traceback" not in log.read_text()
    assert log.read_text().strip() and r.stderr.strip() == "", r.stderr
