"""The security cases reuse the tool tests' fixtures: a real server on Docker, in memory."""

import subprocess

from tests.tools.conftest import client, make_settings, server, tool_workspace

__all__ = ["client", "listening", "make_settings", "server", "tool_workspace"]


def listening(pid: int) -> list[str]:
    """The TCP addresses a process listens on (``ss``)."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3] for line in out.splitlines() if f"pid={pid}," in line]
