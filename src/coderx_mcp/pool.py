"""Warm pool: sandboxes started ahead of time for the default workspace.

Starting a container and its runner takes a few hundred milliseconds; taking one from the
pool takes microseconds. The pool refills in the background after every take. A start
failure (say, a missing image) is logged and retried with back-off, never in a storm.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import structlog

from coderx_mcp.sandbox.backends import Backend
from coderx_mcp.sandbox.base import Sandbox, SandboxSpec

_log = structlog.get_logger("coderx.pool")
W = TypeVar("W")


class WarmPool(Generic[W]):
    """Keeps up to ``size`` started sandboxes of the default workspace.

    Args:
        size: How many to keep ready (0 disables the pool).
        make_workspace: Prepares the default workspace for a session id (a fresh scratch
            directory each time, when the default is scratch). Never a worktree or copy:
            the pool creates nothing nobody asked for beyond that.
        spec_of: The sandbox spec of a workspace.
        backend: Makes the sandboxes.
        new_id: Makes the session id each pooled sandbox will serve.
        discard: Releases the workspace of a pooled sandbox thrown away.
    """

    def __init__(self, size: int, make_workspace: Callable[[str], Awaitable[W]],
                 spec_of: Callable[[W], SandboxSpec], backend: Backend,
                 new_id: Callable[[], str],
                 discard: Callable[[W], Awaitable[None]] | None = None) -> None:
        self.size = size
        self._make_workspace = make_workspace
        self._spec_of = spec_of
        self._backend = backend
        self._new_id = new_id
        self._discard = discard
        self._ready: deque[tuple[Sandbox, W]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._disposals: set[asyncio.Task[None]] = set()
        self._generation = 0

    @property
    def ready(self) -> int:
        """How many started sandboxes are waiting."""
        return len(self._ready)

    def start(self) -> None:
        """Begin filling the pool in the background."""
        if self.size > 0 and self._task is None:
            self._task = asyncio.create_task(self._fill(), name="coderx-warm-pool")
            self._wake.set()

    def take(self) -> tuple[Sandbox, W] | None:
        """A started sandbox with its workspace, or None if the pool is empty."""
        while self._ready:
            item = self._ready.popleft()
            self._wake.set()
            if item[0].alive:
                return item
            self._dispose(item)
        self._wake.set()
        return None

    def reset(self) -> None:
        """Throw away every ready sandbox (the default workspace changed) and refill."""
        self._generation += 1
        while self._ready:
            self._dispose(self._ready.popleft())
        self._wake.set()

    def _dispose(self, item: tuple[Sandbox, W]) -> None:
        task = asyncio.create_task(self._throw_away(item))
        self._disposals.add(task)
        task.add_done_callback(self._disposals.discard)

    async def wait_full(self, timeout: float) -> bool:
        """Wait until the pool holds ``size`` sandboxes (tests and benchmarks)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while len(self._ready) < self.size:
            if loop.time() > end:
                return False
            await asyncio.sleep(0.02)
        return True

    async def _fill(self) -> None:
        backoff = 1.0
        while True:
            await self._wake.wait()
            self._wake.clear()
            while len(self._ready) < self.size:
                generation = self._generation
                sid = self._new_id()
                try:
                    ws = await self._make_workspace(sid)
                except Exception as exc:
                    _log.warning("warm pool could not prepare a workspace; retrying later",
                                 error=str(exc), retry_in_s=backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 60.0)
                    continue
                sb = self._backend.make(self._spec_of(ws), sid)
                try:
                    await sb.start()
                except asyncio.CancelledError:
                    await self._throw_away((sb, ws))
                    raise
                except Exception as exc:
                    await self._throw_away((sb, ws))
                    _log.warning("warm pool could not start a sandbox; retrying later",
                                 error=str(exc), retry_in_s=backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 60.0)
                    continue
                backoff = 1.0
                if generation != self._generation:  # the default changed meanwhile
                    await self._throw_away((sb, ws))
                    continue
                self._ready.append((sb, ws))

    async def _throw_away(self, item: tuple[Sandbox, W]) -> None:
        with contextlib.suppress(Exception):
            await item[0].close()
        if self._discard is not None:
            with contextlib.suppress(Exception):
                await self._discard(item[1])

    async def close(self) -> None:
        """Stop refilling and remove every pooled sandbox."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        ready, self._ready = list(self._ready), deque()
        await asyncio.gather(*(self._throw_away(item) for item in ready),
                             *list(self._disposals), return_exceptions=True)
