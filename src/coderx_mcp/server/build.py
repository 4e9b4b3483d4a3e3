"""Build the FastMCP server: settings in, a server with every tool out."""

from __future__ import annotations

from collections.abc import Callable

from fastmcp import FastMCP
from fastmcp.server.middleware import Middleware

from coderx_mcp import __version__
from coderx_mcp.config import Settings
from coderx_mcp.principals import TokenStore
from coderx_mcp.sandbox.backends import Backend, make_backend
from coderx_mcp.sandbox.instance import Instance
from coderx_mcp.server.app import App, StartAfterInitialize, make_lifespan
from coderx_mcp.server.auth import BearerTokens
from coderx_mcp.server.health import CallStats, healthz_route
from coderx_mcp.server.limits import CallLimits
from coderx_mcp.server.pipeline import default_middleware

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
    http: bool = False,
    backend_factory: Callable[[Settings, Instance], Backend] = make_backend,
    on_ready: Callable[[App], None] | None = None,
    middleware: list[Middleware] | None = None,
    on_answered: Callable[[], None] | None = None,
) -> FastMCP:
    """Create the Coder-X MCP server.

    Args:
        settings: Server settings; read from ``CODERX_*`` variables when omitted.
        http: True when served over HTTP: bearer tokens (``CODERX_HTTP_TOKENS`` and the
            managed tokens of the state directory, if any) are required, and each token's
            principal owns its own sessions.
        backend_factory: Makes the sandbox backend (tests may choose another).
        on_ready: Called with the server-wide :class:`App` when the lifespan has built it.
        middleware: The per-call pipeline, outermost first (default:
            :func:`~coderx_mcp.server.pipeline.default_middleware`).
        on_answered: Called once the server has answered its first message.

    Returns:
        The FastMCP server; its lifespan starts and stops the sessions.
    """
    from coderx_mcp.tools import register_all
    from coderx_mcp.tools.schema_cache import SchemaCache

    settings = settings or Settings()
    # A tokens file (even emptied by revocations) keeps authentication on: revoking the
    # last token must not open the server to everyone.
    store = TokenStore(settings.tokens_path) if http else None
    managed = store is not None and store.path.exists()
    auth = BearerTokens({p: t.get_secret_value() for p, t in settings.http_tokens.items()},
                        store if managed else None) \
        if http and (settings.http_tokens or managed) else None
    apps: list[App] = []

    def ready(app: App) -> None:
        apps.append(app)
        if on_ready is not None:
            on_ready(app)

    stats = CallStats()
    mcp = FastMCP(
        "coderx",
        instructions=INSTRUCTIONS,
        version=__version__,
        lifespan=make_lifespan(settings, backend_factory, ready, http, store),
        auth=auth,
        # Arguments are bounded before anything (history, validation) looks at them.
        middleware=[StartAfterInitialize(apps, on_answered), CallLimits(), stats,
                    *(default_middleware() if middleware is None else middleware)],
        mask_error_details=True,
        on_duplicate="error",
    )
    mcp.custom_route("/healthz", methods=["GET"])(healthz_route(apps, stats, auth))
    # Schemas kept from the last start of the same code: no start derives them twice.
    register_all(mcp, SchemaCache.for_user())
    return mcp
