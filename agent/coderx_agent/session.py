"""Putting a run together: config → model, conversation, tools, permissions → ``Agent``.

Shared by the headless CLI and the interactive terminal, which differ only in how
they render events and whether they can ask for permission.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import platformdirs
from pydantic import BaseModel

from coderx_agent.config import AgentConfig, PermissionMode
from coderx_agent.conversations import Conversation, ConversationStore
from coderx_agent.events import EventSink, Notice
from coderx_agent.keys import KeySource
from coderx_agent.loop import Agent
from coderx_agent.memory import load_memory
from coderx_agent.models import Model, make_model, resolve
from coderx_agent.permissions import Ask, Permissions
from coderx_agent.pricing import price_of
from coderx_agent.servers import ToolHub, build_servers, coderx_entry


class Request(BaseModel):
    """What the user asked for on the command line (beyond the config)."""

    workspace: Path
    """The project directory (mounted in the sandbox)."""
    server_token: str | None = None
    """Bearer token for ``server_url``."""
    continue_last: bool = False
    resume: str | None = None
    """Id (or prefix) of a conversation to resume."""
    fork: bool = False
    allow: list[str] = []
    deny: list[str] = []
    permission_mode: PermissionMode | None = None
    """Overrides the config's mode and a resumed conversation's."""
    model: str | None = None
    """Overrides the config's model and a resumed conversation's."""


def server_log_path() -> Path:
    """Where stdio MCP servers' stderr goes (kept off the terminal and the JSON output)."""
    return Path(platformdirs.user_log_dir("coderx")) / "mcp-servers.log"


def ollama_log_path() -> Path:
    """Where an ``ollama serve`` started by the agent logs."""
    return Path(platformdirs.user_log_dir("coderx")) / "ollama-serve.log"


def find_conversation(store: ConversationStore, req: Request) -> Conversation | None:
    """The conversation to continue or resume, if the request names one."""
    if not (req.resume or req.continue_last):
        return None
    return store.load(store.find(req.resume) if req.resume else store.last_in(req.workspace))


@contextlib.asynccontextmanager
async def open_agent(config: AgentConfig, req: Request, keys: KeySource,
                     store: ConversationStore, on_event: EventSink, ask: Ask | None = None,
                     environ: Mapping[str, str] | None = None) -> AsyncIterator[Agent]:
    """An agent ready to ``run``, its model and MCP servers closed on exit.

    A resumed conversation brings back its model and permission mode unless the request
    names others.

    Raises:
        UsageError, ConversationError, MissingKey, ToolServerError: before anything runs.
    """
    previous = find_conversation(store, req)
    spec = req.model or (previous.header.model if previous else config.model)
    mode: PermissionMode = req.permission_mode or (
        previous.header.permission_mode if previous else config.permissions.mode)
    provider, model_id = resolve(spec, config.aliases)
    permissions = Permissions(mode, [*config.permissions.allow, *req.allow],
                              [*config.permissions.deny, *req.deny], ask)
    # Built before any file is written: a missing key leaves no empty conversation behind.
    model: Model = make_model(provider, model_id, config, keys)
    if previous is None:
        conv = store.create(req.workspace, spec, mode)
    else:
        conv = store.fork(previous) if req.fork else previous
        if (conv.header.model, conv.header.permission_mode) != (spec, mode):
            conv.settings(spec, mode)
    coderx = coderx_entry(req.workspace, config.server_url, req.server_token,
                          config.server_timeout_s)
    try:
        async with contextlib.AsyncExitStack() as stack:
            if provider == "ollama" and config.ollama.start:
                from coderx_agent.ollama_admin import serving

                await stack.enter_async_context(serving(config.ollama, ollama_log_path()))
            hub = ToolHub(build_servers(coderx, config.mcpServers, environ,
                                        server_log_path()),
                          notify=lambda m: on_event(Notice(message=m)))
            async with hub:
                yield Agent(model, hub, conv, permissions, price_of(provider, model_id),
                            memory=load_memory(req.workspace, config.memory_files),
                            max_turns=config.max_turns, max_budget_usd=config.max_budget_usd,
                            compact_at=config.compact_at, keep_recent=config.keep_recent,
                            on_event=on_event)
    finally:
        await model.aclose()
