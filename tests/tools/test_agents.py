"""Delegated agents: agent_run/status/wait/reply/cancel on real worktree sessions.

A real coderx-agent loop runs inside the server; its model is the real ``anthropic`` SDK
talking to the loopback Messages API stand-in, its tools this very server over an
in-memory MCP client. Each run's script is chosen from the request body (the task is the
first user message), so parallel runs get their own answers.
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import docker
import mcp.types as mt
import pytest
from fastmcp import Client, FastMCP
from tests.conftest import FakeAnthropic, FakeOllama, Step, host_git, make_repo
from tests.tools.conftest import err, ok

from coderx_mcp.config import AgentRunSettings
from coderx_mcp.keystore import open_store
from coderx_mcp.server import build_server

pytestmark = pytest.mark.docker

KEY = "sk-delegate-SECRET-0123456789abcdef"
BUGGY = {"calc.py": "def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a + b\n"}
Turn = tuple[str, list[tuple[str, dict[str, Any]]], dict[str, int]]


def script(runs: dict[str, list[Turn]]) -> Callable[[dict[str, Any]], Step]:
    """Answer each request from the script of the run whose task it carries: turn n is
    the reply after n assistant messages."""
    def decide(body: dict[str, Any]) -> Step:
        first = body["messages"][0]["content"]
        task = first if isinstance(first, str) else "".join(
            b.get("text", "") for b in first)
        turn = sum(1 for m in body["messages"] if m["role"] == "assistant")
        for marker, turns in runs.items():
            if marker in task:
                text, calls, usage = turns[turn]
                return Step("reply", text=text, calls=calls, usage=usage)
        raise AssertionError(f"no script for task {task!r}")
    return decide


def fix(marker: str, old: str, new: str, check: str) -> list[Turn]:
    """Read and edit calc.py, run a check, answer."""
    return [("", [("read_file", {"path": "calc.py"})], {}),
            ("", [("edit_file", {"path": "calc.py", "old_string": old, "new_string": new})], {}),
            ("", [("run_command", {"command": check})], {}),
            (f"fixed {marker}", [], {})]


@pytest.fixture
def repo(tool_workspace: Path) -> Path:
    """The default workspace as a git repository with two bugs."""
    return make_repo(tool_workspace, BUGGY)


@pytest.fixture
def delegate_server(repo: Path, anthropic_api: FakeAnthropic, tmp_path: Path,
                    make_settings: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
                    ) -> FastMCP:
    """A server whose runs use the stand-in; the API key comes from a real key store."""
    store_file = tmp_path / "keys.enc"
    monkeypatch.setenv("CODERX_KEY_PASSPHRASE", "test-passphrase")
    open_store(store_file).set("MODEL_KEY", KEY)
    return build_server(make_settings(key_file=store_file, agents=AgentRunSettings(
        anthropic_base_url=anthropic_api.url, api_key="MODEL_KEY")))


@pytest.fixture
async def dc(delegate_server: FastMCP) -> AsyncIterator[Client[Any]]:
    """An in-memory client of ``delegate_server``."""
    async with Client(delegate_server) as c:
        yield c


def container_procs(container: str) -> str:
    """The process list of a session's container (``ps`` columns joined)."""
    dk = docker.from_env()
    try:
        top = dk.containers.get(container).top(ps_args="-eo pid,args")
    finally:
        dk.close()
    return "\n".join(" ".join(p) for p in top["Processes"])


