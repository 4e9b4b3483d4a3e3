"""The interactive terminal (``coderx-agent`` without ``-p``)."""

from __future__ import annotations

from coderx_agent.repl.core import Command


def commands() -> tuple[Command, ...]:
    """Every slash command, in the order ``/help`` lists them."""
    from coderx_agent.repl.slash import CONVERSATION_COMMANDS
    from coderx_agent.repl.slash_admin import ADMIN_COMMANDS

    return (*CONVERSATION_COMMANDS[:-2], *ADMIN_COMMANDS, *CONVERSATION_COMMANDS[-2:])
