"""Which tool calls run: the permission mode plus allow/deny rules.

A rule is ``tool`` or ``tool(glob)``; the tool part is a glob over the exposed tool name
(``mcp__github__*``), the argument glob must match one of the call's string arguments
(``run_command(python3 -m unittest*)``). Deny rules win, then allow rules, then the mode.
Headless runs never ask: a call that would ask is refused, and the model is told why.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from coderx_agent.config import PermissionMode
from coderx_agent.errors import UsageError
from coderx_agent.messages import ToolSpec

#: The coderx tools that change files (``accept-edits`` runs them without asking).
EDIT_TOOLS = frozenset({"write_file", "edit_file", "multi_edit"})
RULE = re.compile(r"^(?P<tool>[^()\s]+)(?:\((?P<arg>.*)\))?$")

#: Asks the user: True runs the call, False refuses it, a string refuses it with the
#: user's reason (given to the model).
Ask = Callable[[ToolSpec, dict[str, Any]], Awaitable[bool | str]]


def parse_rule(rule: str) -> tuple[str, str | None]:
    """``(tool_glob, argument_glob | None)`` of a rule.

    Raises:
        UsageError: The rule is not ``tool`` or ``tool(glob)``.
    """
    m = RULE.match(rule.strip())
    if m is None:
        raise UsageError(f"invalid permission rule {rule!r}: use `tool` or `tool(glob)`")
    return m["tool"], m["arg"]


def matches(rule: tuple[str, str | None], name: str, arguments: dict[str, Any]) -> bool:
    """Whether a parsed rule covers this call."""
    tool, arg = rule
    if not fnmatch.fnmatchcase(name, tool):
        return False
    if arg is None:
        return True
    return any(isinstance(v, str) and fnmatch.fnmatchcase(v, arg) for v in arguments.values())


class Permissions:
    """Decides each tool call.

    Args:
        mode: The permission mode.
        allow: Rules that always run.
        deny: Rules that never run.
        ask: Asks the user (interactive front ends); None in headless runs.
    """

    def __init__(self, mode: PermissionMode, allow: Sequence[str] = (),
                 deny: Sequence[str] = (), ask: Ask | None = None) -> None:
        if mode == "ask" and ask is None:
            raise UsageError("permission mode `ask` needs the interactive terminal; headless "
                             "runs use accept-edits, plan or yolo")
        self.mode = mode
        self.allow_rules, self.deny_rules = list(allow), list(deny)
        self._allow = [parse_rule(r) for r in allow]
        self._deny = [parse_rule(r) for r in deny]
        self._ask = ask

    def add_rule(self, rule: str, allow: bool) -> None:
        """Add an allow (or deny) rule for the rest of the session.

        Raises:
            UsageError: The rule is not ``tool`` or ``tool(glob)``.
        """
        parsed = parse_rule(rule)
        (self.allow_rules if allow else self.deny_rules).append(rule)
        (self._allow if allow else self._deny).append(parsed)

    def _by_mode(self, tool: ToolSpec) -> bool | None:
        """True: runs; False: refused; None: ask."""
        if self.mode == "yolo" or tool.read_only:
            return True
        if self.mode == "plan":
            return False
        if self.mode == "accept-edits" and tool.name in EDIT_TOOLS:
            return True
        return None

    async def refusal(self, tool: ToolSpec, arguments: dict[str, Any]) -> str | None:
        """None when the call may run, else the reason the model is given."""
        if any(matches(r, tool.name, arguments) for r in self._deny):
            return f"{tool.name} is denied by a permission rule; do not retry it"
        if any(matches(r, tool.name, arguments) for r in self._allow):
            return None
        verdict = self._by_mode(tool)
        if verdict is None and self._ask is not None:
            answer = await self._ask(tool, arguments)
            if isinstance(answer, str):
                return f"the user declined {tool.name}: {answer}"
            if not answer:
                return f"the user declined {tool.name}"
            verdict = True
        if verdict:
            return None
        if self.mode == "plan":
            return (f"{tool.name} changes things and the session is in plan mode (read-only "
                    "tools only): describe the change instead")
        return (f"{tool.name} is not allowed in {self.mode} mode without asking, and this run "
                "cannot ask; allow it with `--allow " + tool.name + "` or "
                "`permissions.allow` in the config")
