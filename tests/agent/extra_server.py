"""A small MCP server of our own for the agent tests: an extra ``mcpServers`` entry.

Run as ``python extra_server.py`` (stdio). ``die`` ends the process mid-call, the way a
crashed server does; ``pid`` says which process answered (to see a restart).
"""

import asyncio
import os

from fastmcp import FastMCP

mcp = FastMCP("extra")


@mcp.tool(annotations={"readOnlyHint": True})
def echo(text: str) -> str:
    """Return the text."""
    return text


@mcp.tool
def pid() -> int:
    """The server's process id."""
    return os.getpid()


@mcp.tool(annotations={"readOnlyHint": True})
def getenv(name: str) -> str:
    """Whether an environment variable is set in this server (never its value)."""
    return "set" if os.environ.get(name) else "unset"


@mcp.tool
async def die() -> str:
    """End the server process in the middle of this call."""
    await asyncio.sleep(0.2)
    os._exit(3)


@mcp.tool(annotations={"readOnlyHint": True})
async def sleep(seconds: float) -> str:
    """Sleep, then answer."""
    await asyncio.sleep(seconds)
    return "slept"


if __name__ == "__main__":
    mcp.run(show_banner=False)
