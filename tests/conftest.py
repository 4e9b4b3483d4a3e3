"""Shared fixtures: settings, workspaces, started session managers (Docker and local) and
loopback stand-ins for the model APIs.

Tests marked ``docker`` need a running engine and an up-to-date sandbox image. When either is
missing the run stops at collection with the reason (CI must fail, not skip: STYLE #12);
locally, ``CODERX_TESTS_NO_DOCKER=1`` deselects those tests instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import docker
import docker.errors
import pytest

from coderx_mcp.config import SandboxLimits, Settings
from coderx_mcp.sandbox.backends import Backend, make_backend
from coderx_mcp.sandbox.docker import remove_container
from coderx_mcp.sandbox.docker_backend import DockerBackend
from coderx_mcp.sandbox.instance import LABEL_INSTANCE, LABEL_PID, Instance
from coderx_mcp.sandbox.local import LocalBackend
from coderx_mcp.sessions import SessionManager
from coderx_mcp.tools.files import ReadOut

# Another tag tests a branch that changes containers/ without touching the shared image.
IMAGE = os.environ.get("CODERX_TEST_IMAGE", "coderx-sandbox:latest")
NO_DOCKER_ENV = "CODERX_TESTS_NO_DOCKER"
SANDBOX_UID = 1000
BUILD_HINT = "build it with `coderx-mcp image build --if-stale`"

SERVE = [sys.executable, "-m", "coderx_mcp", "serve"]
"""The server as a subprocess (tests of a transport, of signals, of the CLI)."""

BackendName = Literal["docker", "local"]
MakeSettings = Callable[..., Settings]
MakeManager = Callable[..., Awaitable[SessionManager]]
MakeServer = Callable[..., "Server"]


def _docker_problem() -> str | None:
    """Why the Docker tests cannot run here, or None."""
    from coderx_mcp.image import image_status

    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except docker.errors.DockerException as exc:
        return f"the Docker engine does not answer (`docker info` fails: {exc})"
    try:
        status = image_status(client, IMAGE)
    finally:
        client.close()
    if not status.exists:
        return f"the sandbox image {IMAGE} is missing: {BUILD_HINT}"
    if not status.up_to_date:
        return (f"the sandbox image {IMAGE} is stale (built from context {status.context_hash}, "
                f"the tree's runner and Dockerfile hash to {status.expected_hash}): {BUILD_HINT}")
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    docker_items = [i for i in items if i.get_closest_marker("docker")]
    if not docker_items:
        return
    if os.environ.get(NO_DOCKER_ENV) == "1":
        config.hook.pytest_deselected(items=docker_items)
        items[:] = [i for i in items if not i.get_closest_marker("docker")]
        return
    problem = _docker_problem()
    if problem is not None:
        pytest.exit(
            f"{len(docker_items)} selected tests need Docker, but {problem}. "
            f"Set {NO_DOCKER_ENV}=1 to deselect them on a machine without Docker.",
            returncode=pytest.ExitCode.TESTS_FAILED)


_TEST_ROOT = Path(tempfile.gettempdir()) / "coderx-tests"


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """Like pytest's ``tmp_path``, but reachable by the sandbox uid: host git runs as a
    project's owner, and pytest keeps its own directories 0700 (re-tightened whenever another
    pytest run starts). Removed after the test."""
    _TEST_ROOT.mkdir(mode=0o711, exist_ok=True)
    _TEST_ROOT.chmod(0o711)
    path = Path(tempfile.mkdtemp(dir=_TEST_ROOT))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """A Docker SDK client for looking at containers from outside (inspect, kill, list)."""
    client = docker.from_env(timeout=30)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """An empty project directory owned by the sandbox uid (we may run as root)."""
    ws = tmp_path / "workspace"
    ws.mkdir()
    if os.geteuid() == 0:
        os.chown(ws, SANDBOX_UID, SANDBOX_UID)
    return ws


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> None:
    """Wait until something listens on a loopback port."""
    import socket
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)


def child_env(**extra: str) -> dict[str, str]:
    """Environment for a server or CLI the tests spawn: none of the caller's ``CODERX_*``
    settings but the test history path, the pool off, the tested image."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CODERX_") or k == "CODERX_HISTORY_PATH"}
    env.update({"CODERX_POOL_SIZE": "0", "CODERX_IMAGE": IMAGE, **extra})
    return env


