"""Slash commands, each through ``Repl.handle`` as typed: a real agent on the scripted
Messages API with in-memory tools, output captured from the rich console."""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.agent.conftest import Answers, FakeAnthropic

from coderx_agent.repl import commands

MakeRepl = Callable[..., contextlib.AbstractAsyncContextManager[Any]]
KEY = "sk-test-SECRET-KEY-0123456789"

#: Every command and the test below that covers it (the list must name them all).
COVERED = {
    "/help": "test_help_lists_every_command", "/clear": "test_clear_resume_and_export",
    "/model": "test_model_lists_and_switches", "/cost": "test_cost_tools_history_last",
    "/tools": "test_cost_tools_history_last", "/mcp": "test_mcp_lists_adds_and_removes",
    "/connect": "test_mcp_lists_adds_and_removes",
    "/permissions": "test_permissions_shows_and_sets_the_mode",
    "/history": "test_cost_tools_history_last", "/last": "test_cost_tools_history_last",
    "/resume": "test_clear_resume_and_export", "/export": "test_clear_resume_and_export",
    "/compact": "test_compact_with_a_focus", "/init": "test_init_shows_a_diff_then_writes",
    "/memory": "test_memory_opens_the_editor_and_reloads",
    "/config": "test_config_status_whoami_vim_exit",
    "/status": "test_config_status_whoami_vim_exit",
    "/doctor": "test_doctor_and_bug_bundle_without_secrets",
    "/review": "test_review_reads_the_diff_through_the_tools",
    "/login": "test_login_logout_whoami_with_the_key_store",
    "/logout": "test_login_logout_whoami_with_the_key_store",
    "/whoami": "test_login_logout_whoami_with_the_key_store",
    "/bug": "test_doctor_and_bug_bundle_without_secrets",
    "/vim": "test_config_status_whoami_vim_exit", "/exit": "test_config_status_whoami_vim_exit",
}


def test_every_command_has_a_test() -> None:
    assert {c.name for c in commands()} == set(COVERED)
    assert all(n in globals() for n in COVERED.values())


async def test_help_lists_every_command(make_repl: MakeRepl) -> None:
    async with make_repl() as (repl, out):
        await repl.handle("/help")
        await repl.handle("/nonsense")
    text = out()
    for c in commands():
        assert c.name in text and c.help in text
    assert "/quit" in text
    assert "unknown command /nonsense; /help lists them" in text


async def test_model_lists_and_switches(anthropic_api: FakeAnthropic,
                                        make_repl: MakeRepl) -> None:
    anthropic_api.say("from haiku")
    async with make_repl() as (repl, out):
        await repl.handle("/model")
        await repl.handle("/model haiku")
        await repl.handle("hello")
        await repl.handle("/model gpt-5")
        conv = repl.agent.conversation
    text = out()
    assert "* anthropic:claude-sonnet-4-5" in text and "anthropic:claude-haiku-4-5" in text
    assert "ollama: unavailable" in text
    assert "model: anthropic:claude-haiku-4-5" in text
    assert anthropic_api.requests[-1]["model"] == "claude-haiku-4-5"
    assert "from haiku" in text
    assert "error: unknown model 'gpt-5'" in text
    assert conv.header.model == "haiku"


async def test_cost_tools_history_last(anthropic_api: FakeAnthropic,
                                       make_repl: MakeRepl) -> None:
    long = "\n".join(f"line {i}" for i in range(10))
    anthropic_api.call(("echo", {"text": long})).say("echoed")
    async with make_repl() as (repl, out):
        await repl.handle("go")
        await repl.handle("/cost")
        await repl.handle("/tools")
        await repl.handle("/history")
        await repl.handle("/last")
        await repl.handle("/last 7")
    text = out()
    assert "│ line 2" in text and "7 more lines (/last shows them)" in text  # collapsed
    assert "output 40, cache read 0" in text and "$0.0012 this conversation" in text
    assert "echo" in text and "read-only" in text and "pid" in text
    assert "  1 ● echo" in text
    assert text.count("line 9") == 1  # only /last shows all of it
    assert "error: there is no tool call 7: /history lists 1" in text


