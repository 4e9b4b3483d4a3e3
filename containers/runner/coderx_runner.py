#!/usr/bin/env python3
"""Coder-X in-container runner: one long-lived process per sandbox.

Speaks newline-delimited JSON over stdin/stdout with the host. Every request is
``{"id": N, "op": "...", ...}`` and gets exactly one reply
``{"id": N, "ok": true, "result": {...}}`` or
``{"id": N, "ok": false, "error": {"type": "...", "message": "..."}}``.
Requests run concurrently; replies are matched by id. The runner never writes
anything else to stdout (it is the protocol stream); diagnostics go to stderr.

Stdlib only: it runs on whatever python3 the sandbox image has (3.11+).
The error ``type`` names are part of the protocol: the host re-raises them as
its own exception classes (see ``coderx_mcp.sandbox.protocol``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shlex
import signal
import stat
import subprocess
import sys
import time
from collections import deque
from typing import Any

PROTOCOL_VERSION = 1
_ID_RX = re.compile(r"^[A-Za-z0-9]{4,32}\Z")
CHUNK = 65536
PROTECTED = (".git/hooks", ".git/config", ".coderx")
SKIP_DIRS = {".git", "node_modules", "__pycache__", ".venv", "venv", ".mypy_cache",
             ".pytest_cache", ".ruff_cache", ".tox"}


class RunnerError(Exception):
    """An error reported to the host as data; ``kind`` is the protocol type name."""

    kind = "RunnerError"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


def _err(kind: str) -> type[RunnerError]:
    return type(kind, (RunnerError,), {"kind": kind})


NotFound = _err("NotFound")
OutsideWorkspace = _err("OutsideWorkspace")
NotRegularFile = _err("NotRegularFile")
FileTooLarge = _err("FileTooLarge")
StaleFile = _err("StaleFile")
FileExists_ = _err("FileExists")
ProtectedPath = _err("ProtectedPath")
UnknownProcess = _err("UnknownProcess")
BadRequest = _err("BadRequest")


def show(path: str) -> str:
    """A path for a message: quoted, and shortened in the middle when very long."""
    text = repr(path)
    return text if len(text) <= 120 else text[:50] + f"…[{len(text) - 100} chars]…" + text[-50:]


def sha256_file(fd: int) -> tuple[str, int]:
    """Hash an open file from its start; returns (hex digest, size)."""
    h = hashlib.sha256()
    size = 0
    os.lseek(fd, 0, os.SEEK_SET)
    while True:
        block = os.read(fd, 1 << 20)
        if not block:
            return h.hexdigest(), size
        h.update(block)
        size += len(block)


class Paths:
    """Confines every path to the workspace, judged on the resolved path."""

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)

    def resolve(self, path: str) -> str:
        if not isinstance(path, str) or not path or "\x00" in path:
            raise BadRequest("path must be a non-empty string without NUL bytes")
        if len(path) > 4096:
            raise BadRequest("path is longer than 4096 characters")
        joined = path if path.startswith("/") else os.path.join(self.root, path)
        try:
            real = os.path.realpath(joined, strict=False)
        except OSError as exc:  # ELOOP on a symlink loop
            raise BadRequest(f"cannot resolve {show(path)}: {exc.strerror}") from exc
        if real != self.root and not real.startswith(self.root + "/"):
            raise OutsideWorkspace(f"{show(path)} resolves outside the workspace {self.root}")
        return real

    def rel(self, real: str) -> str:
        return "." if real == self.root else real[len(self.root) + 1:]

    def check_writable(self, real: str) -> None:
        rel = self.rel(real)
        for p in PROTECTED:
            if rel == p or rel.startswith(p + "/"):
                raise ProtectedPath(
                    f"{rel!r} is protected: hooks, git config and .coderx run or are read on "
                    "the host, so the sandbox may not change them")


def open_regular(real: str, display: str) -> tuple[int, os.stat_result]:
    """Open a regular file without following a final symlink or blocking on a FIFO."""
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"{show(display)} does not exist") from None
    except IsADirectoryError:
        raise NotRegularFile(f"{show(display)} is a directory, not a regular file") from None
    except OSError as exc:
        raise NotRegularFile(f"cannot open {show(display)}: {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = ("a directory" if stat.S_ISDIR(st.st_mode)
                else "a special file (FIFO, socket or device)")
        raise NotRegularFile(f"{show(display)} is {kind}, not a regular file")
    return fd, st


def _file_read(paths: Paths, req: dict[str, Any]) -> dict[str, Any]:
    real = paths.resolve(req["path"])
    max_bytes = int(req.get("max_bytes", 16 << 20))
    fd, st = open_regular(real, req["path"])
    try:
        if st.st_size <= max_bytes:
            data = b""
            while True:
                block = os.read(fd, max(st.st_size + 1, CHUNK) - len(data))
                if not block:
                    break
                data += block
                if len(data) > max_bytes:
                    raise FileTooLarge(
                        f"{show(req['path'])} grew past {max_bytes} bytes while read")
            return {"path": paths.rel(real), "size": len(data), "mode": stat.S_IMODE(st.st_mode),
                    "sha256": hashlib.sha256(data).hexdigest(), "whole": True,
                    "data": base64.b64encode(data).decode("ascii")}
        return _read_window(fd, st, paths.rel(real), req, max_bytes)
    finally:
        os.close(fd)


def _read_window(fd: int, st: os.stat_result, rel: str, req: dict[str, Any],
                 max_bytes: int) -> dict[str, Any]:
    """Stream a large file once: hash it, count lines, keep only the asked window."""
    first = max(1, int(req.get("line_offset", 1)))
    limit = max(1, int(req.get("line_limit", 2000)))
    h = hashlib.sha256()
    line = 1
    window = bytearray()
    head = b""
    size = 0
    last = b""
    while True:
        block = os.read(fd, 1 << 20)
        if not block:
            break
        if not head:
            head = block[:8192]
        h.update(block)
        size += len(block)
        last = block[-1:]
        start = 0
        while start < len(block):
            nl = block.find(b"\n", start)
            end = len(block) if nl < 0 else nl + 1
            if first <= line < first + limit and len(window) < max_bytes:
                window += block[start:end][: max_bytes - len(window)]
            if nl < 0:
                break
            line += 1
            start = end
    total = line - 1 if last == b"\n" or size == 0 else line
    return {"path": rel, "size": size, "mode": stat.S_IMODE(st.st_mode), "sha256": h.hexdigest(),
            "whole": False, "total_lines": total, "line_offset": first,
            "head": base64.b64encode(head).decode("ascii"),
            "data": base64.b64encode(bytes(window)).decode("ascii")}


def _file_write(paths: Paths, req: dict[str, Any]) -> dict[str, Any]:
    real = paths.resolve(req["path"])
    paths.check_writable(real)
    data = base64.b64decode(req["data"])
    expect_sha = req.get("expect_sha256")
    expect_absent = bool(req.get("expect_absent"))
    parent = os.path.dirname(real)
    if req.get("mkdirs", True):
        os.makedirs(parent, exist_ok=True)
    elif not os.path.isdir(parent):
        raise NotFound(f"directory of {show(req['path'])} does not exist")
    dfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        # Serialise writers of this directory across runners sharing a workspace.
        fcntl.flock(dfd, fcntl.LOCK_EX)
        mode = 0o644
        nlink = 1
        created = True
        try:
            st = os.lstat(real)
        except FileNotFoundError:
            st = None
        if st is not None:
            if not stat.S_ISREG(st.st_mode):
                raise NotRegularFile(f"{show(req['path'])} exists and is not a regular file")
            created = False
            mode, nlink = stat.S_IMODE(st.st_mode), st.st_nlink
            if expect_absent:
                raise FileExists_(f"{show(req['path'])} already exists")
            if expect_sha is not None:
                fd, _ = open_regular(real, req["path"])
                try:
                    current, _size = sha256_file(fd)
                finally:
                    os.close(fd)
                if current != expect_sha:
                    raise StaleFile(f"{show(req['path'])} changed since it was read",
                                    current=current)
        elif expect_sha is not None:
            raise StaleFile(f"{show(req['path'])} was deleted since it was read", current=None)
        if req.get("mode") is not None:
            mode = int(req["mode"])
        tmp = os.path.join(parent, f".coderx-tmp-{secrets.token_hex(6)}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        tfd = os.open(tmp, flags, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(tfd, view):]
            os.fchmod(tfd, mode)
            os.fsync(tfd)
            os.close(tfd)
            tfd = -1
            os.replace(tmp, real)
        except BaseException:
            if tfd >= 0:
                os.close(tfd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        # No fsync of the directory: the rename is atomic either way (old or new content,
        # never a mix), and that fsync cost 0.7 ms of a 1 ms write.
    finally:
        os.close(dfd)
    fd, st2 = open_regular(real, req["path"])
    try:
        digest, size = sha256_file(fd)
    finally:
        os.close(fd)
    if size != len(data):
        raise RunnerError(
            f"short write to {show(req['path'])}: {size} of {len(data)} bytes on disk")
    return {"path": paths.rel(real), "size": size, "sha256": digest,
            "mode": stat.S_IMODE(st2.st_mode), "created": created, "hardlink_severed": nlink > 1}


def _file_stat(paths: Paths, req: dict[str, Any]) -> dict[str, Any]:
    real = paths.resolve(req["path"])
    try:
        st = os.lstat(real)
    except FileNotFoundError:
        return {"path": paths.rel(real), "exists": False}
    kind = ("file" if stat.S_ISREG(st.st_mode) else "dir" if stat.S_ISDIR(st.st_mode)
            else "symlink" if stat.S_ISLNK(st.st_mode) else "other")
    return {"path": paths.rel(real), "exists": True, "type": kind, "size": st.st_size,
            "mode": stat.S_IMODE(st.st_mode), "mtime": st.st_mtime}


def _file_list(paths: Paths, req: dict[str, Any]) -> dict[str, Any]:
    real = paths.resolve(req.get("path", "."))
    if not os.path.isdir(real):
        raise NotFound(f"{req.get('path', '.')!r} is not a directory")
    depth = int(req.get("depth", 2))
    cap = int(req.get("max_entries", 1000))
    skip = set(req.get("skip", SKIP_DIRS))
    entries: list[dict[str, Any]] = []
    truncated = False

    def walk(d: str, level: int) -> None:
        nonlocal truncated
        try:
            items = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            return
        for e in items:
            if len(entries) >= cap:
                truncated = True
                return
            is_dir = e.is_dir(follow_symlinks=False)
            if is_dir and (e.name in skip or os.path.exists(os.path.join(e.path, "pyvenv.cfg"))):
                continue
            kind = "dir" if is_dir else "symlink" if e.is_symlink() else "file"
            size = e.stat(follow_symlinks=False).st_size if kind == "file" else None
            entries.append({"path": paths.rel(e.path), "type": kind, "size": size})
            if is_dir and level < depth:
                walk(e.path, level + 1)

    walk(real, 1)
    return {"path": paths.rel(real), "entries": entries, "truncated": truncated}


class Proc:
    """One process started by ``exec`` or ``spawn``; its output is spooled to files."""

    def __init__(self, pid: str, kind: str, command: str, spool: str) -> None:
        self.id = pid
        self.kind = kind
        self.command = command
        self.spool = spool
        self.popen: subprocess.Popen[bytes] | None = None
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.started = time.monotonic()
        self.ended: float | None = None
        self.timed_out = False
        self.killed = False
        self.sizes = {"stdout": 0, "stderr": 0, "all": 0}
        self.files: dict[str, Any] = {}
        self.drained: asyncio.Event = asyncio.Event()
        self.open_streams = 0
        self.oom_before = 0
        self.script: str | None = None
        self.stdout_limit: int | None = None  # exec's ``stdout_limit``: stop the group past it
        self.limited = False

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait for the exit without cancelling anything; True if it exited."""
        try:
            await asyncio.wait_for(asyncio.shield(self.exited), timeout)
        except TimeoutError:
            return False
        return True

    def path(self, stream: str) -> str:
        return os.path.join(self.spool, f"{self.id}.{stream}")

    @property
    def running(self) -> bool:
        return self.popen is not None and not self.exited.done()

    def exit_info(self) -> dict[str, Any]:
        rc = self.exited.result() if self.exited.done() else None
        sig = -rc if rc is not None and rc < 0 else None
        return {"exit_code": None if (rc is None or sig or self.timed_out) else rc,
                "signal": signal.Signals(sig).name if sig else None}


