"""Compaction: older turns summarised by the model once the context fills up.

The cut is placed before an assistant message, so the kept part starts with the model's
turn and every tool call in it keeps its result. Memory lives in the system prompt, which
is rebuilt for every call, so it is never summarised away.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from coderx_agent.messages import Message, TextBlock, ToolResultBlock, ToolUseBlock, Usage
from coderx_agent.models import Model

SUMMARY_SYSTEM = (
    "You summarise a coding session so it can continue with less context. Keep: the user's "
    "requests (verbatim where short), decisions made, files read or changed and what was "
    "learned about them, commands run and their outcome, errors still open, and the next "
    "steps. Be concise and factual; write no preamble.")
#: Characters of each tool result shown to the summariser.
RESULT_CHARS = 2000


def cut_point(messages: Sequence[Message], keep: int) -> int | None:
    """Index of the first message kept verbatim (an assistant message), or None."""
    for i in range(min(len(messages) - 1, max(1, len(messages) - keep)), 0, -1):
        if messages[i].role == "assistant":
            return i
    return None


def transcript(messages: Sequence[Message]) -> str:
    """The messages as plain text for the summariser (tool results cut short)."""
    lines = []
    for m in messages:
        for b in m.content:
            if isinstance(b, TextBlock):
                lines.append(f"[{m.role}] {b.text}")
            elif isinstance(b, ToolUseBlock):
                lines.append(f"[tool call] {b.name}({json.dumps(b.input)[:RESULT_CHARS]})")
            elif isinstance(b, ToolResultBlock):
                status = "error" if b.is_error else "result"
                lines.append(f"[tool {status}] {b.content[:RESULT_CHARS]}")
    return "\n".join(lines)


async def summarise(model: Model, messages: Sequence[Message],
                    previous: str | None = None, focus: str | None = None
                    ) -> tuple[str, Usage]:
    """The model's summary of ``messages`` (after an earlier summary, if any) and its cost
    in tokens; ``focus`` says what the user wants kept in most detail (``/compact``)."""
    text = transcript(messages)
    if focus:
        text += f"\n\n[keep in most detail: {focus}]"
    if previous:
        text = f"[summary of what came before]\n{previous}\n\n{text}"
    reply = await model.complete(SUMMARY_SYSTEM, [Message.user(text)], [], lambda _t: None)
    return reply.message.text.strip() or "(the summariser returned nothing)", reply.usage
