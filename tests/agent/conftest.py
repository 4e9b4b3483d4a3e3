"""Loopback stand-ins for the model APIs, scripted per test, and agent test helpers.

``anthropic_api`` speaks the Messages API (JSON and SSE streaming, tool use, errors with
``retry-after``) and ``ollama_api`` Ollama's ``/api/chat``, ``/api/tags``, ``/api/show`` and
``/api/pull``, so the real ``anthropic`` and ``ollama`` SDKs talk to them over HTTP. A test
queues replies (``say``, ``call``, ``fail``, ``hang``); every request body is recorded.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from tests.conftest import IMAGE, serve_http

if TYPE_CHECKING:
    from coderx_agent.loop import Agent

AGENT = [sys.executable, "-m", "coderx_agent"]
EXTRA_SERVER = Path(__file__).with_name("extra_server.py")
SANDBOX_UID = 1000


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


@pytest.fixture
def make_agent(anthropic_api: FakeAnthropic, tmp_path: Path
               ) -> Callable[..., contextlib.AbstractAsyncContextManager[Agent]]:
    """Agents on the fake Messages API (real SDK) whose tools are ``extra_server``'s, in
    memory under the coderx name (plain tool names). Keyword arguments go to ``Agent``;
    ``mode``/``allow``/``deny`` to its permissions, ``context_window`` to the model."""
    from fastmcp import Client
    from tests.agent import extra_server

    from coderx_agent.config import AnthropicConfig, ServerEntry
    from coderx_agent.conversations import ConversationStore
    from coderx_agent.keys import Keys
    from coderx_agent.loop import Agent
    from coderx_agent.models.anthropic import AnthropicModel
    from coderx_agent.permissions import Permissions
    from coderx_agent.pricing import price_of
    from coderx_agent.servers import ToolHub, ToolServer

    @contextlib.asynccontextmanager
    async def make(mode: str = "yolo", allow: tuple[str, ...] = (), deny: tuple[str, ...] = (),
                   context_window: int = 200_000, **kw: Any) -> AsyncIterator[Agent]:
        model = AnthropicModel("claude-sonnet-4-5", AnthropicConfig(
            base_url=anthropic_api.url, max_retries=0, context_window=context_window),
            Keys(environ={"ANTHROPIC_API_KEY": "sk-test"}))
        server = ToolServer("coderx", lambda: Client(extra_server.mcp),
                            ServerEntry(command="in-memory", timeout_s=30), prefix=False)
        conv = ConversationStore(tmp_path / "conversations").create(tmp_path, model.name, mode)
        try:
            async with ToolHub([server]) as hub:
                yield Agent(model, hub, conv, Permissions(mode, allow, deny),  # type: ignore[arg-type]
                            price_of("anthropic", "claude-sonnet-4-5"), **kw)
        finally:
            await model.aclose()

    return make


@pytest.fixture
def agent_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home of its own: config, data (conversations) and memory under ``tmp_path``."""
    home = tmp_path / "home"
    for sub in ("config", "data"):
        (home / sub).mkdir(parents=True)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    for k in list(os.environ):
        if k.startswith("CODERX_") or k.startswith(("ANTHROPIC_", "OLLAMA_")):
            monkeypatch.delenv(k)
    return home


def chown_tree(path: Path) -> None:
    """Hand a test workspace to the sandbox uid (the server will not use a root-owned one)."""
    if os.geteuid() != 0:
        return
    for p in [path, *path.rglob("*")]:
        os.chown(p, SANDBOX_UID, SANDBOX_UID)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A small Python project whose test fails (``add`` subtracts), owned by uid 1000."""
    ws = tmp_path / "proj"
    ws.mkdir()
    (ws / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    (ws / "test_calc.py").write_text(
        "import unittest\n\nfrom calc import add\n\n\n"
        "class TestAdd(unittest.TestCase):\n"
        "    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n\n\n"
        "if __name__ == '__main__':\n    unittest.main()\n")
    chown_tree(ws)
    return ws


@pytest.fixture
def agent_env(agent_home: Path, anthropic_api: FakeAnthropic) -> dict[str, str]:
    """Environment of a ``coderx-agent`` subprocess: the fake API, a key, our home dirs."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CODERX_", "ANTHROPIC_", "OLLAMA_"))}
    env.update({"XDG_CONFIG_HOME": str(agent_home / "config"),
                "XDG_DATA_HOME": str(agent_home / "data"),
                "ANTHROPIC_API_KEY": "sk-test-SECRET-KEY-0123456789",
                "CODERX_ANTHROPIC__BASE_URL": anthropic_api.url,
                "CODERX_ANTHROPIC__MAX_RETRIES": "1",
                "CODERX_POOL_SIZE": "0", "CODERX_MODEL": "anthropic:claude-sonnet-4-5",
                "CODERX_IMAGE": IMAGE})  # the server the agent starts uses the tested image
    return env


