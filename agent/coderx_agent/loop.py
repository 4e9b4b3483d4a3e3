"""The agent loop: ask the model, run the tools it asks for, repeat until it answers.

``Agent.run`` is the whole loop. Its ends are exceptions (``errors.Stop`` and the agent's
errors), caught in one place; every message is saved the moment it exists, and the
``finally`` closes any tool calls an interrupt cut off, so the conversation on disk is
always one the model API accepts. Front ends (headless, the REPL) drive it through
``run`` and render its events.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any, Protocol

from pydantic import BaseModel

from coderx_agent.compaction import cut_point, summarise
from coderx_agent.conversations import Compaction, Conversation
from coderx_agent.errors import (
    AgentError,
    BudgetExceeded,
    Interrupted,
    Submitted,
    TurnLimit,
)
from coderx_agent.events import (
    AssistantMessage,
    Compacted,
    EventSink,
    Notice,
    TextDelta,
    ToolEnd,
    ToolStart,
    TurnStart,
    UsageReport,
    ignore,
)
from coderx_agent.messages import Message, ToolResultBlock, ToolSpec, ToolUseBlock, Usage
from coderx_agent.models import Model
from coderx_agent.permissions import Permissions
from coderx_agent.pricing import Price, cost
from coderx_agent.servers import ToolOutcome, timed

CHARS_PER_TOKEN = 4
#: Output tokens assumed for a turn before any turn has shown a real figure.
FIRST_OUTPUT_ESTIMATE = 1024
#: Cap on a tool result the model reads (coderx tools bound their own output far below).
MAX_RESULT_CHARS = 100_000

BASE_PROMPT = """\
You are coderx-agent, a coding assistant working in the user's repository. You reach the \
repository only through your tools, which run in an isolated container where it is mounted \
at /workspace: read files before editing them, run the project's tests after a change, and \
keep changes small. When the task is done, answer with a short summary of what you did \
and no tool call."""


class Tools(Protocol):
    """The tools the loop can call (``servers.ToolHub``)."""

    def tools(self) -> list[ToolSpec]:
        """Every tool the model may use."""
        ...

    def spec(self, name: str) -> ToolSpec | None:
        """The tool called ``name``, if any."""
        ...

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolOutcome:
        """Run a tool; failures come back as a failed outcome, not an exception."""
        ...


class ToolCallRecord(BaseModel):
    """One tool call of a run, as the headless JSON reports it."""

    id: str
    name: str
    arguments: dict[str, Any]
    ok: bool
    duration_s: float
    error: str | None = None


class RunResult(BaseModel):
    """How a run of the loop ended."""

    status: str
    exit_code: int
    answer: str = ""
    error: str | None = None
    turns: int = 0
    tool_calls: list[ToolCallRecord] = []
    usage: Usage = Usage()
    cost_usd: float = 0.0


def system_prompt(memory: str) -> str:
    """The system prompt: our instructions, then the project's memory files."""
    if not memory:
        return BASE_PROMPT
    return f"{BASE_PROMPT}\n\n# Project memory (from the user's memory files)\n\n{memory}"


