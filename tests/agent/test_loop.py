"""The loop in process: real SDK on the fake Messages API, real MCP tools in memory."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from tests.agent.conftest import FakeAnthropic, FakeOllama

from coderx_agent.compaction import SUMMARY_SYSTEM
from coderx_agent.events import Compacted, Event, TextDelta, ToolStart
from coderx_agent.loop import Agent

MakeAgent = Callable[..., AbstractAsyncContextManager[Agent]]


def saved(agent: Agent) -> list[dict[str, Any]]:
    """The conversation file's records."""
    return [json.loads(line) for line in agent.conversation.path.read_text().splitlines()]


async def test_runs_tools_feeds_errors_back_and_answers(anthropic_api: FakeAnthropic,
                                                        make_agent: MakeAgent) -> None:
    anthropic_api.call(("echo", {"text": "hi"}), ("pid", {})) \
        .call(("nope", {}), ("echo", {"wrong": 1})) \
        .say("All done.", output_tokens=7)
    events: list[Event] = []
    async with make_agent(on_event=events.append) as agent:
        result = await agent.run("say hi")
    assert (result.status, result.exit_code, result.answer) == ("done", 0, "All done.")
    assert result.turns == 3
    assert [(c.name, c.ok) for c in result.tool_calls] == [
        ("echo", True), ("pid", True), ("nope", False), ("echo", False)]
    first = anthropic_api.tool_results(1)
    assert first[0]["content"] == "hi" and not first[0].get("is_error")
    second = anthropic_api.tool_results(2)
    assert second[0]["is_error"] and "no tool named 'nope'" in second[0]["content"]
    assert second[1]["is_error"] and "text" in second[1]["content"]  # the server's validation
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "All done."
    assert result.usage.output_tokens == 20 + 20 + 7
    assert result.cost_usd > 0
    records = saved(agent)
    assert records[0]["type"] == "header"
    assert [r["message"]["role"] for r in records if r["type"] == "message"] == [
        "user", "assistant", "user", "assistant", "user", "assistant"]
    assert sum(1 for r in records if r["type"] == "usage") == 3


async def test_read_only_calls_run_in_parallel(anthropic_api: FakeAnthropic,
                                               make_agent: MakeAgent) -> None:
    anthropic_api.call(("sleep", {"seconds": 1}), ("sleep", {"seconds": 1}),
                       ("sleep", {"seconds": 1})).say("ok")
    async with make_agent() as agent:
        result = await agent.run("wait")
    assert [c.ok for c in result.tool_calls] == [True] * 3
    assert sum(c.duration_s for c in result.tool_calls) >= 3
    starts = sorted(c.duration_s for c in result.tool_calls)
    assert starts[-1] < 2.5  # all three overlapped (each took its full second)


async def test_plan_mode_and_deny_rules_refuse_and_tell_the_model(
        anthropic_api: FakeAnthropic, make_agent: MakeAgent) -> None:
    anthropic_api.call(("pid", {}), ("echo", {"text": "secret-1"}),
                       ("echo", {"text": "public"})).say("understood")
    async with make_agent(mode="plan", deny=("echo(secret*)",)) as agent:
        result = await agent.run("go")
    assert [c.ok for c in result.tool_calls] == [False, False, True]
    pid, secret, public = anthropic_api.tool_results(1)
    assert pid["is_error"] and "plan mode" in pid["content"]
    assert secret["is_error"] and "denied by a permission rule" in secret["content"]
    assert public["content"] == "public"


async def test_headless_accept_edits_refuses_what_would_ask(anthropic_api: FakeAnthropic,
                                                            make_agent: MakeAgent) -> None:
    anthropic_api.call(("pid", {})).say("ok").call(("pid", {})).say("ok")
    async with make_agent(mode="accept-edits") as agent:
        refused = await agent.run("go")
    (res,) = anthropic_api.tool_results(1)
    assert res["is_error"] and "--allow pid" in res["content"]
    assert not refused.tool_calls[0].ok
    async with make_agent(mode="accept-edits", allow=("pid",)) as agent:
        allowed = await agent.run("go")
    assert allowed.tool_calls[0].ok


async def test_turn_limit_ends_the_run(anthropic_api: FakeAnthropic,
                                       make_agent: MakeAgent) -> None:
    anthropic_api.call(("echo", {"text": "1"})).call(("echo", {"text": "2"}))
    async with make_agent(max_turns=2) as agent:
        result = await agent.run("loop forever")
    assert (result.status, result.exit_code, result.turns) == ("turn_limit", 4, 2)
    assert "2 turns" in (result.error or "")
    assert len(anthropic_api.requests) == 2


async def test_budget_refuses_the_turn_that_would_pass_it(anthropic_api: FakeAnthropic,
                                                          make_agent: MakeAgent) -> None:
    # Turn 1 costs 20000 output tokens at $15/M = $0.30; turn 2 would cost about as much.
    anthropic_api.call(("echo", {"text": "x"}), output_tokens=20_000).say("never sent")
    async with make_agent(max_budget_usd=0.5) as agent:
        result = await agent.run("spend")
    assert (result.status, result.exit_code) == ("budget_exceeded", 3)
    assert len(anthropic_api.requests) == 1
    assert result.cost_usd == agent.spent_usd < 0.5
    assert "past the budget of $0.5" in (result.error or "")
    async with make_agent(max_budget_usd=0.000001) as agent:
        tiny = await agent.run("anything")
    assert tiny.status == "budget_exceeded" and tiny.turns == 0
    assert len(anthropic_api.requests) == 1  # refused before sending


