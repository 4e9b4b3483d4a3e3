"""Agent tools: delegate a task to a coderx-agent working in its own worktree session.

Thin: the runs live in ``coderx_mcp.delegate`` (held by the App); these tools start,
follow, continue and stop them, and render what a run has done.
"""

from typing import Annotated

import structlog
from fastmcp import Context, FastMCP
from fastmcp.tools.base import ToolResult
from pydantic import Field

from coderx_mcp.context import app_of, current, delegation, report_progress
from coderx_mcp.delegate.runs import Run, RunMode, RunReport, RunWorkspace
from coderx_mcp.errors import DelegateError
from coderx_mcp.tools.common import Out, modern_protocol, result, tool
from coderx_mcp.tools.progress import wants_progress

_log = structlog.get_logger("coderx.agents")
MAX_WAIT_S = 600

RunId = Annotated[str, Field(description="The run_id agent_run returned.", min_length=3,
                             max_length=40, pattern=r"^r-[0-9a-f]+$")]
ReturnAfter = Annotated[float | None, Field(
    description="Seconds to wait for the run before returning with it still working "
                "(default: the server's return_after, 50 s); follow with agent_wait.",
    gt=0, le=MAX_WAIT_S)]


class RunOut(Out):
    """A delegated run's state and results."""

    run: RunReport


def _render(r: RunReport) -> str:
    head = (f"run {r.run_id} {r.state}"
            + (f" ({r.exit_reason})" if r.exit_reason and r.state != "working" else "")
            + f": {r.turns} turns, {r.tool_calls} tool calls, ${r.cost_usd:.4f}; session "
              f"{r.session}" + (f", branch {r.branch}" if r.branch else "")
            + f"\nchanges: {r.diff_stat}")
    if r.state == "working":
        head += (f"\nlast tool: {r.last_tool or '-'}\nstill working: agent_wait(\"{r.run_id}\")"
                 " for the result")
    if r.error:
        head += f"\nerror: {r.error}"
    if r.answer:
        head += f"\n\n{r.answer}"
    if r.state == "waiting":
        head += (f"\n\n[agent_reply(\"{r.run_id}\", message) continues it; session_diff, "
                 "session_commit and session_close(keep=true) work on its session]")
    return head


def _own(run: Run) -> None:
    """Record this call under the run's session in the history."""
    current().session = run.session


def _not_delegated() -> None:
    if delegation() is not None:
        raise DelegateError("a delegated run cannot start or steer agent runs")


async def _settle(ctx: Context, run: Run, timeout: float) -> ToolResult:
    """Wait up to ``timeout`` for the run (progress: turns, last tool, cost), then report."""
    async def tick() -> None:
        try:
            await report_progress(ctx, progress=run.turns, message=(
                f"turn {run.turns}, {run.tool_calls} tool calls, last {run.last_tool or '-'}, "
                f"${run.cost_usd:.4f}"))
        except Exception as exc:  # a lost notification must not fail the call
            _log.warning("progress notification failed", error=repr(exc))

    await run.wait(timeout, tick if wants_progress(ctx) else None)
    report = await run.report()
    return result(RunOut(session=run.session.id, run=report), _render(report))


