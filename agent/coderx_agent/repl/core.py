"""The terminal's state and what one line of input does: a prompt for the agent, or a
slash command.

A prompt runs ``Agent.run`` in a task of its own; SIGINT (Ctrl-C while the agent works)
cancels that task, which cancels the running MCP tool call (the client sends the MCP
cancellation, and the coderx server kills the command's processes in the container); the
loop closes the cut-off call in the conversation, and the prompt comes back. A second
Ctrl-C within ``DOUBLE_PRESS_S`` exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.text import Text

from coderx_agent.config import LoadedConfig
from coderx_agent.conversations import ConversationStore
from coderx_agent.errors import AgentError
from coderx_agent.keys import Keys
from coderx_agent.loop import Agent, RunResult
from coderx_agent.repl.approvals import Approver, Prompter
from coderx_agent.repl.render import Renderer
from coderx_agent.session import Request

#: Two Ctrl-C (or Ctrl-C then Ctrl-D) this close together exit.
DOUBLE_PRESS_S = 1.5


@dataclass(frozen=True)
class Command:
    """A slash command."""

    name: str
    """``/name``."""
    usage: str
    """Arguments, as ``/help`` shows them."""
    help: str
    run: Callable[[Repl, str], Awaitable[None]]
    aliases: tuple[str, ...] = ()


class Repl:
    """One terminal session over one agent.

    Args:
        agent: The agent (its conversation and model change with ``/clear``, ``/model``).
        loaded: The configuration and its layers.
        req: What the command line asked for.
        keys: API keys.
        store: Saved conversations.
        console: Where output goes.
        renderer: Draws the agent's events.
        approver: Asks about tool calls in ``ask`` mode.
        prompter: Reads answers to questions.
        commands: The slash commands.
    """

    def __init__(self, agent: Agent, loaded: LoadedConfig, req: Request, keys: Keys,
                 store: ConversationStore, console: Console, renderer: Renderer,
                 approver: Approver, prompter: Prompter,
                 commands: tuple[Command, ...]) -> None:
        self.agent, self.loaded, self.req, self.keys = agent, loaded, req, keys
        self.store, self.console, self.renderer = store, console, renderer
        self.approver, self.prompter = approver, prompter
        self.commands = commands
        self.done = False
        """Set to leave the terminal."""
        self.vi_mode = loaded.config.ui.vi_mode
        self._task: asyncio.Task[RunResult] | None = None
        self._last_interrupt = 0.0

    @property
    def workspace(self) -> Path:
        """The project directory."""
        return self.req.workspace

    def command(self, name: str) -> Command | None:
        """The command called ``name`` (with its ``/``), or an alias of one."""
        for c in self.commands:
            if name == c.name or name in c.aliases:
                return c
        return None

    def interrupted_twice(self) -> bool:
        """Record a Ctrl-C; True when the previous one was moments ago (exit)."""
        now = time.monotonic()
        twice = now - self._last_interrupt < DOUBLE_PRESS_S
        self._last_interrupt = now
        return twice

    def show_last(self) -> None:
        """The whole output of the last tool call (Ctrl-O, ``/last``)."""
        if not self.renderer.calls:
            self.console.print("no tool calls yet")
            return
        c = self.renderer.calls[-1]
        self.console.print(Renderer.tool_line(c))
        self.console.print(Text(c.output))

    def status(self) -> str:
        """The status line: model, permission mode, conversation, tools, tokens, cost."""
        a = self.agent
        conv = a.conversation
        server = self.loaded.config.server_url or "coderx-mcp (stdio)"
        tokens = conv.usage.prompt_tokens + conv.usage.output_tokens
        return (f" {a.model.name} │ {a.permissions.mode} │ conversation {conv.id} │ "
                f"{server} │ {tokens} tokens │ ${conv.cost_usd:.4f}")

    async def handle(self, line: str) -> None:
        """Run one line of input."""
        text = line.strip()
        if not text:
            return
        if text.startswith("/"):
            name, _, arg = text.partition(" ")
            command = self.command(name)
            if command is None:
                self.console.print(f"unknown command {name}; /help lists them")
                return
            try:
                await command.run(self, arg.strip())
            except AgentError as exc:
                self.console.print(Text(f"error: {exc}", style="red"))
            return
        await self.ask_agent(line)

    @contextlib.contextmanager
    def _sigint_cancels(self, task: asyncio.Task[RunResult]) -> Iterator[None]:
        loop = asyncio.get_running_loop()

        def interrupt() -> None:
            if self.interrupted_twice():
                self.done = True
            task.cancel()

        loop.add_signal_handler(signal.SIGINT, interrupt)
        try:
            yield
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    async def ask_agent(self, prompt: str) -> RunResult:
        """Run the agent on ``prompt`` until it answers or Ctrl-C interrupts it."""
        self.renderer.thinking()
        task = asyncio.ensure_future(self.agent.run(prompt))
        self._task = task
        try:
            with self._sigint_cancels(task):
                result = await task
        finally:
            self._task = None
            self.renderer.pause()
        if result.status == "interrupted":
            self.console.print(Text("interrupted (the running tool call was cancelled); "
                                    "Ctrl-C again to exit", style="yellow"))
        elif result.error:
            self.console.print(Text(f"error: {result.error}", style="red"))
        self.console.print(Text(self.status(), style="dim"))
        return result
