"""Local models through the ``ollama`` SDK: tool calling, streaming, an explicit context size.

Ollama silently drops the start of a prompt longer than its context (``num_ctx``, 2048 or
4096 tokens unless told), so ``num_ctx`` goes with every request, and a reply whose prompt
token count shows the prompt did not fit comes with a warning.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import httpx
import ollama

from coderx_agent.errors import ModelError
from coderx_agent.messages import (
    Message,
    Reply,
    TextBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
    Usage,
)
from coderx_agent.models import ModelInfo

if TYPE_CHECKING:
    from coderx_agent.config import OllamaConfig

#: Characters per token, roughly, to estimate a prompt's size before Ollama counts it.
CHARS_PER_TOKEN = 4


def to_api_messages(system: str, messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Our conversation in Ollama's chat shape (tool results become ``tool`` messages)."""
    out: list[dict[str, Any]] = [{"role": "system", "content": system}]
    names: dict[str, str] = {}
    for m in messages:
        if m.role == "assistant":
            calls = []
            for u in m.tool_uses:
                names[u.id] = u.name
                calls.append({"function": {"name": u.name, "arguments": u.input}})
            out.append({"role": "assistant", "content": m.text,
                        **({"tool_calls": calls} if calls else {})})
            continue
        for b in m.content:
            if isinstance(b, ToolResultBlock):
                text = f"error: {b.content}" if b.is_error else b.content
                out.append({"role": "tool", "content": text,
                            "tool_name": names.get(b.tool_use_id, "")})
            elif isinstance(b, TextBlock):
                out.append({"role": "user", "content": b.text})
    return out


def to_api_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Tool schemas in Ollama's (OpenAI-style) function shape."""
    return [{"type": "function", "function": {
        "name": t.name, "description": t.description, "parameters": t.input_schema}}
        for t in tools]


def describe(exc: Exception, host: str) -> str:
    """One sentence for a failed Ollama request."""
    if isinstance(exc, ollama.ResponseError):
        return f"Ollama answered {exc.status_code}: {exc.error}"
    return f"cannot reach Ollama at {host}: {exc}"


class OllamaModel:
    """A model served by Ollama.

    Args:
        model_id: Ollama's model name (``qwen3:8b``).
        config: Host, context size, timeout.
    """

    def __init__(self, model_id: str, config: OllamaConfig) -> None:
        self.model_id = model_id
        self.name = f"ollama:{model_id}"
        self.context_window = config.num_ctx
        self._host = config.host
        self._client = ollama.AsyncClient(host=config.host, timeout=config.timeout_s)

    async def complete(self, system: str, messages: Sequence[Message], tools: Sequence[ToolSpec],
                       on_text: Callable[[str], None]) -> Reply:
        """Stream one turn; tool calls get ids of our own (Ollama has none)."""
        api_messages = to_api_messages(system, messages)
        text: list[str] = []
        calls: list[ToolUseBlock] = []
        usage = Usage()
        try:
            stream = await self._client.chat(
                model=self.model_id, messages=api_messages, tools=to_api_tools(tools) or None,
                stream=True, options={"num_ctx": self.context_window})
            async for chunk in stream:
                msg = chunk.message
                if msg.content:
                    text.append(msg.content)
                    on_text(msg.content)
                for call in msg.tool_calls or []:
                    calls.append(ToolUseBlock(id=f"call_{uuid.uuid4().hex[:16]}",
                                              name=call.function.name,
                                              input=dict(call.function.arguments or {})))
                if chunk.done:
                    usage = Usage(input_tokens=chunk.prompt_eval_count or 0,
                                  output_tokens=chunk.eval_count or 0)
        except (ollama.ResponseError, httpx.HTTPError, ConnectionError) as exc:
            raise ModelError(describe(exc, self._host)) from None
        blocks: list[TextBlock | ToolUseBlock] = [TextBlock(text="".join(text))] if text else []
        return Reply(message=Message(role="assistant", content=[*blocks, *calls]), usage=usage,
                     stop_reason="tool_use" if calls else "end_turn",
                     notices=self._truncation(api_messages, tools, usage))

    def _truncation(self, api_messages: list[dict[str, Any]], tools: Sequence[ToolSpec],
                    usage: Usage) -> list[str]:
        """A warning when the prompt did not fit ``num_ctx`` (Ollama cut its start)."""
        estimate = len(json.dumps(api_messages) + json.dumps(to_api_tools(tools))) \
            // CHARS_PER_TOKEN
        if usage.input_tokens < self.context_window * 0.98 and estimate <= self.context_window:
            return []
        return [f"the prompt (~{max(estimate, usage.input_tokens)} tokens) does not fit "
                f"Ollama's context of {self.context_window} tokens, so Ollama truncated it; "
                "raise `ollama.num_ctx` in the config (if the model allows) or start afresh"]

    async def list_models(self) -> list[ModelInfo]:
        """The local models, each marked with whether it can call tools."""
        try:
            listing = await self._client.list()
            out = []
            for m in listing.models:
                name = m.model or ""
                show = await self._client.show(name)
                caps = show.capabilities
                out.append(ModelInfo(name=f"ollama:{name}",
                                     description=m.details.parameter_size or ""
                                     if m.details else "",
                                     tools=None if caps is None else "tools" in caps))
            return out
        except (ollama.ResponseError, httpx.HTTPError, ConnectionError) as exc:
            raise ModelError(describe(exc, self._host)) from None

    async def pull(self, on_progress: Callable[[str, int, int], None]) -> None:
        """Download this model, reporting ``(status, completed, total)`` bytes."""
        try:
            async for p in await self._client.pull(self.model_id, stream=True):
                on_progress(p.status or "", p.completed or 0, p.total or 0)
        except (ollama.ResponseError, httpx.HTTPError, ConnectionError) as exc:
            raise ModelError(describe(exc, self._host)) from None

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client._client.aclose()
