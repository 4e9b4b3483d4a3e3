"""Typed operations on a session: the one place that builds runner requests.

Tools call :class:`SessionOps` instead of writing runner dicts by hand; replies come back
as pydantic models (see ``containers/runner/coderx_runner`` for the wire shapes). The
per-command environment (secrets granted to the session) is added here to ``exec`` and
``spawn`` and nowhere else: it travels with each request, so it never appears on a
command line, in the container's configuration or in the runner's shell state file.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from coderx_mcp.sessions import Session

Stream = Literal["all", "stdout", "stderr"]


class _Reply(BaseModel):
    # Newer runners may add fields; the host reads what it knows.
    model_config = ConfigDict(extra="ignore")


class Excerpt(_Reply):
    """Head and tail of one output stream, and how much is only in the spool."""

    text: str = ""
    total_bytes: int = 0
    omitted_bytes: int = 0


class ExecResult(_Reply):
    """A finished (or backgrounded) command."""

    output_id: str
    running: bool = False
    timed_out: bool = False
    oom_killed: bool = False
    stopped_at_limit: bool = False
    exit_code: int | None = None
    signal: str | None = None
    duration_ms: float = 0.0
    cwd: str | None = None
    left_running: list[str] = []  # processes the command left running, now adopted
    stdout: Excerpt = Excerpt()
    stderr: Excerpt = Excerpt()


class SpawnResult(_Reply):
    """A started background process."""

    output_id: str
    pid: int


class ReadResult(_Reply):
    """A file read: the whole file, or (above the size limit) a line window of it."""

    path: str
    size: int
    sha256: str
    whole: bool
    mode: int | None = None
    text: str | None = None
    data: str | None = None
    head: str | None = None
    total_lines: int | None = None
    line_offset: int | None = None

    def payload(self) -> bytes:
        """The bytes of a whole-file read (UTF-8 text comes as JSON text, others base64)."""
        return (self.text.encode("utf-8") if self.text is not None
                else base64.b64decode(self.data or ""))


class WriteResult(_Reply):
    """A file written atomically, with the hash the runner computed from disk."""

    path: str
    size: int
    sha256: str
    created: bool = False
    hardlink_severed: bool = False


class OutputPage(_Reply):
    """A slice of a command's spooled output and the command's state."""

    output_id: str
    stream: Stream = "all"
    offset: int = 0
    next_offset: int = 0
    total_bytes: int = 0
    text: str = ""
    running: bool = False
    timed_out: bool = False
    exit_code: int | None = None
    signal: str | None = None
    command: str = ""


class SessionOps:
    """Runner operations on one session, with its granted environment.

    Args:
        session: The session whose sandbox runs the operations.
        env: Returns the session's per-command environment (granted secrets) at call time.
    """

    def __init__(self, session: Session,
                 env: Callable[[], Mapping[str, str]] = lambda: {}) -> None:
        self.session = session
        self._env = env

    def _with_env(self, args: dict[str, Any]) -> dict[str, Any]:
        env = self._env()
        if env:
            args["env"] = dict(env)
        return args

    async def exec(self, command: str, *, timeout: float, cap: int,
                   argv: list[str] | None = None, cwd: str | None = None,
                   return_after: float | None = None, output_id: str | None = None,
                   stdout_limit: int | None = None) -> ExecResult:
        """Run a shell command (or ``argv`` without a shell; ``command`` is then its label).

        Args:
            command: Bash command line, or a display label when ``argv`` is given.
            timeout: Seconds before the process group is killed.
            cap: Most bytes of each stream kept in the reply (head and tail).
            argv: Run this argv directly instead of a bash command line.
            cwd: Directory to run in.
            return_after: Seconds after which a running command is backgrounded.
            output_id: The id to spool output under (to follow it while it runs).
            stdout_limit: Stop the command once its stdout reaches this many bytes.
        """
        args: dict[str, Any] = {"command": command, "timeout": timeout, "cap": cap}
        for key, value in (("argv", argv), ("cwd", cwd), ("return_after", return_after),
                           ("output_id", output_id), ("stdout_limit", stdout_limit)):
            if value is not None:
                args[key] = value
        return ExecResult.model_validate(await self.session.call("exec", **self._with_env(args)))

    async def spawn(self, command: str, *, cwd: str | None = None,
                    timeout: float | None = None) -> SpawnResult:
        """Start a background process (stdin is a pipe, stderr merged into stdout)."""
        args: dict[str, Any] = {"command": command}
        if cwd:
            args["cwd"] = cwd
        if timeout:
            args["timeout"] = timeout
        return SpawnResult.model_validate(
            await self.session.call("spawn", **self._with_env(args)))

    async def read(self, path: str, *, max_bytes: int, line_offset: int | None = None,
                   line_limit: int = 1) -> ReadResult:
        """Read a file (whole when at most ``max_bytes``, else the asked line window)."""
        args: dict[str, Any] = {"path": path, "max_bytes": max_bytes, "line_limit": line_limit}
        if line_offset is not None:
            args["line_offset"] = line_offset
        return ReadResult.model_validate(await self.session.call("read", **args))

    async def write(self, path: str, data: bytes, *, expect_sha256: str | None = None,
                    expect_absent: bool = False) -> WriteResult:
        """Write a file atomically, refused if its hash is not ``expect_sha256`` (or it
        exists when ``expect_absent``)."""
        args: dict[str, Any] = {"path": path, "data": base64.b64encode(data).decode("ascii")}
        if expect_sha256 is not None:
            args["expect_sha256"] = expect_sha256
        if expect_absent:
            args["expect_absent"] = True
        return WriteResult.model_validate(await self.session.call("write", **args))

    async def output(self, output_id: str, *, stream: Stream = "all", **window: Any) -> OutputPage:
        """A slice of a command's output: ``offset``/``limit``, ``tail``/``lines``, ``wait``."""
        return OutputPage.model_validate(
            await self.session.call("output", output_id=output_id, stream=stream, **window))

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        """Any other runner operation (stat, list, grep_output, send, kill, procs)."""
        return await self.session.call(op, **args)
