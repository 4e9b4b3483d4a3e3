"""``coderx-agent -p``: the real CLI, the fake Messages API, the real coderx-mcp server.

Most runs go through typer's ``CliRunner`` in this process (the CLI code path, exit codes
and output are the same; it saves ~5 s of imports per run on a loaded machine); the
signal and ``kill -9`` tests run the CLI as a subprocess. Runs that need no tool
container share one ``coderx-mcp serve --http`` (``--server``).
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from tests.agent.conftest import AGENT, FakeAnthropic, cli

pytestmark = pytest.mark.docker

KEY = "sk-test-SECRET-KEY-0123456789"


def report(stdout: str) -> dict[str, Any]:
    """The result object: the last stdout line."""
    return json.loads(stdout.strip().splitlines()[-1])


def test_fixes_a_failing_test_in_a_real_container(
        anthropic_api: FakeAnthropic, agent_env: dict[str, str], project: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    anthropic_api.call(("read_file", {"path": "test_calc.py"}), ("read_file", {"path": "calc.py"}),
                       text="Reading the test and the code.") \
        .call(("edit_file", {"path": "calc.py", "old_string": "return a - b",
                             "new_string": "return a + b"})) \
        .call(("run_command", {"command": "python3 -m unittest -q 2>&1; echo exit=$?"})) \
        .say("Fixed `add`: it subtracted; the test passes now.", output_tokens=40)
    code, out, err = cli(["-p", "make the tests pass", "--output-format", "json",
                          "--allow", "run_command(python3 -m unittest*)"],
                         agent_env, project, monkeypatch)
    assert code == 0, out + err
    res = report(out)
    assert res["schema_version"] == 1 and res["status"] == "done" and res["exit_code"] == 0
    assert res["turns"] == 4
    assert [(c["name"], c["ok"]) for c in res["tool_calls"]] == [
        ("read_file", True), ("read_file", True), ("edit_file", True), ("run_command", True)]
    assert all(c["duration_s"] >= 0 for c in res["tool_calls"])
    assert res["usage"]["output_tokens"] == 20 * 3 + 40
    # four replies of 100 input tokens ($3/M) and 20+20+20+40 output tokens ($15/M)
    assert res["cost_usd"] == pytest.approx((400 * 3 + 100 * 15) / 1e6)
    assert (project / "calc.py").read_text() == "def add(a, b):\n    return a + b\n"
    (run_result,) = anthropic_api.tool_results(3)
    assert "OK" in run_result["content"] and "exit=0" in run_result["content"]
    saved = next((Path(agent_env["XDG_DATA_HOME"]) / "coderx" / "conversations").glob(
        f"{res['session_id']}.jsonl")).read_text()
    assert "return a + b" in saved
    assert KEY not in saved and KEY not in out and KEY not in err


def test_stream_json_and_prompt_from_stdin(
        anthropic_api: FakeAnthropic, agent_env: dict[str, str], project: Path,
        coderx_http: str, monkeypatch: pytest.MonkeyPatch) -> None:
    anthropic_api.say("streamed answer")
    code, out, _ = cli(["-p", "-", "--output-format", "stream-json", "--server", coderx_http],
                       agent_env, project, monkeypatch, stdin="task from stdin")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    kinds = [line["type"] for line in lines]
    assert kinds[0] == "turn_start" and kinds[-1] == "result"
    assert "".join(e["text"] for e in lines if e["type"] == "text_delta") == "streamed answer"
    assert "usage" in kinds and "assistant" in kinds
    assert lines[-1]["answer"] == "streamed answer" and lines[-1]["schema_version"] == 1
    assert anthropic_api.requests[0]["messages"][0]["content"][0]["text"] == "task from stdin"


def test_exit_1_error_missing_key(agent_env: dict[str, str], project: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    env = {k: v for k, v in agent_env.items() if k != "ANTHROPIC_API_KEY"}
    code, out, err = cli(["-p", "hi"], env, project, monkeypatch)
    assert code == 1
    assert out == ""
    assert err == ("error: no Anthropic API key: run `coderx-agent login`, or set "
                   "ANTHROPIC_API_KEY in the environment\n")


def test_exit_2_usage_errors(agent_env: dict[str, str], project: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli(["-p", "hi", "--output-format", "xml"], agent_env, project, monkeypatch)[0] == 2
    code, _, err = cli(["-p", "hi", "--fork"], agent_env, project, monkeypatch)
    assert (code, err) == (2, "error: --fork needs --continue or --resume\n")
    code, _, err = cli(["-p", "hi", "--model", "gpt-5"], agent_env, project, monkeypatch)
    assert code == 2 and "unknown model 'gpt-5'" in err
    code, _, err = cli(["-p", "hi", "--permission-mode", "ask"], agent_env, project, monkeypatch)
    assert code == 2 and "permission mode `ask` needs the interactive terminal" in err
    code, _, err = cli(["-p", "hi", "--permission-mode", "bold"], agent_env, project, monkeypatch)
    assert code == 2 and "invalid setting permissions.mode from the command line" in err
    code, _, err = cli(["-p", "hi", "--allow", "run_command(x"], agent_env, project, monkeypatch)
    assert code == 2 and "invalid permission rule 'run_command(x'" in err
    (project / ".coderx").mkdir()
    (project / ".coderx" / "config.toml").write_text("max_turns = 3\n\n[ollama]\nnum_ctx = 1\n")
    code, _, err = cli(["-p", "hi"], agent_env, project, monkeypatch)
    assert code == 2
    assert f"{project / '.coderx' / 'config.toml'}:4: ollama.num_ctx:" in err


def test_exit_3_budget_exceeded(anthropic_api: FakeAnthropic, agent_env: dict[str, str],
                                project: Path, coderx_http: str,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = cli(["-p", "hi", "--output-format", "json", "--server", coderx_http,
                        "--max-budget-usd", "0.000001"], agent_env, project, monkeypatch)
    assert code == 3
    res = report(out)
    assert res["status"] == "budget_exceeded" and res["turns"] == 0
    assert anthropic_api.requests == []


def test_exit_4_turn_limit(anthropic_api: FakeAnthropic, agent_env: dict[str, str],
                           project: Path, coderx_http: str,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    anthropic_api.call(("run_command", {"command": "true"}))
    code, out, _ = cli(["-p", "hi", "--output-format", "json", "--server", coderx_http,
                        "--max-turns", "1"], agent_env, project, monkeypatch)
    assert code == 4
    res = report(out)
    assert res["status"] == "turn_limit"
    (call,) = res["tool_calls"]
    assert not call["ok"] and "not allowed in accept-edits mode" in call["error"]


def test_exit_5_tool_server_failure(agent_env: dict[str, str], project: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = cli(["-p", "hi", "--output-format", "json", "--server",
                        "http://127.0.0.1:9/mcp"], agent_env, project, monkeypatch)
    assert code == 5
    res = report(out)
    assert res["status"] == "tool_server_failure"
    assert res["error"].startswith("MCP server 'coderx' did not start")


def _spawn(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([*AGENT, *args], env=env, cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_exit_130_interrupted(anthropic_api: FakeAnthropic, agent_env: dict[str, str],
                              project: Path, coderx_http: str) -> None:
    anthropic_api.hang()
    proc = _spawn(["-p", "think", "--output-format", "json", "--server", coderx_http],
                  agent_env, project)
    try:
        assert anthropic_api.hanging.wait(60)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert report(out)["status"] == "interrupted"


def test_resume_after_kill_9_keeps_the_finished_turns(
        anthropic_api: FakeAnthropic, agent_env: dict[str, str], project: Path,
        coderx_http: str, monkeypatch: pytest.MonkeyPatch) -> None:
    anthropic_api.call(("no_such_tool", {"x": 1}), text="FIRST-TURN").hang()
    proc = _spawn(["-p", "ORIGINAL-PROMPT", "--server", coderx_http, "--model",
                   "anthropic:claude-haiku-4-5", "--permission-mode", "plan"], agent_env, project)
    try:
        assert anthropic_api.hanging.wait(60)
        proc.kill()  # SIGKILL mid-turn: no finally, no flush
        proc.wait(30)
    finally:
        proc.kill()
    anthropic_api.released.set()
    anthropic_api.say("RESUMED")
    code, out, err = cli(["-p", "and now?", "--continue", "--output-format", "json",
                          "--server", coderx_http], agent_env, project, monkeypatch)
    assert code == 0, err
    res = report(out)
    assert res["answer"] == "RESUMED"
    assert res["model"] == "anthropic:claude-haiku-4-5"  # restored from the conversation
    sent = anthropic_api.requests[-1]
    assert sent["model"] == "claude-haiku-4-5"
    text = json.dumps(sent["messages"])
    assert text.index("ORIGINAL-PROMPT") < text.index("FIRST-TURN") < text.index("and now?")
    assert "no tool named 'no_such_tool'" in text

    anthropic_api.say("FORKED")
    prefix = res["session_id"][:18]
    code, out, _ = cli(["-p", "fork it", "--resume", prefix, "--fork", "--output-format",
                        "json", "--server", coderx_http], agent_env, project, monkeypatch)
    forked = report(out)
    assert code == 0 and forked["session_id"] != res["session_id"]
    assert "and now?" in json.dumps(anthropic_api.requests[-1]["messages"])
    conversations = Path(agent_env["XDG_DATA_HOME"]) / "coderx" / "conversations"
    original = (conversations / f"{res['session_id']}.jsonl").read_text()
    assert "fork it" not in original and "FORKED" not in original
    header = json.loads(original.splitlines()[0])
    assert header["permission_mode"] == "plan"
