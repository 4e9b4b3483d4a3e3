"""Shell tools: run commands like one terminal, follow background processes, page output.

Every command's output is spooled in the sandbox under its ``output_id``; replies show a
capped head and tail, and ``read_output`` pages through the rest without the server
ever holding it whole.
"""

import secrets
from typing import Annotated, Any, ClassVar, Literal

import structlog
from fastmcp import Context, FastMCP
from fastmcp.tools.base import ToolResult
from pydantic import BaseModel, Field

from coderx_mcp.context import app_of, current, session_ops
from coderx_mcp.errors import ToolInputError, UnknownProcess
from coderx_mcp.ops import OutputPage, SessionOps
from coderx_mcp.tools import shell_core as core
from coderx_mcp.tools.common import Out, SessionArg, result, tool
from coderx_mcp.tools.progress import following

_log = structlog.get_logger("coderx.shell")

MAX_TIMEOUT_S = 600

OutputId = Annotated[str, Field(
    description="The output_id of an earlier run_command or process_start of this session.",
    min_length=4, max_length=32, pattern=r"^[A-Za-z0-9]+$")]
Stream = Literal["all", "stdout", "stderr"]


class RunOut(Out):
    """The outcome of one command."""

    output_id: str = Field(description="Id of the full spooled output (read_output).")
    exit_code: int | None = Field(description="Exit status; null if killed or still running.")
    signal: str | None = Field(description="Signal that ended it, e.g. SIGKILL.")
    timed_out: bool
    oom_killed: bool
    backgrounded: bool = Field(description="Still running: follow with process_output.")
    left_running: list[str] = Field(
        default_factory=list,
        description="Processes the command left running (`cmd &`), now a background process "
                    "under output_id: process_output, process_kill; they end with the session.")
    stdout: str = Field(description="Standard output (head and tail if capped).")
    stderr: str = Field(description="Standard error (head and tail if capped).")
    stdout_bytes: int
    stderr_bytes: int
    truncated: bool = Field(description="Some output is only in read_output.")
    duration_ms: float
    cwd: str | None = Field(description="Working directory after the command.")
    next_offset: int = Field(description="Bytes of combined output so far (since_offset).")

    payload: ClassVar[frozenset[str]] = frozenset({"stdout", "stderr"})


class PageOut(Out):
    """A page of spooled output, or grep hits in it."""

    output_id: str
    stream: Stream
    text: str
    offset: int
    next_offset: int
    total_bytes: int
    eof: bool = Field(description="No more output after next_offset (for now if running).")
    running: bool
    exit_code: int | None
    matches: list[dict[str, Any]] | None = Field(
        default=None, description="grep: [{line, text}] with 1-based line numbers.")
    total_matches: int | None = None

    payload: ClassVar[frozenset[str]] = frozenset({"text", "matches"})


class ProcOutputOut(Out):
    """New output of a process and its state."""

    output_id: str
    text: str
    offset: int
    next_offset: int
    total_bytes: int
    running: bool
    exit_code: int | None
    signal: str | None
    timed_out: bool

    payload: ClassVar[frozenset[str]] = frozenset({"text"})


class ProcStartOut(Out):
    """A started background process."""

    output_id: str
    pid: int


class ProcSendOut(Out):
    """Input written to a process."""

    output_id: str
    sent_bytes: int
    eof: bool


class ProcKillOut(Out):
    """A stopped process."""

    output_id: str
    was_running: bool
    exit_code: int | None
    signal: str | None


class ProcInfo(BaseModel):
    """One process of the session."""

    output_id: str
    command: str
    running: bool
    kind: str = Field(description="'spawn' (background) or 'exec' (a finished run_command).")
    exit_code: int | None
    signal: str | None
    runtime_s: float
    output_bytes: int


class ProcListOut(Out):
    """The session's processes."""

    processes: list[ProcInfo]


def _unknown(exc: UnknownProcess, ops: SessionOps) -> UnknownProcess:
    """An unknown-id error that says where the valid ids are."""
    return UnknownProcess(f"{exc} in session {ops.session.id}; process_list shows this "
                          "session's processes (include_commands=true adds run_command outputs)")