def run_agent(args: list[str], env: dict[str, str], cwd: Path, stdin: str | None = None,
              timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``coderx-agent <args>`` as a subprocess, to its end."""
    return subprocess.run([*AGENT, *args], env=env, cwd=cwd, input=stdin, text=True,
                          capture_output=True, timeout=timeout)


@pytest.fixture(scope="module")
def coderx_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One ``coderx-mcp serve --http`` for the runs that only need it to answer (its
    workspace is a directory of its own, not the test's project)."""
    ws = tmp_path_factory.mktemp("http-ws")
    chown_tree(ws)
    with serve_http(ws) as url:
        yield url


class Term:
    """``coderx-agent`` (the interactive terminal) in a pseudo-terminal, driven by pexpect.

    Output carries colours and cursor moves, so tests expect short plain fragments.
    """

    PROMPT = "›"

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path,
                 timeout: float = 60) -> None:
        import pexpect

        env = {**env, "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm-256color",
               "COLUMNS": "160", "LINES": "50"}
        self.child = pexpect.spawn(AGENT[0], [*AGENT[1:], *args], env=env, cwd=str(cwd),
                                   dimensions=(50, 160), encoding="utf-8", timeout=timeout,
                                   codec_errors="replace")
        self.log: list[str] = []

    def expect(self, pattern: str, timeout: float | None = None) -> str:
        """Wait for ``pattern`` (a regex); returns the output up to and including it."""
        try:
            self.child.expect(pattern, timeout=timeout or self.child.timeout)
        except Exception:
            raise AssertionError(f"{pattern!r} not seen; the terminal showed:\n"
                                 f"{''.join(self.log)}{self.child.before}") from None
        seen = f"{self.child.before}{self.child.after}"
        self.log.append(seen)
        return seen

    def prompt(self, timeout: float | None = None) -> str:
        """Wait for the input prompt."""
        return self.expect(self.PROMPT, timeout)

    def line(self, text: str) -> None:
        """Type ``text`` and Enter."""
        self.child.send(text + "\r")

    def close(self) -> int | None:
        """End the terminal (Ctrl-D, then a kill) and return its exit status."""
        import pexpect

        if self.child.isalive():
            # Ctrl-D counts only at the prompt (while the agent works the terminal is in
            # cooked mode, where the line discipline swallows it).
            with contextlib.suppress(pexpect.ExceptionPexpect):
                self.child.expect(self.PROMPT, timeout=10)
            self.child.sendcontrol("d")
            with contextlib.suppress(pexpect.ExceptionPexpect):
                self.child.expect(pexpect.EOF, timeout=15)
        self.child.close(force=True)
        return self.child.exitstatus


@pytest.fixture
def term(agent_env: dict[str, str]) -> Iterator[Callable[..., Term]]:
    """Start terminals (``term(args, cwd)``); each is closed after the test."""
    started: list[Term] = []

    def start(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> Term:
        t = Term(args, env or agent_env, cwd)
        started.append(t)
        return t

    yield start
    for t in started:  # tests that care about a clean exit assert it themselves
        t.child.close(force=True)


class Answers:
    """The user's answers to the terminal's questions, in order (a stand-in for typing at
    a real prompt, which the pty tests do); records the questions."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.questions: list[str] = []

    async def ask(self, question: str, hidden: bool = False) -> str:
        self.questions.append(question)
        if not self.answers:
            raise AssertionError(f"unexpected question {question!r}")
        return self.answers.pop(0)


@pytest.fixture
def make_repl(make_agent: Callable[..., contextlib.AbstractAsyncContextManager[Agent]],
              anthropic_api: FakeAnthropic, agent_home: Path, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch
              ) -> Callable[..., contextlib.AbstractAsyncContextManager[Any]]:
    """A ``Repl`` over ``make_agent``'s agent (in-memory tools), printing to a string:
    ``async with make_repl(answers) as (repl, out): …``; ``out()`` is the text so far. Its
    project is ``tmp_path / "proj"``; the config points at the fake Messages API."""
    import io

    from rich.console import Console

    from coderx_agent.config import load_config, project_config_path
    from coderx_agent.conversations import ConversationStore
    from coderx_agent.keys import Keys
    from coderx_agent.permissions import Permissions
    from coderx_agent.repl import commands
    from coderx_agent.repl.approvals import Approver
    from coderx_agent.repl.core import Repl
    from coderx_agent.repl.render import Renderer
    from coderx_agent.session import Request

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-SECRET-KEY-0123456789")
    monkeypatch.setenv("CODERX_ANTHROPIC__BASE_URL", anthropic_api.url)
    monkeypatch.setenv("CODERX_ANTHROPIC__MAX_RETRIES", "0")
    monkeypatch.setenv("CODERX_OLLAMA__HOST", "http://127.0.0.1:9")
    ws = tmp_path / "proj"
    ws.mkdir(exist_ok=True)

    @contextlib.asynccontextmanager
    async def make(answers: Answers | None = None, mode: str = "yolo",
                   allow: tuple[str, ...] = (), deny: tuple[str, ...] = (), **kw: Any
                   ) -> AsyncIterator[Any]:
        buf = io.StringIO()
        console = Console(file=buf, width=120, force_terminal=False, highlight=False,
                          markup=False)
        renderer = Renderer(console, ws)
        prompter = answers or Answers()
        approver = Approver(console, prompter, renderer, ws, project_config_path(ws))
        async with make_agent(**kw) as agent:
            agent.emit = renderer.event
            agent.permissions = approver.permissions = Permissions(
                mode, allow, deny, ask=approver)  # type: ignore[arg-type]
            loaded = load_config(ws)
            repl = Repl(agent, loaded, Request(workspace=ws), Keys(),
                        ConversationStore(tmp_path / "conversations"), console, renderer,
                        approver, prompter, commands())
            yield repl, buf.getvalue
            await agent.model.aclose()  # a model /model switched to

    return make


def cli(args: list[str], env: dict[str, str], cwd: Path, monkeypatch: pytest.MonkeyPatch,
        stdin: str | None = None) -> tuple[int, str, str]:
    """Run the ``coderx-agent`` CLI in this process: (exit code, stdout, stderr)."""
    from typer.testing import CliRunner

    from coderx_agent.cli import app

    monkeypatch.chdir(cwd)
    for k in list(os.environ):
        if k.startswith(("CODERX_", "ANTHROPIC_")):
            monkeypatch.delenv(k)
    result = CliRunner().invoke(app, args, env=env, input=stdin)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr
