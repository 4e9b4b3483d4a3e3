"""The interactive terminal in a pseudo-terminal: the real CLI, the scripted Messages API,
the real coderx-mcp server (one ``serve --http`` for this module, on a project of its own)
and real containers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.agent.conftest import FakeAnthropic, Term, chown_tree
from tests.conftest import serve_http

pytestmark = pytest.mark.docker

StartTerm = Callable[..., Term]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A project and the coderx server working on it: ``(project, url)``."""
    ws = tmp_path_factory.mktemp("repl-project")
    (ws / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    (ws / "notes.txt").write_text("one\n")
    chown_tree(ws)
    with serve_http(ws) as url:
        yield ws, url


def test_a_session_diff_model_switch_compact_init_and_ctrl_c_cancelling_in_the_container(
        anthropic_api: FakeAnthropic, term: StartTerm, shared: tuple[Path, str]) -> None:
    """One terminal session (each start costs seconds of imports on a loaded machine)."""
    ws, url = shared
    anthropic_api.call(("read_file", {"path": "calc.py"}), text="Reading it.") \
        .call(("edit_file", {"path": "calc.py", "old_string": "return a - b",
                             "new_string": "return a + b"})) \
        .say("Fixed: `add` **adds** now.") \
        .say("SUMMARY: add was fixed") \
        .say("```markdown\n# calc\n\nTest: `python3 -m unittest`.\n```") \
        .call(("run_command", {"command": "sleep 4242; echo never"})) \
        .call(("run_command", {"command": "pgrep -f 'sleep 424[2]' || echo GONE"})) \
        .say("the sleep is gone")
    t = term(["--server", url, "--permission-mode", "yolo"], ws)
    t.prompt()
    t.line("fix add")
    t.expect("read_file")
    t.expect("edit_file")
    t.expect(r"-    return a - b")
    t.expect(r"\+    return a \+ b")
    t.expect("adds")
    t.prompt()
    assert (ws / "calc.py").read_text() == "def add(a, b):\n    return a + b\n"
    t.child.sendcontrol("o")  # the whole output of the last tool call
    t.expect("edited calc.py: 1 replacement")

    t.line("/model haiku")
    t.expect("model: anthropic:claude-haiku-4-5")
    t.prompt()
    t.line("/compact")
    t.expect("compacted 3 messages into a summary")
    t.prompt()
    assert anthropic_api.requests[3]["model"] == "claude-haiku-4-5"

    t.line("/init")
    t.expect(r"\+\+\+ b/CODERX.md")
    t.expect(r"\+Test: `python3 -m unittest`.")
    t.expect(r"Write .*CODERX.md\? \[y/n\]")
    t.line("y")
    t.expect("wrote")
    t.prompt()
    assert (ws / "CODERX.md").read_text() == "# calc\n\nTest: `python3 -m unittest`.\n"

    t.line("sleep")
    t.expect("run_command")
    anthropic_api.wait_for_requests(6)
    time.sleep(2)  # the command is running in the container
    t.child.sendintr()
    t.expect("interrupted")
    t.prompt()
    t.line("is it gone?")
    t.expect("the sleep is gone")
    cut_off = json.dumps(anthropic_api.requests[6]["messages"])
    assert "the run was interrupted before this tool call ended" in cut_off
    assert "GONE" in anthropic_api.tool_results(7)[0]["content"]
    assert "SUMMARY: add was fixed" in json.dumps(anthropic_api.requests[7]["messages"])
    t.prompt()
    t.child.sendintr()
    t.child.sendintr()  # twice quickly at the prompt: exit, the conversation saved
    t.expect("saved; continue it with")


def test_approvals_vi_mode_and_history_hold_after_a_restart(
        anthropic_api: FakeAnthropic, term: StartTerm, shared: tuple[Path, str],
        tmp_path: Path, agent_home: Path) -> None:
    _, url = shared
    cwd = tmp_path / "approvals"
    cwd.mkdir()
    anthropic_api.call(("run_command", {"command": "echo FIRST"})).say("not run then") \
        .call(("run_command", {"command": "echo SECOND"})).say("ran the second")
    t = term(["--server", url, "--permission-mode", "ask"], cwd)
    t.prompt()
    t.line("/vim")
    t.expect(r"vi mode on \(saved\)")
    t.prompt()
    t.line("one")
    t.expect("run_command wants to run")
    t.expect("echo FIRST")
    t.expect("Run it?")
    t.line("n")
    t.expect("Why not?")
    t.line("use the tests instead")
    t.expect("not run then")
    t.prompt()
    (refused,) = anthropic_api.tool_results(1)
    assert refused["content"] == ("refused: the user declined run_command: use the tests "
                                  "instead")
    t.line("two")
    t.expect("echo SECOND")
    t.expect("Run it?")
    t.line("a")
    t.expect("ran the second")
    t.prompt()
    assert "SECOND" in anthropic_api.tool_results(3)[0]["content"]
    config = (cwd / ".coderx" / "config.toml").read_text()
    assert 'allow = ["run_command(echo*)"]' in config
    t.line("/permissions")
    t.expect(r"allow: run_command\(echo\*\)")
    t.expect("the permission mode is ask")
    t.close()
    assert "vi_mode = true" in (agent_home / "config" / "coderx" / "config.toml").read_text()

    anthropic_api.call(("run_command", {"command": "echo THIRD"})).say("no question asked")
    t = term(["--server", url, "--permission-mode", "ask"], cwd)
    t.prompt()
    t.child.send("\x1b[A\r")  # up, Enter: the last line of the previous run
    t.expect(r"allow: run_command\(echo\*\)")
    t.prompt()
    t.child.send("/costZ\x1bx\r")  # vi mode still on: Escape, x deletes the Z
    t.expect("tokens;")
    t.prompt()
    t.line("three")
    seen = t.expect("no question asked")
    assert "Run it?" not in seen
    assert "THIRD" in anthropic_api.tool_results(5)[0]["content"]
