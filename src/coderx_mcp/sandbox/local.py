"""``LocalSandbox``: the same runner as a host subprocess. NO ISOLATION.

For development on a machine without Docker. Commands run as the server's user, with
the server's privileges, on the host; only the file tools' workspace confinement
applies. Never the default: the server logs a loud warning when it is chosen.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import structlog

from coderx_mcp.config import Settings
from coderx_mcp.errors import SandboxGone
from coderx_mcp.sandbox.base import Sandbox, SandboxSpec
from coderx_mcp.sandbox.channel import reply_line_cap
from coderx_mcp.sandbox.protocol import DEFAULT_LINE_CAP, RunnerClient
from coderx_mcp.sandbox.stream import PipeStream

_log = structlog.get_logger("coderx.local")
WARNING = ("LOCAL BACKEND: commands run directly on this host with the server's privileges; "
           "there is NO sandbox isolation. Use the docker backend for anything untrusted.")


class LocalSandbox:
    """The runner as a child process of the server, rooted at the workspace.

    Args:
        spec: What to run (only the workspace applies: there is no container).
        session_id: The session's id, for logs.
        start_timeout: Seconds to wait for the runner's hello.
        max_line: The longest reply line accepted (see ``reply_line_cap``).
        command: The runner's command line; default: this package's runner. (Tests give a
            fake runner that misbehaves on purpose.)
    """

    backend = "local"

    def __init__(self, spec: SandboxSpec, session_id: str, start_timeout: float = 30.0,
                 max_line: int = DEFAULT_LINE_CAP, command: Sequence[str] | None = None) -> None:
        self.spec = spec
        self._max_line = max_line
        # -B: no __pycache__ in the tree.
        self._command = list(command or [sys.executable, "-u", "-B", "-m", "coderx_runner"])
        self.session_id = session_id
        self._start_timeout = start_timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._runner: RunnerClient | None = None
        self._state_dir: str | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self.lost_reason: str | None = None  # the runner's exit says all there is to say

    @property
    def ident(self) -> str:
        return f"local-pid-{self._proc.pid}" if self._proc else "local"

    @property
    def alive(self) -> bool:
        return self._runner is not None and self._runner.alive

    async def start(self) -> None:
        from coderx_mcp.image import containers_dir

        _log.warning(WARNING, session_id=self.session_id)
        self._state_dir = tempfile.mkdtemp(prefix="coderx-local-")
        # The runner package's parent directory: ``-m coderx_runner`` imports it from there.
        runner_dir = containers_dir() / "runner"
        self._proc = await asyncio.create_subprocess_exec(
            *self._command,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=str(runner_dir),
            env={"CODERX_ROOT": str(self.spec.workspace), "CODERX_STATE": self._state_dir,
                 "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": self._state_dir,
                 "LANG": "C.UTF-8"},
            limit=1 << 20,  # bounds what is buffered ahead of the reader (pauses at twice it)
        )
        assert self._proc.stdout is not None and self._proc.stdin is not None
        self._runner = RunnerClient(PipeStream(self._proc.stdout, self._proc.stdin),
                                    name=self.session_id, max_line=self._max_line)
        self._stderr_task = asyncio.create_task(self._pump_stderr())
        try:
            await self._runner.start(self._start_timeout)
        except BaseException:
            await self.close()
            raise

    async def _pump_stderr(self) -> None:
        # Chunks, not readline: a line without an end must not grow a buffer without end.
        assert self._proc is not None and self._proc.stderr is not None
        while chunk := await self._proc.stderr.read(1 << 16):
            if self._runner is not None:
                self._runner.feed_stderr(chunk)

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        if self._runner is None:
            raise SandboxGone("the sandbox was not started or is closed")
        try:
            return await self._runner.call(op, **args)
        except SandboxGone as exc:
            raise SandboxGone(f"the local runner stopped: {exc}", "runner exited") from None

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.close()
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            await self._proc.wait()
        if self._stderr_task is not None:
            # The pump ends at the runner's end of stderr; what it read last is then logged.
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._stderr_task, 2)
            if self._runner is not None:
                self._runner.flush_stderr()
        if self._state_dir is not None:
            shutil.rmtree(self._state_dir, ignore_errors=True)
            self._state_dir = None


class LocalBackend:
    """The runner as a host subprocess: NO isolation, for development without Docker."""

    name = "local"
    isolated = False

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def check(self) -> None:
        return None

    def make(self, spec: SandboxSpec, session_id: str) -> Sandbox:
        return LocalSandbox(spec, session_id, self._settings.start_timeout_s,
                            reply_line_cap(self._settings.max_file_bytes))

    async def reap_orphans(self) -> int:
        return 0  # local runners end with their parent's pipes

    def remove_all_of_instance(self) -> int:
        return 0
