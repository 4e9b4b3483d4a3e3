"""Agent test helpers. The model API stand-ins (``anthropic_api``, ``ollama_api``) live in
``tests/conftest.py``: the delegated-agent tools use them too."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from tests.conftest import IMAGE, FakeAnthropic, FakeOllama, Step  # noqa: F401 (re-exported)

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
