"""Build the FastMCP server: settings in, a server with every tool out."""

from __future__ import annotations

from collections.abc import Callable

from fastmcp import FastMCP

from coderx_mcp import __version__
from coderx_mcp.config import Settings
from coderx_mcp.sandbox.backends import Backend, make_backend
from coderx_mcp.sandbox.instance import Instance
from coderx_mcp.server.app import make_lifespan
from coderx_mcp.server.errors import ErrorMapping

INSTRUCTIONS = """\
Coder-X runs every command and file operation inside an isolated sandbox container whose
/workspace is the project directory. Paths are relative to /workspace.
- Read a file with read_file before write_file/edit_file change it; edits are refused if the
  file changed since (re-read it then). Prefer edit_file/multi_edit over rewriting files.
- Use grep/glob/list_dir to explore, run_command for shell work (cd and exports persist).
  Long commands keep running in the background after `return_after` seconds: follow them
  with process_output; page through any earlier output with read_output(output_id).
- Omit `session` to use your default session; session_open gives a separate sandbox.
"""


def build_server(
    settings: Settings | None = None,
    *,
    single_owner: bool = True,
    backend_factory: Callable[[Settings, Instance], Backend] = make_backend,
) -> FastMCP:
    """Create the Coder-X MCP server.

    Args:
        settings: Server settings; read from ``CODERX_*`` variables when omitted.
        single_owner: True for stdio and in-process use (one client owns every session);
            False for HTTP, where each MCP session is a separate owner.
        backend_factory: Makes the sandbox backend (tests may choose another).

    Returns:
        The FastMCP server; its lifespan starts and stops the sessions.
    """
    from coderx_mcp.tools import register_all

    settings = settings or Settings()
    mcp = FastMCP(
        "coderx",
        instructions=INSTRUCTIONS,
        version=__version__,
        lifespan=make_lifespan(settings, single_owner, backend_factory),
        middleware=[ErrorMapping()],
        mask_error_details=True,
        on_duplicate="error",
    )
    register_all(mcp)
    return mcp
