"""The per-call pipeline: FastMCP middleware every tool call passes through, in order.

``CallPipeline`` (outermost) opens the call's :class:`~coderx_mcp.context.CallScope`
(owner, tool), binds the log context and maps every error once, at the edge
(:func:`~coderx_mcp.server.errors.to_tool_error`); ``ResolveSession`` (innermost) resolves
the session the call runs in, before the tool body. Middleware in between (history,
redaction) see both through the scope.
"""

from __future__ import annotations

import logging
from typing import Any

import mcp.types as mt
import structlog
from fastmcp import Context
from fastmcp.exceptions import ToolError
from fastmcp.exceptions import ValidationError as FastMCPValidationError
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools.base import InputRequiredToolResult, ToolResult
from pydantic import ValidationError

from coderx_mcp.context import CallScope, app_of, current, entered
from coderx_mcp.ops import SessionOps
from coderx_mcp.server.errors import describe_validation, to_tool_error
from coderx_mcp.server.recording import History
from coderx_mcp.server.roots import HostRoots
from coderx_mcp.tools.common import NO_SESSION_TAG

ToolCall = MiddlewareContext[mt.CallToolRequestParams]
Next = CallNext[mt.CallToolRequestParams, ToolResult]


def _ctx(context: ToolCall) -> Context:
    ctx = context.fastmcp_context
    if ctx is None:  # FastMCP always sets it for tools/call
        raise RuntimeError("tools/call without a FastMCP context")
    return ctx


class CallPipeline(Middleware):
    """Opens the call scope, binds log context and maps errors (outermost middleware)."""

    async def on_call_tool(self, context: ToolCall, call_next: Next) -> Any:
        ctx = _ctx(context)
        app = app_of(ctx)
        name = context.message.name
        scope = CallScope(app=app, owner=app.owner(ctx), tool=name)
        rid = ctx.request_id if ctx.request_context else None
        with entered(scope), structlog.contextvars.bound_contextvars(tool=name, request_id=rid):
            try:
                return await call_next(context)
            except Exception as exc:
                raise self._mapped(exc, name, scope) from None

    @staticmethod
    def _mapped(exc: Exception, name: str, scope: CallScope) -> ToolError:
        if isinstance(exc, FastMCPValidationError):
            cause = exc.__cause__
            text = (describe_validation(cause, name) if isinstance(cause, ValidationError)
                    else "invalid arguments")
            err = ToolError(text, log_level=logging.INFO)
        elif isinstance(exc, ToolError) and exc.__cause__ is not None:
            # A tool raised: FastMCP (or our tool decorator) wrapped the original.
            err = to_tool_error(exc.__cause__, name)
        else:
            err = to_tool_error(exc, name)
        redactor = scope.app.grants.redactor()  # a grant in this very call counts too
        if redactor is not None:
            err = ToolError(redactor.redact(str(err), edges=False), log_level=err.log_level)
        return err


class ResolveSession(Middleware):
    """Resolves the session a call runs in (explicit ``session`` or the caller's default)
    once, before the tool body, and puts it and its typed operations into the scope."""

    def __init__(self) -> None:
        self._uses_session: dict[str, bool] = {}

    async def _takes_session(self, ctx: Context, name: str) -> bool:
        known = self._uses_session.get(name)
        if known is None:
            tool = await ctx.fastmcp.get_tool(name)
            known = bool(tool is not None and "session" in tool.parameters.get("properties", {})
                         and NO_SESSION_TAG not in tool.tags)
            self._uses_session[name] = known
        return known

    async def on_call_tool(self, context: ToolCall, call_next: Next) -> Any:
        scope = current()
        ctx = _ctx(context)
        if await self._takes_session(ctx, context.message.name):
            wanted = (context.message.arguments or {}).get("session")
            # A malformed id is left for argument validation to report.
            if wanted is None or (isinstance(wanted, str) and len(wanted) <= 100):
                session = await scope.app.session(ctx, wanted)
                scope.session = session
                scope.ops = SessionOps(session, scope.app.grants.env_getter(session.id))
        return await call_next(context)


class Redaction(Middleware):
    """Replaces granted secret values in tool results (text, structured content, _meta)."""

    async def on_call_tool(self, context: ToolCall, call_next: Next) -> Any:
        result = await call_next(context)
        redactor = current().app.grants.redactor()
        if redactor is None or not isinstance(result, ToolResult) or isinstance(
                result, InputRequiredToolResult):
            return result
        blocks = [b.model_copy(update={"text": redactor.redact(b.text)})
                  if isinstance(b, mt.TextContent) else b for b in result.content]
        structured = (redactor.redact_data(result.structured_content)
                      if result.structured_content is not None else None)
        # Payload tools' facts (paths, names) travel in _meta: redacted like the rest.
        meta = redactor.redact_data(result.meta) if result.meta is not None else None
        return ToolResult(content=blocks, structured_content=structured, meta=meta)


def default_middleware() -> list[Middleware]:
    """The pipeline every server runs, outermost first."""
    return [CallPipeline(), History(), Redaction(), ResolveSession(), HostRoots()]
