#!/usr/bin/env python3
"""MCP round trip over stdio: Coder-X next to reference servers, in one run.

Every server is started as a subprocess and driven by the same client (the ``mcp`` SDK's
``stdio_client`` + ``ClientSession``), one call at a time: warm-up calls first, then N
timed calls. Servers run one after the other on the same scratch files.

    coderx        our server, built exactly as ``coderx-mcp serve`` builds it (Docker
                  backend, default session on the scratch workspace), plus one extra
                  ``noop`` tool registered through ``coderx_mcp.tools.common.tool`` so the
                  decorator, output schema and middleware cost is included.
    fastmcp       a plain FastMCP server with one do-nothing tool (no middleware).
    node-fs       ``@modelcontextprotocol/server-filesystem`` (npm, into bench/.npm).
    py-shell      a minimal unisolated shell server on the bare ``mcp`` SDK (MCPServer)
                  whose tool runs ``subprocess.run(cmd, shell=True)`` on the host.

Usage::

    python bench/bench_mcp.py [--quick] [--json] [-n N] [--profile]

``--json`` also writes bench/results/mcp.json. ``--profile`` adds where our time goes: the
runner round trips alone, the same server through FastMCP's in-process client (no pipes),
and a cProfile of the stdio server over read_file calls (bench/results/profile_read_file.txt).

The script re-invokes itself with ``--serve NAME`` to run the Python servers.
"""

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastmcp.server.middleware import Middleware

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
NPM_PREFIX = BENCH / ".npm"
NODE_PKG = "@modelcontextprotocol/server-filesystem"
NODE_ENTRY = NPM_PREFIX / "node_modules" / NODE_PKG / "dist" / "index.js"
SANDBOX_UID = 1000
EDIT_A, EDIT_B = "alpha_marker = 1", "bravo_marker = 2"
GREP_PATTERN = r"needle_[0-9]+"


# --------------------------------------------------------------------------- servers
# Run inside the server subprocesses (``--serve NAME``); stdout is the protocol stream.

def _serve_coderx() -> None:
    """Our server as ``coderx-mcp serve`` runs it, plus a ``noop`` tool through our decorator."""
    gc.disable()  # as the console entry does (coderx_mcp/startup.py): on again once answered
    from fastmcp import FastMCP
    from fastmcp.tools.base import ToolResult

    import coderx_mcp.server as server_pkg
    from coderx_mcp import cli
    from coderx_mcp.tools.common import Out, result, tool

    original = server_pkg.build_server

    def build_with_noop(*args: Any, **kwargs: Any) -> FastMCP:
        mcp = original(*args, **kwargs)

        @tool(mcp, out=Out, read_only=True, idempotent=True)
        async def noop() -> ToolResult:
            """Do nothing (benchmark baseline)."""
            return result(Out(session="-"), "ok")

        if os.environ.get("BENCH_PROFILE"):
            _add_profile_tool(mcp)
        return mcp

    server_pkg.build_server = build_with_noop  # cli._serve imports it from here when called
    settings = cli.load_settings()
    cli.configure_logging(settings.log_level, settings.log_json)
    if os.environ.get("BENCH_ASYNCIO_STDIO"):
        _use_asyncio_stdio()
    asyncio.run(cli._serve(settings, http=False, host="127.0.0.1", port=0))


def _use_asyncio_stdio() -> None:
    """Experiment (``--profile``): serve stdio through asyncio pipes instead of the SDK's
    ``anyio.wrap_file`` streams, which cost three worker-thread hops per call (readline,
    write, flush). Not production-ready: it skips the SDK's fd 0/1 diversion."""
    from contextlib import asynccontextmanager

    import fastmcp.server.mixins.transport as transport
    from mcp.server.stdio import stdio_server

    class _In:
        def __init__(self, reader: asyncio.StreamReader) -> None:
            self.reader = reader

        def __aiter__(self) -> "_In":
            return self

        async def __anext__(self) -> str:
            line = await self.reader.readline()
            if not line:
                raise StopAsyncIteration
            return line.decode("utf-8", "replace")

    class _Out:
        def __init__(self, writer: asyncio.StreamWriter) -> None:
            self.writer = writer

        async def write(self, text: str) -> None:
            self.writer.write(text.encode())

        async def flush(self) -> None:
            await self.writer.drain()

    @asynccontextmanager
    async def pipes_stdio_server() -> Any:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 27)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        w_transport, w_proto = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, sys.stdout)
        writer = asyncio.StreamWriter(w_transport, w_proto, None, loop)
        async with stdio_server(_In(reader), _Out(writer)) as streams:  # type: ignore[arg-type]
            yield streams

    transport.stdio_server = pipes_stdio_server  # type: ignore[assignment]


