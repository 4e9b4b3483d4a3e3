"""Starting a delegated run: its session, its model, its agent, its registry entry."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from fastmcp import FastMCP
from mcp.server.session import ServerSession

from coderx_agent.events import Event
from coderx_agent.loop import Agent
from coderx_mcp.delegate.engine import make_model, open_agent
from coderx_mcp.delegate.runs import Run, RunMode, RunWorkspace
from coderx_mcp.errors import ToolInputError

if TYPE_CHECKING:
    from coderx_mcp.server.app import App


def limits(app: App, max_turns: int | None, max_budget_usd: float | None
           ) -> tuple[int, float | None]:
    """The run's turn and spend caps: the request's, within the operator's ceilings.

    Raises:
        ToolInputError: A cap above the operator's ceiling.
    """
    a = app.settings.agents
    if max_turns is not None and max_turns > a.max_turns:
        raise ToolInputError(f"max_turns is at most {a.max_turns} on this server")
    if a.max_budget_usd is not None and max_budget_usd is not None \
            and max_budget_usd > a.max_budget_usd:
        raise ToolInputError(f"max_budget_usd is at most {a.max_budget_usd:g} on this server")
    return max_turns or a.max_turns, max_budget_usd or a.max_budget_usd


async def start_run(app: App, server: FastMCP, owner: str, host: ServerSession | None,
                    task: str, workspace: str | None, mode: RunWorkspace, model: str | None,
                    max_turns: int | None, max_budget_usd: float | None,
                    permission_mode: RunMode) -> Run:
    """Open the run's session and start its agent.

    Raises:
        RunLimitReached, DelegateError, ToolInputError, and what opening a session raises.
    """
    turns, budget = limits(app, max_turns, max_budget_usd)
    app.runs.check_limit(owner, app.settings.agents.max_runs_per_principal)
    # Opening the key store derives a key (PBKDF2): off the event loop.
    llm, price = await asyncio.to_thread(make_model, model or app.settings.agents.model,
                                         app.settings, host)
    try:
        session = await app.sessions.open(owner, workspace, mode=mode)
    except BaseException:
        await llm.aclose()
        raise
    await session.baseline()  # the diff stat counts the run's changes only

    def opener(sink: Callable[[Event], None]) -> AbstractAsyncContextManager[Agent]:
        return open_agent(server, llm, price, permission_mode, app.settings,
                          session.workspace.host, turns, budget, sink)

    return app.runs.start(owner, session, task, opener, app.history)

