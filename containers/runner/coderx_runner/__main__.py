"""Entry point: ``python3 -m coderx_runner`` reads requests from stdin, one JSON per line
(and from the host's link socket once the host asks for it: ``Runner.op_link``).

``CODERX_ROOT`` names the workspace (default ``/workspace``), ``CODERX_STATE`` the
directory for spools and the shell state (default ``/run/coderx``).

The protocol stream is private to this process: the runner makes itself non-dumpable, so
the sandbox's processes (same uid) cannot open ``/proc/<runner>/fd/*``, read its memory or
environment, or ptrace it; and the stream lives on close-on-exec descriptors, with
``/dev/null`` on fds 0 and 1, so no process the runner starts can inherit it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import io
import os
import stat
import sys
import threading
from typing import BinaryIO

from .files import CHUNK, sweep_tmp
from .runner import Runner, StdoutChannel

_PR_GET_DUMPABLE = 3
_PR_SET_DUMPABLE = 4


def _make_undumpable() -> bool:
    """Make the runner non-dumpable; returns True when it is.

    A non-dumpable process's ``/proc/<pid>`` entries belong to root and ptrace-style access
    (``fd/``, ``mem``, ``environ``, ``pidfd_getfd``, ptrace) needs ``CAP_SYS_PTRACE``, which
    the sandbox never has. Without this any command could write forged replies or gigabytes
    into the stream the server reads. Processes the runner starts are dumpable again after
    their ``exec``, as they should be (they are the sandbox's own).
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        if prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")
        return bool(prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0) == 0)
    except (OSError, AttributeError) as exc:  # not Linux: the local backend isolates nothing
        sys.stderr.write(f"coderx-runner: cannot make the runner non-dumpable: {exc}\n")
        return False


def _private_stdio() -> BinaryIO:
    """Move the protocol stream off fds 0 and 1; returns the stream's input.

    ``os.dup`` makes close-on-exec copies; ``/dev/null`` takes fds 0 and 1, so a process
    started without explicit redirections inherits nothing of the stream, and a stray write
    to stdout cannot corrupt it. (fd 2 stays: Python's fatal errors go there, and every
    ``Popen`` gives its child pipes or ``/dev/null`` for all three.)
    """
    stream_in, stream_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    sys.stdout = io.TextIOWrapper(open(stream_out, "wb"), write_through=True)  # noqa: SIM115
    return open(stream_in, "rb", buffering=0)


async def _stdin_reader(stdin: BinaryIO) -> asyncio.StreamReader:
    """A stream of the host's requests: read by the event loop when it is a pipe, socket or
    terminal.

    Anything else (a regular file, ``/dev/null``) cannot be polled, so a thread reads it.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 30)
    fd = stdin.fileno()
    try:
        mode = os.fstat(fd).st_mode
        pollable = stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)
    except OSError:
        pollable = False
    if pollable:
        with contextlib.suppress(ValueError, OSError):
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stdin)
            return reader

    def pump() -> None:
        try:
            while block := os.read(fd, CHUNK):
                loop.call_soon_threadsafe(reader.feed_data, block)
        except OSError:
            pass  # a closed or unreadable stdin ends like an empty one
        finally:
            loop.call_soon_threadsafe(reader.feed_eof)

    threading.Thread(target=pump, name="coderx-stdin", daemon=True).start()
    return reader


async def main() -> None:
    undumpable = _make_undumpable()  # first: before any command can look at us
    stdin = _private_stdio()
    root = os.environ.get("CODERX_ROOT", "/workspace")
    state = os.environ.get("CODERX_STATE", "/run/coderx")
    os.makedirs(state, mode=0o700, exist_ok=True)
    runner = Runner(root, state, undumpable=undumpable)
    runner.shell.spawn_zygotes()
    # Temporary files of writes a killed runner left behind (catalogue CR-06), swept in
    # the background: the hello must not wait for a walk of a big workspace.
    sweep = asyncio.ensure_future(asyncio.to_thread(sweep_tmp, root))
    # Requests come on stdin, and on the host's link socket once an ``op_link`` opened it;
    # the end of stdin is the host going away, so the runner ends with it.
    await runner.serve(await _stdin_reader(stdin), StdoutChannel(sys.stdout.buffer))
    runner.close()
    sweep.cancel()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