async def _call(ops: SessionOps, op: str, **args: Any) -> dict[str, Any]:
    """A runner call whose unknown-id error says where the valid ids are."""
    try:
        return await ops.call(op, **args)
    except UnknownProcess as exc:
        raise _unknown(exc, ops) from None


async def _output(ops: SessionOps, output_id: str, **window: Any) -> OutputPage:
    """A page of output whose unknown-id error says where the valid ids are."""
    try:
        return await ops.output(output_id, **window)
    except UnknownProcess as exc:
        raise _unknown(exc, ops) from None


async def _unsplit(ops: SessionOps, page: OutputPage) -> OutputPage:
    """With keys granted, redact a page together with its neighbours in the stream, so a
    granted value the page's edges cut is masked however small the page (one more read on
    each side, only while something is granted)."""
    redactor = current().app.grants.redactor()
    if redactor is None:
        return page
    n = redactor.longest
    before = after = ""
    if page.offset > 0:
        start = max(0, page.offset - n)
        before = (await ops.output(page.output_id, stream=page.stream, offset=start,
                                   limit=page.offset - start)).text
    if page.next_offset < page.total_bytes:
        after = (await ops.output(page.output_id, stream=page.stream, offset=page.next_offset,
                                  limit=n)).text
    return page.model_copy(update={"text": redactor.redact_between(before, page.text, after)})