async def test_two_parallel_runs_fix_two_bugs_on_their_own_branches(
        dc: Client[Any], anthropic_api: FakeAnthropic, repo: Path) -> None:
    runs = {"TASK-ADD": fix("add", "return a - b", "return a + b",
                            "python3 -c 'from calc import add; assert add(2, 3) == 5'"),
            "TASK-MUL": fix("mul", "return a + b", "return a * b",
                            "python3 -c 'from calc import mul; assert mul(2, 3) == 6'")}
    for _ in range(10):
        anthropic_api.then(script(runs))
    a, b = await asyncio.gather(
        ok(dc, "agent_run", task="TASK-ADD: fix add in calc.py", return_after=120),
        ok(dc, "agent_run", task="TASK-MUL: fix mul in calc.py", return_after=120))
    for r, word in ((a["run"], "add"), (b["run"], "mul")):
        assert (r["state"], r["exit_reason"], r["answer"]) == ("waiting", "done", f"fixed {word}")
        assert (r["turns"], r["tool_calls"]) == (4, 3)
        assert r["cost_usd"] > 0
        assert "1 file changed" in r["diff_stat"]
        assert r["branch"] == f"coderx/{r['session']}"
    assert a["run"]["session"] != b["run"]["session"]
    # Both branches hold their own fix once committed; the main tree is untouched.
    for r in (a["run"], b["run"]):
        await ok(dc, "session_commit", message="agent fix", session=r["session"])
    add_branch = host_git(repo, "show", f"{a['run']['branch']}:calc.py")
    mul_branch = host_git(repo, "show", f"{b['run']['branch']}:calc.py")
    assert "return a + b" in add_branch and "return a * b" not in add_branch
    assert "return a * b" in mul_branch and "return a - b" in mul_branch
    assert (repo / "calc.py").read_text() == BUGGY["calc.py"]
    assert host_git(repo, "status", "--porcelain") == ""
    # The key reached the API and nothing else; the history has the run's calls.
    assert set(anthropic_api.seen_keys) == {KEY}
    assert KEY not in json.dumps(a) + json.dumps(b)
    exported = await ok(dc, "history_export", session=a["run"]["session"], format="json")
    entries = json.loads(exported["document"])
    assert {"edit_file", "run_command", "agent_run"} <= {e["tool"] for e in entries}
    assert any(e["kind"] == "audit" and "done" in e["summary"] for e in entries)


async def test_agent_reply_continues_the_conversation(
        dc: Client[Any], anthropic_api: FakeAnthropic, repo: Path) -> None:
    turns = fix("add", "return a - b", "return a + b", "true")
    turns += [("", [("edit_file", {"path": "calc.py", "old_string": "return a + b\n\n\n",
                                   "new_string": "return a + b  # fixed\n\n\n"})], {}),
              ("marked it", [], {})]
    for _ in range(7):
        anthropic_api.then(script({"TASK-ADD": turns}))
    first = (await ok(dc, "agent_run", task="TASK-ADD fix add", return_after=120))["run"]
    assert first["state"] == "waiting"
    progress: list[str] = []

    async def on_progress(_p: float, _t: float | None, message: str | None) -> None:
        progress.append(message or "")

    reply = await dc.call_tool("agent_reply", {"run_id": first["run_id"], "return_after": 120,
                                               "message": "mark the fixed line"},
                               progress_handler=on_progress)
    second = reply.structured_content["run"]  # type: ignore[index]
    assert any(m.startswith("turn 5,") and "last edit_file" in m for m in progress), progress
    assert (second["answer"], second["turns"], second["tool_calls"]) == ("marked it", 6, 4)
    assert second["session"] == first["session"]
    # The reply went to the model with the whole conversation before it.
    last = anthropic_api.requests[-1]["messages"]
    assert any("mark the fixed line" in json.dumps(m) for m in last)
    assert "fixed add" in json.dumps(last)
    # Unknown ids are named; a run whose session was closed takes no more replies.
    assert "no agent run" in await err(dc, "agent_reply", run_id="r-00", message="x")
    await ok(dc, "session_close", session=first["session"])
    assert "is closed" in await err(dc, "agent_reply", run_id=first["run_id"], message="x")


async def test_agent_cancel_kills_the_long_command(
        dc: Client[Any], anthropic_api: FakeAnthropic, docker_client: Any) -> None:
    anthropic_api.call(("run_command", {"command": "sleep 321 && echo done",
                                        "timeout": 600, "return_after": 600}))
    r = (await ok(dc, "agent_run", task="wait a while", return_after=1))["run"]
    assert r["state"] == "working"
    info = await ok(dc, "session_info", session=r["session"])
    container = info["info"]["container"]
    end = time.monotonic() + 60
    while "sleep 321" not in container_procs(container):
        assert time.monotonic() < end, "the command never started"
        await asyncio.sleep(0.2)
    done = (await ok(dc, "agent_cancel", run_id=r["run_id"]))["run"]
    assert (done["state"], done["exit_reason"]) == ("ended", "cancelled")
    assert "sleep 321" not in container_procs(container)
    status = (await ok(dc, "agent_status", run_id=r["run_id"]))["run"]
    assert status["state"] == "ended"
    assert "not waiting" in await err(dc, "agent_reply", run_id=r["run_id"], message="go on")


