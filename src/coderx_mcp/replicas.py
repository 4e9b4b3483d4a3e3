"""Shared sessions (``CODERX_SHARED_SESSIONS``): server replicas behind one load balancer
serve the same principals, and the engine is the source of truth.

A session's container carries its owner, its id, the server that created it and what it
takes to rebuild the session (workspace, network, limits) as labels. A replica asked for a
session it does not hold finds the container by those labels and starts a runner of its
own in it (files and the workspace carry over; the new runner starts from the base shell
state, and background processes of another replica's runner are that replica's). A
session outlives the replica that opened it: orphans are reaped by the heartbeats in the
:class:`~coderx_mcp.stores.SessionRegistry` (no replica used it for ``idle_timeout_s``),
never because their creator's pid is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Collection, Mapping

import structlog
from pydantic import BaseModel, ConfigDict

from coderx_mcp.config import Network, SandboxLimits, Settings
from coderx_mcp.errors import CoderxError, SandboxUnavailable
from coderx_mcp.sandbox.backends import Backend
from coderx_mcp.sandbox.base import Sandbox, SandboxSpec
from coderx_mcp.sandbox.docker_find import FoundSandbox, attach, find, remove
from coderx_mcp.sandbox.instance import (
    LABEL_DEFAULT,
    LABEL_INSTANCE,
    LABEL_OWNER,
    LABEL_SESSION,
    LABEL_STATE,
)
from coderx_mcp.session import Session
from coderx_mcp.stores import SessionRegistry
from coderx_mcp.workspace.prepare import Workspace, Workspaces

_log = structlog.get_logger("coderx.replicas")


class SessionState(BaseModel):
    """What a replica needs to rebuild a session it did not open (a container label)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workspace: Workspace
    network: Network
    limits: SandboxLimits


