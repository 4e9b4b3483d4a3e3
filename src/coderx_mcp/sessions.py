"""Sessions: who owns which sandbox, for how long.

A session is one sandbox (container + runner) with a workspace, owned by a principal
(``owner``: the stdio client, or later an authenticated HTTP token). Ids are unguessable;
a session of another owner is reported as not found. Each owner has a default session,
opened lazily on first use. Idle sessions are closed by a reaper; a warm pool of
pre-started sandboxes makes opening a default session near-instant.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from coderx_mcp.config import Network, SandboxLimits, Settings
from coderx_mcp.errors import (
    CoderxError,
    ConfigError,
    SandboxUnavailable,
    SessionNotFound,
    WorkspaceRefused,
)
from coderx_mcp.pool import WarmPool
from coderx_mcp.principals import PrincipalPolicy
from coderx_mcp.quotas import Quotas
from coderx_mcp.sandbox.backends import Backend
from coderx_mcp.sandbox.base import (
    EgressAttach,
    EgressHook,
    HostStatus,
    ReportsHosts,
    SandboxSpec,
)
from coderx_mcp.sandbox.instance import Instance
from coderx_mcp.session import Session, SessionInfo, TextCache, new_session_id
from coderx_mcp.session_expiry import ExpiredSessions, busy
from coderx_mcp.workspace.policy import WorkspacePolicy
from coderx_mcp.workspace.prepare import Mode, Workspace, Workspaces

if TYPE_CHECKING:
    from coderx_mcp.replicas import SharedSessions

_log = structlog.get_logger("coderx.sessions")
CLIENT_WAIT = 2.0
"""Seconds a stdio server's background start waits for ``initialize`` at most."""
Done = list[str]  # what closing did, one sentence each (``list`` is a method below)

__all__ = ["HostStatus", "Session", "SessionInfo", "SessionManager", "TextCache",
           "new_session_id"]


