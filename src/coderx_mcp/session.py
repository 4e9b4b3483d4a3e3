"""One session: its sandbox, workspace, diff baseline and per-file facts (SessionManager
in ``sessions.py`` opens, finds and closes them)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict
from typing import Any

import structlog
from pydantic import BaseModel

from coderx_mcp.config import Network, SandboxLimits
from coderx_mcp.errors import (
    CoderxError,
    SandboxGone,
    SessionNotFound,
)
from coderx_mcp.sandbox.backends import Backend
from coderx_mcp.sandbox.base import Sandbox, SandboxSpec
from coderx_mcp.workspace.prepare import Mode, Workspace
from coderx_mcp.workspace.shadow import Shadow

_log = structlog.get_logger("coderx.sessions")


def new_session_id() -> str:
    """An unguessable session id (128 random bits)."""
    return "s-" + secrets.token_hex(16)


class SessionInfo(BaseModel):
    """What a client may know about a session."""

    session: str
    backend: str
    isolated: bool
    container: str
    workspace: str
    """The host directory mounted at /workspace."""
    mode: Mode
    """bind, worktree, copy or scratch."""
    source: str | None
    """The directory asked for (bind/worktree/copy)."""
    chosen_by: str
    """Who chose the workspace: session_open, --workspace, mcp-roots, cwd or scratch."""
    branch: str | None
    """The session's git branch (worktree mode)."""
    notes: list[str]
    """Warnings about the workspace."""
    network: Network
    limits: SandboxLimits
    uid: int
    alive: bool
    idle_s: float
    age_s: float


class TextCache:
    """Recently read or written files of a session, bounded by total size.

    Lets an edit skip re-reading a file this session has just seen: the write still
    carries the expected hash, so the runner refuses it if the file changed meanwhile.
    """

    def __init__(self, max_bytes: int = 32 << 20) -> None:
        self._max = max_bytes
        self._items: OrderedDict[str, tuple[int, Any]] = OrderedDict()
        self._size = 0

    def get(self, key: str) -> Any:
        """The cached value, or None."""
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[1]

    def put(self, key: str, value: Any, size: int) -> None:
        """Cache ``value`` (``size`` bytes); the oldest entries go when over the bound."""
        self.drop(key)
        if size > self._max:
            return
        self._items[key] = (size, value)
        self._size += size
        while self._size > self._max:
            _, (old, _v) = self._items.popitem(last=False)
            self._size -= old

    def drop(self, key: str) -> None:
        """Forget one entry."""
        item = self._items.pop(key, None)
        if item is not None:
            self._size -= item[0]


class Session:
    """One open session and its sandbox.

    File tools keep per-session facts here: the whole-file hash last read or written per
    path (stale-edit protection) and a lock per path (concurrent edits never lose a change).
    """

    def __init__(self, sid: str, owner: str, sandbox: Sandbox, backend: Backend,
                 workspace: Workspace, shadow: Shadow) -> None:
        self.id = sid
        self.owner = owner
        self.sandbox = sandbox
        self.workspace = workspace
        self.shadow = shadow
        self._backend = backend
        # The diff baseline is taken before the first call may change anything.
        self._baseline: asyncio.Task[str] | None = asyncio.create_task(
            shadow.start(), name=f"baseline-{sid}")
        self.created = time.monotonic()
        self.last_used = self.created
        self.active = 0
        self.known_hashes: dict[str, str] = {}
        self.texts = TextCache()
        # process_output's cursor per output id: each call returns only what is new.
        self.output_cursors: dict[str, int] = {}
        self._path_locks: dict[str, asyncio.Lock] = {}
        self._restart_lock = asyncio.Lock()
        self._loss_reported = False
        self.closed = False

    @property
    def spec(self) -> SandboxSpec:
        """The sandbox spec (workspace, network, limits, uid)."""
        return self.sandbox.spec

    def path_lock(self, path: str) -> asyncio.Lock:
        """The lock that serialises read-modify-write of one file in this session."""
        return self._path_locks.setdefault(path, asyncio.Lock())

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        """Run one runner operation in this session's sandbox.

        A sandbox found dead is reported once with a clear error; the call after that
        starts a fresh container on the same workspace.
        """
        if self.closed:
            raise SessionNotFound(f"session {self.id} is closed")
        self.last_used = time.monotonic()
        self.active += 1
        try:
            if self._baseline is not None:
                await self.baseline()
            if not self.sandbox.alive:
                await self._recover()
            try:
                return await self.sandbox.call(op, **args)
            except SandboxGone as exc:
                self._loss_reported = True
                raise SandboxGone(
                    f"{str(exc).rstrip('.')}. The next call in session {self.id} starts a fresh "
                    "container on the same workspace (cwd, environment and background processes "
                    "are lost).",
                    exc.reason) from None
        finally:
            self.active -= 1
            self.last_used = time.monotonic()

    async def baseline(self) -> None:
        """Wait for the diff baseline; a failure is logged and leaves the session usable."""
        task = self._baseline
        if task is None:
            return
        try:
            await asyncio.shield(task)
        except CoderxError as exc:
            _log.warning("no diff baseline for this session", session_id=self.id,
                         error=str(exc))
        finally:
            self._baseline = None

    def stop_baseline(self) -> None:
        """Cancel a baseline still being taken (the session is closing)."""
        if self._baseline is not None:
            self._baseline.cancel()
            self._baseline = None

    async def _recover(self) -> None:
        async with self._restart_lock:
            if self.sandbox.alive:
                return
            if not self._loss_reported:
                self._loss_reported = True
                # Asked now where the sandbox can say (an engine that was stopping when the
                # stream ended has stopped since), else the reason noted at the loss.
                diagnose = getattr(self.sandbox, "diagnose", None)
                reason = (await diagnose() if diagnose is not None else None) \
                    or self.sandbox.lost_reason or "the runner stopped"
                raise SandboxGone(
                    f"the sandbox of session {self.id} stopped: {reason}. The next call starts a "
                    "fresh container on the same workspace.", reason)
            old = self.sandbox
            await old.close()
            fresh = self._backend.make(old.spec, self.id)
            await fresh.start()
            self.sandbox = fresh
            self._loss_reported = False
            self.known_hashes.clear()
            self.texts = TextCache()
            self.output_cursors.clear()
            _log.info("session restarted with a fresh sandbox", session_id=self.id)

    def info(self) -> SessionInfo:
        """A snapshot for ``session_info``/``session_list``."""
        now = time.monotonic()
        spec = self.sandbox.spec
        ws = self.workspace
        return SessionInfo(
            session=self.id, backend=self._backend.name, isolated=self._backend.isolated,
            container=self.sandbox.ident, workspace=str(spec.workspace), mode=ws.mode,
            source=str(ws.source) if ws.source else None, chosen_by=ws.rule,
            branch=ws.worktree.branch if ws.worktree else None, notes=list(ws.notes),
            network=spec.network,
            limits=spec.limits, uid=spec.uid, alive=self.sandbox.alive,
            idle_s=round(now - self.last_used, 1), age_s=round(now - self.created, 1))