class SharedSessions:
    """Finds, adopts and reaps sessions by their labels on the engine(s).

    Args:
        settings: Server settings (the idle timeout is the orphan timeout).
        backend: A Docker backend (one engine or a fleet).
        workspaces: This server's workspaces (diff baselines, release).
        registry: Heartbeats and tombstones shared by the replicas.
    """

    async def take_into(self, owner: str, session_id: str | None, default: bool,
                        held: dict[str, Session], defaults: dict[str, str]) -> Session | None:
        """:meth:`take`, recorded in this replica's ``held`` sessions (and ``defaults``)."""
        session = await self.take(owner, session_id, default, held)
        if session is not None:
            held[session.id] = session
            if default:
                defaults[owner] = session.id
        return session

    async def take_all(self, owner: str, held: dict[str, Session],
                       defaults: dict[str, str]) -> None:
        """Take every session of ``owner`` that another replica opened."""
        for f in await self.find(owner):
            if f.session_id not in held:
                with contextlib.suppress(CoderxError):
                    await self.take_into(owner, f.session_id, False, held, defaults)

    async def let_go_if_closed(self, session: Session, held: dict[str, Session]) -> bool:
        """True (and our stream to it let go, never restarted) when another replica closed
        ``session``."""
        if not self.registry.closed(session.id):
            return False
        held.pop(session.id, None)
        session.closed = True
        await self.detach(session.sandbox)
        return True

    @staticmethod
    async def detach(sandbox: Sandbox) -> None:
        """Let go of a sandbox's runner stream, leaving the container (the session outlives
        this replica, or another replica closed it)."""
        detach = getattr(sandbox, "detach", None)
        if detach is not None:
            await detach()

    def __init__(self, settings: Settings, backend: Backend, workspaces: Workspaces,
                 registry: SessionRegistry) -> None:
        self._settings = settings
        self._backend = backend
        self._workspaces = workspaces
        self.registry = registry
        self._taking: dict[str, asyncio.Lock] = {}

    @staticmethod
    def labels(owner: str, ws: Workspace, network: Network, limits: SandboxLimits,
               default: bool) -> dict[str, str]:
        """The labels that let any replica find and rebuild the session."""
        state = SessionState(workspace=ws, network=network, limits=limits)
        return {LABEL_OWNER: owner, LABEL_STATE: state.model_dump_json(),
                **({LABEL_DEFAULT: "1"} if default else {})}

    async def find(self, owner: str, session_id: str | None = None,
                   default: bool = False) -> list[FoundSandbox]:
        """Running sessions of ``owner`` (one id, or its default one), not closed."""
        labels = {LABEL_OWNER: owner}
        if session_id is not None:
            labels[LABEL_SESSION] = session_id
        if default:
            labels[LABEL_DEFAULT] = "1"
        found = await find(self._backend, labels)
        return [f for f in found if f.session_id and not self.registry.closed(f.session_id)]

    async def adopt(self, found: FoundSandbox) -> tuple[Sandbox, Workspace]:
        """Attach a runner of this replica to ``found``; its workspace as recorded.

        Raises:
            SandboxUnavailable: The labels do not describe a session, or the container
                cannot be reached.
        """
        try:
            state = SessionState.model_validate_json(found.labels[LABEL_STATE])
        except (KeyError, ValueError):
            raise SandboxUnavailable(f"the container of session {found.session_id} does not "
                                     "say how to rebuild it (made by an older server?)") from None
        ws = state.workspace
        keep = {k: v for k, v in found.labels.items()
                if k in (LABEL_OWNER, LABEL_STATE, LABEL_DEFAULT)}
        spec = SandboxSpec(workspace=ws.host, mounts=ws.mounts, network=state.network,
                           limits=state.limits, uid=ws.uid, gid=ws.gid, labels=keep)
        sandbox = await attach(self._backend, found, spec)
        _log.info("session adopted from the engine", session_id=found.session_id,
                  created_by=found.labels.get(LABEL_INSTANCE))
        return sandbox, ws

    async def take(self, owner: str, session_id: str | None, default: bool,
                   held: Mapping[str, Session]) -> Session | None:
        """The session of ``owner`` found on the engine (one id, or its default one), with
        a runner of this replica in it; one already ``held`` is returned as it is."""
        found = await self.find(owner, session_id, default)
        if not found:
            return None
        f = found[-1]
        async with self._taking.setdefault(f.session_id, asyncio.Lock()):
            if f.session_id in held:
                return held[f.session_id]
            sandbox, ws = await self.adopt(f)
            session = Session(f.session_id, owner, sandbox, self._backend, ws,
                              self._workspaces.shadow(f.session_id, ws))
        self._taking.pop(f.session_id, None)
        return session

    def used_within(self, session_id: str, limit: float) -> bool:
        """Whether any replica used the session within ``limit`` seconds."""
        seen = self.registry.last_seen(session_id)
        return seen is not None and time.time() - seen <= limit

    async def reap(self, held: Collection[str]) -> int:
        """Remove the containers and workspaces of orphans (see :meth:`orphans`) this
        replica does not hold; returns how many."""
        n = 0
        for f, ws in await self.orphans():
            if f.session_id in held:
                continue
            _log.info("removing a session no replica used", session_id=f.session_id)
            await self.remove(f)
            if ws is not None:
                await self._workspaces.release(ws, keep=True)
            n += 1
        return n

    async def orphans(self) -> list[tuple[FoundSandbox, Workspace | None]]:
        """Shared sessions no replica used for ``idle_timeout_s`` (or closed, or unreadable);
        never another server's unshared sandboxes on the same engine."""
        limit = self._settings.idle_timeout_s
        now = time.time()
        out: list[tuple[FoundSandbox, Workspace | None]] = []
        for f in await find(self._backend, {}):
            if LABEL_STATE not in f.labels:
                continue  # not a shared session: its own server reaps it (by pid)
            seen = self.registry.last_seen(f.session_id) if f.session_id else None
            if seen is None:
                seen = _created(f.created) or now
            if not self.registry.closed(f.session_id) and now - seen <= limit:
                continue
            ws = None
            with contextlib.suppress(KeyError, ValueError):
                ws = SessionState.model_validate_json(f.labels[LABEL_STATE]).workspace
            out.append((f, ws))
        return out

    async def remove(self, found: FoundSandbox) -> None:
        """Remove a session's container and network."""
        await remove(self._backend, found)


def _created(text: str) -> float | None:
    """Epoch seconds of Docker's ``Created`` (RFC 3339 with nanoseconds)."""
    from datetime import datetime

    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(text[:19] + "+00:00").timestamp()
    return None

