"""What a tool call runs with, reached by tools without importing the server.

The pipeline (``server/pipeline.py``) resolves, once per call and before the tool body,
who calls (``owner``) and in which session; it publishes that here as a :class:`CallScope`
in a context variable, so the tool, later middleware (history, redaction) and log lines
of the same call all see the same facts.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from coderx_mcp.errors import CoderxError

if TYPE_CHECKING:
    from fastmcp import Context

    from coderx_mcp.ops import SessionOps
    from coderx_mcp.server.app import App
    from coderx_mcp.sessions import Session

_SCOPE: contextvars.ContextVar[CallScope | None] = contextvars.ContextVar(
    "coderx_call_scope", default=None)
_DELEGATION: contextvars.ContextVar[Delegation | None] = contextvars.ContextVar(
    "coderx_delegation", default=None)


@dataclass(frozen=True)
class Delegation:
    """Who a delegated agent run (``agent_run``) acts for, and in which session.

    The run's MCP client talks to this server in memory; the server side of that
    connection runs in tasks started from the run's own task, so they inherit this
    context variable. No request can set it: it is not part of any message.

    Attributes:
        owner: The principal that started the run.
        session_id: The run's worktree session: its default for every call.
        run_id: The run.
    """

    owner: str
    session_id: str
    run_id: str


def delegation() -> Delegation | None:
    """The delegated run the current code works for, if any."""
    return _DELEGATION.get()


def enter_delegation(d: Delegation) -> None:
    """Mark the current context (a run's own task) as working for ``d``."""
    _DELEGATION.set(d)


@dataclass
class CallScope:
    """One tool call's resolved facts.

    Attributes:
        app: The server-wide objects.
        owner: The principal the call acts for.
        tool: The tool's name.
        session: The session the call runs in; None for tools that use none.
        ops: Typed runner operations on ``session`` (with its granted environment).
        notes: Facts a tool leaves for the middleware (e.g. an exit code for history).
    """

    app: App
    owner: str
    tool: str
    session: Session | None = None
    ops: SessionOps | None = None
    notes: dict[str, Any] = field(default_factory=dict)


def current() -> CallScope:
    """The scope of the tool call running now.

    Raises:
        CoderxError: Called outside a tool call (a wiring bug: the pipeline is missing).
    """
    scope = _SCOPE.get()
    if scope is None:
        raise CoderxError("no tool call is in progress (the server pipeline is not installed)")
    return scope


def maybe_current() -> CallScope | None:
    """The scope of the running tool call, or None outside one."""
    return _SCOPE.get()


@contextmanager
def entered(scope: CallScope) -> Iterator[CallScope]:
    """Make ``scope`` the current one for the duration of the block."""
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


def app_of(ctx: Context) -> App:
    """The :class:`App` of the server handling ``ctx`` (built by its lifespan)."""
    app: App = ctx.lifespan_context["app"]
    return app


def session_ops() -> tuple[Session, SessionOps]:
    """The current call's session and its typed operations.

    Raises:
        CoderxError: The tool was registered as not using a session (a wiring bug).
    """
    scope = current()
    if scope.session is None or scope.ops is None:
        raise CoderxError(f"{scope.tool} runs without a session")
    return scope.session, scope.ops


async def report_progress(ctx: Context, *, progress: float, total: float | None = None,
                          message: str | None = None) -> None:
    """Send a progress notification, its message redacted like every other output."""
    scope = maybe_current()
    redactor = scope.app.grants.redactor() if scope is not None else None
    if message is not None and redactor is not None:
        message = redactor.redact(message)
    await ctx.report_progress(progress=progress, total=total, message=message)