class Agent:
    """One conversation with one model over one set of tools.

    Args:
        model: The model.
        tools: The MCP tools.
        conversation: Where messages are kept and saved.
        permissions: Which tool calls may run.
        price: The model's prices (for cost and the budget).
        memory: Project memory for the system prompt.
        max_turns: Model turns per ``run``.
        max_budget_usd: Spend cap over this agent's runs (None: none).
        compact_at: Fraction of the context window that triggers compaction.
        keep_recent: Messages compaction keeps verbatim.
        on_event: Receives every event.
    """

    def __init__(self, model: Model, tools: Tools, conversation: Conversation,
                 permissions: Permissions, price: Price, *, memory: str = "",
                 max_turns: int = 100, max_budget_usd: float | None = None,
                 compact_at: float = 0.8, keep_recent: int = 6,
                 on_event: EventSink = ignore) -> None:
        self.model, self.tools, self.conversation = model, tools, conversation
        self.permissions, self.price = permissions, price
        self.system = system_prompt(memory)
        self.max_turns, self.max_budget_usd = max_turns, max_budget_usd
        self.compact_at, self.keep_recent = compact_at, keep_recent
        self.emit: EventSink = on_event
        self.spent_usd = 0.0
        self.last_prompt_tokens = 0
        self.max_output_tokens = 0

    async def run(self, prompt: str) -> RunResult:
        """Work on ``prompt`` until the model answers, a limit is hit or the run is
        interrupted (cancel the task running this)."""
        conv = self.conversation
        conv.repair()
        conv.append(Message.user(prompt))
        result = RunResult(status="running", exit_code=1)
        ended: AgentError
        try:
            while True:
                if result.turns >= self.max_turns:
                    raise TurnLimit(f"stopped after {result.turns} turns (--max-turns)")
                await self._compact_if_full(result)
                tools = self.tools.tools()
                view = conv.view()
                self._check_budget(view, tools)
                result.turns += 1
                self.emit(TurnStart(turn=result.turns))
                reply = await self.model.complete(
                    self.system, view, tools, lambda text: self.emit(TextDelta(text=text)))
                conv.append(reply.message)
                self._account(reply.usage, result)
                for notice in reply.notices:
                    self.emit(Notice(message=notice))
                self.emit(AssistantMessage(message=reply.message))
                uses = reply.message.tool_uses
                if not uses:
                    result.answer = reply.message.text
                    raise Submitted("done")
                conv.append(Message(role="user", content=await self._run_tools(uses, result)))
        except AgentError as exc:  # Stop (the loop's control flow) and the agent's failures
            ended = exc
        except asyncio.CancelledError:
            ended = Interrupted("interrupted")
        finally:
            conv.repair()  # tool calls an interrupt cut off get an "interrupted" result
        result.status, result.exit_code = ended.status, ended.exit_code
        if not isinstance(ended, Submitted):
            result.error = str(ended)
        return result

    def _account(self, usage: Usage, result: RunResult) -> None:
        """Add a model call's tokens and cost to the run, the agent and the conversation."""
        spent = cost(self.price, usage)
        result.usage += usage
        result.cost_usd += spent
        self.spent_usd += spent
        self.conversation.add_usage(usage, spent)
        self.last_prompt_tokens = usage.prompt_tokens
        self.max_output_tokens = max(self.max_output_tokens, usage.output_tokens)
        self.emit(UsageReport(turn=result.turns, usage=usage, cost_usd=spent,
                              total_cost_usd=self.spent_usd))

    def _check_budget(self, view: Sequence[Message], tools: Sequence[ToolSpec]) -> None:
        """Refuse a turn whose estimated cost would take the spend past the budget.

        The prompt is estimated from its size; what the last turn read counts as cached.
        """
        if self.max_budget_usd is None:
            return
        size = len(self.system) + len(json.dumps([t.model_dump() for t in tools])) \
            + len(json.dumps([m.model_dump() for m in view]))
        tokens = size // CHARS_PER_TOKEN
        cached = min(self.last_prompt_tokens, tokens)
        estimate = cost(self.price, Usage(
            cache_read_tokens=cached, cache_write_tokens=tokens - cached,
            output_tokens=self.max_output_tokens or FIRST_OUTPUT_ESTIMATE))
        if self.spent_usd + estimate > self.max_budget_usd:
            raise BudgetExceeded(
                f"the next turn (about ${estimate:.4f}) would take the spend from "
                f"${self.spent_usd:.4f} past the budget of ${self.max_budget_usd:g}")

    async def _compact_if_full(self, result: RunResult) -> None:
        """Summarise older turns once the last prompt filled ``compact_at`` of the context."""
        if self.last_prompt_tokens < self.compact_at * self.model.context_window:
            return
        await self.compact(result)

    async def compact(self, result: RunResult | None = None, focus: str | None = None,
                      keep: int | None = None) -> int:
        """Summarise the turns before the last ``keep`` messages (default ``keep_recent``);
        returns how many messages were summarised (0: nothing to summarise)."""
        conv = self.conversation
        start = conv.compaction.keep_from if conv.compaction else 0
        cut = cut_point(conv.messages, self.keep_recent if keep is None else keep)
        if cut is None or cut <= start:
            return 0
        summary, usage = await summarise(self.model, conv.messages[start:cut],
                                         conv.compaction.summary if conv.compaction else None,
                                         focus)
        conv.compact(Compaction(summary=summary, keep_from=cut))
        self.emit(Compacted(prompt_tokens=self.last_prompt_tokens,
                            summarised_messages=cut - start))
        self._account(usage, result or RunResult(status="compacting", exit_code=0))
        self.last_prompt_tokens = 0  # the summary call's prompt says nothing of the next one
        return cut - start

    async def _run_tools(self, uses: Sequence[ToolUseBlock], result: RunResult
                         ) -> list[ToolResultBlock]:
        """Run the calls of one turn: together when all are read-only, else in order."""
        specs = [self.tools.spec(u.name) for u in uses]
        if len(uses) > 1 and all(s is not None and s.read_only for s in specs):
            return list(await asyncio.gather(*(self._run_tool(u, s, result)
                                               for u, s in zip(uses, specs, strict=True))))
        return [await self._run_tool(u, s, result) for u, s in zip(uses, specs, strict=True)]

    async def _run_tool(self, use: ToolUseBlock, spec: ToolSpec | None, result: RunResult
                        ) -> ToolResultBlock:
        """One tool call; refusals and failures become error results for the model."""
        self.emit(ToolStart(id=use.id, name=use.name, arguments=use.input))
        elapsed = timed()
        if spec is None:
            outcome = ToolOutcome(ok=False, text=f"no tool named {use.name!r}; the tools are: "
                                  + ", ".join(t.name for t in self.tools.tools()))
        elif (refusal := await self.permissions.refusal(spec, use.input)) is not None:
            outcome = ToolOutcome(ok=False, text=f"refused: {refusal}")
        else:
            outcome = await self.tools.call(use.name, use.input)
        text = outcome.text
        if len(text) > MAX_RESULT_CHARS:
            text = text[:MAX_RESULT_CHARS] + f"\n[… cut at {MAX_RESULT_CHARS} characters]"
        duration = round(elapsed(), 3)
        result.tool_calls.append(ToolCallRecord(
            id=use.id, name=use.name, arguments=use.input, ok=outcome.ok, duration_s=duration,
            error=None if outcome.ok else text[:500]))
        self.emit(ToolEnd(id=use.id, name=use.name, ok=outcome.ok, duration_s=duration,
                          output=text[:2000]))
        return ToolResultBlock(tool_use_id=use.id, content=text, is_error=not outcome.ok)

