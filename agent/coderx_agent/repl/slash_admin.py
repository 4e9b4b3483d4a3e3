"""Slash commands about the project, the account and diagnostics."""

from __future__ import annotations

from coderx_agent.repl.core import Command

ADMIN_COMMANDS: tuple[Command, ...] = ()
