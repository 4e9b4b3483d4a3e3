"""History middleware: every tool call becomes one history entry (plus audit events).

It sits inside :class:`~coderx_mcp.server.pipeline.CallPipeline` (so it sees the call's
scope and the raw exception) and outside redaction (so results are already redacted);
arguments are redacted and cut here. Only a queue append happens on the caller's path.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Literal

import mcp.types as mt
from fastmcp.exceptions import ToolError
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools.base import ToolResult

from coderx_mcp.context import CallScope, current
from coderx_mcp.history import INTERRUPTED, Entry, cut
from coderx_mcp.tools.common import facts_of


def _summary(result: Any) -> tuple[str, int | None]:
    """The first line of a result's text and its exit code, if it has one."""
    if not isinstance(result, ToolResult):
        return "", None
    text = next((b.text for b in result.content if isinstance(b, mt.TextContent)), "")
    code = facts_of(result).get("exit_code")
    return text.strip().partition("\n")[0], code if isinstance(code, int) else None


class History(Middleware):
    """Records each tool call (and the audit events tools note) to the history."""

    async def on_call_tool(self, context: MiddlewareContext[mt.CallToolRequestParams],
                           call_next: CallNext[mt.CallToolRequestParams, ToolResult]) -> Any:
        scope = current()
        writer = scope.app.history
        if writer is None:
            return await call_next(context)
        start, t0 = time.time(), time.perf_counter()
        args = cut(context.message.arguments or {})
        redactor = scope.app.grants.redactor()
        if redactor is not None:
            args = redactor.redact_data(args)
        # What the history keeps if this server dies before the call ends (SIGKILL).
        key = secrets.token_hex(8)
        writer.started(key, Entry(ts=start, principal=scope.owner, session=None,
                                  tool=scope.tool, args=args, outcome="interrupted",
                                  summary=INTERRUPTED),
                       session=lambda: scope.session.id if scope.session is not None else None)
        try:
            result = await call_next(context)
        except Exception as exc:
            cause = exc.__cause__ if isinstance(exc, ToolError) and exc.__cause__ else exc
            self._record(scope, key, args, start, t0, "error", type(cause).__name__,
                         str(exc) if cause is exc else str(cause), None)
            raise
        summary, code = _summary(result)
        self._record(scope, key, args, start, t0, "ok", None, summary, code)
        return result

    @staticmethod
    def _record(scope: CallScope, key: str, args: dict[str, Any], start: float, t0: float,
                outcome: Literal["ok", "error"], error: str | None, summary: str,
                code: int | None) -> None:
        writer = scope.app.history
        assert writer is not None
        redactor = scope.app.grants.redactor()
        if redactor is not None:  # a grant made by this very call counts too
            args, summary = redactor.redact_data(args), redactor.redact(summary, edges=False)
        # Only a resolved session is the call's: a refused id stays in the arguments.
        sid = scope.session.id if scope.session is not None else None
        base: dict[str, Any] = {"ts": start, "principal": scope.owner, "session": sid,
                                "tool": scope.tool}
        writer.record(Entry(**base, args=args, outcome=outcome, error_class=error,
                            exit_code=code, summary=summary[:300],
                            duration_ms=round((time.perf_counter() - t0) * 1000, 3)), key)
        audit = scope.notes.get("audit")
        if audit and outcome == "ok":
            writer.record(Entry(**base, kind="audit", outcome="ok", summary=str(audit)))
