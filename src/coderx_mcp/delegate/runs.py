"""Delegated agent runs: each one an agent loop in a task of its own, on its own session.

A :class:`Run` owns one long-lived task. The task enters the run's
:class:`~coderx_mcp.context.Delegation` (so the in-memory MCP connection it opens acts for
the run's owner in the run's session), opens the agent, runs the task, then waits for
replies (``agent_reply``) until it is cancelled or the server stops. The agent's MCP
client is entered and left in that one task, as its task group requires.

:class:`Runs` is the registry the :class:`~coderx_mcp.server.app.App` holds: per-owner
visibility, the per-principal limit on working runs, shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import secrets
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Literal

import structlog
from pydantic import BaseModel, Field

from coderx_agent.errors import AgentError
from coderx_agent.events import Event, ToolStart, TurnStart, UsageReport
from coderx_mcp.context import Delegation, enter_delegation
from coderx_mcp.errors import CoderxError, RunLimitReached, RunNotFound
from coderx_mcp.history import Entry, HistoryWriter
from coderx_mcp.ops import SessionOps
from coderx_mcp.sessions import Session

if TYPE_CHECKING:  # the loop pulls in the MCP client stack: only runs need it, not startup
    from coderx_agent.loop import Agent, RunResult

_log = structlog.get_logger("coderx.delegate")

State = Literal["working", "waiting", "ended"]
RunMode = Literal["accept-edits", "plan", "yolo"]
RunWorkspace = Literal["worktree", "copy", "scratch"]
Opener = Callable[[Callable[[Event], None]], AbstractAsyncContextManager["Agent"]]
#: Runs that ended are kept (for agent_status) up to this many per server.
KEEP_ENDED = 200
CANCEL_TIMEOUT_S = 30.0


class RunReport(BaseModel):
    """What a run has done so far (or in all, once it is waiting or ended)."""

    run_id: str
    session: str
    branch: str | None = Field(description="The run's git branch (review, merge).")
    state: State = Field(description="'working'; 'waiting' for agent_reply; 'ended'.")
    exit_reason: str | None = Field(
        description="How the last turn ended: done, turn_limit, budget_exceeded, "
                    "cancelled, error; None while working.")
    answer: str = Field(description="The agent's final answer of its last turn.")
    error: str | None
    turns: int = Field(description="Model turns, over every reply.")
    tool_calls: int
    last_tool: str | None
    cost_usd: float
    diff_stat: str = Field(description="The session's changes since the run started.")


class Run:
    """One delegated agent and its session.

    Args:
        run_id: The run's id.
        owner: The principal that started it.
        session: Its worktree session.
        task: The first prompt.
        opener: Opens the agent (in the run's task); receives the event sink.
        history: Where the run's ends are recorded.
    """

    def __init__(self, run_id: str, owner: str, session: Session, task: str, opener: Opener,
                 history: HistoryWriter | None) -> None:
        self.id, self.owner, self.session = run_id, owner, session
        self.state: State = "working"
        self.exit_reason: str | None = None
        self.answer = ""
        self.error: str | None = None
        self.turns = self.tool_calls = 0
        self.last_tool: str | None = None
        self.cost_usd = 0.0
        self.ended_at: float | None = None
        self._task_text, self._opener, self._history = task, opener, history
        self._inbox: asyncio.Queue[str] = asyncio.Queue()
        self._settled = asyncio.Event()
        self._cancelled = False
        self._beat = asyncio.Event()
        # A fresh context: nothing of the agent_run call (its scope, log bindings) leaks in.
        self._task = asyncio.create_task(self._main(), name=f"coderx-run-{run_id}",
                                         context=contextvars.Context())

    @property
    def branch(self) -> str | None:
        """The session's branch, if it is a worktree session."""
        wt = self.session.workspace.worktree
        return wt.branch if wt else None

    def _on_event(self, event: Event) -> None:
        if isinstance(event, TurnStart):
            self.turns += 1
        elif isinstance(event, ToolStart):
            self.tool_calls += 1
            self.last_tool = event.name
        elif isinstance(event, UsageReport):
            self.cost_usd = event.total_cost_usd
        else:
            return
        self._beat.set()

    async def _main(self) -> None:
        enter_delegation(Delegation(self.owner, self.session.id, self.id))
        try:
            async with self._opener(self._on_event) as agent:
                prompt = self._task_text
                while True:
                    self._ended_turn(await agent.run(prompt))
                    if self._cancelled:
                        break
                    prompt = await self._inbox.get()
                    self.state = "working"
                    self._settled.clear()
        except asyncio.CancelledError:
            self.exit_reason = self.exit_reason or "cancelled"
        except (AgentError, CoderxError) as exc:
            self.exit_reason, self.error = "error", str(exc)
        except Exception as exc:  # logged with its traceback; the caller gets one line
            _log.error("delegated run failed", run_id=self.id, exc_info=exc)
            self.exit_reason, self.error = "error", f"the run failed ({type(exc).__name__})"
        finally:
            self.state, self.ended_at = "ended", time.monotonic()
            self._settled.set()
            self._beat.set()
            self._record("ended")

    def _ended_turn(self, result: RunResult) -> None:
        self.exit_reason = "cancelled" if self._cancelled else result.status
        self.answer, self.error = result.answer, result.error
        self.state = "waiting"
        self._settled.set()
        self._beat.set()
        self._record("turn ended")

    def _record(self, what: str) -> None:
        if self._history is None:
            return
        self._history.record(Entry(
            ts=time.time(), principal=self.owner, session=self.session.id, tool="agent_run",
            kind="audit", outcome="ok" if self.exit_reason in ("done", None) else "error",
            summary=f"run {self.id} {what}: {self.exit_reason}, {self.turns} turns, "
                    f"{self.tool_calls} tool calls, ${self.cost_usd:.4f}"))

    def reply(self, message: str) -> None:
        """Continue a waiting run with ``message``.

        Raises:
            RunNotFound: The run is not waiting (still working, or ended).
        """
        if self.state != "waiting":
            raise RunNotFound(f"run {self.id} is {self.state}, not waiting for a reply"
                              + ("; agent_wait until it is" if self.state == "working" else ""))
        if self.session.closed:
            raise RunNotFound(f"run {self.id}'s session {self.session.id} is closed; start a "
                              "new run with agent_run")
        self.state = "working"
        self.exit_reason = None
        self._settled.clear()
        self._inbox.put_nowait(message)

    async def wait(self, timeout: float, tick: Callable[[], Awaitable[None]] | None = None,
                   every: float = 1.0) -> bool:
        """Wait until the run is not working (or ``timeout``); call ``tick`` on progress
        and at least every ``every`` seconds. True when it settled."""
        end = time.monotonic() + timeout
        while not self._settled.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return False
            self._beat.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._beat.wait(), min(every, left))
            if tick is not None and not self._settled.is_set():
                await tick()
        return True

    async def cancel(self) -> None:
        """Stop the run and every command still running in its session."""
        if self.state != "ended":
            self._cancelled = True
            self.exit_reason = "cancelled"
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), CANCEL_TIMEOUT_S)
        await kill_running(self.session)

    async def report(self) -> RunReport:
        """The run's facts, with the session's diff stat."""
        stat = "session closed"
        if not self.session.closed:
            try:
                await self.session.baseline()
                stat = (await self.session.shadow.diff()).stat
            except CoderxError as exc:
                stat = f"unknown ({exc})"
        return RunReport(run_id=self.id, session=self.session.id, branch=self.branch,
                         state=self.state, exit_reason=self.exit_reason, answer=self.answer,
                         error=self.error, turns=self.turns, tool_calls=self.tool_calls,
                         last_tool=self.last_tool, cost_usd=round(self.cost_usd, 6),
                         diff_stat=stat)


