"""The request dispatcher: one ``op_*`` method per protocol op, replies as JSON lines."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, BinaryIO, Protocol

from . import PROTOCOL_VERSION
from .errors import BadRequest, RunnerError, UnknownProcess
from .files import NotQuick, Paths, file_list, file_read, file_stat, file_write
from .procs import Proc, ProcTable, group_members, unsettled, utf8_whole
from .shell import Shell


class Channel(Protocol):
    """Where replies to one channel's requests go."""

    async def send(self, msg: dict[str, Any]) -> None:
        """Write one reply line."""


def _line(msg: dict[str, Any]) -> bytes:
    return (json.dumps(msg, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


class StdoutChannel:
    """Replies on the runner's private stdout (a blocking pipe: one write per line)."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out

    async def send(self, msg: dict[str, Any]) -> None:
        self._out.write(_line(msg))
        self._out.flush()


QUICK_BYTES = 1 << 20
"""File data up to which a read or write is answered at once, where its request is read."""


def _parse(line: bytes) -> dict[str, Any] | None:
    """One request line, or None (reported on stderr) when it is not a request."""
    try:
        req = json.loads(line)
        if not isinstance(req, dict) or not isinstance(req.get("id"), int):
            raise ValueError("request must be an object with an integer id")
    except ValueError as exc:
        sys.stderr.write(f"coderx-runner: bad request line: {exc}\n")
        return None
    return req


def _error_reply(rid: Any, exc: Exception) -> dict[str, Any]:
    if isinstance(exc, RunnerError):
        return {"id": rid, "ok": False, "error": {
            "type": exc.kind, "message": str(exc), "details": exc.details}}
    if isinstance(exc, (KeyError, TypeError, ValueError)):
        return {"id": rid, "ok": False, "error": {
            "type": "BadRequest", "message": f"bad request: {type(exc).__name__}: {exc}"}}
    if isinstance(exc, OSError):
        return {"id": rid, "ok": False, "error": {
            "type": "OSError", "message": f"{exc.strerror or exc} ({exc.errno})",
            "details": {"errno": exc.errno}}}
    return {"id": rid, "ok": False, "error": {  # never let one request kill the runner
        "type": "RunnerError", "message": f"{type(exc).__name__}: {exc}"}}


class LinkChannel:
    """Replies on the host's link socket, written whole under one lock: the link thread
    answers quick requests itself while the event loop answers the others."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()

    def send_now(self, msg: dict[str, Any]) -> None:
        """Write one reply line, blocking until the socket took it."""
        self._send(_line(msg))

    async def send(self, msg: dict[str, Any]) -> None:
        data = _line(msg)
        if len(data) > (1 << 16):  # the host reads it as it comes: keep the loop serving
            await asyncio.to_thread(self._send, data)
        else:
            self._send(data)

    def _send(self, data: bytes) -> None:
        with self._lock:
            self._sock.sendall(data)


class Runner:
    """Dispatches requests; owns the process table and the shell state of the session."""

    def __init__(self, root: str, state_dir: str, undumpable: bool = False) -> None:
        self.paths = Paths(root)
        self.undumpable = undumpable  # reported in hello: the channel is private
        self.state_dir = state_dir
        self.spool = os.path.join(state_dir, "spool")
        os.makedirs(self.spool, mode=0o700, exist_ok=True)
        self.tasks: dict[Any, asyncio.Task[None]] = {}
        self.shell = Shell(self.paths.root, state_dir, self.spool)
        self.procs = ProcTable(self.paths, self.shell, self.spool)
        self.background: set[asyncio.Future[Any]] = set()

    def close(self) -> None:
        """The host went away: no more waiting bashes, and no process outlives the runner."""
        self.shell.close()
        self.procs.kill_all()

    # -- transport ---------------------------------------------------------
    async def serve(self, requests: asyncio.StreamReader, channel: Channel) -> None:
        """Read requests from one channel until it ends; each reply goes back on it."""
        while True:
            line = await requests.readline()
            if not line:
                return  # the host went away (or closed this channel)
            req = _parse(line)
            if req is None:
                continue
            msg = self.quick_answer(req)
            if msg is not None:
                with contextlib.suppress(OSError):
                    await channel.send(msg)
            else:
                self.dispatch(req, channel)

    def serve_link(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        """The link thread: read requests with blocking I/O (no event-loop turn between
        the socket and the answer: on a VM each turn is a wake-up), answer quick ones here,
        hand the rest to the loop. Ends when the host closes the link."""
        channel = LinkChannel(sock)
        with contextlib.suppress(OSError, RuntimeError), sock.makefile("rb") as requests:
            for line in requests:
                req = _parse(line)
                if req is None:
                    continue
                msg = self.quick_answer(req)
                if msg is not None:
                    channel.send_now(msg)
                else:  # RuntimeError once the loop is closed: the runner is exiting
                    loop.call_soon_threadsafe(self.dispatch, req, channel)

    def quick_answer(self, req: dict[str, Any]) -> dict[str, Any] | None:
        """The reply to a request answered at once where it is read, or None when the
        event loop must answer it (see :meth:`quick`)."""
        body = self.quick(req)
        if body is None:
            return None
        try:
            return {"id": req.get("id"), "ok": True, "result": body()}
        except NotQuick:  # a read of a file past QUICK_BYTES: the loop's worker thread
            return None
        except Exception as exc:
            return _error_reply(req.get("id"), exc)

    def quick(self, req: dict[str, Any]) -> Callable[[], dict[str, Any]] | None:
        """The body of a request answered at once where it is read (no process, no wait,
        at most ``QUICK_BYTES`` of file data; thread-safe: no runner state), else None."""
        op = req.get("op")
        if op == "hello":
            return self._hello
        if op == "stat":
            return lambda: file_stat(self.paths, req)
        if op == "read" and not req.get("big"):
            return lambda: file_read(self.paths, req, QUICK_BYTES)
        data = req.get("data")
        if op == "write" and isinstance(data, str) and len(data) <= QUICK_BYTES:
            return lambda: file_write(self.paths, req)
        return None

    def dispatch(self, req: dict[str, Any], channel: Channel) -> None:
        """Start answering a request on the event loop."""
        self.tasks[req["id"]] = asyncio.ensure_future(self.handle(req, channel))

    async def handle(self, req: dict[str, Any], channel: Channel) -> None:
        rid = req.get("id")
        try:
            op = req.get("op")
            fn = getattr(self, f"op_{op}", None)
            if fn is None:
                raise BadRequest(f"unknown op {op!r}")
            result = await fn(req)
            msg: dict[str, Any] = {"id": rid, "ok": True, "result": result}
        except asyncio.CancelledError:
            msg = {"id": rid, "ok": False,
                   "error": {"type": "Cancelled", "message": "request cancelled"}}
        except Exception as exc:
            msg = _error_reply(rid, exc)
        finally:
            self.tasks.pop(rid, None)
        with contextlib.suppress(OSError):  # the host hung up: no one to tell
            await channel.send(msg)

    async def op_link(self, req: dict[str, Any]) -> dict[str, Any]:
        """Connect to the host's unix socket ``path`` and serve requests there too.

        The host listens on a socket it mounted into the sandbox and names it here, with a
        one-time ``token`` the runner sends first (this request arrives on the private
        stdin, so no sandbox process can learn it). Replies then skip the engine's exec
        relay: one hop each way instead of three. stdin stays open: its end still ends
        the runner.
        """
        path, token = req["path"], req["token"]
        if not isinstance(path, str) or not isinstance(token, str) or "\n" in token:
            raise BadRequest("link needs a socket path and a one-line token")
        # Python sockets are close-on-exec: no command the runner starts inherits this one.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(10)  # a local listener accepts at once; never hang the loop
            sock.connect(path)
            sock.sendall(token.encode() + b"\n")
            sock.settimeout(None)
        except OSError:
            sock.close()
            raise
        threading.Thread(target=self.serve_link, args=(sock, asyncio.get_running_loop()),
                         name="coderx-link", daemon=True).start()
        return {"linked": True}

    # -- simple ops ----------------------------------------------------------
    async def op_hello(self, req: dict[str, Any]) -> dict[str, Any]:
        return self._hello()

    def _hello(self) -> dict[str, Any]:
        return {"protocol": PROTOCOL_VERSION, "pid": os.getpid(), "uid": os.getuid(),
                "gid": os.getgid(), "root": self.paths.root, "python": sys.version.split()[0],
                "undumpable": self.undumpable}

    async def op_cancel(self, req: dict[str, Any]) -> dict[str, Any]:
        task = self.tasks.get(req["target"])
        if task is not None:
            task.cancel()
        return {"cancelled": task is not None}

    # Reads and writes of at most QUICK_BYTES, and stats, are answered where their request
    # is read (quick_answer); what reaches these ops is big work, done in a worker thread so
    # cancel and other requests are still served.
    async def op_read(self, req: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(file_read, self.paths, req)

    async def op_write(self, req: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(file_write, self.paths, req)

    async def op_stat(self, req: dict[str, Any]) -> dict[str, Any]:
        return file_stat(self.paths, req)

    async def op_list(self, req: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(file_list, self.paths, req)

    # -- processes -----------------------------------------------------------
    async def op_exec(self, req: dict[str, Any]) -> dict[str, Any]:
        """Run a shell command like one terminal: cwd and exports persist between calls.

        ``stdout_limit`` (optional, bytes) kills the process group once its stdout reaches
        that size; the reply then says ``stopped_at_limit`` (a search that found enough).
        """
        timeout = float(req.get("timeout", 120))
        return_after = req.get("return_after")
        cap = int(req.get("cap", 30000))
        # The host may choose the output id, to follow the output while the call runs.
        proc = await self.procs.start("exec", req["command"], req.get("cwd"), req.get("env"),
                                      False, req.get("argv"), req.get("output_id"))
        assert proc.popen is not None
        proc.internal = req.get("argv") is not None  # the server's own argv commands
        if req.get("stdout_limit") is not None:  # set before any output is read
            proc.stdout_limit = int(req["stdout_limit"])
        wait = timeout if return_after is None else min(timeout, float(return_after))
        try:
            finished = await proc.wait(wait)
        except asyncio.CancelledError:
            proc.killed = True
            await self.procs.terminate(proc)
            raise
        if not finished:
            if wait < timeout:
                # Deadline-aware call: hand the still-running command over as a
                # background process; its own timeout keeps running.
                proc.kind = "spawn"
                self._background(self._deadline(proc, timeout - wait))
                return self.procs.report(proc, cap, foreground=False)
            proc.timed_out = True
            await self.procs.terminate(proc)
        elif req.get("argv") is None and proc.leftovers():
            # `cmd &` left processes running: they become a background process of the
            # session under this output id (listed, readable, killable, ended with the
            # session), never a silent kill.
            proc.adopted = True
            proc.kind = "spawn"
            await _settled(proc.popen.pid)
        else:
            self.procs.kill_group(proc)  # an internal command's leftovers never outlive it
        foreground = req.get("argv") is None
        if foreground:
            self.shell.adopt(proc.path("state"))
        with contextlib.suppress(asyncio.TimeoutError):
            # Adopted processes may hold the pipes for good: take what is there now.
            await asyncio.wait_for(proc.drained.wait(), 0.05 if proc.adopted else 0.5)
        report = self.procs.report(proc, cap, foreground=foreground)
        # Replacement bashes start a moment after this reply (Popen holds the runner for a
        # few hundred microseconds, which a request arriving right away would wait for); the
        # second waiting bash serves back-to-back calls meanwhile.
        asyncio.get_running_loop().call_later(0.002, self.shell.spawn_zygotes)
        return report

    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _deadline(self, proc: Proc, remaining: float) -> None:
        if not await proc.wait(remaining):
            proc.timed_out = True
            await self.procs.terminate(proc)

    async def op_spawn(self, req: dict[str, Any]) -> dict[str, Any]:
        proc = await self.procs.start("spawn", req["command"], req.get("cwd"), req.get("env"), True)
        assert proc.popen is not None
        if req.get("timeout"):
            self._background(self._deadline(proc, float(req["timeout"])))
        return {"output_id": proc.id, "pid": proc.popen.pid}

    def _proc(self, req: dict[str, Any]) -> Proc:
        proc = self.procs.by_id.get(req.get("output_id", ""))
        if proc is None:
            raise UnknownProcess(f"no process or output with id {req.get('output_id')!r}")
        return proc

    async def op_output(self, req: dict[str, Any]) -> dict[str, Any]:
        """Bytes of a spool from an offset (text, decoded leniently) plus the run state.

        ``wait`` waits for the exit, or with ``until_output`` for bytes past ``offset``.
        ``tail`` reads the last N bytes instead of from ``offset``; ``lines`` keeps at most
        that many whole lines of what was read (the first ones, or the last with ``tail``).
        """
        proc = self._proc(req)
        stream = req.get("stream", "all")
        if stream not in proc.sizes:
            raise BadRequest(f"stream must be stdout, stderr or all, not {stream!r}")
        wait = float(req.get("wait", 0))
        offset = max(0, int(req.get("offset", 0)))
        if wait > 0 and proc.running:
            if req.get("until_output"):
                end = time.monotonic() + wait
                while proc.sizes[stream] <= offset and time.monotonic() < end:
                    step = min(0.05, end - time.monotonic())
                    if proc.exited.done():  # adopted leftovers: poll until they end
                        if not proc.running:
                            break
                        await asyncio.sleep(step)
                    elif await proc.wait(step):
                        break
            else:
                await proc.wait(wait)
        limit = max(0, int(req.get("limit", 65536)))
        kept = min(proc.sizes[stream], self.procs.spool_cap)
        if req.get("tail") is not None:
            limit = max(0, int(req["tail"]))
            offset = max(0, kept - limit)
        data = b""
        if kept > offset:
            with open(proc.path(stream), "rb") as f:
                f.seek(offset)
                data = f.read(min(limit, kept - offset))
            if req.get("tail") is None and (proc.running or offset + len(data) < kept):
                # A page never ends inside a UTF-8 character: the next page starts with
                # it, so no byte is lost to a replacement character between pages.
                data = data[:utf8_whole(data)]
        if req.get("lines") is not None and data:
            keep = max(0, int(req["lines"]))
            if req.get("tail") is None:
                cut = 0
                for _ in range(keep):
                    nl = data.find(b"\n", cut)
                    cut = len(data) if nl < 0 else nl + 1
                data = data[:cut]
            else:
                cut = len(data) - 1  # a final newline ends the last line, not a new one
                for _ in range(keep):
                    cut = data.rfind(b"\n", 0, cut)
                    if cut < 0:
                        break
                if cut >= 0:
                    offset += cut + 1
                    data = data[cut + 1:]
        return {"output_id": proc.id, "stream": stream, "offset": offset,
                "next_offset": offset + len(data), "total_bytes": proc.sizes[stream],
                "text": data.decode("utf-8", "replace"), "running": proc.running,
                "timed_out": proc.timed_out, **proc.exit_info(), "command": proc.command}

    async def op_grep_output(self, req: dict[str, Any]) -> dict[str, Any]:
        proc = self._proc(req)
        cap = int(req.get("max_matches", 200))
        path = proc.path(req.get("stream", "all"))
        hits: list[dict[str, Any]] = []
        total = 0
        if os.path.exists(path):
            async for n, line in _rg_lines(req["pattern"], path):
                total += 1
                if len(hits) < cap:
                    hits.append({"line": n, "text": line[:2000]})
        return {"output_id": proc.id, "matches": hits, "total_matches": total,
                "truncated": total > len(hits)}

    async def op_send(self, req: dict[str, Any]) -> dict[str, Any]:
        proc = self._proc(req)
        if not proc.running or proc.popen is None or proc.popen.stdin is None:
            raise UnknownProcess(f"process {proc.id!r} is not running or takes no input")
        data = req["text"].encode()
        stdin = proc.popen.stdin

        def write() -> None:
            stdin.write(data)
            stdin.flush()
            if req.get("eof"):
                stdin.close()

        try:
            await asyncio.wait_for(asyncio.to_thread(write), 10)
        except (TimeoutError, BrokenPipeError) as exc:
            raise UnknownProcess(f"process {proc.id!r} does not take input: {exc}") from None
        return {"output_id": proc.id, "sent_bytes": len(req["text"].encode())}

    async def op_kill(self, req: dict[str, Any]) -> dict[str, Any]:
        proc = self._proc(req)
        was = proc.running
        if was:
            proc.killed = True
            await self.procs.terminate(proc)
            await proc.wait(2)  # report how it ended (SIGKILL is seen a moment later)
            if proc.adopted:
                await _settled(proc.popen.pid if proc.popen else 0, gone=True)
        return {"output_id": proc.id, "was_running": was, **proc.exit_info()}

    async def op_procs(self, req: dict[str, Any]) -> dict[str, Any]:
        now = time.monotonic()
        return {"processes": [
            {"output_id": p.id, "command": p.command[:200], "running": p.running,
             "kind": p.kind, **p.exit_info(),
             "runtime_s": round((p.ended or now) - p.started, 3),
             "output_bytes": p.sizes["all"]}
            for p in self.procs.by_id.values()
            if not p.internal and (p.kind == "spawn" or req.get("all"))]}


# ripgrep's regex engine runs in linear time, so no pattern can hang the runner (Python's
# re backtracks: ^(a+)+$ on a line of 34 a's and a ! never ends), and it is the dialect of
# the grep tool. The time limit only ends this search; the runner keeps serving.
_RG_TIMEOUT_S = 20.0


async def _rg_lines(pattern: str, path: str) -> AsyncIterator[tuple[int, str]]:
    """Yield ``(line number, text)`` of the lines of ``path`` that match ``pattern``.

    Raises:
        BadRequest: The pattern is invalid, or the search ran out of time.
    """
    rg = await asyncio.create_subprocess_exec(
        "rg", "--no-config", "--line-number", "--no-filename", "--text", "--color=never",
        "--max-columns=2000", "--max-columns-preview", f"--regexp={pattern}", "--", path,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, limit=1 << 20)
    assert rg.stdout is not None and rg.stderr is not None
    deadline = time.monotonic() + _RG_TIMEOUT_S
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BadRequest(f"the search took over {_RG_TIMEOUT_S:.0f} s and was "
                                 "stopped; use a more specific pattern")
            try:
                raw = await asyncio.wait_for(rg.stdout.readline(), left)
            except TimeoutError:
                continue
            if not raw:
                break
            num, _, text = raw.decode("utf-8", "replace").rstrip("\r\n").partition(":")
            yield int(num), text
        err = (await rg.stderr.read(4000)).decode("utf-8", "replace").strip()
        if await rg.wait() == 2:
            detail = err.split("\n")
            raise BadRequest("grep is not a valid regular expression (Rust regex syntax, as in "
                             "the grep tool): " + " ".join(x.strip() for x in detail[-4:]))
    finally:
        if rg.returncode is None:
            rg.kill()
            await rg.wait()


async def _settled(pgid: int, gone: bool = False, limit_s: float = 1.0) -> None:
    """Wait (briefly) until the group's members show what they run, or until it is gone.

    A child forked just before its shell exited still shows the shell's command line
    until it execs, and a killed one shows in /proc until it is reaped.
    """
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        members = group_members(pgid)
        done = not members if gone else not any(unsettled(c) for _, c in members)
        if done:
            return
        await asyncio.sleep(0.01)

