"""The per-call pipeline: one session resolution before the tool body, seen by middleware."""

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mcp.types as mt
import pytest
from fastmcp import Client
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from tests.tools.conftest import err, ok

from coderx_mcp.config import Settings
from coderx_mcp.context import current
from coderx_mcp.server import build_server
from coderx_mcp.server.pipeline import default_middleware

TOOLS = Path(__file__).parents[2] / "src" / "coderx_mcp" / "tools"


class Spy(Middleware):
    """Records, per call, the session the scope holds before and after the tool body."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []

    async def on_call_tool(self, context: MiddlewareContext[mt.CallToolRequestParams],
                           call_next: CallNext[mt.CallToolRequestParams, Any]) -> Any:
        scope = current()
        result = await call_next(context)
        self.seen.append((scope.tool, scope.session.id if scope.session else None))
        return result


def test_tools_do_not_import_the_server() -> None:
    for path in TOOLS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("coderx_mcp.server"), path.name
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("coderx_mcp.server") for a in node.names)


@pytest.mark.docker
async def test_middleware_sees_the_resolved_session(
        make_settings: Callable[..., Settings]) -> None:
    spy = Spy()
    server = build_server(make_settings(), middleware=[*default_middleware()[:1], spy,
                                                       *default_middleware()[1:]])
    async with Client(server) as c:
        opened = await ok(c, "session_open")
        ran = await ok(c, "run_command", command="true")
        await ok(c, "run_command", command="true", session=opened["session"])
        await ok(c, "health")
        assert "no open session" in await err(c, "session_info", session="s-nope")
    assert spy.seen == [("session_open", None), ("run_command", ran["session"]),
                        ("run_command", opened["session"]), ("health", None)]