async def kill_running(session: Session) -> list[str]:
    """Kill every process still running in ``session`` (commands and background ones)."""
    if session.closed:
        return []
    ops = SessionOps(session)
    killed = []
    try:
        procs = (await ops.call("procs", all=True))["processes"]
        for p in procs:
            if p["running"]:
                await ops.call("kill", output_id=p["output_id"])
                killed.append(p["output_id"])
    except CoderxError as exc:  # the sandbox is gone: nothing left running in it
        _log.info("could not list a cancelled run's processes", error=str(exc))
    return killed


class Runs:
    """Every run of this server, by id; each visible to its owner only."""

    def __init__(self) -> None:
        self._runs: dict[str, Run] = {}

    def working(self, owner: str) -> int:
        """How many of ``owner``'s runs are working."""
        return sum(1 for r in self._runs.values() if r.owner == owner and r.state == "working")

    def check_limit(self, owner: str, limit: int) -> None:
        """Raise when ``owner`` may not start (or continue) one more run.

        Raises:
            RunLimitReached: ``limit`` runs of the owner are working.
        """
        if self.working(owner) >= limit:
            raise RunLimitReached(
                f"{limit} of your agent runs are working already (the limit per principal); "
                "wait for one (agent_wait) or cancel one (agent_cancel)")

    def start(self, owner: str, session: Session, task: str, opener: Opener,
              history: HistoryWriter | None) -> Run:
        """Start a run of ``owner`` on ``session``."""
        self._forget_old()
        run = Run("r-" + secrets.token_hex(8), owner, session, task, opener, history)
        self._runs[run.id] = run
        _log.info("run started", run_id=run.id, owner=owner, session_id=session.id)
        return run

    def get(self, run_id: str, owner: str) -> Run:
        """The run ``run_id`` of ``owner``.

        Raises:
            RunNotFound: No such run for this owner.
        """
        run = self._runs.get(run_id)
        if run is None or run.owner != owner:
            raise RunNotFound(f"no agent run {run_id!r}; agent_run returns the run_id")
        return run

    def _forget_old(self) -> None:
        ended = sorted((r for r in self._runs.values() if r.ended_at is not None),
                       key=lambda r: r.ended_at or 0.0)
        for r in ended[:max(0, len(ended) - KEEP_ENDED)]:
            del self._runs[r.id]

    async def shutdown(self) -> None:
        """Cancel every run (the server is stopping)."""
        await asyncio.gather(*(r.cancel() for r in self._runs.values() if r.state != "ended"),
                             return_exceptions=True)
