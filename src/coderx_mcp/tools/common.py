"""What every tool shares: the decorator that registers it, the session argument, results."""

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastmcp import FastMCP
from fastmcp.exceptions import ToolError
from fastmcp.tools.base import ToolResult
from mcp.types import ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field

NO_SESSION_TAG = "coderx:no-session"
"""Tag of tools the pipeline resolves no session for (``server/pipeline.py`` reads it)."""

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

SessionArg = Annotated[
    str | None,
    Field(description="Session id from session_open; omit to use your default session.",
          max_length=100),
]


class Out(BaseModel):
    """Base of every tool result: it names the session the call ran in."""

    model_config = ConfigDict(extra="forbid")

    session: str = Field(description="The session this call ran in.")


def result(model: BaseModel, text: str) -> ToolResult:
    """A tool result with structured content and a readable text rendering."""
    return ToolResult(content=text, structured_content=model.model_dump(mode="json"))


def tool(
    mcp: FastMCP,
    *,
    out: type[BaseModel],
    read_only: bool,
    destructive: bool = False,
    idempotent: bool = False,
    title: str | None = None,
    session: bool = True,
) -> Callable[[F], F]:
    """Register an async function as a tool with truthful annotations.

    Args:
        session: False when the tool runs in no session even though it may take a
            ``session`` argument (e.g. as a filter): the pipeline then resolves none.

    Errors raised by the function travel, as the cause of a quiet ``ToolError``, to the
    pipeline (``server/pipeline.py``), which maps them once for the client.
    """

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except ToolError:
                raise
            except Exception as exc:
                # FastMCP would log every expected error with a traceback at ERROR.
                raise ToolError("tool failed", log_level=logging.DEBUG) from exc

        annotations = ToolAnnotations(
            title=title, read_only_hint=read_only,
            destructive_hint=None if read_only else destructive,
            idempotent_hint=idempotent, open_world_hint=False,
        )
        mcp.tool(wrapper, name=fn.__name__, annotations=annotations,
                 output_schema=out.model_json_schema(),
                 tags=None if session else {NO_SESSION_TAG})
        return fn

    return deco
