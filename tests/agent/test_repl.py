"""The interactive terminal in a pseudo-terminal: the real CLI, the scripted Messages API,
the real coderx-mcp server (one ``serve --http`` for this module, on a project of its own)
and real containers."""

from __future__ import annotations

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


def test_a_conversation_shows_tool_calls_and_the_edit_as_a_diff(
        anthropic_api: FakeAnthropic, term: StartTerm, shared: tuple[Path, str]) -> None:
    ws, url = shared
    anthropic_api.call(("read_file", {"path": "calc.py"}), text="Reading it.") \
        .call(("edit_file", {"path": "calc.py", "old_string": "return a - b",
                             "new_string": "return a + b"})) \
        .say("Fixed: `add` **adds** now.")
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
    t.child.sendcontrol("d")
    t.expect("saved; continue it with")


def test_approval_no_with_a_reason_then_always_which_holds_after_a_restart(
        anthropic_api: FakeAnthropic, term: StartTerm, shared: tuple[Path, str],
        tmp_path: Path) -> None:
    _, url = shared
    cwd = tmp_path / "approvals"
    cwd.mkdir()
    anthropic_api.call(("run_command", {"command": "echo FIRST"})).say("not run then") \
        .call(("run_command", {"command": "echo SECOND"})).say("ran the second")
    t = term(["--server", url, "--permission-mode", "ask"], cwd)
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

    anthropic_api.call(("run_command", {"command": "echo THIRD"})).say("no question asked")
    t = term(["--server", url, "--permission-mode", "ask"], cwd)
    t.prompt()
    t.line("three")
    seen = t.expect("no question asked")
    assert "Run it?" not in seen
    assert "THIRD" in anthropic_api.tool_results(5)[0]["content"]


def test_ctrl_c_cancels_the_running_command_in_the_container_and_the_terminal_goes_on(
        anthropic_api: FakeAnthropic, term: StartTerm, shared: tuple[Path, str]) -> None:
    ws, url = shared
    anthropic_api.call(("run_command", {"command": "sleep 4242; echo never"})) \
        .call(("run_command", {"command": "pgrep -f 'sleep 424[2]' || echo GONE"})) \
        .say("the sleep is gone")
    t = term(["--server", url, "--permission-mode", "yolo"], ws)
    t.prompt()
    t.line("sleep")
    t.expect("run_command")
    anthropic_api.wait_for_requests(1)
    import time

    time.sleep(2)  # the command is running in the container
    t.child.sendintr()
    t.expect("interrupted")
    t.prompt()
    t.line("is it gone?")
    t.expect("the sleep is gone")
    results = anthropic_api.tool_results(1)  # the new prompt's request: the cut-off call
    assert "interrupted" in json_text(anthropic_api.requests[1]["messages"])
    assert results == [] or all("never" not in r["content"] for r in results)
    assert "GONE" in anthropic_api.tool_results(2)[0]["content"]
    t.prompt()
    t.child.sendintr()
    t.child.sendintr()  # twice quickly at the prompt: exit, the conversation saved
    t.expect("saved; continue it with")


def json_text(obj: object) -> str:
    import json

    return json.dumps(obj)


def test_vi_mode_and_history_persist_across_runs(
        term: StartTerm, shared: tuple[Path, str], agent_home: Path) -> None:
    ws, url = shared
    t = term(["--server", url], ws)
    t.prompt()
    t.line("/vim")
    t.expect(r"vi mode on \(saved\)")
    t.prompt()
    t.child.send("/costZ\x1bx\r")  # vi: Escape to normal mode, x deletes the Z
    t.expect("tokens;")
    t.close()
    assert "vi_mode = true" in (agent_home / "config" / "coderx" / "config.toml").read_text()
    t = term(["--server", url], ws)
    t.prompt()
    t.child.send("\x1b[A")  # up: the last line of the previous run
    t.child.send("\r")
    t.expect("tokens;")
    t.prompt()
    t.child.send("/costZ\x1bx\r")  # vi mode is still on
    t.expect("tokens;")
