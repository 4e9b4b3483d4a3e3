"""MCP tools, one module per area; each module has ``register(mcp)``.

Tools are thin: validate, call the session (which calls the sandbox runner), render.
"""

from fastmcp import FastMCP

from coderx_mcp.tools.schema_cache import SchemaCache, registering


def register_all(mcp: FastMCP, cache: SchemaCache | None = None) -> None:
    """Register every tool area on ``mcp``.

    Args:
        cache: Schemas kept from an earlier start (see ``schema_cache.py``); None derives
            every schema.
    """
    from coderx_mcp.tools import agents, checks, files, history, keys, search, sessions, shell

    with registering(cache):
        for module in (sessions, files, search, shell, checks, keys, history, agents):
            module.register(mcp)
