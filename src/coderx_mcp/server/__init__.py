"""The FastMCP server: app wiring, lifespan, error mapping. Tools live in ``coderx_mcp.tools``."""

from coderx_mcp.server.build import build_server

__all__ = ["build_server"]