async def test_budget_stops_the_run_with_its_reason(
        dc: Client[Any], anthropic_api: FakeAnthropic) -> None:
    # Turn 1 costs $0.30 at Sonnet's $3/M input; turn 2 would pass the $0.20 cap.
    anthropic_api.call(("list_dir", {"path": "."}), input_tokens=100_000)
    r = (await ok(dc, "agent_run", task="look around", max_budget_usd=0.2,
                  return_after=120))["run"]
    assert r["exit_reason"] == "budget_exceeded"
    assert r["turns"] == 1 and r["tool_calls"] == 1
    assert "budget" in r["error"]
    assert len(anthropic_api.requests) == 1


async def test_run_limit_per_principal(make_settings: Callable[..., Any], repo: Path,
                                       anthropic_api: FakeAnthropic,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)  # no key store: the environment's key
    monkeypatch.delenv("CODERX_KEY_PASSPHRASE", raising=False)
    server = build_server(make_settings(agents=AgentRunSettings(
        anthropic_base_url=anthropic_api.url, max_runs_per_principal=1)))
    anthropic_api.hang()
    async with Client(server) as c:
        r = (await ok(c, "agent_run", task="hang", return_after=0.5))["run"]
        assert r["state"] == "working"
        text = await err(c, "agent_run", task="another")
        assert "1 of your agent runs are working already" in text
        anthropic_api.released.set()
        await ok(c, "agent_cancel", run_id=r["run_id"])


async def test_ollama_model_from_the_server_config(
        make_settings: Callable[..., Any], repo: Path, ollama_api: FakeOllama) -> None:
    ollama_api.call(("list_dir", {"path": "."})).say("calc.py is there")
    server = build_server(make_settings(agents=AgentRunSettings(ollama_host=ollama_api.url)))
    async with Client(server) as c:
        r = (await ok(c, "agent_run", task="look", model="ollama:qwen3:8b",
                      return_after=120))["run"]
    assert (r["answer"], r["turns"], r["tool_calls"], r["exit_reason"]) == (
        "calc.py is there", 2, 1, "done")


async def test_host_model_runs_through_sampling_with_tools(delegate_server: FastMCP) -> None:
    seen: list[list[str]] = []

    def host(messages: list[mt.SamplingMessage], params: Any, _ctx: Any
             ) -> mt.CreateMessageResultWithTools:
        seen.append([t.name for t in params.tools or []])
        if len(messages) == 1:
            return mt.CreateMessageResultWithTools(
                role="assistant", model="host-model", stop_reason="toolUse",
                content=[mt.ToolUseContent(id="t1", name="list_dir", input={"path": "."})])
        result = messages[-1].content_as_list[0]
        assert isinstance(result, mt.ToolResultContent) and "calc.py" in str(result.content)
        return mt.CreateMessageResultWithTools(
            role="assistant", model="host-model", stop_reason="endTurn",
            content=[mt.TextContent(type="text", text="host saw calc.py")])

    caps = mt.SamplingCapability(tools=mt.SamplingToolsCapability())
    async with Client(delegate_server, sampling_handler=host, sampling_capabilities=caps,
                      mode="legacy") as c:
        r = (await ok(c, "agent_run", task="look", model="host", return_after=120))["run"]
    assert (r["answer"], r["turns"], r["cost_usd"]) == ("host saw calc.py", 2, 0), r["error"]
    assert "read_file" in seen[0] and not any(n.startswith("agent_") for n in seen[0])


async def test_host_model_needs_sampling(dc: Client[Any], delegate_server: FastMCP) -> None:
    text = await err(dc, "agent_run", task="x", model="host")
    assert "needs an MCP host that supports sampling with tools" in text
    no_tools = mt.SamplingCapability()  # plain sampling cannot drive an agent
    async with Client(delegate_server, sampling_handler=lambda *_a: "hi",
                      sampling_capabilities=no_tools, mode="legacy") as c:
        assert "sampling with tools" in await err(c, "agent_run", task="x", model="host")
    assert "unknown model" in await err(dc, "agent_run", task="x", model="gpt:4")
