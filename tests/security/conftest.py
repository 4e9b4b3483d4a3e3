"""The security cases reuse the tool tests' fixtures: a real server on Docker, in memory."""

from tests.tools.conftest import client, make_settings, server, tool_workspace

__all__ = ["client", "make_settings", "server", "tool_workspace"]
