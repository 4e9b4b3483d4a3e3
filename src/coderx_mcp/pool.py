"""Warm pool: sandboxes started ahead of time for the default session spec.

Starting a container and its runner takes a few hundred milliseconds; taking one from the
pool takes microseconds. The pool refills in the background after every take. A start
failure (say, a missing image) is logged and retried with back-off, never in a storm.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable

import structlog

from coderx_mcp.sandbox.backends import Backend
from coderx_mcp.sandbox.base import Sandbox, SandboxSpec

_log = structlog.get_logger("coderx.pool")


class WarmPool:
    """Keeps up to ``size`` started sandboxes of the default spec.

    Args:
        size: How many to keep ready (0 disables the pool).
        make_spec: Builds the default spec (a fresh scratch workspace each time, if any).
        backend: Makes the sandboxes.
        new_id: Makes the session id each pooled sandbox will serve.
        discard: Called with the spec of a pooled sandbox thrown away (scratch clean-up).
    """

    def __init__(self, size: int, make_spec: Callable[[], SandboxSpec], backend: Backend,
                 new_id: Callable[[], str],
                 discard: Callable[[SandboxSpec], None] | None = None) -> None:
        self.size = size
        self._make_spec = make_spec
        self._backend = backend
        self._new_id = new_id
        self._discard = discard or (lambda _spec: None)
        self._ready: deque[Sandbox] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._disposals: set[asyncio.Task[None]] = set()

    @property
    def ready(self) -> int:
        """How many started sandboxes are waiting."""
        return len(self._ready)

    def start(self) -> None:
        """Begin filling the pool in the background."""
        if self.size > 0 and self._task is None:
            self._task = asyncio.create_task(self._fill(), name="coderx-warm-pool")
            self._wake.set()

    def take(self) -> Sandbox | None:
        """A started sandbox, or None if the pool is empty."""
        while self._ready:
            sb = self._ready.popleft()
            self._wake.set()
            if sb.alive:
                return sb
            task = asyncio.create_task(self._throw_away(sb))
            self._disposals.add(task)
            task.add_done_callback(self._disposals.discard)
        self._wake.set()
        return None

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
                spec = self._make_spec()
                sb = self._backend.make(spec, self._new_id())
                try:
                    await sb.start()
                except asyncio.CancelledError:
                    await self._throw_away(sb)
                    raise
                except Exception as exc:
                    await self._throw_away(sb)
                    _log.warning("warm pool could not start a sandbox; retrying later",
                                 error=str(exc), retry_in_s=backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 60.0)
                    continue
                backoff = 1.0
                self._ready.append(sb)

    async def _throw_away(self, sb: Sandbox) -> None:
        with contextlib.suppress(Exception):
            await sb.close()
        self._discard(sb.spec)

    async def close(self) -> None:
        """Stop refilling and remove every pooled sandbox."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        ready, self._ready = list(self._ready), deque()
        await asyncio.gather(*(self._throw_away(sb) for sb in ready), return_exceptions=True)
