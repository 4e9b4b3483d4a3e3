"""Per-call limits applied before a tool validates its arguments.

Argument validation of a huge dictionary (180,000 unknown keys) took seconds of the one
event loop every principal shares; counting keys is linear and cheap, so oversized
arguments are refused before validation. ``run_command`` calls in flight are counted per
principal, so one principal cannot occupy every slot of the machine.
"""

from __future__ import annotations

import logging
from typing import Any

import mcp.types as mt
from fastmcp.exceptions import ToolError
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools.base import ToolResult

from coderx_mcp.server.app import app_of

COMMAND_TOOLS = frozenset({"run_command"})
"""Tools whose calls count against a principal's ``max_commands``."""


def count_items(value: Any, limit: int) -> int:
    """Keys and list items in ``value`` (nested), stopping as soon as ``limit`` is passed."""
    seen = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            seen += len(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            seen += len(item)
            stack.extend(item)
        if seen > limit:
            break
    return seen


class CallLimits(Middleware):
    """Refuses arguments with too many keys and a principal's commands beyond its quota."""

    def __init__(self) -> None:
        self._running: dict[str, int] = {}

    async def on_call_tool(
        self,
        context: MiddlewareContext[mt.CallToolRequestParams],
        call_next: CallNext[mt.CallToolRequestParams, ToolResult],
    ) -> Any:
        ctx = context.fastmcp_context
        if ctx is None:
            return await call_next(context)
        app = app_of(ctx)
        cap = app.settings.max_argument_keys
        if count_items(context.message.arguments or {}, cap) > cap:
            raise ToolError(f"the arguments hold more than {cap} keys and list items; send "
                            "less per call", log_level=logging.INFO)
        if context.message.name not in COMMAND_TOOLS:
            return await call_next(context)
        owner = app.owner(ctx)
        policy = app.sessions.quotas.principal(owner)
        if policy is None:
            return await call_next(context)
        quota = policy.max_commands or app.settings.max_commands_per_principal
        running = self._running.get(owner, 0)
        if running >= quota:
            raise ToolError(f"you have {running} commands running, your maximum; wait for one "
                            "to finish", log_level=logging.INFO)
        self._running[owner] = running + 1
        try:
            return await call_next(context)
        finally:
            self._running[owner] -= 1
            if not self._running[owner]:
                del self._running[owner]