@contextlib.contextmanager
def serve_http(workspace: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """``coderx-mcp serve --http`` on a free loopback port for ``workspace`` (pool off, the
    tested image); yields its MCP URL and stops it with SIGTERM."""
    import signal
    import subprocess
    import sys

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "coderx_mcp", "serve", "--http", "--port",
                             str(port), "--workspace", str(workspace)],
                            env=child_env(**(env or {})),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_port(port, 60)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def npm_install(package: str, version: str, entry: str) -> Path:
    """A pinned npm package installed once into ``~/.cache/coderx/<name>``; ``entry`` is the
    path of the file to run, relative to that directory."""
    import shutil
    import subprocess

    cache = Path.home() / ".cache" / "coderx" / package.rsplit("/", 1)[-1]
    path = cache / entry
    if not path.exists():
        npm = shutil.which("npm")
        assert npm, f"npm is needed to install {package} (Debian: apt-get install npm)"
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "install", "--prefix", str(cache), "--no-audit", "--no-fund",
                        f"{package}@{version}"], check=True, stdout=subprocess.DEVNULL,
                       stdin=subprocess.DEVNULL, timeout=600)
    return path


def chown_tree(root: Path, uid: int = SANDBOX_UID) -> None:
    """Give a tree made by the tests (as root) to the sandbox uid, as a user's project is."""
    if os.geteuid() != 0:
        return
    os.chown(root, uid, uid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, uid)


def host_git(repo: Path, *args: str) -> str:
    """Run git on the host in ``repo`` as its owner would; return stdout."""
    import subprocess

    out = subprocess.run(
        ["git", "-c", "safe.directory=*", "-c", "user.name=Test", "-c", "user.email=t@t",
         "-C", str(repo), *args], check=True, capture_output=True, text=True)
    return out.stdout


def make_repo(path: Path, files: dict[str, str]) -> Path:
    """A git repository with ``files`` committed once, owned by the sandbox uid."""
    path.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        f = path / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    host_git(path, "init", "-q", "-b", "main")
    host_git(path, "add", "-A")
    host_git(path, "commit", "-q", "-m", "initial")
    chown_tree(path)
    return path


@pytest.fixture
def make_settings(tmp_path: Path) -> MakeSettings:
    """Settings for tests: no pool, small limits, state and scratch under ``tmp_path``.

    Keyword arguments override fields; ``limits`` may be a dict of changed limits.
    """

    def make(**overrides: Any) -> Settings:
        limits = {"memory": "512m", "pids": 128, **overrides.pop("limits", {})}
        fields: dict[str, Any] = {
            "image": IMAGE, "pool_size": 0, "limits": SandboxLimits(**limits),
            "data_dir": tmp_path / "data", "state_dir": tmp_path / "state",
            "use_cwd": False, "workspace_roots": [tmp_path],
            "start_timeout_s": 30.0, **overrides}
        return Settings(**fields)

    return make


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    """The default test settings."""
    return make_settings()


def _leftovers(backend: Backend, instance: Instance) -> list[str]:
    """Remove and name the containers of ``instance`` that outlived its shutdown."""
    from coderx_mcp.sandbox.fleet import FleetBackend

    if isinstance(backend, FleetBackend):
        clients = [h.client for h in backend.hosts]
    elif isinstance(backend, DockerBackend):
        clients = [backend.client]
    else:
        return []
    found = []
    for client in clients:
        mine = client.containers.list(
            all=True, filters={"label": f"{LABEL_INSTANCE}={instance.id}"}, ignore_removed=True)
        for c in mine:
            remove_container(client, c.id)
        client.close()
        found += mine
    return [c.short_id for c in found]


@pytest.fixture
async def make_manager(make_settings: MakeSettings) -> AsyncIterator[MakeManager]:
    """Start session managers; each is shut down (containers removed) after the test.

    ``await make_manager("docker" | "local", **settings_overrides)``. Each has its own
    instance identity. Teardown fails the test if a container survived the shutdown.
    """
    started: list[tuple[SessionManager, Instance]] = []

    async def make(backend: BackendName = "docker", **overrides: Any) -> SessionManager:
        s = make_settings(**overrides)
        instance = Instance.current()
        # make_backend: docker_hosts=[...] gives the fleet backend (tests/fleet).
        manager = SessionManager(
            s, make_backend(s, instance) if backend == "docker" else LocalBackend(s))
        started.append((manager, instance))
        await manager.start()
        return manager

    try:
        yield make
    finally:
        leaked: list[str] = []
        for manager, instance in reversed(started):
            try:
                await manager.shutdown()
            finally:
                leaked += _leftovers(manager.backend, instance)
        assert not leaked, f"containers outlived SessionManager.shutdown(): {leaked}"


