"""What the loop reports while it runs: one event type per thing that happens.

The headless ``stream-json`` output writes each event as a JSON line; an interactive
front end (the REPL) renders the same events. Events carry no API keys (the loop never
has them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel

from coderx_agent.messages import Message, Usage


class TurnStart(BaseModel):
    """A model turn begins."""

    type: Literal["turn_start"] = "turn_start"
    turn: int


class TextDelta(BaseModel):
    """A piece of the model's answer as it streams."""

    type: Literal["text_delta"] = "text_delta"
    text: str


class AssistantMessage(BaseModel):
    """The model's complete message for a turn."""

    type: Literal["assistant"] = "assistant"
    message: Message


class ToolStart(BaseModel):
    """A tool call starts."""

    type: Literal["tool_start"] = "tool_start"
    id: str
    name: str
    arguments: dict[str, Any]


class ToolEnd(BaseModel):
    """A tool call ended (``ok`` false: the tool failed or was refused)."""

    type: Literal["tool_end"] = "tool_end"
    id: str
    name: str
    ok: bool
    duration_s: float
    output: str
    """The result as the model sees it (capped to 2000 characters here)."""


class UsageReport(BaseModel):
    """Tokens and cost of one turn, and the running totals."""

    type: Literal["usage"] = "usage"
    turn: int
    usage: Usage
    cost_usd: float
    total_cost_usd: float


class Compacted(BaseModel):
    """Older turns were replaced by a summary to fit the model's context."""

    type: Literal["compacted"] = "compacted"
    prompt_tokens: int
    summarised_messages: int


class Notice(BaseModel):
    """Something the user should know (a retry, a truncated prompt, a refused tool)."""

    type: Literal["notice"] = "notice"
    message: str


Event = TurnStart | TextDelta | AssistantMessage | ToolStart | ToolEnd | UsageReport | Compacted \
    | Notice
EventSink = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """An event sink that drops everything."""
