"""Session tools: open, list, inspect, diff, commit and close sandboxes, plus server health."""

from typing import Annotated, Literal

from fastmcp import Context, FastMCP
from fastmcp.tools.base import ToolResult
from pydantic import Field

from coderx_mcp.context import app_of, session_ops
from coderx_mcp.errors import GitError, ToolInputError
from coderx_mcp.sessions import HostStatus, SessionInfo
from coderx_mcp.tools.common import Out, SessionArg, result, tool
from coderx_mcp.workspace import worktree as wtree
from coderx_mcp.workspace.shadow import FileChange


class SessionOut(Out):
    """One session's facts."""

    info: SessionInfo


class SessionListOut(Out):
    """The caller's open sessions (``session`` is the default one, if opened)."""

    sessions: list[SessionInfo]


class SessionCloseOut(Out):
    """A closed session and what happened to its workspace."""

    closed: bool
    workspace: list[str]


class SessionDiffOut(Out):
    """A session's changes since it started."""

    files: list[FileChange]
    stat: str
    diff: str = Field(description="The unified diff, from line `offset` on.")
    offset: int
    total_lines: int
    next_offset: int | None = Field(description="Pass as `offset` for the rest; None: done.")


class SessionCommitOut(Out):
    """A commit on the session's branch (``commit`` None: nothing to commit)."""

    commit: str | None
    branch: str
    stat: str


class HealthOut(Out):
    """Whether the server can run sandboxes."""

    backend: str
    isolated: bool
    ok: bool
    problem: str | None
    open_sessions: int
    warm_pool_ready: int
    default_workspace: str | None = Field(description="None: scratch workspaces.")
    workspace_rule: str = Field(
        description="Who chose the default workspace: --workspace, mcp-roots, cwd or scratch.")
    workspace_roots: list[str]
    workspace_note: str | None
    docker_hosts: list[HostStatus] | None = Field(
        None, description="Each Docker engine sessions are placed on (None: one engine).")


def _render(info: SessionInfo) -> str:
    lim = info.limits
    where = f"{info.mode} {info.workspace}"
    if info.source and info.mode != "bind":
        where += f" (of {info.source})"
    if info.branch:
        where += f", branch {info.branch}"
    text = (f"session {info.session} ({info.backend}{'' if info.isolated else ', NOT ISOLATED'}"
            f", container {info.container or '-'})\n  workspace {where} -> /workspace, chosen "
            f"by {info.chosen_by}; network {info.network}, uid {info.uid}\n  limits: memory "
            f"{lim.memory}, cpus {lim.cpus}, pids {lim.pids}; alive {'yes' if info.alive else 'no'}"
            f", idle {info.idle_s}s")
    return text + "".join(f"\n  note: {n}" for n in info.notes)


