"""Approvals in ``ask`` mode: show what will run, ask y / n / always / never.

``always`` and ``never`` become a permission rule for this tool and pattern (the command's
program, or the file's path), saved in the project config so it holds in later runs, and
added to the running session at once. ``n`` asks for an optional reason, which the model
gets with the refusal. Ctrl-C at the question interrupts the whole step.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from coderx_agent.config_edit import add_to_list
from coderx_agent.errors import AgentError
from coderx_agent.messages import ToolSpec
from coderx_agent.permissions import Permissions
from coderx_agent.repl.diffs import FILE_TOOLS, coloured, edit_diff

ANSWERS = {"y": "y", "yes": "y", "n": "n", "no": "n", "a": "always", "always": "always",
           "v": "never", "never": "never"}


class Prompter(Protocol):
    """Reads one answer from the user."""

    async def ask(self, question: str, hidden: bool = False) -> str:
        """The user's answer to ``question`` (``hidden``: not echoed).

        Raises:
            KeyboardInterrupt: Ctrl-C.
            EOFError: Ctrl-D.
        """
        ...


class Pausable(Protocol):
    """Something drawing on the terminal that must stop while a question is asked."""

    def pause(self) -> None:
        """Stop drawing."""
        ...


def rule_for(name: str, arguments: dict[str, Any]) -> str:
    """The rule an ``always``/``never`` answer saves: the tool and its command's program
    (``run_command(git*)``) or its file (``edit_file(src/a.py)``)."""
    if name == "run_command":
        words = str(arguments.get("command", "")).split()
        if words:
            return f"run_command({words[0]}*)"
    if name in FILE_TOOLS and arguments.get("path"):
        return f"{name}({arguments['path']})"
    return name


class Approver:
    """The ``ask`` callback of ``Permissions`` for the terminal.

    Args:
        console: Where the call is shown.
        prompter: Reads the answer.
        screen: Paused while asking (the spinner).
        workspace: The project on the host (for edit diffs).
        project_config: Where ``always``/``never`` rules are saved.
    """

    def __init__(self, console: Console, prompter: Prompter, screen: Pausable,
                 workspace: Path, project_config: Path) -> None:
        self.console, self.prompter, self.screen = console, prompter, screen
        self.workspace, self.project_config = workspace, project_config
        self.permissions: Permissions | None = None
        """The session's permissions (a new rule is added to them at once)."""
        self.last_reason = "no approval was asked yet in this session"
        """Why the last question was asked (``/permissions``)."""

    def show(self, tool: ToolSpec, arguments: dict[str, Any]) -> None:
        """What will run: the full command, an edit's diff, or the arguments."""
        if tool.name == "run_command":
            body: Any = Text(str(arguments.get("command", "")), style="bold")
        elif tool.name in FILE_TOOLS:
            diff = edit_diff(self.workspace, tool.name, arguments)
            body = coloured(diff) if diff else Text("(no change)")
        else:
            body = Text(json.dumps(arguments, indent=2, ensure_ascii=False))
        self.console.print(Panel(body, title=f"{tool.name} wants to run", title_align="left",
                                 border_style="yellow"))

    async def __call__(self, tool: ToolSpec, arguments: dict[str, Any]) -> bool | str:
        """Ask about one call: True runs it, False or a reason refuses it."""
        self.screen.pause()
        mode = self.permissions.mode if self.permissions else "ask"
        self.last_reason = (f"{tool.name} is not read-only, no allow or deny rule matched "
                            f"it, and the permission mode is {mode}")
        self.show(tool, arguments)
        rule = rule_for(tool.name, arguments)
        try:
            while True:
                raw = await self.prompter.ask(
                    f"Run it? [y]es / [n]o / [a]lways ({rule}) / ne[v]er: ")
                answer = ANSWERS.get(raw.strip().lower())
                if answer is not None:
                    break
                self.console.print("answer y, n, a (always) or v (never)")
            if answer == "n":
                reason = (await self.prompter.ask("Why not? (told to the model; Enter: no "
                                                  "reason) ")).strip()
                return reason or False
        except (KeyboardInterrupt, EOFError):
            raise asyncio.CancelledError from None  # Ctrl-C: interrupt the whole step
        if answer in ("always", "never"):
            self._save(rule, allow=answer == "always")
        return answer != "never"

    def _save(self, rule: str, allow: bool) -> None:
        key = "permissions.allow" if allow else "permissions.deny"
        if self.permissions is not None:
            self.permissions.add_rule(rule, allow)
        try:
            add_to_list(self.project_config, key, rule)
        except AgentError as exc:
            self.console.print(Text(f"! not saved: {exc}", style="yellow"))
            return
        self.console.print(Text(f"saved {key} += {rule!r} in {self.project_config}",
                                style="dim"))
