"""Entry point: ``python3 -m coderx_runner`` reads requests from stdin, one JSON per line.

``CODERX_ROOT`` names the workspace (default ``/workspace``), ``CODERX_STATE`` the
directory for spools and the shell state (default ``/run/coderx``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import sys
import threading

from .files import CHUNK
from .runner import Runner


async def _stdin_reader() -> asyncio.StreamReader:
    """A stream of stdin: read by the event loop when it is a pipe, socket or terminal.

    Anything else (a regular file, ``/dev/null``) cannot be polled, so a thread reads it.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 30)
    fd = sys.stdin.fileno() if sys.stdin is not None else -1
    try:
        mode = os.fstat(fd).st_mode
        pollable = stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)
    except OSError:
        pollable = False
    if pollable:
        with contextlib.suppress(ValueError, OSError):
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
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
    root = os.environ.get("CODERX_ROOT", "/workspace")
    state = os.environ.get("CODERX_STATE", "/run/coderx")
    os.makedirs(state, mode=0o700, exist_ok=True)
    runner = Runner(root, state)
    runner.shell.spawn_zygotes()
    reader = await _stdin_reader()
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
    runner.close()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