async def test_compaction_summarises_old_turns_and_keeps_memory(
        anthropic_api: FakeAnthropic, make_agent: MakeAgent) -> None:
    sentinel = "MEMORY-SENTINEL-7f3a"
    anthropic_api.call(("echo", {"text": "first"}), input_tokens=9_000) \
        .say("SUMMARY-OF-EARLIER-WORK").say("finished")
    events: list[Event] = []
    async with make_agent(memory=f"Always mention {sentinel}.", context_window=10_000,
                          keep_recent=2, on_event=events.append) as agent:
        result = await agent.run("ORIGINAL-TASK")
    assert result.answer == "finished"
    summary_req = anthropic_api.requests[1]
    assert anthropic_api.system_of(1) == SUMMARY_SYSTEM
    assert "ORIGINAL-TASK" in json.dumps(summary_req["messages"])
    after = anthropic_api.requests[2]
    assert sentinel in anthropic_api.system_of(2)
    first = after["messages"][0]["content"][0]["text"]
    assert "SUMMARY-OF-EARLIER-WORK" in first and "ORIGINAL-TASK" not in json.dumps(after)
    assert next(e for e in events if isinstance(e, Compacted)).summarised_messages == 1
    records = saved(agent)
    assert any(r["type"] == "compaction" for r in records)
    messages = [r["message"] for r in records if r["type"] == "message"]
    assert messages[0]["content"][0]["text"] == "ORIGINAL-TASK"  # the file keeps everything


async def test_interrupt_while_the_model_thinks(anthropic_api: FakeAnthropic,
                                                make_agent: MakeAgent) -> None:
    anthropic_api.hang()
    async with make_agent() as agent:
        task = asyncio.ensure_future(agent.run("think long"))
        await asyncio.to_thread(anthropic_api.hanging.wait, 30)
        task.cancel()
        result = await task
    assert (result.status, result.exit_code) == ("interrupted", 130)


async def test_interrupt_during_a_tool_call_leaves_a_valid_conversation(
        anthropic_api: FakeAnthropic, make_agent: MakeAgent) -> None:
    anthropic_api.call(("sleep", {"seconds": 30})).say("resumed fine")
    started = asyncio.Event()

    def on_event(event: Event) -> None:
        if isinstance(event, ToolStart):
            started.set()

    async with make_agent(on_event=on_event) as agent:
        task = asyncio.ensure_future(agent.run("sleep"))
        await asyncio.wait_for(started.wait(), 30)
        t0 = time.monotonic()
        task.cancel()
        result = await task
        assert time.monotonic() - t0 < 5
        assert result.status == "interrupted"
        last = agent.conversation.messages[-1]
        assert last.role == "user" and "interrupted" in last.content[0].content  # type: ignore[union-attr]
        again = await agent.run("go on")
    assert again.answer == "resumed fine"


async def test_model_failure_ends_the_run_with_an_error(anthropic_api: FakeAnthropic,
                                                        make_agent: MakeAgent) -> None:
    anthropic_api.fail(400, "prompt is too long")
    async with make_agent() as agent:
        result = await agent.run("x")
    assert (result.status, result.exit_code) == ("error", 1)
    assert result.error == "the Anthropic API answered 400: prompt is too long"


async def test_ollama_model_drives_the_same_loop(ollama_api: FakeOllama, tmp_path: Path) -> None:
    from fastmcp import Client
    from tests.agent import extra_server

    from coderx_agent.config import OllamaConfig, ServerEntry
    from coderx_agent.conversations import ConversationStore
    from coderx_agent.models.ollama import OllamaModel
    from coderx_agent.permissions import Permissions
    from coderx_agent.pricing import price_of
    from coderx_agent.servers import ToolHub, ToolServer

    ollama_api.call(("echo", {"text": "from qwen"})).say("qwen is done")
    model = OllamaModel("qwen3:8b", OllamaConfig(host=ollama_api.url, num_ctx=8192))
    server = ToolServer("coderx", lambda: Client(extra_server.mcp),
                        ServerEntry(command="in-memory"), prefix=False)
    conv = ConversationStore(tmp_path / "c").create(tmp_path, model.name, "yolo")
    try:
        async with ToolHub([server]) as hub:
            agent = Agent(model, hub, conv, Permissions("yolo"), price_of("ollama", "qwen3:8b"))
            result = await agent.run("use a tool")
    finally:
        await model.aclose()
    assert result.answer == "qwen is done" and result.cost_usd == 0
    assert result.usage.input_tokens == 100 and result.usage.output_tokens == 20
    tool_msg = ollama_api.requests[1]["messages"][-1]
    assert tool_msg == {"role": "tool", "content": "from qwen", "tool_name": "echo"}


async def test_ask_mode_asks_the_front_end_for_each_non_read_only_call(
        anthropic_api: FakeAnthropic, make_agent: MakeAgent) -> None:
    from coderx_agent.messages import ToolSpec
    from coderx_agent.permissions import Permissions

    asked: list[str] = []

    async def ask(tool: ToolSpec, arguments: dict[str, Any]) -> bool:
        asked.append(tool.name)
        return len(asked) == 1  # yes to the first question, no to the second

    anthropic_api.call(("echo", {"text": "read-only, not asked"}), ("pid", {}), ("pid", {})) \
        .say("ok")
    async with make_agent() as agent:
        agent.permissions = Permissions("ask", ask=ask)
        result = await agent.run("go")
    assert asked == ["pid", "pid"]
    assert [c.ok for c in result.tool_calls] == [True, True, False]
    assert anthropic_api.tool_results(1)[2]["content"] == "refused: the user declined pid"
