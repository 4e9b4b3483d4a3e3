"""Server-wide objects, built in the FastMCP lifespan and reached through the context."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import structlog
from fastmcp import Context, FastMCP
from fastmcp.server.dependencies import get_access_token

from coderx_mcp.config import Settings
from coderx_mcp.errors import SandboxUnavailable
from coderx_mcp.sandbox.backends import Backend, make_backend
from coderx_mcp.sandbox.instance import Instance
from coderx_mcp.sessions import Session, SessionManager

_log = structlog.get_logger("coderx.server")
LOCAL_OWNER = "local"


@dataclass
class App:
    """What every tool call may use.

    Attributes:
        settings: Server settings.
        sessions: The session manager.
    """

    settings: Settings
    sessions: SessionManager

    def owner(self, ctx: Context) -> str:
        """The principal a request acts for: the HTTP bearer token's principal, else the
        local user (stdio, or HTTP on loopback without tokens)."""
        token = get_access_token()
        return f"principal:{token.client_id}" if token is not None else LOCAL_OWNER

    async def session(self, ctx: Context, session_id: str | None) -> Session:
        """The session a tool call names, or the caller's default one."""
        session = await self.sessions.resolve(session_id, self.owner(ctx))
        structlog.contextvars.bind_contextvars(session_id=session.id)
        return session


def app_of(ctx: Context) -> App:
    """The :class:`App` of the server handling ``ctx``."""
    app: App = ctx.lifespan_context["app"]
    return app


def make_lifespan(
    settings: Settings,
    backend_factory: Callable[[Settings, Instance], Backend] = make_backend,
    on_ready: Callable[[App], None] | None = None,
) -> Callable[[FastMCP], Any]:
    """A lifespan that starts the session manager and removes every sandbox on exit.

    ``on_ready`` receives the :class:`App` once built (the CLI uses it to clean up on
    SIGTERM even while the stdio reader is blocked).
    """

    @asynccontextmanager
    async def lifespan(_server: FastMCP) -> AsyncIterator[dict[str, Any]]:
        backend = backend_factory(settings, Instance.current())
        manager = SessionManager(settings, backend)
        try:
            await manager.start()
        except SandboxUnavailable as exc:
            # Stay up: every tool call reports the same clear reason until it is fixed.
            _log.error("sandbox backend unavailable", reason=str(exc))
        app = App(settings=settings, sessions=manager)
        if on_ready is not None:
            on_ready(app)
        try:
            yield {"app": app}
        finally:
            await manager.shutdown()

    return lifespan
