"""Anthropic's Messages API through the ``anthropic`` SDK: streaming, tool use, prompt caching.

The system prompt, the tool list and the newest message are marked for caching, so each
turn reads the conversation so far from the cache (billed at a tenth) instead of paying
for it again. The SDK retries 429/529/5xx itself, honouring ``retry-after``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import anthropic

from coderx_agent.errors import ModelError
from coderx_agent.keys import KeySource, require
from coderx_agent.messages import Message, Reply, TextBlock, ToolSpec, ToolUseBlock, Usage
from coderx_agent.models import ModelInfo

if TYPE_CHECKING:
    from coderx_agent.config import AnthropicConfig

CACHE = {"type": "ephemeral"}


def to_api_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Our messages in the API's shape; consecutive messages of one role are merged (a
    conversation interrupted before the model answered ends with a user message)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        blocks = [b.model_dump() for b in m.content]
        if out and out[-1]["role"] == m.role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": m.role, "content": blocks})
    if out and out[-1]["content"]:
        out[-1]["content"][-1] = {**out[-1]["content"][-1], "cache_control": CACHE}
    return out


def to_api_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Tool schemas in the API's shape, the last one marking the end of the cached prefix."""
    out: list[dict[str, Any]] = [
        {"name": t.name, "description": t.description, "input_schema": t.input_schema}
        for t in tools]
    if out:
        out[-1]["cache_control"] = CACHE
    return out


def from_api_message(content: Sequence[Any]) -> Message:
    """The reply's text and tool_use blocks (thinking and other blocks are not kept)."""
    blocks: list[TextBlock | ToolUseBlock] = []
    for b in content:
        if b.type == "text" and b.text:
            blocks.append(TextBlock(text=b.text))
        elif b.type == "tool_use":
            blocks.append(ToolUseBlock(id=b.id, name=b.name, input=dict(b.input or {})))
    return Message(role="assistant", content=list(blocks))


def usage_of(u: Any) -> Usage:
    """The API's usage object as ours."""
    return Usage(input_tokens=u.input_tokens or 0, output_tokens=u.output_tokens or 0,
                 cache_read_tokens=getattr(u, "cache_read_input_tokens", 0) or 0,
                 cache_write_tokens=getattr(u, "cache_creation_input_tokens", 0) or 0)


def describe(exc: anthropic.APIError) -> str:
    """One sentence for an API failure (never the request, which may hold file contents)."""
    if isinstance(exc, anthropic.AuthenticationError):
        return "the Anthropic API refused the API key (401): check ANTHROPIC_API_KEY"
    if isinstance(exc, anthropic.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        detail = body.get("error", {}).get("message") if isinstance(body.get("error"),
                                                                     dict) else None
        return f"the Anthropic API answered {exc.status_code}: {detail or exc.message}"
    if isinstance(exc, anthropic.APITimeoutError):
        return "the Anthropic API did not answer in time"
    return f"cannot reach the Anthropic API: {exc.message}"


class AnthropicModel:
    """A Claude model.

    Args:
        model_id: The API's model id (``claude-sonnet-4-5``).
        config: Base URL, output cap, retries, context window.
        keys: Where ``ANTHROPIC_API_KEY`` comes from.
    """

    def __init__(self, model_id: str, config: AnthropicConfig, keys: KeySource) -> None:
        self.model_id = model_id
        self.name = f"anthropic:{model_id}"
        self.context_window = config.context_window
        self._max_tokens = config.max_tokens
        self._client = anthropic.AsyncAnthropic(
            api_key=require(keys, "ANTHROPIC_API_KEY", "Anthropic"),
            base_url=config.base_url, max_retries=config.max_retries,
            timeout=config.timeout_s, open_telemetry=False)

    async def complete(self, system: str, messages: Sequence[Message], tools: Sequence[ToolSpec],
                       on_text: Callable[[str], None]) -> Reply:
        """Stream one turn; text deltas go to ``on_text`` as they arrive."""
        kwargs: dict[str, Any] = {
            "model": self.model_id, "max_tokens": self._max_tokens,
            "system": [{"type": "text", "text": system, "cache_control": CACHE}],
            "messages": to_api_messages(messages)}
        if tools:
            kwargs["tools"] = to_api_tools(tools)
        try:
            async with self._client.messages.stream(**kwargs) as stream:
                async for event in stream:
                    if event.type == "text":
                        on_text(event.text)
                final = await stream.get_final_message()
        except anthropic.APIError as exc:
            raise ModelError(describe(exc)) from None
        return Reply(message=from_api_message(final.content), usage=usage_of(final.usage),
                     stop_reason=final.stop_reason)

    async def list_models(self) -> list[ModelInfo]:
        """The models the API key can use (all Claude models call tools)."""
        try:
            return [ModelInfo(name=f"anthropic:{m.id}", description=m.display_name, tools=True)
                    async for m in self._client.models.list()]
        except anthropic.APIError as exc:
            raise ModelError(describe(exc)) from None

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.close()
