"""Helpers shared by the sandbox tests."""

import asyncio
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import make_repo

from coderx_mcp.sandbox.base import SandboxSpec
from coderx_mcp.sandbox.docker_stream import DockerExecStream
from coderx_mcp.sandbox.local import LocalSandbox
from coderx_mcp.sandbox.protocol import DEFAULT_LINE_CAP, PROTOCOL_VERSION, RunnerClient
from coderx_mcp.sandbox.stream import PipeStream
from coderx_mcp.sessions import Session


async def sh(session: Session, command: str, timeout: float = 30, **kw: Any) -> dict[str, Any]:
    """Run one ``exec`` in the session."""
    return await session.call("exec", command=command, timeout=timeout, **kw)


def out(result: dict[str, Any]) -> str:
    """The stdout text of an ``exec`` result."""
    return str(result["stdout"]["text"])


class ScriptedRunner:
    """Our fake of the runner's end of the stream: answers each request with ``reply(req)``.

    It is the writer the client writes to and feeds the reader the client reads from,
    optionally in Docker's multiplexed framing, cut into small frames with stderr between.
    """

    def __init__(self, reply: Callable[[dict[str, Any]], dict[str, Any] | None],
                 framed: bool) -> None:
        self.reader = asyncio.StreamReader()
        self.reply = reply
        self.framed = framed
        self.requests: list[dict[str, Any]] = []

    def write(self, data: bytes) -> None:
        for line in data.splitlines():
            req = json.loads(line)
            self.requests.append(req)
            answer = self.reply(req)
            if answer is not None:
                self.emit(json.dumps(answer).encode() + b"\n")

    def emit(self, data: bytes) -> None:
        if not self.framed:
            self.reader.feed_data(data)
            return
        for i in range(0, len(data), 7):  # tiny frames: lines span many of them
            piece = data[i:i + 7]
            self.reader.feed_data(bytes([1, 0, 0, 0]) + struct.pack(">I", len(piece)) + piece)
            note = b"runner says hi"
            self.reader.feed_data(bytes([2, 0, 0, 0]) + struct.pack(">I", len(note)) + note)

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        self.reader.feed_eof()


def echo_runner(req: dict[str, Any]) -> dict[str, Any] | None:
    """Answers hello, fails ``fail``, never answers ``hang``, echoes anything else."""
    if req["op"] == "hello":
        return {"id": req["id"], "ok": True, "result": {"protocol": PROTOCOL_VERSION}}
    if req["op"] == "fail":
        return {"id": req["id"], "ok": False, "error": {"type": "NotFound", "message": "gone"}}
    if req["op"] == "hang":
        return None
    return {"id": req["id"], "ok": True, "result": {"echo": req.get("value")}}


def scripted_client(fake: ScriptedRunner, **kw: Any) -> RunnerClient:
    """A client on ``fake``'s stream (``kw``: the client's own options, e.g. ``max_line``),
    through the Docker frame adapter when ``fake`` is framed."""
    stream = (DockerExecStream(fake.reader, fake,  # type: ignore[arg-type]
                               kw.get("max_line", DEFAULT_LINE_CAP))
              if fake.framed else PipeStream(fake.reader, fake))  # type: ignore[arg-type]
    return RunnerClient(stream, name="scripted", **kw)


class HostUser:
    """The workspace's owner on the host (uid 1000; the current user when not root).

    Runs setup scripts and git as that user, the way the user's own shell would, with a
    private ``HOME`` so no real global config takes part. ``marker`` is the file every
    planted command would create: if it exists, host git ran something from the sandbox.
    """

    uid = 1000

    def __init__(self, base: Path) -> None:
        self.base = base
        self.home = base / "home"
        self.marker = base / "PWNED"
        self.home.mkdir()
        self._chown(self.home)

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            os.chown(path, self.uid, self.uid)

    def mkdir(self, rel: str) -> Path:
        """A directory under the base, owned by the user."""
        path = self.base / rel
        path.mkdir(parents=True)
        self._chown(path)
        return path

    def run(self, cwd: Path, argv: list[str]) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as the user in ``cwd``."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home),
               "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "u", "GIT_AUTHOR_EMAIL": "u@x",
               "GIT_COMMITTER_NAME": "u", "GIT_COMMITTER_EMAIL": "u@x",
               "GIT_TERMINAL_PROMPT": "0"}
        who: dict[str, Any] = ({"user": self.uid, "group": self.uid, "extra_groups": []}
                               if os.geteuid() == 0 else {})
        return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=60, check=False, **who)

    def sh(self, cwd: Path, script: str) -> str:
        """Run a setup script (``sh -ec``) as the user; fails the test if it fails."""
        r = self.run(cwd, ["sh", "-ec", script])
        assert r.returncode == 0, f"host setup failed: {script}\n{r.stdout}{r.stderr}"
        return r.stdout

    def repo(self, rel: str) -> Path:
        """A new repository with one commit, owned by the user."""
        return make_repo(self.base / rel, {"README": "hello\n"})

    def git_runs_nothing(self, cwd: Path) -> None:
        """The user's next ``git status`` and ``git commit`` in ``cwd`` run nothing planted."""
        log = [self.run(cwd, ["git", *argv]) for argv in
               (["status"], ["commit", "-q", "--allow-empty", "-m", "probe"], ["log", "-1"])]
        assert not self.marker.exists(), "host git ran a planted command:\n" + "\n".join(
            f"$ {' '.join(r.args)}\n{r.stdout}{r.stderr}" for r in log)


@pytest.fixture
def host() -> Iterator[HostUser]:
    """A :class:`HostUser` with a base directory the user can reach (not under pytest's
    private ``tmp_path``), removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="coderx-host-"))
    base.chmod(0o755)
    if os.geteuid() == 0:
        os.chown(base, HostUser.uid, HostUser.uid)
    try:
        yield HostUser(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


FAKE_RUNNER = [sys.executable, "-u", str(Path(__file__).with_name("fake_runner.py"))]
MakeFake = Callable[..., Awaitable[LocalSandbox]]


@pytest.fixture
async def fake(workspace: Path) -> AsyncIterator[MakeFake]:
    """Start our fake runner behind a real ``LocalSandbox``; all are closed after the test."""
    started: list[LocalSandbox] = []

    async def make(**kw: Any) -> LocalSandbox:
        sb = LocalSandbox(SandboxSpec(workspace=workspace), "s-fake", 10, command=FAKE_RUNNER,
                          **kw)
        started.append(sb)
        await sb.start()
        return sb

    try:
        yield make
    finally:
        for sb in started:
            await sb.close()
