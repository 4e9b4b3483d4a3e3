"""Server-wide objects, built in the FastMCP lifespan and reached through the context."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import structlog
from fastmcp import Context, FastMCP

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
        single_owner: True on stdio (one client per process: one owner, ``local``); on
            HTTP each MCP session is its own owner until token principals arrive.
    """

    settings: Settings
    sessions: SessionManager
    single_owner: bool

    def owner(self, ctx: Context) -> str:
        """The principal a request acts for."""
        return LOCAL_OWNER if self.single_owner else f"mcp:{ctx.session_id}"

    async def session(self, ctx: Context, session_id: str | None) -> Session:
        """The session a tool call names, or the caller's default one."""
        return await self.sessions.resolve(session_id, self.owner(ctx))


def app_of(ctx: Context) -> App:
    """The :class:`App` of the server handling ``ctx``."""
    app: App = ctx.lifespan_context["app"]
    return app


def make_lifespan(
    settings: Settings,
    single_owner: bool,
    backend_factory: Callable[[Settings, Instance], Backend] = make_backend,
) -> Callable[[FastMCP], Any]:
    """A lifespan that starts the session manager and removes every sandbox on exit."""

    @asynccontextmanager
    async def lifespan(_server: FastMCP) -> AsyncIterator[dict[str, Any]]:
        backend = backend_factory(settings, Instance.current())
        manager = SessionManager(settings, backend)
        try:
            await manager.start()
        except SandboxUnavailable as exc:
            # Stay up: every tool call reports the same clear reason until it is fixed.
            _log.error("sandbox backend unavailable", reason=str(exc))
        try:
            yield {"app": App(settings=settings, sessions=manager, single_owner=single_owner)}
        finally:
            await manager.shutdown()

    return lifespan