@pytest.fixture
async def docker_manager(make_manager: MakeManager) -> SessionManager:
    """A started manager on the Docker backend (pool off, small limits)."""
    return await make_manager("docker")


@pytest.fixture
async def local_manager(make_manager: MakeManager) -> SessionManager:
    """A started manager on the local (unisolated) backend."""
    return await make_manager("local")


@pytest.fixture(autouse=True)
def _history_in_tmp(tmp_path_factory: pytest.TempPathFactory,
                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Servers under test (in process or spawned) keep their history out of the user's."""
    monkeypatch.setenv("CODERX_HISTORY_PATH",
                       str(tmp_path_factory.mktemp("history") / "history.sqlite3"))


@pytest.fixture(scope="session")
def _cache_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _cache_in_tmp(_cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Servers under test keep their tool-schema cache out of the user's, in one directory
    for the whole run: the first server derives the schemas, the others use them."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(_cache_home))


def containers_of(pid: int) -> list[Any]:
    """The sandbox containers a server process (by pid) owns, stopped ones included."""
    client = docker.from_env()
    try:
        return list(client.containers.list(all=True, filters={"label": f"{LABEL_PID}={pid}"},
                                           ignore_removed=True))
    finally:
        client.close()


CLI = [sys.executable, "-m", "coderx_mcp"]
MCP_HEADERS = {"Accept": "application/json, text/event-stream",
               "Content-Type": "application/json"}


class Server:
    """A ``serve --http`` subprocess with its state directory and stderr log."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp = tmp
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.log = tmp / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def tokens(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``coderx-mcp tokens ARGS`` against this server's state directory."""
        return subprocess.run([*CLI, "tokens", *args], env=self.env, capture_output=True,
                              text=True, timeout=60)

    def create(self, name: str, *args: str) -> str:
        """A new token for ``name``."""
        done = self.tokens("create", name, *args)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    async def start(self, *args: str) -> None:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(  # noqa: ASYNC220 - a server process, not awaited
                [*SERVE, "--http", "--port", str(self.port), *args],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                env=self.env)
        await asyncio.to_thread(wait_port, self.port)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(30) == 0
        assert containers_of(self.proc.pid) == []

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One raw HTTP request (status, headers, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body, headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()


@pytest.fixture
async def make_server(tmp_path: Path) -> AsyncIterator[MakeServer]:
    """``make_server(**env)``: a server whose state and data live under ``tmp_path``; it
    is started by ``await server.start()`` and stopped (no container left) after the test."""
    servers: list[Server] = []

    def make(**env: str) -> Server:
        base = tmp_path / f"srv{len(servers)}"
        base.mkdir()
        server = Server(base, child_env(CODERX_STATE_DIR=str(base / "state"),
                                        CODERX_DATA_DIR=str(base / "data"), **env))
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for s in servers:
            s.stop()


class RawStdio:
    """A JSON-RPC peer on the server's real stdin/stdout that checks every stdout line."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []
        self.next_id = 1

    def send(self, method: str, params: dict[str, Any] | None = None,
             notify: bool = False) -> int | None:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        rid = None
        if not notify:
            rid = msg["id"] = self.next_id
            self.next_id += 1
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
        self.proc.stdin.flush()
        return rid

    def reply(self, rid: int | None, timeout: float = 60) -> dict[str, Any]:
        assert self.proc.stdout is not None
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError("server closed stdout")
            msg = json.loads(line)  # PR-10: every stdout line is a JSON-RPC message
            self.lines.append(msg)
            if msg.get("id") == rid:
                return msg
        raise AssertionError("no reply in time")

    def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        return self.reply(self.send("tools/call", {"name": name, "arguments": arguments}))
# -- What payload tools say ------------------------------------------------------------
# Payload tools send their payload once, as text (facts in ``_meta``). Tests read the
# payload back from that text, as a model does; these parsers invert the tools' layouts.

_GREP_LINE = re.compile(r"^(.*?):(\d+):(.*)$|^(.*?)-(\d+)-(.*)$", re.DOTALL)


def _strip_added_newline(text: str, n_bytes: int, exact: bool) -> str:
    """Renderers end a page with a newline; drop it when the bytes say it was added."""
    if exact and text.endswith("\n") and len(text.encode()) == n_bytes + 1:
        return text[:-1]
    return text


def _run_fields(f: dict[str, Any], text: str) -> dict[str, Any]:
    """stdout/stderr out of run_command's transcript (``$ cmd``, out, ``[stderr]``, status)."""
    if f["backgrounded"]:
        start = f"still running in the background as {f['output_id']}"
    elif f["timed_out"]:
        start = "TIMED OUT after "
    elif f["oom_killed"]:
        start = "killed: out of memory"
    elif f["signal"]:
        start = f"killed by {f['signal']}"
    else:
        start = f"exit {f['exit_code']} · "
    first = text.index("\n") + 1
    end = text.rindex("\n" + start) + 1 if ("\n" + start) in text else len(text)
    body = text[first:end]
    marker = "[stderr]\n"
    cut = 0 if body.startswith(marker) else body.find("\n" + marker) + 1
    out, err = (body, "") if cut == 0 and not body.startswith(marker) else (
        body[:cut], body[cut + len(marker):])
    exact = not f["truncated"]
    return {"stdout": _strip_added_newline(out, f["stdout_bytes"], exact),
            "stderr": _strip_added_newline(err, f["stderr_bytes"], exact)}


def _listing(text: str) -> list[str]:
    """The rows of a grep/glob text before its ``[showing …]`` footer and warnings."""
    rows = []
    for ln in text.split("\n"):
        if ln.startswith(("[showing ", "warning: ")) or ln in ("No files found",
                                                              "No matches found"):
            continue
        rows.append(ln)
    return rows


def _grep_fields(f: dict[str, Any], text: str) -> dict[str, Any]:
    rows = _listing(text)
    files: list[str] = []
    lines: list[dict[str, Any]] = []
    counts: list[dict[str, Any]] = []
    if f["mode"] == "files_with_matches":
        files = rows
    elif f["mode"] == "count":
        for row in rows:
            path, _, n = row.rpartition(":")
            if path and n.isdigit():
                counts.append({"path": path, "count": int(n)})
    else:
        for row in rows:
            m = _GREP_LINE.match(row)
            if row == "--" or m is None:
                continue
            match = m.group(1) is not None
            path, line, body = m.groups()[0:3] if match else m.groups()[3:6]
            lines.append({"path": path, "line": int(line), "text": body, "match": match})
    return {"files": files, "lines": lines, "counts": counts}


def _page_text(f: dict[str, Any], text: str) -> str:
    """The output of a read_output/process_output page, without its ``[…]`` status line."""
    body = text.rsplit("\n[", 1)[0] + "\n" if "\n[" in text else ""
    if body == "(no new output)\n":
        return ""
    open_end = " · no newline at end" in text.rsplit("\n[", 1)[-1]
    return body[:-1] if open_end else body


# read_file's facts that its result leaves out when they have these values (compact_facts).
_READ_DEFAULTS: dict[str, Any] = {
    name: field.default for name, field in ReadOut.model_fields.items()
    if not field.is_required() and name not in ReadOut.payload}


def payload_facts(structured: dict[str, Any] | None, meta: dict[str, Any] | None,
                  text: str) -> dict[str, Any]:
    """What a successful result says: its structured content, or a payload tool's facts
    with the payload read back from its text (``text`` is the whole text, except for output
    pages, where it is the page's output as before) and read_file's facts left out at their
    default filled back in."""
    if structured is not None:
        return dict(structured)
    assert meta is not None and "coderx/facts" in meta, "neither structured content nor facts"
    f: dict[str, Any] = {**meta["coderx/facts"], "text": text}
    if "sha256" in f and "first_line" in f:  # read_file leaves facts at their default out
        f = {**_READ_DEFAULTS, **f}
    if "stdout_bytes" in f:
        f.update(_run_fields(f, text))
    elif "total_matching_lines" in f:
        f.update(_grep_fields(f, text))
    elif "next_skip" in f:
        f["files"] = _listing(text)
    elif "total_bytes" in f and "offset" in f:
        if f.get("total_matches") is not None:  # read_output(grep=): "N:text" rows
            rows = text.split("\n")[:-1]
            f["matches"] = [{"line": int(n), "text": t}
                            for n, _, t in (r.partition(":") for r in rows)]
        else:
            f["text"] = _page_text(f, text)
    return f


def raw_facts(result: dict[str, Any]) -> dict[str, Any]:
    """:func:`payload_facts` of a raw JSON-RPC ``result`` object (a tools/call reply)."""
    text = "".join(b.get("text", "") for b in result.get("content", []))
    return payload_facts(result.get("structuredContent"), result.get("_meta"), text)


def facts(r: Any) -> dict[str, Any]:
    """What a successful tool result (FastMCP client) says: see :func:`payload_facts`."""
    text = "".join(getattr(b, "text", "") for b in r.content)
    return payload_facts(r.structured_content, r.meta, text)
# -- Loopback stand-ins for the model APIs (tests/agent and the delegated-agent tools) -----
# ``FakeAnthropic`` speaks the Messages API (JSON and SSE streaming, tool use, errors with
# ``retry-after``) and ``FakeOllama`` Ollama's ``/api/chat``, ``/api/tags``, ``/api/show`` and
# ``/api/pull``, so the real SDKs talk to them over HTTP. A test queues replies (``say``,
# ``call``, ``fail``, ``hang``, ``then``); every request body is recorded.


class Step:
    """One scripted answer: a reply, an HTTP error, or a hang until released."""

    def __init__(self, kind: str, **data: Any) -> None:
        self.kind, self.data = kind, data


class FakeAPI:
    """A scripted loopback HTTP server (subclasses route the paths)."""

    def __init__(self) -> None:
        self.steps: deque[Step | Callable[[dict[str, Any]], Step]] = deque()
        self.requests: list[dict[str, Any]] = []
        self.released = threading.Event()
        self.hanging = threading.Event()
        """Set while a request waits in a ``hang`` step."""
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()

    # -- the script ---------------------------------------------------------------------
    def say(self, text: str, **usage: int) -> FakeAPI:
        """The model answers ``text`` (and asks for no tool)."""
        self.steps.append(Step("reply", text=text, calls=[], usage=usage))
        return self

    def call(self, *calls: tuple[str, dict[str, Any]], text: str = "", **usage: int
             ) -> FakeAPI:
        """The model asks for these ``(tool, arguments)`` calls."""
        self.steps.append(Step("reply", text=text, calls=list(calls), usage=usage))
        return self

    def fail(self, status: int, message: str = "scripted failure",
             retry_after: str | None = None) -> FakeAPI:
        """The next request gets an HTTP error."""
        self.steps.append(Step("error", status=status, message=message,
                               retry_after=retry_after))
        return self

    def hang(self) -> FakeAPI:
        """The next request waits until ``released`` is set (or the server closes)."""
        self.steps.append(Step("hang"))
        return self

    def then(self, decide: Callable[[dict[str, Any]], Step]) -> FakeAPI:
        """The next step is computed from the request body."""
        self.steps.append(decide)
        return self

    def next_step(self, body: dict[str, Any]) -> Step:
        self.requests.append(body)
        if not self.steps:
            return Step("error", status=400, message="the test script has no reply left",
                        retry_after=None)
        step = self.steps.popleft()
        return step(body) if callable(step) else step

    def wait_for_requests(self, n: int, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while len(self.requests) < n:
            if time.monotonic() > end:
                raise AssertionError(f"expected {n} requests, got {len(self.requests)}")
            time.sleep(0.02)

    # -- HTTP -----------------------------------------------------------------------------
    def route(self, h: BaseHTTPRequestHandler, method: str, body: dict[str, Any]) -> None:
        raise NotImplementedError

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def _body(self) -> dict[str, Any]:
                n = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(n) if n else b""
                return json.loads(raw) if raw else {}

            def do_GET(self) -> None:
                api.route(self, "GET", {})

            def do_POST(self) -> None:
                api.route(self, "POST", self._body())

            def do_DELETE(self) -> None:
                api.route(self, "DELETE", self._body())

        return Handler

    def wait_released(self) -> None:
        self.hanging.set()
        self.released.wait(120)


def send_json(h: BaseHTTPRequestHandler, status: int, obj: Any,
              headers: dict[str, str] | None = None) -> None:
    data = json.dumps(obj).encode()
    h.send_response(status)
    h.send_header("content-type", "application/json")
    h.send_header("content-length", str(len(data)))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(data)


class FakeAnthropic(FakeAPI):
    """The Messages API: ``POST /v1/messages`` (JSON or SSE) and ``GET /v1/models``."""

    def __init__(self) -> None:
        super().__init__()
        self.counter = 0
        self.seen_keys: list[str | None] = []

    def route(self, h: BaseHTTPRequestHandler, method: str, body: dict[str, Any]) -> None:
        # The SDK sends the key as x-api-key or as a bearer token, depending on its version.
        key = h.headers.get("x-api-key") or h.headers.get("authorization") or ""
        self.seen_keys.append(key.removeprefix("Bearer ") or None)
        if method == "GET" and h.path.startswith("/v1/models"):
            send_json(h, 200, {"data": [
                {"type": "model", "id": "claude-sonnet-4-5", "display_name": "Claude Sonnet 4.5",
                 "created_at": "2025-09-29T00:00:00Z"},
                {"type": "model", "id": "claude-haiku-4-5", "display_name": "Claude Haiku 4.5",
                 "created_at": "2025-10-01T00:00:00Z"}],
                "has_more": False, "first_id": "claude-sonnet-4-5", "last_id": "claude-haiku-4-5"})
            return
        step = self.next_step(body)
        if step.kind == "hang":
            self.wait_released()
            step = Step("error", status=500, message="released", retry_after=None)
        if step.kind == "error":
            kinds = {429: "rate_limit_error", 529: "overloaded_error", 401: "authentication_error"}
            headers = {"retry-after": step.data["retry_after"]} if step.data["retry_after"] else {}
            send_json(h, step.data["status"], {"type": "error", "error": {
                "type": kinds.get(step.data["status"], "invalid_request_error"),
                "message": step.data["message"]}}, headers)
            return
        self.counter += 1
        content: list[dict[str, Any]] = []
        if step.data["text"]:
            content.append({"type": "text", "text": step.data["text"]})
        for i, (name, args) in enumerate(step.data["calls"]):
            content.append({"type": "tool_use", "id": f"toolu_{self.counter}_{i}", "name": name,
                            "input": args})
        usage = {"input_tokens": 100, "output_tokens": 20, "cache_read_input_tokens": 0,
                 "cache_creation_input_tokens": 0, **step.data["usage"]}
        stop = "tool_use" if step.data["calls"] else "end_turn"
        message = {"id": f"msg_{self.counter}", "type": "message", "role": "assistant",
                   "model": body.get("model"), "content": content, "stop_reason": stop,
                   "stop_sequence": None, "usage": usage}
        if not body.get("stream"):
            send_json(h, 200, message)
            return
        h.send_response(200)
        h.send_header("content-type", "text/event-stream")
        h.end_headers()

        def event(name: str, data: dict[str, Any]) -> None:
            h.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
            h.wfile.flush()

        event("message_start", {"type": "message_start", "message": {
            **message, "content": [], "stop_reason": None,
            "usage": {**usage, "output_tokens": 1}}})
        for i, block in enumerate(content):
            if block["type"] == "text":
                event("content_block_start", {"type": "content_block_start", "index": i,
                                              "content_block": {"type": "text", "text": ""}})
                text = block["text"]
                for piece in (text[: len(text) // 2], text[len(text) // 2:]):
                    event("content_block_delta", {"type": "content_block_delta", "index": i,
                                                  "delta": {"type": "text_delta", "text": piece}})
            else:
                event("content_block_start", {"type": "content_block_start", "index": i,
                                              "content_block": {**block, "input": {}}})
                partial = json.dumps(block["input"])
                event("content_block_delta", {"type": "content_block_delta", "index": i,
                                              "delta": {"type": "input_json_delta",
                                                        "partial_json": partial}})
            event("content_block_stop", {"type": "content_block_stop", "index": i})
        event("message_delta", {"type": "message_delta",
                                "delta": {"stop_reason": stop, "stop_sequence": None},
                                "usage": {"output_tokens": usage["output_tokens"]}})
        event("message_stop", {"type": "message_stop"})

    def system_of(self, n: int) -> str:
        """The system prompt text of request ``n``."""
        return "".join(b["text"] for b in self.requests[n]["system"])

    def tool_results(self, n: int) -> list[dict[str, Any]]:
        """The tool_result blocks of request ``n``'s last message."""
        return [b for b in self.requests[n]["messages"][-1]["content"]
                if b["type"] == "tool_result"]


class FakeOllama(FakeAPI):
    """Ollama's ``/api/chat`` (streamed NDJSON), ``/api/tags``, ``/api/show``, ``/api/pull``."""

    def __init__(self) -> None:
        super().__init__()
        self.models = {"qwen3:8b": ["completion", "tools"], "gemma2:2b": ["completion"]}

    def route(self, h: BaseHTTPRequestHandler, method: str, body: dict[str, Any]) -> None:
        if h.path == "/api/tags":
            send_json(h, 200, {"models": [
                {"name": n, "model": n, "modified_at": "2025-01-01T00:00:00Z", "size": 5,
                 "digest": "d" * 64, "details": {"parameter_size": n.split(":")[1].upper(),
                                                 "format": "gguf", "family": "x"}}
                for n in self.models]})
            return
        if h.path == "/api/show":
            self.requests.append(body)
            send_json(h, 200, {"modelfile": "", "parameters": "", "template": "",
                               "details": {}, "model_info": {},
                               "capabilities": self.models[body["model"]]})
            return
        if h.path in ("/api/generate", "/api/delete"):
            self.requests.append({"path": h.path, **body})
            if body.get("model") not in self.models:
                send_json(h, 404, {"error": f"model '{body.get('model')}' not found"})
            elif h.path == "/api/delete":
                self.models.pop(body["model"])
                send_json(h, 200, {})
            else:
                send_json(h, 200, {"model": body["model"], "created_at": "2025-01-01T00:00:00Z",
                                   "response": "", "done": True,
                                   "done_reason": "unload" if body.get("keep_alive") == 0
                                   else "load"})
            return
        if h.path == "/api/pull":
            self.requests.append(body)
            lines = [{"status": "pulling manifest"}]
            lines += [{"status": "pulling abc", "digest": "sha256:abc", "total": 1000,
                       "completed": c} for c in (0, 500, 1000)]
            lines += [{"status": "verifying sha256 digest"}, {"status": "success"}]
            self._ndjson(h, lines)
            return
        step = self.next_step(body)
        if step.kind == "hang":
            self.wait_released()
            step = Step("error", status=500, message="released", retry_after=None)
        if step.kind == "error":
            send_json(h, step.data["status"], {"error": step.data["message"]})
            return
        usage = {"prompt_eval_count": 50, "eval_count": 10, **step.data["usage"]}
        lines = []
        text = step.data["text"]
        for piece in (text[: len(text) // 2], text[len(text) // 2:]) if text else ():
            lines.append({"model": body["model"], "created_at": "2025-01-01T00:00:00Z",
                          "message": {"role": "assistant", "content": piece}, "done": False})
        if step.data["calls"]:
            lines.append({"model": body["model"], "created_at": "2025-01-01T00:00:00Z",
                          "message": {"role": "assistant", "content": "", "tool_calls": [
                              {"function": {"name": n, "arguments": a}}
                              for n, a in step.data["calls"]]}, "done": False})
        lines.append({"model": body["model"], "created_at": "2025-01-01T00:00:00Z",
                      "message": {"role": "assistant", "content": ""}, "done": True,
                      "done_reason": "stop", **usage})
        self._ndjson(h, lines)

    @staticmethod
    def _ndjson(h: BaseHTTPRequestHandler, lines: list[dict[str, Any]]) -> None:
        h.send_response(200)
        h.send_header("content-type", "application/x-ndjson")
        h.end_headers()
        for line in lines:
            h.wfile.write(json.dumps(line).encode() + b"\n")
            h.wfile.flush()


@pytest.fixture
def anthropic_api() -> Iterator[FakeAnthropic]:
    """A scripted Messages API on loopback."""
    api = FakeAnthropic()
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def ollama_api() -> Iterator[FakeOllama]:
    """A scripted Ollama on loopback."""
    api = FakeOllama()
    try:
        yield api
    finally:
        api.close()