def register(mcp: FastMCP) -> None:
    """Register the agent tools."""

    @tool(mcp, out=RunOut, read_only=False, destructive=True, session=False,
          title="Delegate a task to an agent")
    async def agent_run(
        ctx: Context,
        task: Annotated[str, Field(description="What the agent should do, in full.",
                                   min_length=1, max_length=100_000)],
        workspace: Annotated[str | None, Field(
            description="Repository inside the server's allowed roots (default: the default "
                        "workspace).", max_length=4096)] = None,
        mode: Annotated[RunWorkspace, Field(
            description="'worktree' (default: its own branch coderx/<session>), 'copy' or "
                        "'scratch'.")] = "worktree",
        model: Annotated[str | None, Field(
            description="anthropic:<id>, ollama:<id>, or 'host' to use your own model "
                        "through MCP sampling (default: the server's).",
            max_length=200)] = None,
        max_turns: Annotated[int | None, Field(description="Model turns per request.",
                                               ge=1)] = None,
        max_budget_usd: Annotated[float | None, Field(
            description="Spend cap of the whole run; it stops before a turn would pass it.",
            gt=0)] = None,
        permission_mode: Annotated[RunMode, Field(
            description="'accept-edits' (default: edits and the sandbox's shell), 'plan' "
                        "(read-only tools) or 'yolo'.")] = "accept-edits",
        return_after: ReturnAfter = None,
    ) -> ToolResult:
        """Start a coding agent on `task` in a new sandbox session of its own (by default a
        git worktree on its own branch), and return its result, or its run_id if it is
        still working after `return_after` seconds.

        The result has the agent's final answer, turns, tool calls, cost, the diff stat
        and the branch. Several runs may work in parallel on one repository. Review with
        session_diff(session=...), keep with session_commit / session_close(keep=true).
        """
        # Imported here: the agent's model and client stack load with the first run, not
        # with every server start (hosts time the start).
        from coderx_mcp.delegate.service import start_run

        _not_delegated()
        app = app_of(ctx)
        # The host's model is reached by sampling requests on the connection, which only
        # the handshake-era protocol has.
        host = None if modern_protocol(ctx) else ctx.session
        run = await start_run(app, ctx.fastmcp, app.owner(ctx), host, task, workspace,
                              mode, model, max_turns, max_budget_usd, permission_mode)
        _own(run)
        return await _settle(ctx, run, return_after or app.settings.return_after_s)

    @tool(mcp, out=RunOut, read_only=True, idempotent=True, session=False,
          title="An agent run's state")
    async def agent_status(ctx: Context, run_id: RunId) -> ToolResult:
        """Show a run's state and results so far (no waiting)."""
        _not_delegated()
        run = app_of(ctx).runs.get(run_id, app_of(ctx).owner(ctx))
        _own(run)
        return await _settle(ctx, run, 0)

    @tool(mcp, out=RunOut, read_only=True, idempotent=True, session=False,
          title="Wait for an agent run")
    async def agent_wait(
        ctx: Context, run_id: RunId,
        timeout: Annotated[float, Field(description="Most seconds to wait.", gt=0,
                                        le=MAX_WAIT_S)] = 50,
    ) -> ToolResult:
        """Wait until a run stops working (answered, hit a limit, failed) or `timeout`."""
        _not_delegated()
        run = app_of(ctx).runs.get(run_id, app_of(ctx).owner(ctx))
        _own(run)
        return await _settle(ctx, run, timeout)

    @tool(mcp, out=RunOut, read_only=False, destructive=True, session=False,
          title="Continue an agent run")
    async def agent_reply(
        ctx: Context, run_id: RunId,
        message: Annotated[str, Field(description="Your answer or next instruction.",
                                      min_length=1, max_length=100_000)],
        return_after: ReturnAfter = None,
    ) -> ToolResult:
        """Continue a run that is waiting (it answered) with another message, in the same
        conversation and session."""
        _not_delegated()
        app = app_of(ctx)
        owner = app.owner(ctx)
        run = app.runs.get(run_id, owner)
        _own(run)
        app.runs.check_limit(owner, app.settings.agents.max_runs_per_principal)
        run.reply(message)
        return await _settle(ctx, run, return_after or app.settings.return_after_s)

    @tool(mcp, out=RunOut, read_only=False, destructive=True, idempotent=True, session=False,
          title="Stop an agent run")
    async def agent_cancel(ctx: Context, run_id: RunId) -> ToolResult:
        """Stop a run and every command still running in its session. Its session and
        branch stay (session_diff, session_close)."""
        _not_delegated()
        run = app_of(ctx).runs.get(run_id, app_of(ctx).owner(ctx))
        _own(run)
        await run.cancel()
        return await _settle(ctx, run, 0)
