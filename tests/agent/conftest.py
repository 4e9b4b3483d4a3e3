"""Agent test helpers. The model API stand-ins (``anthropic_api``, ``ollama_api``) live in
``tests/conftest.py``: the delegated-agent tools use them too."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from tests.conftest import IMAGE, FakeAnthropic, FakeOllama, Step, serve_http  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    from coderx_agent.loop import Agent

AGENT = [sys.executable, "-m", "coderx_agent"]
EXTRA_SERVER = Path(__file__).with_name("extra_server.py")
SANDBOX_UID = 1000


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
