"""The MCP client side: naming, filters, secrets kept from servers, a server that dies."""

from __future__ import annotations

import ast
import sys
import time
from pathlib import Path

from tests.agent.conftest import EXTRA_SERVER

from coderx_agent.config import ServerEntry
from coderx_agent.servers import ToolHub, build_servers, coderx_entry, server_env

AGENT_SRC = Path(__file__).parents[2] / "agent" / "coderx_agent"
#: coderx_mcp modules the agent may import: libraries without MCP server or Docker code.
ALLOWED = {"coderx_mcp.keystore", "coderx_mcp.errors"}


def test_agent_never_imports_server_code() -> None:
    bad = []
    for path in AGENT_SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                # `from coderx_mcp import errors` imports the module coderx_mcp.errors
                names = ([f"{node.module}.{a.name}" for a in node.names]
                         if node.module == "coderx_mcp" else [node.module])
            bad += [f"{path.name}: {n}" for n in names
                    if n.split(".")[0] == "coderx_mcp" and n not in ALLOWED]
    assert not bad, f"the agent imports coderx_mcp internals: {bad}"


def extra(**kw: object) -> ServerEntry:
    return ServerEntry(command=sys.executable, args=[str(EXTRA_SERVER)], **kw)  # type: ignore[arg-type]


def hub_with(entries: dict[str, ServerEntry], tmp_path: Path) -> ToolHub:
    # The coderx entry points at a server that is not started in these tests: only extras.
    servers = build_servers(coderx_entry(tmp_path, None, None, 60), entries,
                            environ={"PATH": "/usr/bin", "ANTHROPIC_API_KEY": "sk-secret"})
    return ToolHub(servers[1:])


async def test_extra_server_tools_are_prefixed_filtered_and_get_no_keys(tmp_path: Path
                                                                        ) -> None:
    assert server_env({"PATH": "/bin", "ANTHROPIC_API_KEY": "k", "OPENAI_API_KEY": "k",
                       "CODERX_KEY_PASSPHRASE": "p", "CODERX_POOL_SIZE": "0"}) == {
        "PATH": "/bin", "CODERX_POOL_SIZE": "0"}
    entry = extra(allow=["echo", "getenv", "pid", "s*"], deny=["sleep"], env={"MARK": "1"})
    async with hub_with({"extra": entry}, tmp_path) as hub:
        names = sorted(t.name for t in hub.tools())
        assert names == ["mcp__extra__echo", "mcp__extra__getenv", "mcp__extra__pid"]
        assert hub.spec("mcp__extra__echo").read_only  # type: ignore[union-attr]
        out = await hub.call("mcp__extra__echo", {"text": "hi"})
        assert out.ok and out.text == "hi"
        hidden = await hub.call("mcp__extra__die", {})
        assert not hidden.ok and "no tool named 'mcp__extra__die'" in hidden.text
        # hub_with's environment has ANTHROPIC_API_KEY: the server must not see it
        assert (await hub.call("mcp__extra__getenv", {"name": "ANTHROPIC_API_KEY"})).text == "unset"
        assert (await hub.call("mcp__extra__getenv", {"name": "MARK"})).text == "set"


async def test_dead_or_hanging_server_is_a_quick_tool_error_then_restarts(tmp_path: Path
                                                                          ) -> None:
    async with hub_with({"extra": extra(timeout_s=1)}, tmp_path) as hub:
        first_pid = (await hub.call("mcp__extra__pid", {})).text
        started = time.monotonic()
        died = await hub.call("mcp__extra__die", {})
        assert time.monotonic() - started < 5
        assert not died.ok
        assert "MCP server 'extra' failed during mcp__extra__die" in died.text
        assert "starts again on the next call" in died.text
        again = await hub.call("mcp__extra__pid", {})
        assert again.ok and again.text != first_pid

        started = time.monotonic()
        hung = await hub.call("mcp__extra__sleep", {"seconds": 30})
        assert time.monotonic() - started < 5
        assert not hung.ok and "did not answer within 1 s" in hung.text
        assert (await hub.call("mcp__extra__echo", {"text": "back"})).text == "back"


async def test_extra_server_that_cannot_start_is_left_out(tmp_path: Path) -> None:
    notices: list[str] = []
    servers = build_servers(coderx_entry(tmp_path, None, None, 60), {
        "broken": ServerEntry(command="/nonexistent/server", timeout_s=5)})
    async with ToolHub(servers[1:], notify=notices.append) as hub:
        assert hub.tools() == []
    assert len(notices) == 1 and "MCP server 'broken' did not start" in notices[0]
