"""Session tools: open, list, inspect and close sandboxes, plus server health."""

from typing import Annotated, Literal

from fastmcp import Context, FastMCP
from fastmcp.tools.base import ToolResult
from pydantic import Field

from coderx_mcp.server.app import app_of
from coderx_mcp.sessions import SessionInfo
from coderx_mcp.tools.common import Out, SessionArg, result, tool


class SessionOut(Out):
    """One session's facts."""

    info: SessionInfo


class SessionListOut(Out):
    """The caller's open sessions (``session`` is the default one, if opened)."""

    sessions: list[SessionInfo]


class SessionCloseOut(Out):
    """A closed session."""

    closed: bool


class HealthOut(Out):
    """Whether the server can run sandboxes."""

    backend: str
    isolated: bool
    ok: bool
    problem: str | None
    open_sessions: int
    warm_pool_ready: int


def _render(info: SessionInfo) -> str:
    lim = info.limits
    return (f"session {info.session} ({info.backend}{'' if info.isolated else ', NOT ISOLATED'}"
            f", container {info.container or '-'})\n  workspace {info.workspace} -> /workspace, "
            f"network {info.network}, uid {info.uid}\n  limits: memory {lim.memory}, cpus "
            f"{lim.cpus}, pids {lim.pids}; alive {info.alive}, idle {info.idle_s}s")


def register(mcp: FastMCP) -> None:
    """Register the session tools."""

    @tool(mcp, out=SessionOut, read_only=False, title="Open a sandbox session")
    async def session_open(
        ctx: Context,
        workspace: Annotated[str | None, Field(
            description="Absolute host directory to mount at /workspace; omit for the "
                        "server's default workspace.", max_length=4096)] = None,
        network: Annotated[Literal["none", "bridge"] | None, Field(
            description="'none' (default: no network) or 'bridge' (outbound access).")] = None,
        cpus: Annotated[float | None, Field(description="CPU cores, e.g. 2.", gt=0)] = None,
        memory: Annotated[str | None, Field(
            description="Memory limit like 512m or 2g.", max_length=16)] = None,
    ) -> ToolResult:
        """Open a new sandbox session (its own container) and return its id and limits.

        Pass the id as `session` to other tools; without it they use your default session.
        """
        app = app_of(ctx)
        s = await app.sessions.open(app.owner(ctx), workspace, network, cpus, memory)
        info = s.info()
        return result(SessionOut(session=s.id, info=info), "opened " + _render(info))

    @tool(mcp, out=SessionListOut, read_only=True, idempotent=True, title="List sessions")
    async def session_list(ctx: Context) -> ToolResult:
        """List your open sessions."""
        app = app_of(ctx)
        owner = app.owner(ctx)
        infos = [s.info() for s in app.sessions.list(owner)]
        text = "\n".join(_render(i) for i in infos) or "no open sessions"
        default = app.sessions.default_id(owner) or ""
        return result(SessionListOut(session=default, sessions=infos), text)

    @tool(mcp, out=SessionOut, read_only=True, idempotent=True, title="Describe a session")
    async def session_info(ctx: Context, session: SessionArg = None) -> ToolResult:
        """Show a session's workspace, network, limits and state."""
        s = await app_of(ctx).session(ctx, session)
        info = s.info()
        return result(SessionOut(session=s.id, info=info), _render(info))

    @tool(mcp, out=SessionCloseOut, read_only=False, destructive=True, title="Close a session")
    async def session_close(ctx: Context, session: SessionArg = None) -> ToolResult:
        """Close a session: its container and background processes end. A scratch
        workspace is deleted; a host workspace directory is kept."""
        app = app_of(ctx)
        s = await app.session(ctx, session)
        await app.sessions.close(s.id, app.owner(ctx))
        return result(SessionCloseOut(session=s.id, closed=True), f"closed session {s.id}")

    @tool(mcp, out=HealthOut, read_only=True, idempotent=True, title="Server health")
    async def health(ctx: Context) -> ToolResult:
        """Check that sandboxes can start (Docker engine and image) and show the load."""
        app = app_of(ctx)
        problem = await app.sessions.problem()
        out = HealthOut(
            session="", backend=app.sessions.backend.name, isolated=app.sessions.backend.isolated,
            ok=problem is None, problem=problem, open_sessions=app.sessions.count,
            warm_pool_ready=app.sessions.pool.ready)
        text = (f"{'ok' if problem is None else 'PROBLEM: ' + problem}; backend {out.backend}"
                f"{'' if out.isolated else ' (NOT ISOLATED)'}; {out.open_sessions} sessions open, "
                f"{out.warm_pool_ready} warm")
        return result(out, text)

