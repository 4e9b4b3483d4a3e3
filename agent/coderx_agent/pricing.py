"""Prices per model (USD per million tokens) and the cost of a turn.

Anthropic list prices; cache writes (5-minute) cost 1.25x input, cache reads 0.1x.
Ollama runs locally: $0, with token counts still reported.
"""

from __future__ import annotations

from pydantic import BaseModel

from coderx_agent.messages import Usage


class Price(BaseModel):
    """USD per million tokens."""

    input: float
    output: float
    cache_write: float
    cache_read: float

    @classmethod
    def of(cls, input: float, output: float) -> Price:
        """A price with Anthropic's cache multipliers."""
        return cls(input=input, output=output, cache_write=input * 1.25, cache_read=input * 0.1)


FREE = Price(input=0, output=0, cache_write=0, cache_read=0)

#: Longest matching prefix of the model id wins.
ANTHROPIC_PRICES: dict[str, Price] = {
    "claude-opus-4-5": Price.of(5, 25),
    "claude-opus-4-6": Price.of(5, 25),
    "claude-opus-4": Price.of(15, 75),
    "claude-3-opus": Price.of(15, 75),
    "claude-sonnet-4": Price.of(3, 15),
    "claude-3-7-sonnet": Price.of(3, 15),
    "claude-3-5-sonnet": Price.of(3, 15),
    "claude-haiku-4": Price.of(1, 5),
    "claude-3-5-haiku": Price.of(0.8, 4),
    "claude-3-haiku": Price.of(0.25, 1.25),
}
#: Unknown Claude models are priced by family; an unknown family as the most expensive.
FAMILY_PRICES = {"opus": Price.of(15, 75), "sonnet": Price.of(3, 15), "haiku": Price.of(1, 5)}


def price_of(provider: str, model_id: str) -> Price:
    """The price of a model: Anthropic by prefix, then family; anything local is free."""
    if provider != "anthropic":
        return FREE
    matches = [p for p in ANTHROPIC_PRICES if model_id.startswith(p)]
    if matches:
        return ANTHROPIC_PRICES[max(matches, key=len)]
    for family, price in FAMILY_PRICES.items():
        if family in model_id:
            return price
    return FAMILY_PRICES["opus"]


def cost(price: Price, usage: Usage) -> float:
    """The cost in USD of the tokens in ``usage``."""
    return (usage.input_tokens * price.input + usage.output_tokens * price.output
            + usage.cache_write_tokens * price.cache_write
            + usage.cache_read_tokens * price.cache_read) / 1e6