class Runner:
    """Dispatches requests; owns the process table and the shell state of the session."""

    def __init__(self, root: str, state_dir: str) -> None:
        self.paths = Paths(root)
        self.state_dir = state_dir
        self.spool = os.path.join(state_dir, "spool")
        os.makedirs(self.spool, mode=0o700, exist_ok=True)
        self.state_file = os.path.join(state_dir, "shell.env")
        self.procs: dict[str, Proc] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.out_lock = asyncio.Lock()
        self.base_env = self._base_env()
        # Waiting bashes, oldest first: two, so back-to-back calls find one already up.
        self._zygotes: deque[tuple[subprocess.Popen[bytes], int, str, int]] = deque()
        self.state_version = 0
        self.background: set[asyncio.Future[Any]] = set()
        self.spooled = 0  # bytes that reached the spools (capped ones counted in full)
        self._closing = False
        self._write_initial_state()

    @staticmethod
    def _base_env() -> dict[str, str]:
        keep = ("PATH", "HOME", "LANG", "LC_ALL", "TERM", "USER", "PYTHONDONTWRITEBYTECODE",
                "PAGER", "GIT_PAGER", "GIT_EDITOR", "GIT_TERMINAL_PROMPT", "DEBIAN_FRONTEND",
                "VIRTUAL_ENV", "TZ")
        env = {k: v for k, v in os.environ.items() if k in keep}
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        env.update({"PAGER": "cat", "GIT_PAGER": "cat", "GIT_TERMINAL_PROMPT": "0",
                    "GIT_EDITOR": "false", "EDITOR": "false", "DEBIAN_FRONTEND": "noninteractive",
                    "CI": "1", "TERM": "dumb", "NO_COLOR": "1"})
        return env

    # -- transport ---------------------------------------------------------
    async def send(self, msg: dict[str, Any]) -> None:
        line = (json.dumps(msg, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
        async with self.out_lock:
            sys.stdout.buffer.write(line)
            sys.stdout.buffer.flush()

    async def handle(self, req: dict[str, Any]) -> None:
        rid = req.get("id")
        try:
            op = req.get("op")
            fn = getattr(self, f"op_{op}", None)
            if fn is None:
                raise BadRequest(f"unknown op {op!r}")
            result = await fn(req)
            await self.send({"id": rid, "ok": True, "result": result})
        except asyncio.CancelledError:
            await self.send({"id": rid, "ok": False,
                             "error": {"type": "Cancelled", "message": "request cancelled"}})
        except RunnerError as exc:
            await self.send({"id": rid, "ok": False, "error": {
                "type": exc.kind, "message": str(exc), "details": exc.details}})
        except (KeyError, TypeError, ValueError) as exc:
            await self.send({"id": rid, "ok": False, "error": {
                "type": "BadRequest", "message": f"bad request: {type(exc).__name__}: {exc}"}})
        except OSError as exc:
            await self.send({"id": rid, "ok": False, "error": {
                "type": "OSError", "message": f"{exc.strerror or exc} ({exc.errno})",
                "details": {"errno": exc.errno}}})
        except Exception as exc:  # never let one request kill the runner
            await self.send({"id": rid, "ok": False, "error": {
                "type": "RunnerError", "message": f"{type(exc).__name__}: {exc}"}})
        finally:
            self.tasks.pop(rid, None)

    # -- simple ops ----------------------------------------------------------
    async def op_hello(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"protocol": PROTOCOL_VERSION, "pid": os.getpid(), "uid": os.getuid(),
                "gid": os.getgid(), "root": self.paths.root, "python": sys.version.split()[0]}

    async def op_cancel(self, req: dict[str, Any]) -> dict[str, Any]:
        task = self.tasks.get(req["target"])
        if task is not None:
            task.cancel()
        return {"cancelled": task is not None}

    async def _file_op(self, fn: Any, req: dict[str, Any], big: bool) -> dict[str, Any]:
        # Small file work inline keeps the round trip under a millisecond; big work
        # goes to a thread so cancel and other requests are still served.
        if big:
            return await asyncio.to_thread(fn, self.paths, req)
        return fn(self.paths, req)  # type: ignore[no-any-return]

    async def op_read(self, req: dict[str, Any]) -> dict[str, Any]:
        try:
            big = os.stat(self.paths.resolve(req["path"])).st_size > (1 << 20)
        except OSError:
            big = False  # the read itself reports the problem
        return await self._file_op(_file_read, req, big or bool(req.get("big")))

    async def op_write(self, req: dict[str, Any]) -> dict[str, Any]:
        return await self._file_op(_file_write, req, len(req.get("data", "")) > (1 << 20))

    async def op_stat(self, req: dict[str, Any]) -> dict[str, Any]:
        return _file_stat(self.paths, req)

    async def op_list(self, req: dict[str, Any]) -> dict[str, Any]:
        return await self._file_op(_file_list, req, True)

    # -- processes -----------------------------------------------------------
    _oom_paths: tuple[str, ...] = tuple(
        p for p in ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control")
        if os.path.exists(p))

    def _oom_count(self) -> int:
        for path in self._oom_paths:
            try:
                with open(path) as f:
                    for line in f:
                        if line.startswith("oom_kill "):
                            return int(line.split()[1])
            except OSError:
                continue
        return 0

    def _script(self, command: str, cwd: str | None, save: str, cwd_out: str,
                hide: list[str], restore: bool = True) -> str:
        # Per-call variables (hide) are unset before the state is saved: never persisted.
        unset = f"builtin unset {' '.join(map(shlex.quote, hide))}; " if hide else ""
        chdir = f"builtin cd -- {shlex.quote(cwd)} || exit 1; " if cwd else ""
        # One line, ending in eval: bash's messages then read as in a terminal
        # ("bash: line 1: x: command not found"), without our preamble's lines.
        return (
            "__coderx_save() { " + unset + "{ builtin declare -px; builtin printf "
            "'builtin cd -- %q\\n' \"$PWD\"; } > " + shlex.quote(save) + " 2>/dev/null; "
            "builtin printf '%s' \"$PWD\" > " + shlex.quote(cwd_out) + " 2>/dev/null; }; "
            "trap __coderx_save EXIT; "
            + (f"builtin source {shlex.quote(self.state_file)} 2>/dev/null; " if restore else "")
            + chdir
            + "builtin eval " + shlex.quote(command) + "\n")

    def _write_initial_state(self) -> None:
        """The first command starts from the base environment, like every later one
        starts from the state the previous one left."""
        lines = [f"export {k}={shlex.quote(v)}" for k, v in sorted(self.base_env.items())]
        lines.append(f"builtin cd -- {shlex.quote(self.paths.root)}")
        with open(self.state_file, "w") as f:
            f.write("\n".join(lines) + "\n")

    def _spawn_zygote(self) -> None:
        """Start the bash the next ``exec`` will use; it waits on a pipe for its script.

        Starting bash costs about a millisecond and restoring the shell state a quarter of
        one; paying both between calls instead of during one halves the latency of a short
        command. The state version it restored is kept: a newer state is restored at use.
        """
        while len(self._zygotes) < self.zygotes and not self._closing:
            self._spawn_one_zygote()

    zygotes = 2

    def _spawn_one_zygote(self) -> None:
        rfd, wfd = os.pipe()
        script = os.path.join(self.spool, f"z{secrets.token_hex(4)}.sh")
        try:
            popen = subprocess.Popen(
                ["/bin/bash", "--noprofile", "--norc", "-c",
                 f"builtin source {shlex.quote(self.state_file)} 2>/dev/null; "
                 f"IFS= builtin read -r _ <&{rfd} || exit 0; builtin exec {rfd}<&-; "
                 f"IFS= builtin read -r -d '' __coderx_s < {shlex.quote(script)}; "
                 "builtin eval \"$__coderx_s\"", "bash"],
                cwd=self.paths.root, env={"PATH": self.base_env["PATH"]},
                start_new_session=True, close_fds=True, pass_fds=(rfd,),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError:
            os.close(wfd)
            return
        finally:
            os.close(rfd)
        self._zygotes.append((popen, wfd, script, self.state_version))

    def _take_zygote(self, build: Any) -> tuple[subprocess.Popen[bytes], str, str] | None:
        """Hand the waiting bash its script, built by ``build(restore)``."""
        if not self._zygotes:
            return None
        popen, wfd, script, version = self._zygotes.popleft()
        script_text = build(version != self.state_version)
        try:
            if popen.poll() is not None:
                raise OSError("zygote exited")
            with open(script, "w") as f:
                f.write(script_text)
            os.write(wfd, b"\n")
        except OSError:
            with contextlib.suppress(OSError):
                popen.kill()
            popen.wait()
            return None
        finally:
            os.close(wfd)
        return popen, script, script_text

    spool_budget = 128 << 20
    keep_outputs = 200

    def _prune(self) -> None:
        """Forget the oldest finished processes beyond ``keep_outputs`` or the spool budget.

        O(1) until a bound is crossed; then it frees a batch, so the scan is amortised.
        """
        if len(self.procs) <= self.keep_outputs and self.spooled <= self.spool_budget:
            return
        target = max(0, len(self.procs) - self.keep_outputs) + 20
        for p in [p for p in self.procs.values() if not p.running and p.drained.is_set()]:
            if target <= 0 and self.spooled <= self.spool_budget:
                break
            target -= 1
            self.spooled -= sum(p.sizes.values())
            del self.procs[p.id]
            for path in [p.path(s) for s in ("stdout", "stderr", "all", "state", "cwd")] + (
                    [p.script] if p.script else []):
                with contextlib.suppress(OSError):
                    os.unlink(path)

    async def _start(self, kind: str, command: str, cwd: str | None, env: dict[str, str] | None,
                     stdin_pipe: bool, argv: list[str] | None = None,
                     pid: str | None = None) -> Proc:
        self._prune()
        if pid is not None and (not _ID_RX.match(pid) or pid in self.procs):
            raise BadRequest(f"output_id {pid!r} is malformed or already in use")
        proc = Proc(pid or secrets.token_hex(4), kind, command, self.spool)
        save, cwd_out = proc.path("state"), proc.path("cwd")
        proc.oom_before = self._oom_count()
        popen = None
        if argv is None:
            hide = sorted(env or ())
            script = ""
            if kind == "exec" and not env and not stdin_pipe:
                taken = self._take_zygote(
                    lambda restore: self._script(command, cwd, save, cwd_out, hide, restore))
                if taken is not None:
                    popen, proc.script, script = taken
            if popen is None:
                script = self._script(command, cwd, save, cwd_out, hide)
            argv = ["/bin/bash", "--noprofile", "--norc", "-c", script, "bash"]
            run_env = {"PATH": self.base_env["PATH"], **(env or {})}
            start_dir = self.paths.root
        else:
            run_env = {**self.base_env, **(env or {})}
            start_dir = self.paths.resolve(cwd or ".")
        if popen is None:
            # Popen + pidfd instead of asyncio subprocesses: asyncio's wait() also waits
            # for the pipes to close, which a backgrounded child (`sleep 99 &`) keeps open.
            popen = subprocess.Popen(
                argv, cwd=start_dir, env=run_env, start_new_session=True, close_fds=True,
                stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if kind == "spawn" else subprocess.PIPE)
        proc.popen = popen
        self.procs[proc.id] = proc
        loop = asyncio.get_running_loop()
        for pipe, name in ((proc.popen.stdout, "stdout"), (proc.popen.stderr, "stderr")):
            if pipe is not None:
                fd = pipe.fileno()
                os.set_blocking(fd, False)
                proc.open_streams += 1
                loop.add_reader(fd, self._on_output, proc, pipe, name)
        self._watch_exit(proc)
        return proc

    def _watch_exit(self, proc: Proc) -> None:
        assert proc.popen is not None
        loop = asyncio.get_running_loop()
        popen = proc.popen

        def exited(code: int) -> None:
            proc.ended = time.monotonic()
            if not proc.exited.done():
                proc.exited.set_result(code)

        try:
            pidfd = os.pidfd_open(popen.pid)
        except (AttributeError, OSError):  # old kernel: a thread waits instead
            fut = loop.run_in_executor(None, popen.wait)
            fut.add_done_callback(lambda f: exited(f.result()))
            return

        def on_pidfd() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            exited(popen.wait())

        loop.add_reader(pidfd, on_pidfd)

    def _on_output(self, proc: Proc, pipe: Any, name: str) -> None:
        fd = pipe.fileno()
        cap = self.spool_cap
        while True:
            try:
                block = os.read(fd, CHUNK)
            except BlockingIOError:
                return
            except OSError:
                block = b""
            if not block:
                asyncio.get_running_loop().remove_reader(fd)
                pipe.close()
                proc.open_streams -= 1
                if proc.open_streams == 0:
                    for f in proc.files.values():
                        f.close()
                    proc.drained.set()
                return
            self.spooled += 2 * len(block)
            for key in (name, "all"):
                if proc.sizes[key] < cap:
                    f = proc.files.get(key)
                    if f is None:  # spool files appear with the first output
                        f = proc.files[key] = open(proc.path(key), "wb", buffering=0)  # noqa: SIM115
                    f.write(block[: cap - proc.sizes[key]])
                proc.sizes[key] += len(block)
            if (name == "stdout" and proc.stdout_limit is not None and not proc.limited
                    and proc.sizes["stdout"] >= proc.stdout_limit):
                proc.limited = proc.killed = True  # enough output: the caller reads no more
                self._kill_group(proc)

    spool_cap = 256 << 20

    def _kill_group(self, proc: Proc, sig: int = signal.SIGKILL, deep: bool = False) -> None:
        if proc.popen is None:
            return
        pid = proc.popen.pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        # Children that left the group with setsid are found through the parent links
        # (only while the leader lives: afterwards they belong to init).
        for child in _descendants(pid) if deep else ():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, sig)

    async def _terminate(self, proc: Proc) -> None:
        self._kill_group(proc, signal.SIGTERM, deep=True)
        if proc.running:
            await proc.wait(0.5)
        self._kill_group(proc, signal.SIGKILL, deep=True)

    def _excerpt(self, proc: Proc, stream: str, cap: int) -> dict[str, Any]:
        total = proc.sizes[stream]
        kept = min(total, self.spool_cap)
        if total == 0:
            return {"text": "", "total_bytes": 0, "omitted_bytes": 0}
        with open(proc.path(stream), "rb") as f:
            if kept <= cap:
                text = f.read(cap).decode("utf-8", "replace")
                omitted = 0
            else:
                head_n = cap * 2 // 5
                head = f.read(head_n)
                f.seek(kept - (cap - head_n))
                tail = f.read()
                omitted = kept - len(head) - len(tail)
                text = (head.decode("utf-8", "replace") + f"\n[… {omitted} bytes omitted: "
                        f"read_output(output_id={proc.id!r}) shows them …]\n"
                        + tail.decode("utf-8", "replace"))
        return {"text": text, "total_bytes": total, "omitted_bytes": omitted + (total - kept)}

    def _report(self, proc: Proc, cap: int, foreground: bool) -> dict[str, Any]:
        # The OOM killer picks the biggest process, usually a child: bash then exits 137.
        oom = (proc.popen is not None and proc.exited.done()
               and proc.popen.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL)
               and not proc.timed_out and not proc.killed and self._oom_count() > proc.oom_before)
        cwd = None
        if foreground:
            with contextlib.suppress(OSError), open(proc.path("cwd")) as f:
                cwd = f.read() or None
        end = proc.ended or time.monotonic()
        return {"output_id": proc.id, "running": proc.running, "timed_out": proc.timed_out,
                "oom_killed": oom, "stopped_at_limit": proc.limited, **proc.exit_info(),
                "duration_ms": round((end - proc.started) * 1000, 3), "cwd": cwd,
                "stdout": self._excerpt(proc, "stdout", cap),
                "stderr": self._excerpt(proc, "stderr", cap)}

    async def op_exec(self, req: dict[str, Any]) -> dict[str, Any]:
        """Run a shell command like one terminal: cwd and exports persist between calls.

        ``stdout_limit`` (optional, bytes) kills the process group once its stdout reaches
        that size; the reply then says ``stopped_at_limit`` (a search that found enough).
        """
        timeout = float(req.get("timeout", 120))
        return_after = req.get("return_after")
        cap = int(req.get("cap", 30000))
        # The host may choose the output id, to follow the output while the call runs.
        proc = await self._start("exec", req["command"], req.get("cwd"), req.get("env"), False,
                                 req.get("argv"), req.get("output_id"))
        assert proc.popen is not None
        if req.get("stdout_limit") is not None:  # set before any output is read
            proc.stdout_limit = int(req["stdout_limit"])
        wait = timeout if return_after is None else min(timeout, float(return_after))
        try:
            finished = await proc.wait(wait)
        except asyncio.CancelledError:
            proc.killed = True
            await self._terminate(proc)
            raise
        if not finished:
            if wait < timeout:
                # Deadline-aware call: hand the still-running command over as a
                # background process; its own timeout keeps running.
                proc.kind = "spawn"
                self._background(self._deadline(proc, timeout - wait))
                return self._report(proc, cap, foreground=False)
            proc.timed_out = True
            await self._terminate(proc)
        else:
            self._kill_group(proc)  # background leftovers would otherwise outlive the call
        foreground = req.get("argv") is None
        if foreground:
            self._adopt_state(proc)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(proc.drained.wait(), 0.5)
        report = self._report(proc, cap, foreground=foreground)
        # Replacement bashes start a moment after this reply (Popen holds the runner for a
        # few hundred microseconds, which a request arriving right away would wait for); the
        # second waiting bash serves back-to-back calls meanwhile.
        asyncio.get_running_loop().call_later(0.002, self._spawn_zygote)
        return report

    def _adopt_state(self, proc: Proc) -> None:
        """The shell state the command's EXIT trap saved becomes the session's.

        Most commands change neither cwd nor exports: then the version stays, and the
        waiting bashes, which restored it already, remain good.
        """
        new = proc.path("state")
        try:
            with open(new, "rb") as f, open(self.state_file, "rb") as g:
                same = f.read() == g.read()
        except OSError:
            same = False
        with contextlib.suppress(OSError):
            os.replace(new, self.state_file)
            if not same:
                self.state_version += 1

    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _deadline(self, proc: Proc, remaining: float) -> None:
        if not await proc.wait(remaining):
            proc.timed_out = True
            await self._terminate(proc)

    async def op_spawn(self, req: dict[str, Any]) -> dict[str, Any]:
        proc = await self._start("spawn", req["command"], req.get("cwd"), req.get("env"), True)
        assert proc.popen is not None
        if req.get("timeout"):
            self._background(self._deadline(proc, float(req["timeout"])))
        return {"output_id": proc.id, "pid": proc.popen.pid}

    def _proc(self, req: dict[str, Any]) -> Proc:
        proc = self.procs.get(req.get("output_id", ""))
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
                    if await proc.wait(min(0.05, end - time.monotonic())):
                        break
            else:
                await proc.wait(wait)
        limit = max(0, int(req.get("limit", 65536)))
        kept = min(proc.sizes[stream], self.spool_cap)
        if req.get("tail") is not None:
            limit = max(0, int(req["tail"]))
            offset = max(0, kept - limit)
        data = b""
        if kept > offset:
            with open(proc.path(stream), "rb") as f:
                f.seek(offset)
                data = f.read(min(limit, kept - offset))
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
        rx = re.compile(req["pattern"])
        cap = int(req.get("max_matches", 200))
        hits: list[dict[str, Any]] = []
        total = 0
        path = proc.path(req.get("stream", "all"))
        with open(path if os.path.exists(path) else os.devnull, "rb") as f:
            for n, raw in enumerate(f, 1):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if rx.search(line):
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
            await self._terminate(proc)
        return {"output_id": proc.id, "was_running": was, **proc.exit_info()}

    async def op_procs(self, req: dict[str, Any]) -> dict[str, Any]:
        now = time.monotonic()
        return {"processes": [
            {"output_id": p.id, "command": p.command[:200], "running": p.running,
             "kind": p.kind, **p.exit_info(),
             "runtime_s": round((p.ended or now) - p.started, 3),
             "output_bytes": p.sizes["all"]}
            for p in self.procs.values() if p.kind == "spawn" or req.get("all")]}


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(name))
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


async def main() -> None:
    root = os.environ.get("CODERX_ROOT", "/workspace")
    state = os.environ.get("CODERX_STATE", "/run/coderx")
    os.makedirs(state, mode=0o700, exist_ok=True)
    runner = Runner(root, state)
    runner._spawn_zygote()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 30)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break  # the host went away: end with it
        try:
            req = json.loads(line)
            if not isinstance(req, dict) or not isinstance(req.get("id"), int):
                raise ValueError("request must be an object with an integer id")
        except ValueError as exc:
            sys.stderr.write(f"coderx-runner: bad request line: {exc}\n")
            continue
        runner.tasks[req["id"]] = asyncio.ensure_future(runner.handle(req))
    runner._closing = True
    for z in runner._zygotes:
        z[0].kill()
    for proc in list(runner.procs.values()):
        if proc.running:
            runner._kill_group(proc)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
