"""The process table: processes started by ``exec`` and ``spawn``, their output spools.

Processes run in their own session (process group); their exit is watched through a
pidfd and their output is pumped by the event loop into spool files under the state
directory, which ``output`` and ``grep_output`` read later.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

from .errors import BadRequest
from .files import CHUNK, Paths
from .shell import MARKER, Shell

_ID_RX = re.compile(r"^[A-Za-z0-9]{4,32}\Z")
# How the command's own bash (and a fork of it that has not exec'd yet) shows in /proc.
SHELL_CMDLINE = "/bin/bash --noprofile --norc -c"


def unsettled(cmdline: str) -> bool:
    """A fork of the command's bash that has not exec'd yet, or a process mid-exec (its
    command line reads empty for a moment)."""
    return not cmdline or cmdline.startswith(SHELL_CMDLINE)


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
        self.internal = False  # a server-side command (git check-ignore, rg): never listed
        self.adopted = False  # the command ended but left processes running (`cmd &`)

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
        """The command runs, or processes it left behind (adopted) still do."""
        if self.popen is None:
            return False
        if not self.exited.done():
            return True
        return self.adopted and bool(self.leftovers())

    def leftovers(self) -> list[tuple[int, str]]:
        """What the command left running: its process group's live members, and processes
        carrying its marker that left the group (``setsid``)."""
        if self.popen is None:
            return []
        members = group_members(self.popen.pid)
        seen = {pid for pid, _ in members}
        return members + [m for m in marked(self.id) if m[0] not in seen]

    def exit_info(self) -> dict[str, Any]:
        rc = self.exited.result() if self.exited.done() else None
        sig = -rc if rc is not None and rc < 0 else None
        return {"exit_code": None if (rc is None or sig or self.timed_out) else rc,
                "signal": signal.Signals(sig).name if sig else None}


class ProcTable:
    """Starts processes, pumps their output into spools, reports and forgets them."""

    spool_cap = 256 << 20
    spool_budget = 128 << 20
    keep_outputs = 200
    _oom_paths: tuple[str, ...] = tuple(
        p for p in ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control")
        if os.path.exists(p))

    def __init__(self, paths: Paths, shell: Shell, spool: str) -> None:
        self.paths = paths
        self.shell = shell
        self.spool = spool
        self.by_id: dict[str, Proc] = {}
        self.spooled = 0  # bytes that reached the spools (capped ones counted in full)

    def oom_count(self) -> int:
        for path in self._oom_paths:
            try:
                with open(path) as f:
                    for line in f:
                        if line.startswith("oom_kill "):
                            return int(line.split()[1])
            except OSError:
                continue
        return 0

    def prune(self) -> None:
        """Forget the oldest finished processes beyond ``keep_outputs`` or the spool budget.

        O(1) until a bound is crossed; then it frees a batch, so the scan is amortised.
        """
        if len(self.by_id) <= self.keep_outputs and self.spooled <= self.spool_budget:
            return
        target = max(0, len(self.by_id) - self.keep_outputs) + 20
        for p in [p for p in self.by_id.values() if not p.running and p.drained.is_set()]:
            if target <= 0 and self.spooled <= self.spool_budget:
                break
            target -= 1
            self.spooled -= sum(p.sizes.values())
            del self.by_id[p.id]
            for path in [p.path(s) for s in ("stdout", "stderr", "all", "state", "cwd")] + (
                    [p.script] if p.script else []):
                with contextlib.suppress(OSError):
                    os.unlink(path)

    async def start(self, kind: str, command: str, cwd: str | None, env: dict[str, str] | None,
                    stdin_pipe: bool, argv: list[str] | None = None,
                    pid: str | None = None) -> Proc:
        self.prune()
        if pid is not None and (not _ID_RX.match(pid) or pid in self.by_id):
            raise BadRequest(f"output_id {pid!r} is malformed or already in use")
        proc = Proc(pid or secrets.token_hex(4), kind, command, self.spool)
        save, cwd_out = proc.path("state"), proc.path("cwd")
        proc.oom_before = self.oom_count()
        popen = None
        if argv is None:
            hide = sorted(env or ())
            script = ""
            if kind == "exec" and not env and not stdin_pipe:
                taken = self.shell.take_zygote(
                    lambda restore: self.shell.script(command, cwd, save, cwd_out, hide, restore,
                                                      proc.id))
                if taken is not None:
                    popen, proc.script, script = taken
            if popen is None:
                script = self.shell.script(command, cwd, save, cwd_out, hide, marker=proc.id)
            argv = ["/bin/bash", "--noprofile", "--norc", "-c", script, "bash"]
            run_env = {"PATH": self.shell.base_env["PATH"], **(env or {})}
            start_dir = self.paths.root
        else:
            run_env = {**self.shell.base_env, **(env or {})}
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
        self.by_id[proc.id] = proc
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
                self.kill_group(proc)

    def kill_group(self, proc: Proc, sig: int = signal.SIGKILL, deep: bool = False) -> None:
        if proc.popen is None:
            return
        pid = proc.popen.pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        if proc.adopted or deep:  # leftovers outside the group (`setsid`): own groups
            for other, _ in marked(proc.id):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(other, sig) if os.getpgid(other) == other else os.kill(other, sig)
        # Children that left the group with setsid are found through the parent links
        # (only while the leader lives: afterwards they belong to init).
        for child in _descendants(pid) if deep else ():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, sig)

    async def terminate(self, proc: Proc) -> None:
        self.kill_group(proc, signal.SIGTERM, deep=True)
        if proc.running:
            await proc.wait(0.5)
        self.kill_group(proc, signal.SIGKILL, deep=True)

    def kill_all(self) -> None:
        """The host went away: the process groups still running go with it."""
        for proc in list(self.by_id.values()):
            if proc.running:
                self.kill_group(proc)

    def excerpt(self, proc: Proc, stream: str, cap: int) -> dict[str, Any]:
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
                head = head[:utf8_whole(head)]
                f.seek(kept - (cap - head_n))
                tail = f.read()
                tail = tail[utf8_start(tail):]
                omitted = kept - len(head) - len(tail)
                text = (head.decode("utf-8", "replace") + f"\n[… {omitted} bytes omitted: "
                        f"read_output(output_id={proc.id!r}) shows them …]\n"
                        + tail.decode("utf-8", "replace"))
        return {"text": text, "total_bytes": total, "omitted_bytes": omitted + (total - kept)}

    def report(self, proc: Proc, cap: int, foreground: bool) -> dict[str, Any]:
        # The OOM killer picks the biggest process, usually a child: bash then exits 137.
        oom = (proc.popen is not None and proc.exited.done()
               and proc.popen.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL)
               and not proc.timed_out and not proc.killed and self.oom_count() > proc.oom_before)
        cwd = None
        if foreground:
            with contextlib.suppress(OSError), open(proc.path("cwd")) as f:
                cwd = f.read() or None
        end = proc.ended or time.monotonic()
        # A fork that has not exec'd yet shows the runner's wrapper script: name the
        # command it belongs to instead, which is what the model ran.
        left = ([f"pid {pid}: {proc.command[:200] if unsettled(cmd) else cmd}"
                 for pid, cmd in proc.leftovers()]
                if proc.adopted and proc.popen is not None else [])
        return {"output_id": proc.id, "running": not proc.exited.done() and proc.popen is not None,
                "left_running": left, "timed_out": proc.timed_out,
                "oom_killed": oom, "stopped_at_limit": proc.limited, **proc.exit_info(),
                "duration_ms": round((end - proc.started) * 1000, 3), "cwd": cwd,
                "stdout": self.excerpt(proc, "stdout", cap),
                "stderr": self.excerpt(proc, "stderr", cap)}


def _live(keep: Callable[[str, list[bytes]], bool]) -> list[tuple[int, str]]:
    """Live processes (zombies left out) that ``keep(pid, stat fields)`` selects:
    ``(pid, command line)``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            if fields[0] == b"Z" or not keep(name, fields):
                continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except (OSError, IndexError, ValueError):
            continue
        found.append((int(name), cmd[:200]))
    return found