def _serve_fastmcp() -> None:
    """A plain FastMCP server with one do-nothing tool and no middleware."""
    from fastmcp import FastMCP

    mcp = FastMCP("plain")

    @mcp.tool
    async def noop() -> str:
        """Do nothing."""
        return "ok"

    if os.environ.get("BENCH_ASYNCIO_STDIO"):
        _use_asyncio_stdio()
    asyncio.run(mcp.run_async("stdio", show_banner=False))


def _serve_shell() -> None:
    """A minimal, unisolated shell server on the bare mcp SDK."""
    from mcp.server.mcpserver import MCPServer

    mcp = MCPServer("py-shell")

    @mcp.tool()
    def run_command(command: str) -> str:
        """Run a shell command on the host (no isolation)."""
        p = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60)
        return f"exit {p.returncode}\n{p.stdout}{p.stderr}"

    mcp.run("stdio")


def _add_profile_tool(mcp: Any) -> None:
    """``bench_profile(start|stop)``: cProfile only the timed calls, dump to $BENCH_PROFILE."""
    import cProfile

    prof = cProfile.Profile()

    @mcp.tool
    async def bench_profile(action: str) -> str:
        if action == "start":
            prof.enable()
        else:
            prof.disable()
            prof.dump_stats(os.environ["BENCH_PROFILE"])
        return action


SERVERS: dict[str, Callable[[], None]] = {
    "coderx": _serve_coderx, "fastmcp": _serve_fastmcp, "py-shell": _serve_shell,
}


# --------------------------------------------------------------------------- fixtures

def make_scratch(root: Path) -> dict[str, Any]:
    """Scratch workspace: a 10 KB file, two edit targets, a 300-file / ~3 MB tree."""
    rng = random.Random(7)
    words = ["def", "class", "return", "import", "self", "value", "items", "result", "config",
             "path", "data", "lambda", "yield", "async", "await", "while", "for", "if", "else"]

    def text(n_bytes: int, needle: str | None = None) -> str:
        lines, size, i = [], 0, 0
        while size < n_bytes:
            line = " ".join(rng.choice(words) for _ in range(rng.randint(4, 12)))
            if needle and i == 40:
                line += f"  # {needle}"
            line = f"{i:5d} {line}\n"
            lines.append(line)
            size += len(line)
            i += 1
        return "".join(lines)[:n_bytes]

    (root / "read10k.txt").write_text(text(10 * 1024))
    for name in ("edit_coderx.py", "edit_node.py"):
        body = text(6 * 1024)
        (root / name).write_text(body[:3000] + f"\n{EDIT_A}\n" + body[3000:])
    tree = root / "tree"
    n_files, matches = 0, 0
    for d in range(15):
        for f in range(20):
            p = tree / f"pkg{d:02d}" / f"mod{f:02d}.py"
            p.parent.mkdir(parents=True, exist_ok=True)
            needle = f"needle_{d}{f}" if (d * 20 + f) % 10 == 0 else None
            matches += needle is not None
            p.write_text(text(10 * 1024, needle))
            n_files += 1
    if os.geteuid() == 0:
        for dirpath, _, filenames in os.walk(root):
            os.chown(dirpath, SANDBOX_UID, SANDBOX_UID)
            for n in filenames:
                os.chown(os.path.join(dirpath, n), SANDBOX_UID, SANDBOX_UID)
    tree_bytes = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
    return {"tree_files": n_files, "tree_bytes": tree_bytes, "tree_matching_files": matches}


def ensure_node_server() -> str:
    """Install the reference filesystem server into bench/.npm when missing; its version."""
    if not NODE_ENTRY.exists():
        if not shutil.which("npm"):
            raise SystemExit("npm is needed for the reference server (node v20+)")
        print(f"installing {NODE_PKG} into {NPM_PREFIX} ...", file=sys.stderr)
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund",
                        "--prefix", str(NPM_PREFIX), NODE_PKG], check=True)
    meta = json.loads((NODE_ENTRY.parent.parent / "package.json").read_text())
    return str(meta["version"])