async def test_permissions_shows_and_sets_the_mode(make_repl: MakeRepl) -> None:
    async with make_repl(mode="ask", allow=("echo",)) as (repl, out):
        await repl.handle("/permissions")
        await repl.handle("/permissions plan")
        await repl.handle("/permissions bold")
        mode = repl.agent.permissions.mode
        header_mode = repl.agent.conversation.header.permission_mode
    text = out()
    assert "mode: ask" in text and "allow: echo" in text and "deny: (none)" in text
    assert "no approval was asked yet" in text
    assert mode == header_mode == "plan"
    assert "error: unknown permission mode 'bold'" in text


async def test_approval_shows_an_edit_as_a_diff_and_never_saves_a_deny_rule(
        anthropic_api: FakeAnthropic, make_repl: MakeRepl, tmp_path: Path) -> None:
    from coderx_agent.messages import ToolSpec

    answers = Answers("x", "v")
    (tmp_path / "proj" / "a.py").write_text("x = 1\ny = 2\n")
    async with make_repl(answers, mode="ask") as (repl, out):
        spec = ToolSpec(name="edit_file", description="", input_schema={})
        verdict = await repl.approver(spec, {"path": "a.py", "old_string": "y = 2",
                                             "new_string": "y = 3"})
        rules = repl.agent.permissions.deny_rules
    assert verdict is False
    text = out()
    assert "edit_file wants to run" in text and "-y = 2" in text and "+y = 3" in text
    assert "answer y, n, a (always) or v (never)" in text
    assert rules == ["edit_file(a.py)"]
    config = (tmp_path / "proj" / ".coderx" / "config.toml").read_text()
    assert 'deny = ["edit_file(a.py)"]' in config


async def test_clear_resume_and_export(anthropic_api: FakeAnthropic, make_repl: MakeRepl,
                                       tmp_path: Path) -> None:
    anthropic_api.say("FIRST ANSWER").say("after resume")
    async with make_repl(Answers("2")) as (repl, out):
        await repl.handle("first question")
        first = repl.agent.conversation.id
        await repl.handle("/clear")
        assert repl.agent.conversation.id != first and repl.agent.conversation.messages == []
        await repl.handle("/resume")  # newest first: 1 is the new one, 2 the first
        assert repl.agent.conversation.id == first
        await repl.handle("and then?")
        await repl.handle("/export out.md")
    exported = (tmp_path / "proj" / "out.md").read_text()
    assert exported.index("first question") < exported.index("FIRST ANSWER") \
        < exported.index("and then?") < exported.index("after resume")
    assert "## user" in exported and "## assistant" in exported
    assert f"resumed {first}: 2 messages" in out()
    assert "first question" in json.dumps(anthropic_api.requests[-1]["messages"])


async def test_compact_with_a_focus(anthropic_api: FakeAnthropic, make_repl: MakeRepl) -> None:
    anthropic_api.say("one").say("two").say("three").say("SUMMARY OF IT").say("after")
    async with make_repl() as (repl, out):
        await repl.handle("/compact")
        for p in ("q1", "q2", "q3"):
            await repl.handle(p)
        await repl.handle("/compact the q2 part")
        await repl.handle("q4")
        compaction = repl.agent.conversation.compaction
    assert "nothing to compact yet" in out()
    assert compaction is not None and compaction.summary == "SUMMARY OF IT"
    summary_request = json.dumps(anthropic_api.requests[3]["messages"])
    assert "[keep in most detail: the q2 part]" in summary_request
    last = json.dumps(anthropic_api.requests[4]["messages"])
    assert "SUMMARY OF IT" in last and "q1" not in last
    assert "compacted 3 messages into a summary" in out()