def register(mcp: FastMCP) -> None:
    """Register the session tools."""

    @tool(mcp, out=SessionOut, read_only=False, title="Open a sandbox session")
    async def session_open(
        ctx: Context,
        workspace: Annotated[str | None, Field(
            description="Host directory inside one of the server's allowed workspace roots "
                        "(absolute, or relative to the default workspace); omit for the "
                        "default workspace.", max_length=4096)] = None,
        mode: Annotated[Literal["bind", "worktree", "copy", "scratch"] | None, Field(
            description="'bind' (default): the directory itself; 'worktree': a new git "
                        "worktree on branch coderx/<session> (parallel agents never touch each "
                        "other's files; session_commit, then session_close keeps the branch); "
                        "'copy': a private copy; 'scratch': an empty directory.")] = None,
        network: Annotated[Literal["none", "bridge", "allowlist"] | None, Field(
            description="'none' (default: no network), 'bridge' (outbound access, only if "
                        "the operator started the server with --allow-network) or "
                        "'allowlist' (HTTP(S) through the server's proxy to the hosts the "
                        "operator allows, if enabled).")] = None,
        cpus: Annotated[float | None, Field(description="CPU cores, e.g. 2.", gt=0)] = None,
        memory: Annotated[str | None, Field(
            description="Memory limit like 512m or 2g.", max_length=16)] = None,
    ) -> ToolResult:
        """Open a new sandbox session (its own container) and return its id and limits.

        Pass the id as `session` to other tools; without it they use your default session.
        """
        app = app_of(ctx)
        if workspace is None:
            await app.host_roots(ctx)
        s = await app.sessions.open(app.owner(ctx), workspace, network, cpus, memory, mode)
        info = s.info()
        return result(SessionOut(session=s.id, info=info), "opened " + _render(info))

    @tool(mcp, out=SessionListOut, read_only=True, idempotent=True, title="List sessions")
    async def session_list(ctx: Context) -> ToolResult:
        """List your open sessions."""
        app = app_of(ctx)
        owner = app.owner(ctx)
        await app.sessions.sync(owner)  # shared sessions: those other replicas opened too
        infos = [s.info() for s in app.sessions.list(owner)]
        default = app.sessions.default_id(owner) or ""
        text = "\n".join(_render(i).replace("\n", " (your default)\n", 1)
                         if i.session == default else _render(i)
                         for i in infos) or "no open sessions"
        return result(SessionListOut(session=default, sessions=infos), text)

    @tool(mcp, out=SessionOut, read_only=True, idempotent=True, title="Describe a session")
    async def session_info(ctx: Context, session: SessionArg = None) -> ToolResult:
        """Show a session's workspace, network, limits and state."""
        s, _ = session_ops()
        info = s.info()
        return result(SessionOut(session=s.id, info=info), _render(info))

    @tool(mcp, out=SessionCloseOut, read_only=False, destructive=True, title="Close a session")
    async def session_close(
        ctx: Context, session: SessionArg = None,
        keep: Annotated[bool, Field(
            description="worktree mode: keep the branch for review (uncommitted changes are "
                        "committed first); false deletes the branch too.")] = True,
    ) -> ToolResult:
        """Close a session: its container and background processes end. Scratch and copy
        workspaces are deleted, a worktree directory is removed (its branch kept unless
        keep=false); a bound host directory is left as it is."""
        app = app_of(ctx)
        s, _ = session_ops()
        done = await app.sessions.close(s.id, app.owner(ctx), keep)
        app.grants.drop(s.id)
        text = "\n".join([f"closed session {s.id}", *done])
        return result(SessionCloseOut(session=s.id, closed=True, workspace=done), text)

    @tool(mcp, out=SessionDiffOut, read_only=True, idempotent=True, title="Diff a session")
    async def session_diff(
        ctx: Context, session: SessionArg = None,
        offset: Annotated[int, Field(description="First line of the diff to show (0-based).",
                                     ge=0)] = 0,
    ) -> ToolResult:
        """Show the session's changes since it started: changed files, a stat line and the
        unified diff (paged: pass `next_offset` as `offset` for more)."""
        app = app_of(ctx)
        s, _ = session_ops()
        await s.baseline()
        d = await s.shadow.diff()
        lines = d.patch.splitlines(keepends=True)
        if offset > len(lines):
            raise ToolInputError(f"offset {offset} is past the end of the diff "
                                 f"({len(lines)} lines)")
        cap, used, end = app.settings.output_cap, 0, offset
        while end < len(lines) and (used + len(lines[end]) <= cap or end == offset):
            used += len(lines[end])
            end += 1
        nxt = end if end < len(lines) else None
        page = "".join(lines[offset:end])
        files = "\n".join(f"{f.status} {f.path} (+{f.added if f.added is not None else '?'} "
                          f"-{f.removed if f.removed is not None else '?'})" for f in d.files)
        more = f"\n[diff continues: session_diff(offset={nxt})]" if nxt is not None else ""
        text = f"{d.stat}\n{files}\n\n{page}{more}" if d.files else "no changes"
        return result(SessionDiffOut(session=s.id, files=d.files, stat=d.stat, diff=page,
                                     offset=offset, total_lines=len(lines), next_offset=nxt),
                      text)

    @tool(mcp, out=SessionCommitOut, read_only=False, title="Commit a worktree session")
    async def session_commit(
        ctx: Context,
        message: Annotated[str, Field(description="The commit message.", min_length=1,
                                      max_length=10000)],
        session: SessionArg = None,
    ) -> ToolResult:
        """Commit every change of a worktree session on its branch coderx/<session>
        (git runs on the host with hooks disabled). Only for mode 'worktree' sessions."""
        app = app_of(ctx)
        s, _ = session_ops()
        wt = s.workspace.worktree
        if wt is None:
            raise GitError(f"session_commit needs a worktree session; session {s.id} is in "
                           f"mode {s.workspace.mode!r} (open one with session_open("
                           "mode='worktree'))")
        made = await wtree.commit(wt, message, app.settings.git_author)
        if made is None:
            return result(SessionCommitOut(session=s.id, commit=None, branch=wt.branch,
                                           stat=""), f"nothing to commit on {wt.branch}")
        return result(SessionCommitOut(session=s.id, commit=made.commit, branch=made.branch,
                                       stat=made.stat),
                      f"committed {made.commit[:12]} on {made.branch}: {made.stat}")

    @tool(mcp, out=HealthOut, read_only=True, idempotent=True, title="Server health")
    async def health(ctx: Context) -> ToolResult:
        """Check that sandboxes can start (Docker engine and image) and show the load."""
        app = app_of(ctx)
        problem = await app.sessions.problem()
        await app.host_roots(ctx)
        owner = app.owner(ctx)  # a principal sees its own roots and sessions, no one else's
        policy = app.sessions.policy_of(owner)
        out = HealthOut(
            session="", backend=app.sessions.backend.name, isolated=app.sessions.backend.isolated,
            ok=problem is None, problem=problem, open_sessions=len(app.sessions.list(owner)),
            warm_pool_ready=app.sessions.pool.ready,
            default_workspace=str(policy.default) if policy.default else None,
            workspace_rule=policy.rule, workspace_roots=[str(r) for r in policy.roots],
            workspace_note=policy.note, docker_hosts=await app.sessions.host_status() or None)
        ws = f"workspace {out.default_workspace or 'scratch'} (chosen by {policy.rule})"
        text = (f"{'ok' if problem is None else 'PROBLEM: ' + problem}; backend {out.backend}"
                f"{'' if out.isolated else ' (NOT ISOLATED)'}; {out.open_sessions} sessions open, "
                f"{out.warm_pool_ready} warm; {ws}"
                + (f"\nwarning: {policy.note}" if policy.note else "")
                + "".join(f"\ndocker host {h.name}: {h.detail}" if h.ok else f"\n{h.detail}"
                          for h in out.docker_hosts or []))
        return result(out, text)

