"""The interactive terminal: a prompt_toolkit prompt in a loop around ``Repl.handle``.

Input: history across runs in the user's data directory (Ctrl-R searches it), Alt+Enter or
a trailing backslash for a new line, emacs keys or vi keys (``/vim``), Tab completion of
slash commands and of paths in the project, Ctrl-O for the last tool call's whole output.
The status line sits at the bottom while the prompt waits.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import platformdirs
from prompt_toolkit import PromptSession
from prompt_toolkit.application import run_in_terminal
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.enums import EditingMode
from prompt_toolkit.history import FileHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from rich.console import Console
from rich.text import Text

from coderx_agent import __version__
from coderx_agent.config import LoadedConfig, project_config_path
from coderx_agent.conversations import ConversationStore
from coderx_agent.keys import Keys
from coderx_agent.repl.approvals import Approver
from coderx_agent.repl.core import Command, Repl
from coderx_agent.repl.render import Renderer
from coderx_agent.session import Request, open_agent
from coderx_agent.update import check_due, newer_release

#: Directories never offered by path completion.
SKIPPED_DIRS = frozenset({".git", "node_modules", "__pycache__", ".venv"})


def history_path() -> Path:
    """Where the prompt's history is kept (``<user data dir>/coderx/prompt-history``)."""
    return Path(platformdirs.user_data_dir("coderx")) / "prompt-history"


class ReplCompleter(Completer):
    """Slash commands at the start of the line; elsewhere, paths in the project."""

    def __init__(self, commands: Iterable[Command], workspace: Path) -> None:
        self._names = sorted(n for c in commands for n in (c.name, *c.aliases))
        self._workspace = workspace

    def get_completions(self, document: Document, complete_event: CompleteEvent
                        ) -> Iterator[Completion]:
        """Commands or paths for the word before the cursor."""
        text = document.text_before_cursor
        if text.startswith("/") and " " not in text:
            for name in self._names:
                if name.startswith(text):
                    yield Completion(name, start_position=-len(text))
            return
        if not text or text[-1].isspace():
            return
        word = text.split()[-1].lstrip("@")
        folder, _, prefix = word.rpartition("/")
        base = (self._workspace / folder).resolve()
        if not base.is_relative_to(self._workspace.resolve()) or not base.is_dir():
            return
        try:
            entries = sorted(os.scandir(base), key=lambda e: e.name)
        except OSError:
            return
        for e in entries:
            if e.name.startswith(prefix) and e.name not in SKIPPED_DIRS:
                tail = e.name + ("/" if e.is_dir() else "")
                yield Completion(tail, start_position=-len(prefix))


def key_bindings(expand: Callable[[], None]) -> KeyBindings:
    """Alt+Enter and a trailing backslash start a new line; Enter sends; Ctrl-O shows the
    whole output of the last tool call (``expand``) above the prompt."""
    kb = KeyBindings()

    @kb.add("c-o")
    def _expand(_event: KeyPressEvent) -> None:
        run_in_terminal(expand)

    @kb.add("escape", "enter")
    def _newline(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")

    @kb.add("enter")
    def _enter(event: KeyPressEvent) -> None:
        buf = event.current_buffer
        if buf.complete_state is not None and buf.complete_state.current_completion:
            buf.apply_completion(buf.complete_state.current_completion)
            return
        if buf.document.text_before_cursor.endswith("\\"):
            buf.delete_before_cursor()
            buf.insert_text("\n")
            return
        buf.validate_and_handle()

    return kb


class SessionPrompter:
    """Questions (approvals, /resume, /login) on a prompt of their own, without history."""

    def __init__(self) -> None:
        self._session: PromptSession[str] = PromptSession()

    async def ask(self, question: str, hidden: bool = False) -> str:
        """The answer (Ctrl-C raises KeyboardInterrupt, Ctrl-D EOFError)."""
        return await self._session.prompt_async(question, is_password=hidden)


def _announce(console: Console, done: asyncio.Future[str | None]) -> None:
    """Say so when the update check found a newer release."""
    if not done.cancelled() and (version := done.result()):
        console.print(Text(f"coderx {version} is available: coderx-agent update",
                           style="yellow"))


async def run_repl(loaded: LoadedConfig, req: Request, keys: Keys, store: ConversationStore,
                   commands: tuple[Command, ...], console: Console | None = None) -> int:
    """Run the terminal until /exit, Ctrl-D or a double Ctrl-C; returns the exit code."""
    # No markup: tool output and error texts are shown as they are ("[Errno 2]" stays).
    console = console or Console(highlight=False, markup=False)
    renderer = Renderer(console, req.workspace)
    prompter = SessionPrompter()
    approver = Approver(console, prompter, renderer, req.workspace,
                        project_config_path(req.workspace))
    hist = history_path()
    hist.parent.mkdir(parents=True, exist_ok=True)
    async with open_agent(loaded.config, req, keys, store, renderer.event,
                          ask=approver) as agent:
        approver.permissions = agent.permissions
        repl = Repl(agent, loaded, req, keys, store, console, renderer, approver, prompter,
                    commands)
        session: PromptSession[str] = PromptSession(
            history=FileHistory(str(hist)), key_bindings=key_bindings(repl.show_last),
            completer=ReplCompleter(commands, req.workspace), complete_while_typing=False,
            bottom_toolbar=lambda: repl.status(), enable_history_search=False)
        console.print(Text(f"coderx-agent {__version__} · {agent.model.name} · "
                           f"{agent.permissions.mode} · /help lists the commands",
                           style="bold"))
        if loaded.config.ui.update_check and check_due():
            checking = asyncio.ensure_future(newer_release(__version__))
            checking.add_done_callback(lambda t: _announce(console, t))
        if agent.conversation.messages:
            console.print(f"resumed {agent.conversation.id}: "
                          f"{len(agent.conversation.messages)} messages")
        while not repl.done:
            session.editing_mode = EditingMode.VI if repl.vi_mode else EditingMode.EMACS
            try:
                line = await session.prompt_async("› ")
            except KeyboardInterrupt:
                if repl.interrupted_twice():
                    break
                console.print(Text("(Ctrl-C again to exit, or Ctrl-D)", style="dim"))
                continue
            except EOFError:
                break
            await repl.handle(line)
        conv = repl.agent.conversation
    console.print(f"conversation {conv.id} saved; continue it with "
                  f"`coderx-agent --resume {conv.id}`")
    return 0