async def test_init_shows_a_diff_then_writes(anthropic_api: FakeAnthropic,
                                             make_repl: MakeRepl, tmp_path: Path) -> None:
    body = "# proj\n\nBuild: `make`. Test: `make test`.\n"
    anthropic_api.call(("echo", {"text": "looking"})).say(f"```markdown\n{body}```")
    async with make_repl(Answers("y")) as (repl, out):
        await repl.handle("/init")
        system = repl.agent.system
    text = out()
    assert "+++ b/CODERX.md" in text and "+Build: `make`. Test: `make test`." in text
    assert (tmp_path / "proj" / "CODERX.md").read_text() == body
    assert "memory file CODERX.md" in anthropic_api.requests[0]["messages"][0]["content"][0]["text"]
    assert "Build: `make`" in system  # memory reloaded


async def test_memory_opens_the_editor_and_reloads(make_repl: MakeRepl, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\necho 'Always run the linter.' >> \"$1\"\n")
    editor.chmod(0o755)
    monkeypatch.setenv("EDITOR", str(editor))
    monkeypatch.delenv("VISUAL", raising=False)
    async with make_repl() as (repl, out):
        await repl.handle("/memory")
        system = repl.agent.system
    assert (tmp_path / "proj" / "CODERX.md").read_text() == "Always run the linter.\n"
    assert "Always run the linter." in system and "memory reloaded" in out()


async def test_review_reads_the_diff_through_the_tools(anthropic_api: FakeAnthropic,
                                                       make_repl: MakeRepl) -> None:
    anthropic_api.call(("echo", {"text": "diff --git a/x.py"})) \
        .say("x.py:3: high: the loop never ends; add a break")
    async with make_repl() as (repl, out):
        await repl.handle("/review main")
        await repl.handle("/review --output=/etc/x")
    prompt = anthropic_api.requests[0]["messages"][0]["content"][0]["text"]
    assert "git diff main" in prompt and "path:line: severity" in prompt
    assert "x.py:3: high: the loop never ends" in out()
    assert "error: '--output=/etc/x' is not a ref or branch name" in out()


async def test_mcp_lists_adds_and_removes(make_repl: MakeRepl, tmp_path: Path) -> None:
    config = tmp_path / "proj" / ".coderx" / "config.toml"
    async with make_repl() as (repl, out):
        await repl.handle("/mcp")
        await repl.handle("/connect github https://mcp.example.com/mcp")
        await repl.handle("/mcp add files npx -y files-server /data")
        added = config.read_text()
        await repl.handle("/mcp remove github")
        await repl.handle("/mcp remove nothing")
        await repl.handle("/mcp add")
    text = out()
    assert "coderx: connected" in text and "echo, getenv" in text
    assert 'url = "https://mcp.example.com/mcp"' in added
    assert 'command = "npx"' in added and 'args = ["-y", "files-server", "/data"]' in added
    assert "github" not in config.read_text() and "files" in config.read_text()
    assert "error: no MCP server 'nothing'" in text
    assert "error: use /mcp add NAME COMMAND" in text


async def test_config_status_whoami_vim_exit(make_repl: MakeRepl, agent_home: Path) -> None:
    async with make_repl() as (repl, out):
        await repl.handle("/config")
        await repl.handle("/status")
        await repl.handle("/vim")
        await repl.handle("/exit")
        done, vi = repl.done, repl.vi_mode
    text = out()
    assert "anthropic.max_retries = 0  # env" in text and "model = " in text
    assert "permission mode: yolo" in text and "MCP servers: coderx (up)" in text
    assert "vi mode on (saved)" in text and vi and done
    assert "vi_mode = true" in (agent_home / "config" / "coderx" / "config.toml").read_text()


