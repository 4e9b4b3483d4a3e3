"""Fixtures for tool tests: a real server with real Docker sessions, reached in memory."""

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client, FastMCP
from mcp.types import CallToolResult
from tests.conftest import IMAGE, facts

from coderx_mcp.config import SandboxLimits, Settings
from coderx_mcp.server import build_server


@pytest.fixture
def tool_workspace(tmp_path: Path) -> Path:
    """An empty project directory owned by the sandbox uid (as a normal user's would be)."""
    ws = tmp_path / "proj"
    ws.mkdir()
    os.chown(ws, 1000, 1000)
    return ws


@pytest.fixture
def make_settings(tool_workspace: Path, tmp_path: Path) -> Callable[..., Settings]:
    """Settings for a test server; keyword arguments override the defaults."""

    def make(**overrides: Any) -> Settings:
        base: dict[str, Any] = {
            "workspace": tool_workspace,
            "data_dir": tmp_path / "data",
            "state_dir": tmp_path / "state",
            "pool_size": 0,
            "image": IMAGE,  # the tested image (CODERX_TEST_IMAGE), not always :latest
            "limits": SandboxLimits(memory="512m", pids=256),
            "history_path": tool_workspace.parent / "history.sqlite3",
        }
        base.update(overrides)
        return Settings(**base)

    return make


@pytest.fixture
def server(make_settings: Callable[..., Settings]) -> FastMCP:
    """A Coder-X server on the Docker backend whose default workspace is ``tool_workspace``."""
    return build_server(make_settings())


@pytest.fixture
async def client(server: FastMCP) -> AsyncIterator[Client[Any]]:
    """An in-memory MCP client connected to ``server`` (the lifespan runs inside)."""
    async with Client(server) as c:
        yield c


def write_host_file(ws: Path, rel: str, data: bytes) -> Path:
    """Create a workspace file from the host side, owned like the workspace."""
    path = ws / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chown(path, 1000, 1000)
    return path


async def call(c: Client[Any], tool: str, **args: Any) -> CallToolResult:
    """Call a tool and return the raw result (errors included)."""
    return await c.call_tool(tool, args, raise_on_error=False)


def body(text: str) -> str:
    """The numbered lines of a read_file text: without its header and paging hint."""
    lines = text.split("\n")[1:]
    if lines and lines[-1].startswith("[") and "call read_file with offset=" in lines[-1]:
        lines.pop()
    return "\n".join(lines)


def tree_paths(text: str, root: str = "") -> list[str]:
    """The paths list_dir's indented tree shows, in order (``root``: the listed directory)."""
    stack: list[str] = []
    out = []
    for line in text.split("\n")[1:]:
        if line.startswith("["):  # the "listing stopped" note
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2 - 1
        name = line.strip()
        if name.endswith("/"):
            name = name[:-1]
        elif name.endswith(" -> (symlink)"):
            name = name[: -len(" -> (symlink)")]
        else:
            name = name.rsplit("  ", 1)[0]  # "name  1.2 KB"
        del stack[depth:]
        stack.append(name)
        out.append("/".join([root, *stack] if root else stack))
    return out


async def ok(c: Client[Any], tool: str, **args: Any) -> dict[str, Any]:
    """Call a tool that must succeed; what it says (see :func:`facts`)."""
    r = await call(c, tool, **args)
    assert not r.is_error, r.content[0].text  # type: ignore[union-attr]
    return facts(r)


async def err(c: Client[Any], tool: str, **args: Any) -> str:
    """Call a tool that must fail; its error text."""
    r = await call(c, tool, **args)
    assert r.is_error, r.content[0].text  # type: ignore[union-attr]
    return r.content[0].text  # type: ignore[union-attr]
