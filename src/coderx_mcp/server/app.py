"""Server-wide objects, built in the FastMCP lifespan and reached through the context."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from fastmcp import Context, FastMCP
from fastmcp.server.dependencies import get_access_token
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext

from coderx_mcp.config import Settings
from coderx_mcp.context import delegation
from coderx_mcp.delegate.runs import Runs
from coderx_mcp.grants import Grants
from coderx_mcp.history import HistoryStore, HistoryWriter, default_path
from coderx_mcp.principals import PrincipalPolicy, TokenStore
from coderx_mcp.sandbox.backends import Backend, make_backend
from coderx_mcp.sandbox.docker_backend import DockerBackend
from coderx_mcp.sandbox.instance import Instance, owner_is_gone
from coderx_mcp.sessions import Session, SessionManager
from coderx_mcp.workspace.policy import WorkspacePolicy

_log = structlog.get_logger("coderx.server")
LOCAL_OWNER = "local"
PRINCIPAL_PREFIX = "principal:"


def principal_policies(store: TokenStore | None) -> Callable[[str], PrincipalPolicy | None]:
    """The policy of an owner: a managed token's, the default one for a principal of
    ``CODERX_HTTP_TOKENS``, None for the local owner."""
    def policy(owner: str) -> PrincipalPolicy | None:
        if not owner.startswith(PRINCIPAL_PREFIX):
            return None
        found = store.policy(owner.removeprefix(PRINCIPAL_PREFIX)) if store else None
        return found or PrincipalPolicy()
    return policy


@dataclass
class App:
    """What every tool call may use.

    Attributes:
        settings: Server settings.
        sessions: The session manager.
        http: Served over HTTP (the MCP host's roots are paths on another machine then,
            and are not used).
        grants: Secrets granted to sessions (per-command environment, redaction).
        history: The call history writer (None when the history cannot be opened).
        tokens: The managed tokens (None when not served over HTTP).
        started: When the server started (``time.monotonic``).
        runs: Delegated agent runs (``agent_run``).
    """

    settings: Settings
    sessions: SessionManager
    http: bool = False
    roots_stale: bool = field(default=True)
    grants: Grants = field(default_factory=Grants)
    history: HistoryWriter | None = None
    tokens: TokenStore | None = None
    started: float = field(default_factory=time.monotonic)
    runs: Runs = field(default_factory=Runs)

    def owner(self, ctx: Context) -> str:
        """The principal a request acts for: the HTTP bearer token's principal, else the
        local user (stdio, or HTTP on loopback without tokens)."""
        run = delegation()
        if run is not None:  # an agent_run's in-memory client acts for whoever started it
            return run.owner
        token = get_access_token()
        return PRINCIPAL_PREFIX + token.client_id if token is not None else LOCAL_OWNER

    async def host_roots(self, ctx: Context) -> None:
        """Adopt the MCP host's roots (``roots/list``) when they may decide the default
        workspace: stdio or in memory, no operator workspace, asked once and again after
        ``notifications/roots/list_changed``. A host without roots changes nothing."""
        if not self.roots_stale or self.http or not self.settings.client_roots:
            return
        self.roots_stale = False
        policy = self.sessions.policy
        if policy.rule == "--workspace" or (policy.roots and policy.rule == "scratch"):
            return
        try:
            session = ctx.session
            caps = session.client_capabilities
            if caps is None or caps.roots is None or not session.can_send_request:
                return
            with warnings.catch_warnings():
                # Roots are deprecated in protocol 2026-07-28, still answered by hosts.
                warnings.simplefilter("ignore")
                listed = await asyncio.wait_for(session.list_roots(), 5)
        except Exception as exc:  # a host that cannot answer leaves the default as it is
            _log.warning("could not list the MCP host's roots", error=str(exc))
            return
        self.sessions.set_policy(policy.with_host_roots([str(r.uri) for r in listed.roots]))

    async def session(self, ctx: Context, session_id: str | None) -> Session:
        """The session a tool call names, or the caller's default one (a delegated run's
        default is its own worktree session)."""
        run = delegation()
        if session_id is None and run is not None:
            session_id = run.session_id
        elif session_id is None:
            await self.host_roots(ctx)
        session = await self.sessions.resolve(session_id, self.owner(ctx))
        structlog.contextvars.bind_contextvars(session_id=session.id)
        return session


def app_of(ctx: Context) -> App:
    """The :class:`App` of the server handling ``ctx``."""
    app: App = ctx.lifespan_context["app"]
    return app


def _open_history(settings: Settings, instance: Instance) -> HistoryWriter | None:
    """The history writer; a history that cannot be opened is logged, not fatal."""
    path = settings.history_path or default_path()
    try:
        store = HistoryStore(path)
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.OperationalError):  # locked, full, unreadable: not damage
            _log.error("history disabled: cannot open its database", path=str(path),
                       error=str(exc))
            return None
        # A damaged file (garbage, a torn copy) is kept aside and a new history started,
        # so this server's calls are still recorded (catalogue CR-08).
        aside = path.with_name(f"{path.name}.damaged-{int(time.time())}")
        try:
            path.replace(aside)
            store = HistoryStore(path)
        except (OSError, sqlite3.Error) as again:
            _log.error("history disabled: its database is damaged", path=str(path),
                       error=str(again))
            return None
        _log.error("history database damaged: kept aside, a new one started", path=str(path),
                   aside=str(aside), error=str(exc))
    except (OSError, sqlite3.Error) as exc:
        _log.error("history disabled: cannot open its database", path=str(path), error=str(exc))
        return None
    return HistoryWriter(store, settings.history_max_age_days,
                         int(settings.history_max_mb * (1 << 20)), owner=instance.labels(),
                         gone=lambda labels: owner_is_gone(labels, instance))


class StartAfterInitialize(Middleware):
    """Lets each session manager's background start go once the client's first message
    (``initialize``, or ``server/discover`` in the stateless protocol) is answered (see
    ``SessionManager.start_soon``): the host waits for that answer, not for Docker.

    Args:
        apps: The server's apps (filled by the lifespan).
        on_answered: Called once, when the first message has been answered (the CLI ends
            its start-up there: see ``startup.py``).
    """

    def __init__(self, apps: list[App], on_answered: Callable[[], None] | None = None
                 ) -> None:
        self._apps = apps
        self._on_answered = on_answered

    async def on_message(self, context: MiddlewareContext[Any],
                         call_next: CallNext[Any, Any]) -> Any:
        try:
            return await call_next(context)
        finally:
            for app in self._apps:
                app.sessions.begin()
            if self._on_answered is not None:
                once, self._on_answered = self._on_answered, None
                once()


def make_lifespan(
    settings: Settings,
    backend_factory: Callable[[Settings, Instance], Backend] = make_backend,
    on_ready: Callable[[App], None] | None = None,
    http: bool = False,
    tokens: TokenStore | None = None,
) -> Callable[[FastMCP], Any]:
    """A lifespan that starts the session manager and removes every sandbox on exit.

    ``on_ready`` receives the :class:`App` once built (the CLI uses it to clean up on
    SIGTERM even while the stdio reader is blocked).
    """

    @asynccontextmanager
    async def lifespan(_server: FastMCP) -> AsyncIterator[dict[str, Any]]:
        instance = Instance.current()
        backend = backend_factory(settings, instance)
        policy = WorkspacePolicy.from_settings(settings, Path.cwd(), http)
        if policy.note:
            _log.warning("default workspace", rule=policy.rule, note=policy.note)
        history = _open_history(settings, instance)
        egress = None
        if settings.egress.enabled and isinstance(backend, DockerBackend):
            from coderx_mcp.egress.gateway import EgressGateway  # imports docker: when used

            egress = EgressGateway(settings, instance, lambda: backend.client, history)
        manager = SessionManager(settings, backend, policy, instance,
                                 principals=principal_policies(tokens), egress=egress)
        # stdio: one client, whose `initialize` is answered first; HTTP serves many and
        # starts at once (reaping, the warm pool).
        manager.start_soon(after_initialize=not http)
        app = App(settings=settings, sessions=manager, http=http, tokens=tokens,
                  history=history)
        if app.history is not None:
            app.history.start()
        if on_ready is not None:
            on_ready(app)
        try:
            yield {"app": app}
        finally:
            try:
                await app.runs.shutdown()
                await manager.shutdown()
                if egress is not None:
                    await egress.close()
            finally:
                if app.history is not None:
                    await app.history.close()

    return lifespan