async def test_login_logout_whoami_with_the_key_store(
        make_repl: MakeRepl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from coderx_agent.account import fingerprint

    store = tmp_path / "keys.enc"
    monkeypatch.setenv("CODERX_KEY_FILE", str(store))
    monkeypatch.setenv("CODERX_KEY_PASSPHRASE", "correct horse")
    stored = "sk-ant-STORED-KEY-abcdefghijkl"
    async with make_repl(Answers(stored)) as (repl, out):
        await repl.handle("/whoami")
        await repl.handle("/login anthropic")
        await repl.handle("/whoami")
        await repl.handle("/logout")
        await repl.handle("/logout")
    text = out()
    assert f"anthropic: key {fingerprint(KEY)} from the environment" in text
    assert f"key {fingerprint(stored)} from the key store" in text
    assert "model: sonnet" not in text and "model: anthropic:claude-sonnet-4-5" in text
    assert stored not in text and KEY not in text
    assert "removed the anthropic key" in text and "error: no key named" in text
    assert stat.S_IMODE(store.stat().st_mode) == 0o600


@pytest.mark.docker
async def test_doctor_and_bug_bundle_without_secrets(
        anthropic_api: FakeAnthropic, make_repl: MakeRepl, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    planted = "ghp_PLANTEDsecretVALUE0123456789abcd"
    monkeypatch.setenv("GITHUB_TOKEN", planted)
    config = tmp_path / "proj" / ".coderx" / "config.toml"
    config.parent.mkdir()
    config.write_text('[mcpServers.gh]\nurl = "https://x.example/mcp"\n'
                      '[mcpServers.gh.headers]\nAuthorization = "Token HEADER-SECRET-42"\n')
    anthropic_api.say(f"the token is {planted} and the key {KEY}")
    async with make_repl() as (repl, out):
        await repl.handle("leak it")
        await repl.handle("/doctor")
        await repl.handle("/bug")
    text = out()
    assert "ok   python:" in text and "ok   coderx-mcp server: connected" in text
    assert "ok   docker: engine up" in text and "ok   provider anthropic: reachable" in text
    assert "FAIL provider ollama:" in text and "fix: start `ollama serve`" in text
    path = Path(text.split("bug report written to ")[1].split(" (nothing")[0])
    bundle = path.read_text()
    assert planted not in bundle and KEY not in bundle and "HEADER-SECRET-42" not in bundle
    assert "[redacted:" in bundle and "the token is" in bundle and "## Doctor" in bundle
    assert "Bundle (redacted, please review before attaching)" in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.environ["GITHUB_TOKEN"] == planted


def test_redaction_catches_encoded_forms_and_unknown_key_shapes() -> None:
    import base64

    from coderx_agent.bugreport import redact

    secret = "hunter2-secret-value"
    text = (f"a {secret} b {base64.b64encode(secret.encode()).decode()} c "
            "sk-ant-api03-UNKNOWNKEY12345 d Authorization: Bearer abc.def-ghi123")
    out = redact(text, [("X", secret), ("tiny", "ab")])
    assert secret not in out and "UNKNOWNKEY" not in out and "abc.def-ghi123" not in out
    assert out.count("[redacted:X]") == 2 and " d Authorization: Bearer " in out
    assert out.startswith("a [redacted:X] b")


def test_completion_of_commands_and_project_paths(tmp_path: Path) -> None:
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    from coderx_agent.repl.app import ReplCompleter

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "calc.py").write_text("")
    (tmp_path / "setup.cfg").write_text("")
    (tmp_path / ".git").mkdir()
    c = ReplCompleter(commands(), tmp_path)

    def done(text: str) -> list[str]:
        return [x.text for x in c.get_completions(Document(text), CompleteEvent())]

    assert done("/mo") == ["/model"]
    assert done("/e") == ["/exit", "/export"]
    assert done("look at s") == ["setup.cfg", "src/"]
    assert done("fix @src/ca") == ["calc.py"]
    assert done("see .g") == []  # .git is never offered
    assert done("see ../") == []  # nothing outside the project
