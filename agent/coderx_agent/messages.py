"""The conversation as the agent keeps it, whatever the provider.

Blocks follow the Messages API's shapes (text, tool_use, tool_result) because they are the
most explicit; each provider translates to and from its own wire format.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class TextBlock(BaseModel):
    """Text written by the user or the model."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["text"] = "text"
    text: str


class ToolUseBlock(BaseModel):
    """The model asks for a tool call."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["tool_use"] = "tool_use"
    id: str
    """Matches the ``tool_use_id`` of the result."""
    name: str
    input: dict[str, Any] = Field(default_factory=dict)


class ToolResultBlock(BaseModel):
    """What a tool call returned (or why it failed / was refused)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["tool_result"] = "tool_result"
    tool_use_id: str
    content: str
    is_error: bool = False


Block = Annotated[TextBlock | ToolUseBlock | ToolResultBlock, Field(discriminator="type")]


class Message(BaseModel):
    """One message of the conversation."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant"]
    content: list[Block]

    @property
    def text(self) -> str:
        """The message's text blocks, joined."""
        return "".join(b.text for b in self.content if isinstance(b, TextBlock))

    @property
    def tool_uses(self) -> list[ToolUseBlock]:
        """The tool calls this message asks for."""
        return [b for b in self.content if isinstance(b, ToolUseBlock)]

    @classmethod
    def user(cls, text: str) -> Message:
        """A user message with one text block."""
        return cls(role="user", content=[TextBlock(text=text)])


class Usage(BaseModel):
    """Tokens of one model call (or a sum of calls)."""

    input_tokens: int = 0
    """Input tokens billed at the full rate (not read from or written to the cache)."""
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def prompt_tokens(self) -> int:
        """Everything the model read: the size of the context it was given."""
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(input_tokens=self.input_tokens + other.input_tokens,
                     output_tokens=self.output_tokens + other.output_tokens,
                     cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
                     cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens)


class Reply(BaseModel):
    """One answer of the model."""

    message: Message
    usage: Usage
    stop_reason: str | None = None
    notices: list[str] = Field(default_factory=list)
    """Warnings for the user (e.g. the provider truncated the prompt)."""


class ToolSpec(BaseModel):
    """A tool as the model sees it."""

    name: str
    description: str
    input_schema: dict[str, Any]
    read_only: bool = False
    """From the server's ``readOnlyHint``: safe to run in parallel and in ``plan`` mode."""
