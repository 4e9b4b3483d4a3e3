"""Notice when the MCP host's roots change, so the next default session uses the new ones."""

from __future__ import annotations

from typing import Any

import mcp.types as mt
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext

from coderx_mcp.server.app import app_of


class HostRoots(Middleware):
    """Marks the host's roots stale on ``notifications/roots/list_changed``.

    Sessions already open keep their workspace; the next default session (and every
    ``session_open`` without a workspace) asks the host for its roots again.
    """

    async def on_notification(
        self,
        context: MiddlewareContext[mt.Notification[Any, Any]],
        call_next: CallNext[mt.Notification[Any, Any], Any],
    ) -> Any:
        if context.method == "notifications/roots/list_changed":
            ctx = context.fastmcp_context
            if ctx is not None:
                app_of(ctx).roots_stale = True
        return await call_next(context)
