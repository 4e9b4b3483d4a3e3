"""Model providers behind one small Protocol, chosen by name (``anthropic``, ``ollama``).

``--model`` takes ``provider:model-id`` (``anthropic:claude-sonnet-4-5``,
``ollama:qwen3:8b``) or an alias from the config (``sonnet``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel

from coderx_agent.errors import UsageError
from coderx_agent.messages import Message, Reply, ToolSpec

if TYPE_CHECKING:
    from coderx_agent.config import AgentConfig
    from coderx_agent.keys import KeySource

PROVIDERS = ("anthropic", "ollama")


class ModelInfo(BaseModel):
    """One model a provider offers."""

    name: str
    """``provider:model-id``, as ``--model`` takes it."""
    description: str = ""
    tools: bool | None = None
    """Whether the model supports tool calling (None: the provider does not say)."""


class Model(Protocol):
    """A chat model that can call tools."""

    name: str
    """``provider:model-id``."""
    context_window: int
    """Tokens the model can read in one request (compaction works against it)."""

    async def complete(self, system: str, messages: Sequence[Message], tools: Sequence[ToolSpec],
                       on_text: Callable[[str], None]) -> Reply:
        """One model turn: stream the answer's text to ``on_text`` and return the reply.

        Raises:
            ModelError: The provider failed after its retries.
        """
        ...

    async def list_models(self) -> list[ModelInfo]:
        """The models this provider offers."""
        ...

    async def aclose(self) -> None:
        """Release the HTTP client."""
        ...


def resolve(spec: str, aliases: dict[str, str]) -> tuple[str, str]:
    """``(provider, model_id)`` of a ``--model`` value or alias.

    Raises:
        UsageError: No provider prefix, or an unknown provider.
    """
    spec = aliases.get(spec, spec)
    provider, sep, model_id = spec.partition(":")
    if not sep or provider not in PROVIDERS or not model_id:
        raise UsageError(f"unknown model {spec!r}: use anthropic:<model>, ollama:<model> or an "
                         f"alias from the config ({', '.join(sorted(aliases)) or 'none set'})")
    return provider, model_id


def make_model(provider: str, model_id: str, config: AgentConfig, keys: KeySource) -> Model:
    """Build the model of ``provider`` (imports only that provider's SDK)."""
    if provider == "anthropic":
        from coderx_agent.models.anthropic import AnthropicModel

        return AnthropicModel(model_id, config.anthropic, keys)
    from coderx_agent.models.ollama import OllamaModel

    return OllamaModel(model_id, config.ollama)
