"""``model="host"``: the MCP host's own model, asked through sampling with tools.

The host pays and chooses the model, so the server needs no API key. Only hosts that
declare ``sampling.tools`` can drive an agent (a run needs tool calls); the others get
a clear error before anything starts.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import mcp.types as mt
from mcp.server.session import ServerSession
from mcp.server.validation import check_sampling_tools_capability

from coderx_agent.errors import ModelError
from coderx_agent.messages import Message, Reply, TextBlock, ToolSpec, ToolUseBlock, Usage
from coderx_agent.models import ModelInfo

MAX_TOKENS = 8192


def host_can_sample(session: ServerSession) -> bool:
    """Whether the host declared sampling with tools."""
    return bool(check_sampling_tools_capability(session.client_capabilities))


def _block(b: Any) -> mt.SamplingMessageContentBlock:
    if isinstance(b, TextBlock):
        return mt.TextContent(type="text", text=b.text)
    if isinstance(b, ToolUseBlock):
        return mt.ToolUseContent(type="tool_use", id=b.id, name=b.name, input=b.input)
    return mt.ToolResultContent(type="tool_result", tool_use_id=b.tool_use_id,
                                content=[mt.TextContent(type="text", text=b.content)],
                                is_error=b.is_error)


def to_sampling(messages: Sequence[Message]) -> list[mt.SamplingMessage]:
    """Our conversation as sampling messages (one per message, blocks as they are)."""
    return [mt.SamplingMessage(role=m.role, content=[_block(b) for b in m.content])
            for m in messages if m.content]


def from_sampling(result: mt.CreateMessageResultWithTools) -> Message:
    """The host's answer as our assistant message (text and tool calls)."""
    blocks: list[TextBlock | ToolUseBlock] = []
    for c in result.content_as_list:
        if isinstance(c, mt.TextContent) and c.text:
            blocks.append(TextBlock(text=c.text))
        elif isinstance(c, mt.ToolUseContent):
            blocks.append(ToolUseBlock(id=c.id, name=c.name, input=dict(c.input)))
    return Message(role="assistant", content=list(blocks))


class HostModel:
    """The host's model over ``sampling/createMessage``.

    Args:
        session: The host's MCP session (the one that called ``agent_run``).
    """

    context_window = 200_000

    def __init__(self, session: ServerSession) -> None:
        self._session = session
        self.name = "host"

    async def complete(self, system: str, messages: Sequence[Message], tools: Sequence[ToolSpec],
                       on_text: Callable[[str], None]) -> Reply:
        """One turn, answered by the host (no streaming: the answer comes whole)."""
        specs = [mt.Tool(name=t.name, description=t.description, input_schema=t.input_schema)
                 for t in tools]
        try:
            with warnings.catch_warnings():
                # Sampling is deprecated in protocol 2026-07-28, still offered by hosts.
                warnings.simplefilter("ignore")
                result = await self._session.create_message(
                    to_sampling(messages), max_tokens=MAX_TOKENS, system_prompt=system,
                    tools=specs)
        except Exception as exc:  # the host refused or failed: the run ends with its reason
            raise ModelError(f"the MCP host's sampling failed: {exc}") from None
        message = from_sampling(result)
        if message.text:
            on_text(message.text)
        return Reply(message=message, usage=Usage(),
                     stop_reason="tool_use" if message.tool_uses else "end_turn")

    async def list_models(self) -> list[ModelInfo]:
        """The host chooses its model; there is nothing to list."""
        return []

    async def aclose(self) -> None:
        """Nothing to close: the session belongs to the host's connection."""
