"""What every tool shares: the decorator that registers it, the session argument, results."""

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, ClassVar, Final, TypeVar

from fastmcp import Context, FastMCP
from fastmcp.exceptions import ToolError
from fastmcp.server.dependencies import transform_context_annotations
from fastmcp.tools.base import ToolResult
from fastmcp.tools.function_tool import FunctionTool
from mcp.types import ToolAnnotations
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ConfigDict, Field

from coderx_mcp.tools import schema_cache

NO_SESSION_TAG = "coderx:no-session"
"""Tag of tools the pipeline resolves no session for (``server/pipeline.py`` reads it)."""

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

SessionArg = Annotated[
    str | None,
    Field(description="Session id from session_open; omit to use your default session.",
          max_length=100),
]


# Where the facts of a payload tool's result travel (see ``Out.payload``).
META_KEY: Final = "coderx/facts"


class Out(BaseModel):
    """Base of every tool result: it names the session the call ran in.

    A result model that lists ``payload`` fields (file text, matches, output) is sent once,
    as text: hosts such as Claude Code show the model ``structuredContent`` instead of the
    text when both exist, and the MCP spec asks for the text to repeat the structured JSON,
    so a payload in structured content would travel twice and reach the model as escaped
    JSON. Such tools declare no output schema; their text carries what the model needs and
    the other fields travel, small, in the result's ``_meta`` under ``coderx/facts`` for
    programs.

    A payload model that sets ``compact_facts`` leaves the facts at their default out of
    ``_meta`` (read_file: ``truncated``, ``next_offset``, ``encoding``, ``bom``, ``newline``
    of a plain whole-file read), so the reply of the commonest call stays near the size of
    its payload; a reader fills absent facts in from the model's defaults.
    """

    model_config = ConfigDict(extra="forbid")
    payload: ClassVar[frozenset[str]] = frozenset()
    compact_facts: ClassVar[bool] = False

    session: str = Field(description="The session this call ran in.")


def modern_protocol(ctx: Context) -> bool:
    """Whether this call came over a protocol without server-initiated requests
    (2026-07-28+: no elicitation or sampling requests from the server)."""
    rc = ctx.request_context
    return bool(rc is not None and rc.protocol_version in MODERN_PROTOCOL_VERSIONS)


def result(model: Out, text: str) -> ToolResult:
    """A tool result: text plus structured content, or text plus facts for payload tools."""
    if model.payload:
        facts = model.model_dump(mode="json", exclude=set(model.payload),
                                 exclude_defaults=model.compact_facts)
        return ToolResult(content=text, meta={META_KEY: facts})
    return ToolResult(content=text, structured_content=model.model_dump(mode="json"))


def facts_of(res: ToolResult) -> dict[str, Any]:
    """A result's facts: its structured content, or a payload tool's ``_meta`` facts."""
    if res.structured_content is not None:
        return res.structured_content
    facts = (res.meta or {}).get(META_KEY)
    return facts if isinstance(facts, dict) else {}


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
        payload = issubclass(out, Out) and bool(out.payload)
        mcp.add_tool(_function_tool(wrapper, fn.__name__, annotations, None if payload else out,
                                    set() if session else {NO_SESSION_TAG}))
        return fn

    return deco


def _function_tool(fn: Callable[..., Any], name: str, annotations: ToolAnnotations,
                   out: type[BaseModel] | None, tags: set[str]) -> FunctionTool:
    """The FastMCP tool of ``fn``: built from the schemas kept by the registration's
    :mod:`~coderx_mcp.tools.schema_cache` when it has them (the same object FastMCP would
    derive, without deriving it), else derived and kept for the next start."""
    cache = schema_cache.current()
    kept = cache.get(name) if cache is not None else None
    if kept is not None:
        return FunctionTool(
            fn=transform_context_annotations(fn),
            return_type=Any if kept.returns_any else ToolResult, name=name,
            description=kept.description, parameters=kept.parameters,
            output_schema=kept.output_schema, annotations=annotations, tags=tags)
    made = FunctionTool.from_function(
        fn, name=name, annotations=annotations,
        output_schema=None if out is None else out.model_json_schema(), tags=tags or None)
    # A kept tool is rebuilt with one of these two return types (the only ones ours have).
    if cache is not None and made.return_type in (ToolResult, Any):
        cache.put(name, schema_cache.CachedSchema(
            description=made.description, parameters=made.parameters,
            output_schema=made.output_schema, returns_any=made.return_type is Any))
    return made
