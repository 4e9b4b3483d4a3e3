"""The process's start: the garbage collector waits until start-up is over.

Why: starting the server builds some 100,000 long-lived objects (FastMCP, the MCP protocol's
types for two protocol versions, pydantic schemas, our tools). Every collection that the
allocations trigger walks all of them again and frees almost nothing: measured on a 2-core
VM, about 0.2 s of a 1.6 s start to the ``initialize`` answer, in some 300 collections.
So the console entry turns the collector off before importing anything; when start-up is
over, :func:`started` freezes what was built (``gc.freeze``: the collector never walks
those objects again, which also keeps later collections short) and turns it back on for
the garbage of real work. Python's documentation recommends the same pairing for servers
that fork; here it is the start that it speeds up.

Start-up is over when a stdio server has answered its first message, when an HTTP server's
lifespan has started, or at once for every other command.
"""

from __future__ import annotations

import gc


def main() -> None:
    """Console-script entry point (``coderx-mcp``, ``python -m coderx_mcp``): the command
    line, with the collector off until :func:`started`."""
    gc.disable()
    from coderx_mcp.cli import main as cli_main

    cli_main()


def started() -> None:
    """Start-up is over: keep what it built out of every later collection and turn the
    collector back on. Does nothing when the collector is on (nothing paused it)."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()