def register(mcp: FastMCP) -> None:
    """Register the shell tools."""

    @tool(mcp, out=RunOut, read_only=False, destructive=True, title="Run a shell command")
    async def run_command(
        ctx: Context,
        command: Annotated[str, Field(description="Bash command line.", min_length=1,
                                      max_length=100_000)],
        timeout: Annotated[float | None, Field(
            description="Seconds before the command's whole process group is killed "
                        f"(default 120, at most {MAX_TIMEOUT_S}).", gt=0,
            le=MAX_TIMEOUT_S)] = None,
        cwd: Annotated[str | None, Field(
            description="Directory for this call only (absolute, or relative to the current "
                        "one); the next command starts where the session was.",
            max_length=4096)] = None,
        return_after: Annotated[float | None, Field(
            description="Seconds after which a still-running command is left running in the "
                        "background and the call returns (default 50).", gt=0,
            le=MAX_TIMEOUT_S)] = None,
        session: SessionArg = None,
    ) -> ToolResult:
        """Run a bash command in the sandbox, like one terminal: `cd` and exported variables
        persist between calls in a session.

        - stdin is empty (prompts get EOF: pass -y etc.); PAGER=cat; no network unless the
          session has it.
        - Output is capped (head and tail kept); read_output(output_id) pages through all of it.
        - At `timeout` the whole process group is killed. A command still running after
          `return_after` seconds keeps running in the background; follow it with
          process_output(output_id). Processes a command leaves running (`cmd &`) keep
          running as a background process under its output_id (the reply names them).
          Use process_start for servers and interactive programs.
        - `cwd` applies to this call only; `cd` in the command persists.
        """
        st = app_of(ctx).settings
        s, ops = session_ops()
        limit = timeout or st.command_timeout_s
        back = return_after or st.return_after_s
        oid = secrets.token_hex(4)
        async with following(ctx, ops, oid, min(limit, back)):
            r = await ops.exec(command, timeout=limit, cap=st.output_cap, cwd=cwd or None,
                               return_after=back, output_id=oid)
        out, err = r.stdout, r.stderr
        next_offset = out.total_bytes + err.total_bytes
        if r.running or r.left_running:  # process_output goes on from here
            s.output_cursors[r.output_id] = next_offset
        model = RunOut(
            session=s.id, output_id=r.output_id, exit_code=r.exit_code,
            signal=r.signal, timed_out=r.timed_out, oom_killed=r.oom_killed,
            backgrounded=r.running, left_running=r.left_running, stdout=out.text,
            stderr=err.text, stdout_bytes=out.total_bytes, stderr_bytes=err.total_bytes,
            truncated=bool(out.omitted_bytes or err.omitted_bytes),
            duration_ms=r.duration_ms, cwd=r.cwd, next_offset=next_offset)
        reply = r.model_dump()
        text = core.render_run(command, reply, limit, next_offset)
        return result(model, text + core.no_network_note(reply, s.sandbox.spec.network))

    @tool(mcp, out=PageOut, read_only=True, idempotent=True, title="Read command output")
    async def read_output(
        ctx: Context,
        output_id: OutputId,
        byte_offset: Annotated[int, Field(
            description="Byte position to read from (next_offset of the previous page); "
                        "not a line number.", ge=0)] = 0,
        limit: Annotated[int | None, Field(
            description="Most bytes to return (default: run_command's output cap).", ge=1,
            le=1 << 20)] = None,
        head: Annotated[int | None, Field(
            description="Only the first N lines from `byte_offset` (within `limit` bytes).",
            ge=1, le=100_000)] = None,
        tail: Annotated[int | None, Field(
            description="Only the last N lines (within the last `limit` bytes).",
            ge=1, le=100_000)] = None,
        grep: Annotated[str | None, Field(
            description="Regex (Rust syntax, as in the grep tool; searched by ripgrep, so no "
                        "pattern can hang): return matching lines with line numbers instead.",
            min_length=1, max_length=1000)] = None,
        stream: Annotated[Stream, Field(
            description="'all' (stdout and stderr as they came), 'stdout' or 'stderr'.")]
            = "all",
        session: SessionArg = None,
    ) -> ToolResult:
        """Page through the full output of an earlier run_command or process of this session.

        Returns `limit` bytes from `byte_offset` and `next_offset` to continue; or only the
        first (`head`) or last (`tail`) lines; or, with `grep`, the matching lines (at most 200).
        """
        if sum(x is not None for x in (head, tail, grep)) > 1:
            raise ToolInputError("use at most one of head, tail and grep")
        limit = limit or app_of(ctx).settings.output_cap  # one page size with run_command
        s, ops = session_ops()
        if grep is not None:
            g = await _call(ops, "grep_output", output_id=output_id, pattern=grep, stream=stream,
                            max_matches=200)
            text = core.render_matches(output_id, g["matches"], g["total_matches"],
                                       g["truncated"])
            p = await _output(ops, output_id, stream=stream, limit=0)
            model = PageOut(session=s.id, output_id=output_id, stream=stream, text=text,
                            offset=0, next_offset=p.total_bytes,
                            total_bytes=p.total_bytes, eof=True, running=p.running,
                            exit_code=p.exit_code, matches=g["matches"],
                            total_matches=g["total_matches"])
            return result(model, text)
        args: dict[str, Any] = {"stream": stream}
        if tail is not None:
            args.update(tail=limit, lines=tail)
        else:
            args.update(offset=byte_offset, limit=limit)
            if head is not None:
                args["lines"] = head
        r = await _unsplit(ops, await _output(ops, output_id, **args))
        eof = r.next_offset >= r.total_bytes or (tail is None and head is None
                                                 and r.next_offset == r.offset)
        model = PageOut(session=s.id, output_id=output_id, stream=stream, text=r.text,
                        offset=r.offset, next_offset=r.next_offset,
                        total_bytes=r.total_bytes, eof=eof, running=r.running,
                        exit_code=r.exit_code)
        return result(model, core.render_page(r.model_dump(), eof))

    @tool(mcp, out=ProcStartOut, read_only=False, destructive=True,
          title="Start a background process")
    async def process_start(
        ctx: Context,
        command: Annotated[str, Field(description="Bash command line.", min_length=1,
                                      max_length=100_000)],
        cwd: Annotated[str | None, Field(
            description="Directory to run in (absolute, or relative to the current one).",
            max_length=4096)] = None,
        timeout: Annotated[float | None, Field(
            description="Seconds before it is killed; omit to let it run until the session "
                        "ends.", gt=0, le=86_400)] = None,
        session: SessionArg = None,
    ) -> ToolResult:
        """Start a long-running or interactive command in the background (servers, watchers,
        REPLs) and return its output_id at once.

        stderr is merged into stdout; stdin is a pipe fed by process_send. Read its output
        with process_output, stop it with process_kill. It starts from the session's current
        directory and exports, but its own `cd`/`export` do not persist.
        """
        s, ops = session_ops()
        r = await ops.spawn(command, cwd=cwd, timeout=timeout)
        oid = r.output_id
        return result(ProcStartOut(session=s.id, output_id=oid, pid=r.pid),
                      f"started {oid} (pid {r.pid}): $ {core.one_line(command)}\n"
                      f'read its output with process_output("{oid}", wait=5)')

    @tool(mcp, out=ProcOutputOut, read_only=True, idempotent=True,
          title="Read a process's new output")
    async def process_output(
        ctx: Context,
        output_id: OutputId,
        since_offset: Annotated[int | None, Field(
            description="Byte offset to start from (0 = everything again); omit for the "
                        "output that is new since your last process_output call.",
            ge=0)] = None,
        wait: Annotated[float, Field(
            description="Seconds to wait for new output or the exit (max 30).",
            ge=0, le=30)] = 0,
        limit: Annotated[int | None, Field(
            description="Most bytes to return (default: run_command's output cap).", ge=1,
            le=1 << 20)] = None,
        session: SessionArg = None,
    ) -> ToolResult:
        """New output of a background process since your last call for it, whether it
        still runs, and its exit code. With `wait`, waits up to that many seconds for new
        output or the exit. `since_offset` re-reads from a byte offset instead."""
        limit = limit or app_of(ctx).settings.output_cap
        s, ops = session_ops()
        start = s.output_cursors.get(output_id, 0) if since_offset is None else since_offset
        r = await _unsplit(ops, await _output(ops, output_id, offset=start, limit=limit,
                                              wait=wait, until_output=True))
        s.output_cursors[output_id] = r.next_offset
        model = ProcOutputOut(
            session=s.id, output_id=output_id, text=r.text, offset=r.offset,
            next_offset=r.next_offset, total_bytes=r.total_bytes, running=r.running,
            exit_code=r.exit_code, signal=r.signal, timed_out=r.timed_out)
        return result(model, core.render_process_output(r.model_dump()))

    @tool(mcp, out=ProcSendOut, read_only=False, destructive=True, title="Send input")
    async def process_send(
        ctx: Context,
        output_id: OutputId,
        text: Annotated[str, Field(description="Text for its stdin; include \\n to end a line.",
                                   max_length=1 << 20)],
        eof: Annotated[bool, Field(description="Close stdin after the text.")] = False,
        session: SessionArg = None,
    ) -> ToolResult:
        """Write text to a background process's stdin (and optionally close it)."""
        s, ops = session_ops()
        r = await _call(ops, "send", output_id=output_id, text=text, eof=eof)
        model = ProcSendOut(session=s.id, output_id=output_id, sent_bytes=r["sent_bytes"],
                            eof=eof)
        return result(model, f"sent {r['sent_bytes']} bytes to {output_id}"
                      + (" and closed its stdin" if eof else ""))

    @tool(mcp, out=ProcKillOut, read_only=False, destructive=True, idempotent=True,
          title="Stop a process")
    async def process_kill(ctx: Context, output_id: OutputId,
                           session: SessionArg = None) -> ToolResult:
        """Stop a background process and its whole process group (SIGTERM, then SIGKILL).
        Its output stays readable with read_output."""
        s, ops = session_ops()
        r = await _call(ops, "kill", output_id=output_id)
        model = ProcKillOut(session=s.id, output_id=output_id, was_running=r["was_running"],
                            exit_code=r["exit_code"], signal=r["signal"])
        text = (f"stopped {output_id}" if r["was_running"]
                else f"{output_id} had already ended ({core.exit_words(r)})")
        return result(model, text)

    @tool(mcp, out=ProcListOut, read_only=True, idempotent=True, title="List processes")
    async def process_list(
        ctx: Context,
        include_commands: Annotated[bool, Field(
            description="Also list finished run_command outputs (ids for read_output).")]
            = False,
        session: SessionArg = None,
    ) -> ToolResult:
        """List this session's background processes (running and ended) with their ids."""
        s, ops = session_ops()
        r = await ops.call("procs", all=include_commands)
        procs = [ProcInfo(**p) for p in r["processes"]]
        return result(ProcListOut(session=s.id, processes=procs),
                      core.render_procs(r["processes"]))
