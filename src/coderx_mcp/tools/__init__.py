"""MCP tools, one module per area; each module has ``register(mcp)``.

Tools are thin: validate, call the session (which calls the sandbox runner), render.
"""

from fastmcp import FastMCP


def register_all(mcp: FastMCP) -> None:
    """Register every tool area on ``mcp``."""
    from coderx_mcp.tools import agents, checks, files, history, keys, search, sessions, shell

    for module in (sessions, files, search, shell, checks, keys, history, agents):
        module.register(mcp)
