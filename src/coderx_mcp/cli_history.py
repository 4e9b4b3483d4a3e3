"""``coderx-mcp history``: read, export and clear the call history from the terminal.

The terminal user owns the machine, so the CLI sees every principal's entries (``show``
names the principal); ``--principal`` narrows it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

import typer

from coderx_mcp.errors import CoderxError
from coderx_mcp.history import HistoryStore, default_path, line, parse_since, to_markdown

history_app = typer.Typer(help="Read, export and clear the history of tool calls.",
                          no_args_is_help=True)

DbOpt = Annotated[Path | None, typer.Option(
    "--db", help="History database (default: CODERX_HISTORY_PATH or the user data dir).")]
PrincipalOpt = Annotated[str | None, typer.Option(help="Only this principal's entries.")]


def _store(db: Path | None) -> HistoryStore:
    from coderx_mcp.cli import load_settings

    path = db or load_settings().history_path or default_path()
    if not path.exists():
        from coderx_mcp.cli import fail

        raise fail(f"no history at {path} yet")
    return HistoryStore(path)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


@history_app.command("list")
def history_list(db: DbOpt = None, principal: PrincipalOpt = None) -> None:
    """List the sessions in the history, most recently used first."""
    for s in _store(db).sessions(principal):
        typer.echo(f"{s.session}\t{s.calls} calls\t{_when(s.first)} .. {_when(s.last)}")


@history_app.command("show")
def history_show(session: Annotated[str, typer.Argument(help="Session id.")],
                 db: DbOpt = None, principal: PrincipalOpt = None,
                 limit: Annotated[int, typer.Option(help="Most entries.")] = 1000) -> None:
    """Show a session's calls, oldest first."""
    entries = _store(db).query(principal, session, limit=limit, oldest_first=True)
    for e in entries:
        typer.echo(f"[{e.principal}] {line(e)}")


@history_app.command("export")
def history_export(session: Annotated[str, typer.Argument(help="Session id.")],
                   fmt: Annotated[Literal["markdown", "json"], typer.Option(
                       "--format", help="markdown or json.")] = "markdown",
                   db: DbOpt = None, principal: PrincipalOpt = None) -> None:
    """Print a session's whole history as Markdown or JSON."""
    entries = _store(db).query(principal, session, limit=1_000_000, oldest_first=True)
    if fmt == "json":
        typer.echo(json.dumps([e.model_dump(mode="json") for e in entries], indent=1))
    else:
        typer.echo(to_markdown(session, entries), nl=False)


@history_app.command("clear")
def history_clear(
    session: Annotated[str | None, typer.Option(help="Only this session's entries.")] = None,
    before: Annotated[str | None, typer.Option(
        help="Only entries before this ISO 8601 time (e.g. 2026-01-31).")] = None,
    db: DbOpt = None, principal: PrincipalOpt = None,
) -> None:
    """Delete entries: all of them, a session's, or those before a date."""
    from coderx_mcp.cli import fail

    try:
        cutoff = parse_since(before)
    except CoderxError as exc:
        raise fail(str(exc).replace("since", "--before", 1)) from None
    n = _store(db).clear(principal, session, cutoff)
    typer.echo(f"deleted {n} history entries", err=True)