def utf8_whole(data: bytes) -> int:
    """How many bytes of ``data`` end on a UTF-8 character boundary (drops at most the
    3 bytes of a character that the next chunk completes; invalid bytes count as whole)."""
    i = len(data) - 1
    while i >= 0 and len(data) - i < 4 and data[i] & 0xC0 == 0x80:
        i -= 1
    if i < 0:
        return len(data)
    lead = data[i]
    need = 2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else \
        4 if lead >> 3 == 0b11110 else 1
    return i if len(data) - i < need else len(data)


def utf8_start(data: bytes) -> int:
    """Where the first whole UTF-8 character of ``data`` starts (skips at most the 3
    continuation bytes of a character the previous chunk began)."""
    i = 0
    while i < min(3, len(data)) and data[i] & 0xC0 == 0x80:
        i += 1
    return i


def group_members(pgid: int) -> list[tuple[int, str]]:
    """Live processes of process group ``pgid``: ``(pid, command line)``, zombies left out.

    A non-interactive bash keeps ``cmd &``, ``nohup cmd &`` and ``(cmd &)`` in its own
    group, so this finds what a finished command left running.
    """
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return []
    return _live(lambda _name, fields: int(fields[2]) == pgid)


def marked(output_id: str) -> list[tuple[int, str]]:
    """Live processes whose environment carries command ``output_id``'s marker (they left
    its process group: ``setsid``)."""
    needle = f"\0{MARKER}={output_id}\0".encode()

    def has_marker(name: str, _fields: list[bytes]) -> bool:
        with open(f"/proc/{name}/environ", "rb") as f:
            return needle in b"\0" + f.read() + b"\0"

    return _live(has_marker)


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