class SessionManager:
    """Opens, finds, reaps and closes sessions.

    Args:
        settings: Server settings (limits, pool size, timeouts).
        backend: Where sandboxes come from.
        policy: Allowed workspace roots and the default workspace (default: from the
            settings and the current directory).
        instance: This server (stamped on the workspaces it creates).
        principals: The policy of an owner that is an HTTP principal; None for the local
            owner, who is bound by the server's settings only.
        egress: The egress proxy for ``network="allowlist"`` (None: not enabled).
    """

    def __init__(self, settings: Settings, backend: Backend,
                 policy: WorkspacePolicy | None = None, instance: Instance | None = None,
                 principals: Callable[[str], PrincipalPolicy | None] | None = None,
                 egress: EgressHook | None = None) -> None:
        self.egress = egress
        self.settings = settings
        self.backend = backend
        self.policy = policy or WorkspacePolicy.from_settings(settings, Path.cwd())
        self.quotas = Quotas(settings, principals or (lambda _owner: None))
        self._opening_by: dict[str, int] = {}
        self.workspaces = Workspaces(settings, instance or Instance.current())
        self._sessions: dict[str, Session] = {}
        self._defaults: dict[str, str] = {}
        self._expired = ExpiredSessions()
        self._default_locks: dict[str, asyncio.Lock] = {}
        self._opening = 0
        # Replicas: sessions found by label on the engine, reaped by heartbeat (replicas.py).
        self.shared: SharedSessions | None = None
        if settings.shared_sessions:  # imported when used: it needs the Docker SDK
            from coderx_mcp.replicas import SharedSessions
            from coderx_mcp.stores import FileSessionRegistry

            self.shared = SharedSessions(settings, backend, self.workspaces,
                                         FileSessionRegistry(settings.state_dir / "sessions"))
        self._pool: WarmPool[Workspace] = WarmPool(
            0 if self.shared else settings.pool_size, self._default_workspace, self._spec_of,
            backend, new_session_id, discard=self._discard)
        self._reaper: asyncio.Task[None] | None = None
        self._starting: asyncio.Task[None] | None = None
        self._go = asyncio.Event()
        self._shutdown: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Remove what dead servers left, then start the pool and the idle reaper."""
        if self.shared is None:
            await self.workspaces.reap_dead()
        await self.backend.check()
        if self.shared is None:
            await self.backend.reap_orphans()
        else:
            await self.reap_orphans_shared()
        self._pool.start()
        self._reaper = asyncio.create_task(self._reap_idle(), name="coderx-idle-reaper")

    def start_soon(self, after_initialize: bool = False) -> None:
        """Start in the background, so the server answers ``initialize`` without waiting for
        Docker (hosts time their connection); sessions wait for the start to finish.

        Args:
            after_initialize: Begin only once :meth:`begin` is called (when ``initialize``
                is answered: the start's imports and Docker calls would otherwise share the
                interpreter with that answer), or a call needs a session, or after
                ``CLIENT_WAIT`` seconds.
        """
        if not after_initialize:
            self._go.set()

        async def run() -> None:
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._go.wait(), CLIENT_WAIT)
                await self.start()
            except SandboxUnavailable as exc:
                # Stay up: every tool call reports the same clear reason until it is fixed.
                _log.error("sandbox backend unavailable", reason=str(exc))
            except Exception as exc:  # logged; tool calls report their own errors
                _log.error("session manager start failed", error=str(exc))

        self._starting = asyncio.create_task(run(), name="coderx-start")

    def begin(self) -> None:
        """Let a background start waiting for ``initialize`` go (see :meth:`start_soon`)."""
        self._go.set()

    async def ready(self) -> None:
        """Wait for a background start (see :meth:`start_soon`)."""
        self._go.set()
        if self._starting is not None and not self._starting.done():
            await asyncio.shield(self._starting)

    async def shutdown(self) -> None:
        """Close every session and pooled sandbox of this server.

        Safe to call from several places at once (signal handler and lifespan): every caller
        waits for the same, complete clean-up.
        """
        if self._shutdown is None:
            self._shutdown = asyncio.ensure_future(self._do_shutdown())
        await asyncio.shield(self._shutdown)

    async def _do_shutdown(self) -> None:
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starting
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await self._pool.close()
        if self.shared is not None:  # the sessions outlive this replica: only let go
            await asyncio.gather(*(self.shared.detach(s.sandbox)
                                   for s in list(self._sessions.values())),
                                 return_exceptions=True)
            self._sessions.clear()
            return
        await asyncio.gather(*(self._close(s) for s in list(self._sessions.values())),
                             return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.backend.remove_all_of_instance)

    @property
    def pool(self) -> WarmPool[Workspace]:
        """The warm pool (for health and tests)."""
        return self._pool

    def set_policy(self, policy: WorkspacePolicy) -> None:
        """Adopt new roots (the MCP host's); pooled sandboxes of another default go."""
        old, self.policy = self.policy, policy
        if (old.default, old.rule) != (policy.default, policy.rule):
            _log.info("default workspace changed", rule=policy.rule,
                      workspace=str(policy.default) if policy.default else None)
            self._pool.reset()

    async def _default_workspace(self, sid: str) -> Workspace:
        p = self.policy
        if p.default is None:
            return await self.workspaces.prepare(sid, "scratch", None, p.rule)
        return await self.workspaces.prepare(sid, "bind", p.default, p.rule)

    async def _discard(self, ws: Workspace) -> None:
        await self.workspaces.release(ws, keep=False)

    def _spec_of(self, ws: Workspace, network: Network | None = None,
                 limits: SandboxLimits | None = None,
                 egress: EgressAttach | None = None) -> SandboxSpec:
        return SandboxSpec(workspace=ws.host, mounts=ws.mounts,
                           network=network or self.settings.network,
                           limits=limits or self.settings.limits, uid=ws.uid, gid=ws.gid,
                           egress=egress)

    def policy_of(self, owner: str) -> WorkspacePolicy:
        """The workspace policy of ``owner`` (its token's roots, else the server's)."""
        return self.quotas.workspace_policy(owner, self.policy)

    async def open(self, owner: str, workspace: str | None = None, network: Network | None = None,
                   cpus: float | None = None, memory: str | None = None,
                   mode: Mode | None = None, default: bool = False) -> Session:
        """Open a new session for ``owner``; served from the warm pool when possible.

        Args:
            owner: The principal the session belongs to.
            workspace: A directory inside an allowed root (None: the default workspace).
            network: none or bridge.
            cpus: CPU quota.
            memory: Memory limit.
            mode: bind (default), worktree, copy or scratch.
            default: It becomes the owner's default session (a label, with shared
                sessions).

        Raises:
            SessionLimitReached: ``max_sessions`` are open already, the owner's quota is
                used up, or the rest is kept for other principals.
            WorkspaceRefused: The workspace is outside the allowed roots or unusable.
            ConfigError: A bad limit or mode.
            SandboxUnavailable: The sandbox could not start.
        """
        await self.ready()
        self.quotas.check_open(owner, len(self._sessions) + self._opening,
                               len(self.list(owner)) + self._opening_by.get(owner, 0))
        self._opening += 1
        self._opening_by[owner] = self._opening_by.get(owner, 0) + 1
        try:
            default = (workspace is None and network is None and cpus is None
                       and memory is None and mode in (None, "bind")
                       and self.quotas.takes_pool(owner))
            taken = self._pool.take() if default else None
            if taken is not None:
                sandbox, ws = taken
            else:
                limits = self.quotas.limits(owner, network, cpus, memory)
                egress = await self._egress_of(owner, network)
                sid = new_session_id()
                ws = await self._prepare(sid, workspace, mode, self.policy_of(owner))
                spec = self._spec_of(ws, network, limits, egress)
                if self.shared is not None:
                    spec = spec.model_copy(update={"labels": self.shared.labels(
                        owner, ws, spec.network, spec.limits, default)})
                sandbox = self.backend.make(spec, sid)
                try:
                    await sandbox.start()
                    if egress is not None and self.egress is not None:
                        await self.egress.register(sid, owner, sandbox, list(egress.allow))
                except BaseException:
                    await self.workspaces.release(ws, keep=False)
                    raise
            session = Session(sandbox.session_id, owner, sandbox, self.backend, ws,
                              self.workspaces.shadow(sandbox.session_id, ws))
            self._sessions[session.id] = session
        finally:
            self._opening -= 1
            self._opening_by[owner] -= 1
            if not self._opening_by[owner]:
                del self._opening_by[owner]
        _log.info("session opened", session_id=session.id, owner=owner, mode=ws.mode,
                  workspace=str(ws.host), chosen_by=ws.rule, container=sandbox.ident)
        return session

    async def _egress_of(self, owner: str, network: Network | None) -> EgressAttach | None:
        """The proxy attachment of an ``allowlist`` session (None for other networks)."""
        if (network or self.settings.network) != "allowlist":
            return None
        if self.egress is None:
            raise ConfigError("network='allowlist' needs the Docker backend with egress "
                              "enabled (CODERX_EGRESS__ENABLED=1)")
        return await self.egress.attach(self.quotas.egress_allow(owner))

    async def _prepare(self, sid: str, workspace: str | None, mode: Mode | None,
                       p: WorkspacePolicy) -> Workspace:
        mode = mode or "bind"
        if mode == "scratch":
            return await self.workspaces.prepare(sid, "scratch", None, "session_open")
        if workspace is not None:
            return await self.workspaces.prepare(sid, mode, p.resolve(workspace), "session_open")
        if p.default is None:
            if mode != "bind":
                raise WorkspaceRefused(f"mode {mode!r} needs a workspace, and this server has "
                                       "no default workspace")
            return await self.workspaces.prepare(sid, "scratch", None, p.rule)
        return await self.workspaces.prepare(sid, mode, p.default, p.rule)

    def get(self, session_id: str, owner: str) -> Session:
        """The open session with that id, if ``owner`` owns it.

        Raises:
            SessionNotFound: No such session for this owner.
        """
        s = self._sessions.get(session_id)
        if s is None:
            self._expired.check(session_id, owner)
        if s is None or s.owner != owner:
            raise SessionNotFound(
                f"no open session {session_id!r}; open one with session_open or omit "
                "`session` to use your default session")
        return s

    async def default(self, owner: str) -> Session:
        """The owner's default session, opened on first use (exactly once under races).

        Each owner has its own lock: one owner's slow start never delays another's calls.
        """
        sid = self._defaults.get(owner)
        if sid is not None and sid in self._sessions:
            return self._sessions[sid]
        self._expired.check_default(owner)
        async with self._default_locks.setdefault(owner, asyncio.Lock()):
            sid = self._defaults.get(owner)
            if sid is not None and sid in self._sessions:
                return self._sessions[sid]
            adopted = await self._adopt(owner, default=True)
            if adopted is not None:
                return adopted
            session = await self.open(owner, default=True)
            self._defaults[owner] = session.id
            return session

    async def resolve(self, session_id: str | None, owner: str) -> Session:
        """The named session, or the owner's default one when no id is given (with shared
        sessions: found on the engine when this replica does not hold it)."""
        if self.shared is None:
            return self.get(session_id, owner) if session_id else await self.default(owner)
        session = await self._find(session_id, owner) if session_id else await self.default(
            owner)
        self.shared.registry.beat(session.id)
        return session

    async def _find(self, session_id: str, owner: str) -> Session:
        """``get``, else (shared sessions) the session adopted from the engine."""
        try:
            session = self.get(session_id, owner)
        except SessionNotFound:
            adopted = await self._adopt(owner, session_id) if self.shared else None
            if adopted is None:
                raise
            return adopted
        if self.shared is not None and await self.shared.let_go_if_closed(session,
                                                                          self._sessions):
            raise SessionNotFound(f"no open session {session_id!r}; open one with "
                                  "session_open or omit `session` to use your default session")
        return session

    async def _adopt(self, owner: str, session_id: str | None = None,
                     default: bool = False) -> Session | None:
        """Take over a session of ``owner`` found on the engine, or None."""
        if self.shared is None:
            return None
        return await self.shared.take_into(owner, session_id, default, self._sessions,
                                           self._defaults)

    async def sync(self, owner: str) -> None:
        """Shared sessions: take over every session of ``owner`` that another replica
        opened (``session_list`` shows them all); nothing otherwise."""
        if self.shared is not None:
            await self.shared.take_all(owner, self._sessions, self._defaults)

    async def reap_orphans_shared(self) -> int:
        """Shared sessions: remove the containers and workspaces of sessions no replica
        used for ``idle_timeout_s`` (and of closed ones); returns how many."""
        assert self.shared is not None
        return await self.shared.reap(self._sessions)  # ours: the idle reaper decides

    def default_id(self, owner: str) -> str | None:
        """The id of the owner's default session, if it is open."""
        sid = self._defaults.get(owner)
        return sid if sid in self._sessions else None

    @property
    def count(self) -> int:
        """How many sessions are open."""
        return len(self._sessions)

    async def problem(self) -> str | None:
        """Why sandboxes cannot start right now, or None when they can."""
        try:
            await self.backend.check()
        except CoderxError as exc:
            return str(exc)
        down = [h.detail for h in await self.host_status() if not h.ok]
        return "; ".join([*down, "new sessions go to the other docker hosts"]) if down else None

    async def host_status(self) -> list[HostStatus]:
        """Each engine of a Docker fleet (``CODERX_DOCKER_HOSTS``); empty for one engine."""
        return await self.backend.status() if isinstance(self.backend, ReportsHosts) else []

    def list_all(self) -> list[Session]:
        """Every open session, oldest first (health, the operator's CLI)."""
        return list(self._sessions.values())

    def list(self, owner: str) -> list[Session]:
        """The owner's open sessions, oldest first."""
        return [s for s in self._sessions.values() if s.owner == owner]

    async def close(self, session_id: str, owner: str, keep: bool = True) -> Done:
        """Close one session of ``owner``: its container goes, and what the server created
        for its workspace is removed (a worktree's branch stays when ``keep``).

        Returns:
            What was done to the workspace, one sentence each.
        """
        return await self._close(await self._find(session_id, owner), keep)

    async def _close(self, session: Session, keep: bool = True) -> Done:
        if session.closed:
            return []
        session.closed = True
        self._sessions.pop(session.id, None)
        if self.shared is not None:
            self.shared.registry.mark_closed(session.id)
        if self.egress is not None:
            self.egress.unregister(session.id)
        for owner, sid in list(self._defaults.items()):
            if sid == session.id:
                del self._defaults[owner]
        try:
            await session.sandbox.close()
        finally:
            session.stop_baseline()
            done = await self.workspaces.release(session.workspace, keep)
        _log.info("session closed", session_id=session.id, workspace=done)
        return done

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reaper_interval_s)
            await self.reap_idle_once()
            if self.shared is not None:
                try:
                    await self.reap_orphans_shared()
                except Exception as exc:  # an engine away now: the next round retries
                    _log.warning("reaping orphaned shared sessions failed", error=str(exc))

    async def reap_idle_once(self) -> int:
        """Close sessions idle longer than ``idle_timeout_s`` with nothing running in them
        (a background process or a command counts as activity); returns how many."""
        limit = self.settings.idle_timeout_s
        cutoff = time.monotonic() - limit
        idle = [s for s in self._sessions.values() if s.active == 0 and s.last_used < cutoff
                and not (self.shared and self.shared.used_within(s.id, limit))]
        closed = 0
        for s in idle:
            if await busy(s):
                continue
            _log.info("closing idle session", session_id=s.id)
            self._expired.remember(s, limit, self._defaults.get(s.owner) == s.id)
            with contextlib.suppress(Exception):
                await self._close(s)
            closed += 1
        return closed
