"""Building a delegated run's agent: model, conversation, permissions, and an MCP client
that talks to this very server in memory.

The agent (``coderx_agent``) stays a plain MCP client: it reaches the tools through a
FastMCP ``Client`` on the server object, like any host, and never imports tool code.
Which session its calls use is not in any message: the run's task carries a
:class:`~coderx_mcp.context.Delegation` that the server side of the in-memory
connection inherits (``App.owner``/``App.session`` read it).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastmcp import Client, FastMCP
from mcp.server.session import ServerSession

from coderx_agent.config import AnthropicConfig, OllamaConfig, ServerEntry
from coderx_agent.conversations import ConversationStore
from coderx_agent.errors import AgentError
from coderx_agent.events import EventSink
from coderx_agent.loop import Agent
from coderx_agent.models import Model, resolve
from coderx_agent.permissions import Permissions
from coderx_agent.pricing import Price, price_of
from coderx_agent.servers import CODERX, ToolHub, ToolServer
from coderx_mcp.config import AgentRunSettings, Settings
from coderx_mcp.delegate.runs import RunMode
from coderx_mcp.delegate.sampling import HostModel, host_can_sample
from coderx_mcp.errors import DelegateError, KeyStoreError
from coderx_mcp.keystore import open_store

HOST = "host"
#: A tool call of a run may take as long as the longest command, plus slack.
TOOL_TIMEOUT_S = 900.0
#: Tools a run never gets: it cannot start runs of its own.
DENIED = ["agent_*"]


class ServerKeys:
    """The run's model key: the key store entry named by the settings, else the
    environment variable of that name. Only the model's SDK client ever holds it."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def get(self, name: str) -> str | None:
        """The value for the SDK's ``name`` (only the configured API key is known)."""
        if name != "ANTHROPIC_API_KEY":
            return None
        stored = self._settings.agents.api_key
        try:
            value = open_store(self._settings.key_file).get(stored)
        except KeyStoreError:
            value = None  # no passphrase or no store: the environment may have it
        return value or os.environ.get(stored) or None


def make_model(spec: str, settings: Settings, host: ServerSession | None) -> tuple[Model, Price]:
    """The run's model and its prices.

    Raises:
        DelegateError: Unknown model, host sampling unavailable, or no API key.
    """
    if spec == HOST:
        if host is None or not host_can_sample(host):
            raise DelegateError("model='host' needs an MCP host that supports sampling with "
                                "tools (on the handshake-era protocol); this host does not: "
                                "use a configured model instead")
        return HostModel(host), Price.of(0, 0)
    a: AgentRunSettings = settings.agents
    try:
        provider, model_id = resolve(spec, {})
        if provider == "anthropic":
            from coderx_agent.models.anthropic import AnthropicModel

            model: Model = AnthropicModel(model_id, AnthropicConfig(
                base_url=a.anthropic_base_url, max_retries=2), ServerKeys(settings))
        else:
            from coderx_agent.models.ollama import OllamaModel

            model = OllamaModel(model_id, OllamaConfig(host=a.ollama_host))
    except AgentError as exc:
        raise DelegateError(str(exc)) from None
    return model, price_of(provider, model_id)


def permissions(mode: RunMode, settings: Settings) -> Permissions:
    """The run's permissions: the mode plus the operator's allow rules (not in plan mode,
    where allow rules would let changes through)."""
    allow = [] if mode == "plan" else settings.agents.allow
    return Permissions(mode, allow, DENIED)


def in_memory_hub(server: FastMCP, notify: Callable[[str], None]) -> ToolHub:
    """A tool hub whose only server is ``server`` itself, in memory (agent tools hidden)."""
    entry = ServerEntry(command="in-memory", timeout_s=TOOL_TIMEOUT_S, deny=DENIED)
    factory: Callable[[], Client[Any]] = lambda: Client(server)  # noqa: E731
    return ToolHub([ToolServer(CODERX, factory, entry, prefix=False)], notify=notify)


@contextlib.asynccontextmanager
async def open_agent(server: FastMCP, model: Model, price: Price, mode: RunMode,
                     settings: Settings, workspace: Path, max_turns: int,
                     max_budget_usd: float | None, on_event: EventSink
                     ) -> AsyncIterator[Agent]:
    """An agent on ``model`` over this server's tools; closes the client and model on exit.

    Enter and leave it in the same task (the in-memory client runs a task group).
    """
    store = ConversationStore(settings.data_dir / "runs")
    conv = store.create(workspace, model.name, mode)
    try:
        async with in_memory_hub(server, lambda _m: None) as hub:
            yield Agent(model, hub, conv, permissions(mode, settings), price,
                        max_turns=max_turns, max_budget_usd=max_budget_usd,
                        on_event=on_event)
    finally:
        await model.aclose()
