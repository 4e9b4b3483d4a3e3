"""Progress notifications while a command runs: elapsed time and its latest output lines."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import structlog
from fastmcp import Context

from coderx_mcp.context import report_progress
from coderx_mcp.errors import CoderxError
from coderx_mcp.ops import SessionOps
from coderx_mcp.tools.shell_core import last_lines

_log = structlog.get_logger("coderx.progress")

PROGRESS_EVERY_S = 1.0


def wants_progress(ctx: Context) -> bool:
    """Whether the client asked for progress (sent a progress token) with this call."""
    rc = ctx.request_context
    return bool(rc is not None and rc.meta and rc.meta.get("progressToken") is not None)


async def _beat(ctx: Context, ops: SessionOps, oid: str, total: float) -> None:
    """Every second, tell the client how long the command ran and its last output lines.

    Best effort: a failed look-up or notification skips one beat, never the command.
    """
    start = time.monotonic()
    while True:
        await asyncio.sleep(PROGRESS_EVERY_S)
        elapsed = round(time.monotonic() - start, 1)
        try:
            r = await ops.output(oid, tail=4096, lines=3)
        except CoderxError as exc:  # not started yet, or the sandbox is gone: the exec says
            _log.debug("progress look-up failed", error=str(exc))
            continue
        msg = last_lines(r.text) or f"running for {elapsed:g} s, no output yet"
        try:
            await report_progress(ctx, progress=elapsed, total=total, message=msg)
        except Exception as exc:  # a lost notification must not fail the command
            _log.warning("progress notification failed", error=repr(exc))


@contextlib.asynccontextmanager
async def following(ctx: Context, ops: SessionOps, oid: str, total: float) -> AsyncIterator[None]:
    """Report progress of the command spooling under ``oid`` while the block runs (only
    when the client asked for progress)."""
    ticker = asyncio.create_task(_beat(ctx, ops, oid, total)) if wants_progress(ctx) else None
    try:
        yield
    finally:
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