# --------------------------------------------------------------------------- measuring

@dataclass
class Op:
    """One operation measured on one server."""

    operation: str
    server: str
    tool: str
    args: Callable[[int], dict[str, Any]]
    note: str = ""
    expect: Callable[[Any], bool] | None = None
    """Checked on the first warm-up reply: the op really did the work."""
    samples_ms: list[float] = field(default_factory=list)
    error: str | None = None

    def pct(self, q: float) -> float:
        s = sorted(self.samples_ms)
        return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]

    @property
    def p50(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def p99(self) -> float:
        return self.pct(0.99)


def _text_of(res: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in (res.content or []))[:300]


Prepare = Callable[[Any, dict[str, dict[str, Any]]], Awaitable[list[Op]]]


@dataclass
class Server:
    """A server to start over stdio; ``prepare`` readies it and returns its ops."""

    name: str
    command: str
    args: list[str]
    env: dict[str, str]
    prepare: Prepare
    ops: list[Op] = field(default_factory=list)
    error: str | None = None


async def _call(s: Any, op: Op, i: int, check: bool = False) -> float:
    a = op.args(i)
    t0 = time.perf_counter_ns()
    res = await s.call_tool(op.tool, a, read_timeout_seconds=120)
    dt = (time.perf_counter_ns() - t0) / 1e6
    if res.is_error:
        raise RuntimeError(f"{op.tool}({a}) failed: {_text_of(res)}")
    if check and op.expect and not op.expect(res):
        raise RuntimeError(f"{op.tool}({a}) replied unexpectedly: {_text_of(res)}")
    return dt


def _sc(res: Any) -> dict[str, Any]:
    """Structured content, or a payload tool's facts (its text is the only copy)."""
    return res.structured_content or (getattr(res, "meta", None) or {}).get("coderx/facts", {})


def _lines(res: Any) -> list[str]:
    return "".join(getattr(c, "text", "") for c in res.content or []).splitlines()


def _leaf(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"[:300]


async def measure(servers: list[Server], warmup: int, n: int, errlog: Any,
                  after: Callable[[Any], Awaitable[Any]] | None = None,
                  keep: Callable[[Op], bool] | None = None) -> None:
    """Start every server, warm each op up, then time N rounds of one call per op.

    Interleaving the ops round by round exposes each of them equally to background noise,
    so the comparisons (ours vs noop, ours vs the reference servers) stay fair.
    """
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    async with AsyncExitStack() as stack:
        live: list[tuple[Any, Op]] = []
        for srv in servers:
            for _attempt in range(3):  # a start can fail on a transient Docker race
                sub = AsyncExitStack()
                try:
                    params = StdioServerParameters(command=srv.command, args=srv.args,
                                                   env=srv.env)
                    r, w = await sub.enter_async_context(stdio_client(params, errlog=errlog))
                    s = await sub.enter_async_context(ClientSession(r, w))
                    await s.initialize()
                    schemas = {t.name: t.input_schema or {}
                               for t in (await s.list_tools()).tools}
                    srv.ops = await srv.prepare(s, schemas)
                    srv.error = None
                    break
                except Exception as exc:
                    srv.error = f"server failed: {_leaf(exc)} (see the server log)"
                    with contextlib.suppress(BaseException):
                        await sub.aclose()
            if srv.error:
                continue
            stack.push_async_exit(sub)
            if keep is not None:
                srv.ops = [op for op in srv.ops if keep(op)]
            for op in srv.ops:
                if op.tool not in schemas:
                    op.error = f"no tool {op.tool!r} (has: {', '.join(sorted(schemas))})"
                else:
                    live.append((s, op))
        for s, op in live:
            try:
                for i in range(warmup):
                    await _call(s, op, i, check=i == 0)
            except Exception as exc:
                op.error = _leaf(exc)
        live = [(s, op) for s, op in live if not op.error]
        for i in range(warmup, warmup + n):
            for s, op in live:
                if op.error:
                    continue
                try:
                    op.samples_ms.append(await _call(s, op, i))
                except Exception as exc:
                    op.error = _leaf(exc)
                    op.samples_ms.clear()
        if after is not None:
            for s in {id(s): s for s, _ in live}.values():
                await after(s)


def _self(name: str) -> list[str]:
    return [str(Path(__file__).resolve()), "--serve", name]


def _swap(host_file: Path) -> tuple[str, str]:
    """(old, new): whichever marker the file holds now becomes the other one, so every call
    changes the file. Read on the host before the timer starts."""
    return (EDIT_A, EDIT_B) if EDIT_A in host_file.read_text() else (EDIT_B, EDIT_A)


def coderx_edit(ws: Path) -> Callable[[int], dict[str, Any]]:
    def args(i: int) -> dict[str, Any]:
        old, new = _swap(ws / "edit_coderx.py")
        return {"path": "edit_coderx.py", "old_string": old, "new_string": new}
    return args


def node_edit(ws: Path) -> Callable[[int], dict[str, Any]]:
    def args(i: int) -> dict[str, Any]:
        old, new = _swap(ws / "edit_node.py")
        return {"path": str(ws / "edit_node.py"), "edits": [{"oldText": old, "newText": new}]}
    return args


def prepare_coderx(ws: Path) -> Prepare:
    """Open the default session (the slow first call), read the edit target once, and wait
    for the warm pool to refill so no container starts during the timed calls."""
    async def prepare(s: Any, schemas: dict[str, dict[str, Any]]) -> list[Op]:
        await _ready_coderx(s, schemas)
        return coderx_ops(ws, schemas)
    return prepare


async def _ready_coderx(s: Any, schemas: dict[str, dict[str, Any]]) -> None:
    from coderx_mcp.config import Settings

    res = await s.call_tool("read_file", {"path": "edit_coderx.py"}, read_timeout_seconds=120)
    if res.is_error:
        raise RuntimeError(f"read_file failed: {_text_of(res)}")
    want, deadline = Settings().pool_size, time.monotonic() + 60
    while want and "health" in schemas and time.monotonic() < deadline:
        health = await s.call_tool("health", {})
        if (health.structured_content or {}).get("warm_pool_ready", 0) >= want:
            break
        await asyncio.sleep(0.2)


def coderx_ops(ws: Path, schemas: dict[str, dict[str, Any]]) -> list[Op]:
    grep_args = {"pattern": GREP_PATTERN, "output_mode": "files_with_matches"}
    if "path" in schemas.get("grep", {}).get("properties", {}):
        grep_args["path"] = "tree"
    return [
        Op("noop", "coderx", "noop", lambda i: {}, "do-nothing tool through our decorator"),
        Op("read_file 10 KB", "coderx", "read_file", lambda i: {"path": "read10k.txt"},
           expect=lambda r: _sc(r).get("size") == 10240),
        Op("edit_file", "coderx", "edit_file",
           coderx_edit(ws), expect=lambda r: _sc(r).get("replacements") == 1),
        Op("grep 300 files", "coderx", "grep", lambda i: grep_args,
           f"content regex {GREP_PATTERN!r}: 30 of 300 files match",
           expect=lambda r: _sc(r).get("total") == 30),
        Op('run_command "echo hi"', "coderx", "run_command", lambda i: {"command": "echo hi"},
           "inside the Docker sandbox",
           expect=lambda r: _text_of(r).startswith("$ echo hi\nhi\nexit 0")),
    ]


def prepare_node(ws: Path) -> Prepare:
    async def prepare(s: Any, schemas: dict[str, dict[str, Any]]) -> list[Op]:
        read_tool = "read_text_file" if "read_text_file" in schemas else "read_file"
        return [
            Op("read_file 10 KB", "node-fs", read_tool,
               lambda i: {"path": str(ws / "read10k.txt")}, f"tool {read_tool}",
               expect=lambda r: len(_lines(r)) == 200),
            Op("edit_file", "node-fs", "edit_file", node_edit(ws),
               expect=lambda r: EDIT_B in "\n".join(_lines(r))),
            Op("grep 300 files", "node-fs", "search_files",
               lambda i: {"path": str(ws / "tree"), "pattern": "**/mod?0.py"},
               "search_files: a NAME glob ('**/mod?0.py', same 30 files), reads no content",
               expect=lambda r: len(_lines(r)) == 30),
        ]
    return prepare


async def prepare_fastmcp(s: Any, schemas: dict[str, dict[str, Any]]) -> list[Op]:
    return [Op("noop", "fastmcp", "noop", lambda i: {}, "plain FastMCP, no middleware")]


async def prepare_shell(s: Any, schemas: dict[str, dict[str, Any]]) -> list[Op]:
    return [Op('run_command "echo hi"', "py-shell", "run_command",
               lambda i: {"command": "echo hi"},
               "unisolated subprocess.run(shell=True) on the host (mcp SDK MCPServer)",
               expect=lambda r: "hi" in _lines(r))]


def targets(by: dict[tuple[str, str], Op]) -> list[tuple[Op, str, bool | None]]:
    """Each of our ops with its target text and verdict (None: not measurable)."""
    out: list[tuple[Op, str, bool | None]] = []

    def get(op: str, srv: str) -> Op | None:
        o = by.get((op, srv))
        return o if o and o.samples_ms else None

    noop, read = get("noop", "coderx"), get("read_file 10 KB", "coderx")
    edit, run = get("edit_file", "coderx"), get('run_command "echo hi"', "coderx")
    node_read, shell = get("read_file 10 KB", "node-fs"), get('run_command "echo hi"', "py-shell")
    plain = get("noop", "fastmcp")
    if read and noop:
        out.append((read, f"p50 <= noop p50 + 0.6 = {noop.p50 + 0.6:.2f}",
                    read.p50 <= noop.p50 + 0.6))
    if read and plain:  # the issue's own words: do-nothing FastMCP + 0.6 ms
        out.append((read, f"p50 <= fastmcp noop p50 + 0.6 = {plain.p50 + 0.6:.2f}",
                    read.p50 <= plain.p50 + 0.6))
    if read and node_read:
        out.append((read, f"p50 <= 3x node-fs read p50 = {3 * node_read.p50:.2f}",
                    read.p50 <= 3 * node_read.p50))
    if edit and noop:
        out.append((edit, f"p50 <= noop p50 + 1 = {noop.p50 + 1:.2f}", edit.p50 <= noop.p50 + 1))
    if run and shell:
        out.append((run, f"p50 <= py-shell p50 = {shell.p50:.2f}", run.p50 <= shell.p50))
    for o in (noop, read, edit, get("grep 300 files", "coderx"), run):
        if o:
            out.append((o, f"p99 <= 3x p50 = {3 * o.p50:.2f}", o.p99 <= 3 * o.p50))
    return out


def print_table(servers: list[Server], checks: list[tuple[Op, str, bool | None]]) -> None:
    ops = [o for srv in servers for o in srv.ops]
    by_op: dict[int, list[tuple[str, bool | None]]] = {}
    for o, t, ok in checks:
        by_op.setdefault(id(o), []).append((t, ok))
    head = f"{'operation':<24} {'server':<9} {'p50 ms':>8} {'p99 ms':>8}  {'target':<40} verdict"
    print(head)
    print("-" * len(head))
    for srv in servers:
        if srv.error:
            print(f"{'*':<24} {srv.name:<9} {'-':>8} {'-':>8}  ERROR: {srv.error}")
    for o in ops:
        if o.error:
            print(f"{o.operation:<24} {o.server:<9} {'-':>8} {'-':>8}  ERROR: {o.error}")
            continue
        rows = by_op.get(id(o)) or [(o.note, None)]
        for k, (t, ok) in enumerate(rows):
            verdict = "" if ok is None else ("PASS" if ok else "FAIL")
            lead = (f"{o.operation:<24} {o.server:<9} {o.p50:8.2f} {o.p99:8.2f}" if k == 0
                    else " " * 52)
            print(f"{lead}  {t:<40} {verdict}")
    notes = [f"  {o.server} {o.operation}: {o.note}" for o in ops
             if o.note and not o.error and id(o) in by_op]
    notes.append("  node-fs and py-shell run on the host without isolation; coderx runs every "
                 "file op and command in its Docker sandbox.")
    if notes:
        print("notes:")
        print("\n".join(notes))


# --------------------------------------------------------------------------- profile

class _ServerClock(Middleware):
    """Outermost middleware: (server ms, runner ms) of every tools/call."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self.runner_ns = 0

    async def on_call_tool(self, context: Any, call_next: Any) -> Any:
        self.runner_ns = 0
        t0 = time.perf_counter_ns()
        try:
            return await call_next(context)
        finally:
            self.samples.append(((time.perf_counter_ns() - t0) / 1e6, self.runner_ns / 1e6))


async def _retry(start: Callable[[], Awaitable[Any]], attempts: int = 3) -> None:
    """Start something that can fail on a transient Docker race (reaping while another
    process removes containers); try again a couple of times."""
    for k in range(attempts):
        try:
            await start()
            return
        except Exception:
            if k == attempts - 1:
                raise
            await asyncio.sleep(0.5)


async def _timed(fn: Callable[[int], Awaitable[Any]], warmup: int, n: int) -> float:
    t: list[float] = []
    for i in range(warmup + n):
        t0 = time.perf_counter_ns()
        await fn(i)
        if i >= warmup:
            t.append((time.perf_counter_ns() - t0) / 1e6)
    return statistics.median(t)


async def breakdown(ws: Path, warmup: int, n: int, errlog: Any) -> dict[str, Any]:
    """Where our calls' time goes (p50 ms): the runner alone, the server in process, and a
    cProfile of the stdio server over read_file calls."""
    import base64

    from fastmcp import Client

    from coderx_mcp.config import Settings
    from coderx_mcp.logs import configure_logging
    from coderx_mcp.sandbox.backends import make_backend
    from coderx_mcp.sandbox.instance import Instance
    from coderx_mcp.server import build_server
    from coderx_mcp.sessions import Session, SessionManager
    from coderx_mcp.tools.common import Out, result, tool

    configure_logging("warning")  # this process hosts sessions now: keep the table clean
    settings = Settings(workspace=ws, backend="docker")
    out: dict[str, Any] = {}

    # 1. Runner round trips alone: Session.call without MCP (what each tool adds at least).
    manager = SessionManager(settings, make_backend(settings, Instance.current()))
    await _retry(manager.start)
    try:
        sess = await manager.resolve(None, "bench")
        blob = base64.b64encode((ws / "read10k.txt").read_bytes()[:6000]).decode()
        runner = {
            "runner read 10 KB": lambda i: sess.call("read", path="read10k.txt",
                                                     max_bytes=1 << 24),
            "runner write 6 KB": lambda i: sess.call("write", path="scratch.txt", data=blob),
            "runner exec echo hi": lambda i: sess.call(
                "exec", command="echo hi", timeout=60, cap=30000, return_after=50),
        }
        for label, fn in runner.items():
            out[label] = await _timed(fn, warmup, n)
    finally:
        await manager.shutdown()

    # 2. The same server in process: FastMCP's memory transport (no pipes, no JSON text),
    # with a timing middleware outermost and Session.call timed: server time and runner
    # time of each call, exactly, without a profiler's distortion.
    mcp = build_server(settings)

    @tool(mcp, out=Out, read_only=True, idempotent=True)
    async def noop() -> Any:
        """Do nothing."""
        return result(Out(session="-"), "ok")

    clock = _ServerClock()
    mcp.middleware.insert(0, clock)
    real_call = Session.call

    async def timed_call(self: Session, op: str, **args: Any) -> dict[str, Any]:
        t0 = time.perf_counter_ns()
        try:
            return await real_call(self, op, **args)
        finally:
            clock.runner_ns += time.perf_counter_ns() - t0

    client = Client(mcp)
    await _retry(client.__aenter__)
    Session.call = timed_call  # type: ignore[method-assign]
    try:
        async with AsyncExitStack() as stack:
            stack.push_async_exit(client)
            await client.call_tool("read_file", {"path": "edit_coderx.py"})
            deadline = time.monotonic() + 60  # no container start during the timed calls
            while settings.pool_size and time.monotonic() < deadline:
                health = await client.call_tool("health", {})
                if (health.structured_content or {}).get("warm_pool_ready", 0) >= 1:
                    break
                await asyncio.sleep(0.2)
            edit = coderx_edit(ws)
            calls: dict[str, Callable[[int], dict[str, Any]]] = {
                "noop": lambda i: {}, "read_file": lambda i: {"path": "read10k.txt"},
                "edit_file": edit, "run_command": lambda i: {"command": "echo hi"},
            }
            for name, args in calls.items():
                clock.samples.clear()
                rt = await _timed(lambda i, name=name, args=args:  # type: ignore[misc]
                                  client.call_tool(name, args(i)), warmup, n)
                srv_ms = statistics.median(x for x, _ in clock.samples[warmup:])
                run_ms = statistics.median(y for _, y in clock.samples[warmup:])
                out[f"in-process {name}"] = {
                    "round trip": rt, "server (outermost middleware)": srv_ms,
                    "runner (Session.call)": run_ms, "server minus runner": srv_ms - run_ms,
                }
    finally:
        Session.call = real_call  # type: ignore[method-assign]

    # 3. Experiment: the same stdio servers with asyncio pipes instead of worker threads.
    pipes_env = {**os.environ, "BENCH_ASYNCIO_STDIO": "1"}
    pipes = [
        Server("fastmcp", sys.executable, _self("fastmcp"), dict(os.environ), prepare_fastmcp),
        Server("fastmcp+pipes", sys.executable, _self("fastmcp"), pipes_env, prepare_fastmcp),
        Server("coderx", sys.executable, _self("coderx"),
               {**os.environ, "CODERX_WORKSPACE": str(ws), "CODERX_BACKEND": "docker"},
               prepare_coderx(ws)),
        Server("coderx+pipes", sys.executable, _self("coderx"),
               {**pipes_env, "CODERX_WORKSPACE": str(ws), "CODERX_BACKEND": "docker"},
               prepare_coderx(ws)),
    ]
    await measure(pipes, warmup, n, errlog,
                  keep=lambda o: o.operation in ("noop", "read_file 10 KB"))
    for srv in pipes:
        for o in srv.ops:
            if o.samples_ms:
                out[f"stdio {o.operation} [{srv.name}]"] = o.p50

    # 4. cProfile of the stdio server process over n calls of read_file, then of edit_file.
    RESULTS.mkdir(parents=True, exist_ok=True)
    edit_op = Op("edit_file", "coderx", "edit_file", coderx_edit(ws))
    read_op = Op("read_file", "coderx", "read_file", lambda i: {"path": "read10k.txt"})
    for op in (read_op, edit_op):
        out[f"stdio {op.tool} under cProfile"] = await _profiled(ws, op, warmup, n, errlog, out)
    return out


async def _client_check_ms(s: Any, tool_name: str, args: dict[str, Any]) -> float:
    """p50 of the client's own output-schema validation of one reply (jsonschema, cached
    validator): a cost every SDK client pays per call, included in the round trips above."""
    res = await s.call_tool(tool_name, args)
    return await _timed(lambda i: s.validate_tool_result(tool_name, res), 20, 200)


async def _profiled(ws: Path, op: Op, warmup: int, n: int, errlog: Any,
                    out: dict[str, Any]) -> Any:
    """p50 of ``op`` over stdio with the server under cProfile (only the timed calls)."""
    import io
    import pstats

    prof_path = RESULTS / f"profile_{op.tool}.prof"
    env = {**os.environ, "CODERX_WORKSPACE": str(ws), "CODERX_BACKEND": "docker",
           "BENCH_PROFILE": str(prof_path)}
    start = Op("profile start", "coderx", "bench_profile", lambda i: {"action": "start"})
    stop = Op("profile stop", "coderx", "bench_profile", lambda i: {"action": "stop"})

    async def prepare(s: Any, schemas: dict[str, dict[str, Any]]) -> list[Op]:
        await _ready_coderx(s, schemas)
        for i in range(warmup):
            await _call(s, op, i)
        for name, args in (("noop", {}), (op.tool, op.args(0))):
            out[f"client schema check {name}"] = await _client_check_ms(s, name, args)
        await _call(s, start, 0)
        return [op]

    srv = Server("coderx", sys.executable, _self("coderx"), env, prepare)
    await measure([srv], 0, n, errlog, after=lambda s: _call(s, stop, 0))
    if srv.error or op.error:
        return srv.error or op.error
    buf = io.StringIO()
    st = pstats.Stats(str(prof_path), stream=buf)
    st.sort_stats("tottime").print_stats(40)
    st.sort_stats("cumulative").print_stats(80)
    (RESULTS / f"profile_{op.tool}.txt").write_text(buf.getvalue())
    return f"{op.p50:.2f} (listing: bench/results/profile_{op.tool}.txt)"


def print_breakdown(prof: dict[str, Any]) -> None:
    print("\nwhere our time goes (p50 ms; stdio rows above include the stdio transport):")
    for k, v in prof.items():
        if isinstance(v, dict):
            print(f"  {k:<32} " + ", ".join(f"{a} {b:.2f}" for a, b in v.items()))
        else:
            print(f"  {k:<32} {v if isinstance(v, str) else f'{v:.2f}'}")


# --------------------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="60 timed calls per op (default 300)")
    ap.add_argument("-n", type=int, default=None, help="timed calls per op")
    ap.add_argument("--warmup", type=int, default=30, help="warm-up calls per op")
    ap.add_argument("--json", action="store_true", help="also write bench/results/mcp.json")
    ap.add_argument("--profile", action="store_true", help="break down one read_file call")
    ap.add_argument("--serve", choices=sorted(SERVERS), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        SERVERS[a.serve]()
        return
    n = a.n or (60 if a.quick else 300)
    node_version = ensure_node_server()
    ws = Path(tempfile.mkdtemp(prefix="coderx-bench-"))
    errlog_path = Path(tempfile.gettempdir()) / "coderx-bench-servers.log"
    try:
        files = make_scratch(ws)
        with open(errlog_path, "w") as errlog:
            servers = servers_for(ws)
            asyncio.run(measure(servers, a.warmup, n, errlog))
            prof = asyncio.run(breakdown(ws, a.warmup, n, errlog)) if a.profile else None
        ops = [o for srv in servers for o in srv.ops]
        checks = targets({(o.operation, o.server): o for o in ops})
        print(f"MCP round trip over stdio: {n} rounds of one call per op, after {a.warmup} "
              f"warm-up calls each (one client for all: mcp SDK ClientSession).\n"
              f"Server logs: {errlog_path}")
        print_table(servers, checks)
        if prof:
            print_breakdown(prof)
        if a.json:
            RESULTS.mkdir(parents=True, exist_ok=True)
            doc = {
                "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "n": n, "warmup": a.warmup,
                "env": _env(node_version), "files": files,
                "results": [{"operation": o.operation, "server": o.server, "tool": o.tool,
                             "p50_ms": None if o.error else round(o.p50, 3),
                             "p99_ms": None if o.error else round(o.p99, 3),
                             "mean_ms": (None if o.error
                                         else round(statistics.fmean(o.samples_ms), 3)),
                             "note": o.note, "error": o.error} for o in ops],
                "targets": [{"operation": o.operation, "server": o.server, "target": t,
                             "pass": ok} for o, t, ok in checks],
                "server_errors": {srv.name: srv.error for srv in servers if srv.error},
                "profile": prof,
            }
            (RESULTS / "mcp.json").write_text(json.dumps(doc, indent=2) + "\n")
            print(f"wrote {RESULTS / 'mcp.json'}")
        if (any(ok is False for _, _, ok in checks) or any(o.error for o in ops)
                or any(srv.error for srv in servers)):
            sys.exit(1)
    finally:
        shutil.rmtree(ws, ignore_errors=True)


def servers_for(ws: Path) -> list[Server]:
    py, env = sys.executable, dict(os.environ)
    ours_env = {**env, "CODERX_WORKSPACE": str(ws), "CODERX_BACKEND": "docker"}
    return [
        Server("coderx", py, _self("coderx"), ours_env, prepare_coderx(ws)),
        Server("fastmcp", py, _self("fastmcp"), env, prepare_fastmcp),
        Server("py-shell", py, _self("py-shell"), env, prepare_shell),
        Server("node-fs", "node", [str(NODE_ENTRY), str(ws)], env, prepare_node(ws)),
    ]


def _env(node_version: str) -> dict[str, Any]:
    import fastmcp
    import mcp

    def ver(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
        except OSError:
            return "?"

    return {"python": platform.python_version(), "fastmcp": fastmcp.__version__,
            "mcp": getattr(mcp, "__version__", None) or _dist_version("mcp"),
            "node": ver(["node", "--version"]), "server-filesystem": node_version,
            "cpus": os.cpu_count(), "platform": platform.platform(),
            "docker": ver(["docker", "version", "--format", "{{.Server.Version}}"])}


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    main()
