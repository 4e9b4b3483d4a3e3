"""History tools and resources: what this caller did, per session, across restarts.

Every query is limited to the caller's principal: no one sees another's calls.
"""

import asyncio
import json
from typing import Annotated, Literal

from fastmcp import Context, FastMCP
from fastmcp.tools.base import ToolResult
from pydantic import Field

from coderx_mcp.context import app_of
from coderx_mcp.errors import CoderxError, ToolInputError
from coderx_mcp.history import Entry, HistoryWriter, SessionSummary, line, parse_since, to_markdown
from coderx_mcp.tools.common import Out, result, tool

SessionFilter = Annotated[str | None, Field(
    description="Only this session's calls (omit for all your sessions).", max_length=100)]


class HistoryOut(Out):
    """Recorded calls, newest first."""

    entries: list[Entry]


class ExportOut(Out):
    """A session's whole history as one document."""

    format: Literal["markdown", "json"]
    document: str
    entries: int


def _writer(ctx: Context) -> HistoryWriter:
    writer = app_of(ctx).history
    if writer is None:
        raise CoderxError("the history is disabled on this server (its database could not be "
                          "opened; the server log says why)")
    return writer


async def session_entries(ctx: Context, session: str, limit: int = 100_000) -> list[Entry]:
    """A session's entries, oldest first, for the caller's principal."""
    app = app_of(ctx)
    writer = _writer(ctx)
    await writer.flush()
    return await asyncio.to_thread(writer.store.query, app.owner(ctx), session, None, None,
                                   limit, True)


def register(mcp: FastMCP) -> None:
    """Register the history tools and resources."""

    @tool(mcp, out=HistoryOut, read_only=True, title="Call history", session=False)
    async def history(
        ctx: Context,
        session: SessionFilter = None,
        tool: Annotated[str | None, Field(description="Only calls of this tool.",
                                          max_length=100)] = None,
        since: Annotated[str | None, Field(
            description="Only calls at or after this ISO 8601 time.", max_length=40)] = None,
        limit: Annotated[int, Field(description="Most entries.", ge=1, le=1000)] = 50,
    ) -> ToolResult:
        """Your recorded tool calls, newest first: time, tool, arguments (secrets redacted,
        long values cut), outcome, duration and a short summary. Survives restarts."""
        app = app_of(ctx)
        writer = _writer(ctx)
        await writer.flush()
        entries = await asyncio.to_thread(writer.store.query, app.owner(ctx), session, tool,
                                          parse_since(since), limit)
        text = "\n".join(line(e) for e in entries) or "no recorded calls match"
        return result(HistoryOut(session=session or "", entries=entries), text)

    @tool(mcp, out=ExportOut, read_only=True, title="Export a session's history",
          session=False)
    async def history_export(
        ctx: Context,
        session: Annotated[str, Field(description="Session id.", min_length=1,
                                      max_length=100)],
        format: Annotated[Literal["markdown", "json"], Field(
            description="'markdown' (a table) or 'json' (a list of entries).")] = "markdown",
    ) -> ToolResult:
        """A session's whole history as one Markdown or JSON document, oldest call first."""
        entries = await session_entries(ctx, session)
        if not entries:
            raise ToolInputError(f"no recorded calls of yours in session {session!r}")
        doc = (to_markdown(session, entries) if format == "markdown" else
               json.dumps([e.model_dump(mode="json") for e in entries], indent=1))
        return result(ExportOut(session=session, format=format, document=doc,
                                entries=len(entries)), doc)

    @mcp.resource("coderx://sessions", name="sessions", mime_type="application/json",
                  description="Your sessions in the call history (also closed ones), with call "
                              "counts and first/last call times.")
    async def sessions_resource(ctx: Context) -> str:
        writer = _writer(ctx)
        await writer.flush()
        rows: list[SessionSummary] = await asyncio.to_thread(writer.store.sessions,
                                                             app_of(ctx).owner(ctx))
        return json.dumps([r.model_dump() for r in rows])

    @mcp.resource("coderx://sessions/{session_id}/history", name="session_history",
                  mime_type="application/json",
                  description="One session's recorded calls, oldest first.")
    async def session_history_resource(session_id: str, ctx: Context) -> str:
        entries = await session_entries(ctx, session_id)
        return json.dumps([e.model_dump(mode="json") for e in entries])
