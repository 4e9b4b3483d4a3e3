"""The durable history of tool calls: SQLite (WAL) in the user's data directory.

:class:`HistoryStore` is the synchronous database (also used by the CLI);
:class:`HistoryWriter` keeps writes off the caller's path: a call appends its entry to an
in-memory queue and returns, a background task writes batches in a worker thread, and
``close()`` writes what is left (a clean shutdown loses nothing; a crash loses at most
the entries of the last fraction of a second). No MCP imports here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import platformdirs
import structlog
from pydantic import BaseModel

from coderx_mcp.errors import ToolInputError

_log = structlog.get_logger("coderx.history")

MAX_VALUE_CHARS = 200
MAX_SUMMARY_CHARS = 300
FLUSH_EVERY_S = 0.25
BATCH = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    principal TEXT NOT NULL,
    session TEXT,
    tool TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'call',
    args TEXT NOT NULL DEFAULT '{}',
    outcome TEXT NOT NULL,
    error_class TEXT,
    exit_code INTEGER,
    duration_ms REAL,
    summary TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS calls_by_principal ON calls (principal, ts);
CREATE INDEX IF NOT EXISTS calls_by_session ON calls (principal, session, ts);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS inflight (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    entry TEXT NOT NULL
);
"""
INTERRUPTED = "interrupted: the server stopped before the call ended"
_COLUMNS = ("ts", "principal", "session", "tool", "kind", "args", "outcome", "error_class",
            "exit_code", "duration_ms", "summary")


class Entry(BaseModel):
    """One recorded tool call (``kind='call'``) or audit event (``kind='audit'``)."""

    id: int | None = None
    ts: float
    principal: str
    session: str | None
    tool: str
    kind: Literal["call", "audit"] = "call"
    args: dict[str, Any] = {}
    outcome: Literal["ok", "error", "interrupted"]
    error_class: str | None = None
    exit_code: int | None = None
    duration_ms: float | None = None
    summary: str = ""

    @property
    def time(self) -> str:
        """The call's start as an ISO 8601 UTC timestamp."""
        return datetime.fromtimestamp(self.ts, UTC).isoformat(timespec="milliseconds")


class SessionSummary(BaseModel):
    """A session as seen in the history."""

    session: str
    calls: int
    first: float
    last: float


def default_path() -> Path:
    """``history.sqlite3`` in the user data directory (platformdirs)."""
    return Path(platformdirs.user_data_dir("coderx", appauthor=False)) / "history.sqlite3"


def cut(value: Any, limit: int = MAX_VALUE_CHARS) -> Any:
    """JSON-like ``value`` with long strings cut to ``limit`` characters (length noted)."""
    if isinstance(value, str):
        return value if len(value) <= limit else f"{value[:limit]}… ({len(value)} chars)"
    if isinstance(value, dict):
        return {k: cut(v, limit) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [cut(v, limit) for v in value[:50]]
        return items + ([f"… ({len(value)} items)"] if len(value) > 50 else [])
    return value


def parse_since(since: str | None) -> float | None:
    """An ISO 8601 time (naive means UTC) as a POSIX timestamp."""
    if since is None:
        return None
    try:
        when = datetime.fromisoformat(since)
    except ValueError:
        raise ToolInputError(f"since must be an ISO 8601 time like 2026-01-31T12:00:00Z, not "
                             f"{since[:40]!r}") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def line(e: Entry) -> str:
    """One entry as a readable line."""
    outcome = {"ok": "ok", "interrupted": "INTERRUPTED"}.get(e.outcome, f"ERROR {e.error_class}")
    if e.exit_code is not None:
        outcome += f" (exit {e.exit_code})"
    if e.kind == "audit":
        return f"{e.time} AUDIT {e.tool}: {e.summary}"
    args = json.dumps(e.args, ensure_ascii=False)[:200]
    return f"{e.time} {e.tool} {args} -> {outcome}, {e.duration_ms or 0:.1f} ms: {e.summary}"


def to_markdown(session: str, entries: list[Entry]) -> str:
    """A session's entries as a Markdown document."""
    rows = [f"# History of session {session}", "",
            "| time | tool | arguments | outcome | ms | summary |", "|---|---|---|---|---|---|"]
    for e in entries:
        outcome = e.outcome if e.error_class is None else f"error {e.error_class}"
        if e.exit_code is not None:
            outcome += f" (exit {e.exit_code})"
        cells = [e.time, ("AUDIT " if e.kind == "audit" else "") + e.tool,
                 f"`{json.dumps(e.args, ensure_ascii=False)}`", outcome,
                 f"{e.duration_ms or 0:.1f}", e.summary]
        rows.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ")
                                      for c in cells) + " |")
    return "\n".join(rows) + "\n"



class HistoryStore:
    """The SQLite database of the history (one connection, serialised by a lock).

    Args:
        path: The database file; its directory is created (mode 0700).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        with contextlib.suppress(OSError):
            path.chmod(0o600)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def add(self, entries: list[Entry], started: Sequence[tuple[str, str, Entry]] = (),
            finished: Sequence[str] = ()) -> None:
        """Insert entries, in-flight records and finish in-flight ones, in one transaction.

        Args:
            entries: Finished calls and audit events.
            started: ``(key, owner, entry)`` of calls still running: the entry (outcome
                ``interrupted``) becomes a call if its owner dies first (:meth:`recover`).
            finished: Keys of in-flight records whose call ended (written in ``entries``).
        """
        rows = [self._row(e) for e in entries]
        with self._tx() as db:
            db.executemany(f"INSERT INTO calls ({', '.join(_COLUMNS)}) VALUES "
                           f"({', '.join('?' * len(_COLUMNS))})", rows)
            db.executemany("INSERT OR REPLACE INTO inflight (key, owner, entry) VALUES (?, ?, ?)",
                           [(k, o, e.model_dump_json()) for k, o, e in started])
            db.executemany("DELETE FROM inflight WHERE key = ?", [(k,) for k in finished])

    def recover(self, gone: Callable[[dict[str, str]], bool]) -> int:
        """Record the calls of servers that died mid-call as ``interrupted``.

        Args:
            gone: Tells from an in-flight record's owner (instance labels) whether that
                server no longer runs; records of live servers are left alone.

        Returns:
            How many calls were recorded as interrupted.
        """
        with self._lock:
            rows = self._db.execute("SELECT key, owner, entry FROM inflight").fetchall()
        dead = [(key, Entry.model_validate_json(entry)) for key, owner, entry in rows
                if gone(json.loads(owner))]
        if dead:
            with self._tx() as db:
                db.executemany(f"INSERT INTO calls ({', '.join(_COLUMNS)}) VALUES "
                               f"({', '.join('?' * len(_COLUMNS))})",
                               [self._row(e) for _, e in dead])
                db.executemany("DELETE FROM inflight WHERE key = ?", [(k,) for k, _ in dead])
        return len(dead)

    @staticmethod
    def _row(e: Entry) -> tuple[Any, ...]:
        return (e.ts, e.principal, e.session, e.tool, e.kind,
                json.dumps(e.args, default=str, ensure_ascii=False), e.outcome, e.error_class,
                e.exit_code, e.duration_ms, e.summary[:MAX_SUMMARY_CHARS])

    def query(self, principal: str | None, session: str | None = None, tool: str | None = None,
              since: float | None = None, limit: int = 50, oldest_first: bool = False
              ) -> list[Entry]:
        """Entries, newest first (or oldest first), filtered; ``principal`` None: everyone's."""
        where, params = self._where(principal, session, tool, since)
        order = "ASC" if oldest_first else "DESC"
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, {', '.join(_COLUMNS)} FROM calls {where} ORDER BY ts {order}, "
                f"id {order} LIMIT ?", (*params, limit)).fetchall()
        return [self._entry(r) for r in rows]

    def sessions(self, principal: str | None) -> list[SessionSummary]:
        """The sessions that have entries, most recently used first."""
        where, params = self._where(principal, None, None, None)
        where += (" AND" if where else "WHERE") + " session IS NOT NULL"
        with self._lock:
            rows = self._db.execute(
                f"SELECT session, COUNT(*), MIN(ts), MAX(ts) FROM calls {where} "
                "GROUP BY session ORDER BY MAX(ts) DESC", params).fetchall()
        return [SessionSummary(session=s, calls=n, first=a, last=b) for s, n, a, b in rows]

    def clear(self, principal: str | None = None, session: str | None = None,
              before: float | None = None) -> int:
        """Delete entries (all, a session's, or those before a time); returns how many."""
        where, params = self._where(principal, session, None, None)
        if before is not None:
            where += (" AND" if where else "WHERE") + " ts < ?"
            params = (*params, before)
        with self._tx() as db:
            return db.execute(f"DELETE FROM calls {where}", params).rowcount

    def prune(self, max_age_days: float, max_bytes: int) -> int:
        """Apply retention: delete entries older than ``max_age_days``, then the oldest
        while the used database pages exceed ``max_bytes``; returns how many went."""
        gone = self.clear(before=time.time() - max_age_days * 86400)
        while self._used_bytes() > max_bytes:
            with self._tx() as db:
                n = db.execute("DELETE FROM calls WHERE id IN (SELECT id FROM calls ORDER BY ts "
                               "LIMIT MAX(100, (SELECT COUNT(*) FROM calls) / 10))").rowcount
            gone += n
            if n == 0:
                break
        return gone

    def _used_bytes(self) -> int:
        with self._lock:
            pages = self._db.execute("PRAGMA page_count").fetchone()[0]
            free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
            size = self._db.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    @staticmethod
    def _where(principal: str | None, session: str | None, tool: str | None,
               since: float | None) -> tuple[str, tuple[Any, ...]]:
        parts: list[str] = []
        params: list[Any] = []
        for column, value in (("principal", principal), ("session", session), ("tool", tool)):
            if value is not None:
                parts.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            parts.append("ts >= ?")
            params.append(since)
        return ("WHERE " + " AND ".join(parts) if parts else ""), tuple(params)

    @staticmethod
    def _entry(row: tuple[Any, ...]) -> Entry:
        data = dict(zip(("id", *_COLUMNS), row, strict=True))
        data["args"] = json.loads(data["args"])
        return Entry.model_validate(data)


@dataclass(frozen=True, slots=True)
class _Item:
    """A queued write: a finished entry, or the start of a call (``start``)."""

    entry: Entry
    key: str | None = None
    start: bool = False
    session: Callable[[], str | None] | None = None

    def resolved(self) -> Entry:
        """The entry with the session the call resolved to by now (starts only)."""
        sid = self.session() if self.session is not None else None
        return self.entry if sid is None else self.entry.model_copy(update={"session": sid})


class HistoryWriter:
    """Queues entries on the caller's path and writes them in batches off it.

    A call's start is queued too (:meth:`started`): a call still running when its batch is
    written leaves an in-flight record, which its end removes; a server killed meanwhile
    leaves it behind, and the next server's :meth:`start` records that call as
    ``interrupted`` (:meth:`HistoryStore.recover`).

    Args:
        store: Where entries go.
        max_age_days: Retention by age (applied at start and hourly).
        max_bytes: Retention by size.
        owner: This server's identity (instance labels), stored with in-flight records.
        gone: Tells from an owner whether that server no longer runs (for recovery).
    """

    def __init__(self, store: HistoryStore, max_age_days: float, max_bytes: int,
                 owner: dict[str, str] | None = None,
                 gone: Callable[[dict[str, str]], bool] | None = None) -> None:
        self.store = store
        self._queue: deque[_Item] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._retention = (max_age_days, max_bytes)
        self._pruned = 0.0
        self._owner = json.dumps(owner or {})
        self._gone = gone
        self._open: set[str] = set()  # keys with an in-flight record in the database

    @property
    def pending(self) -> int:
        """Entries queued and not written yet (``/healthz?verbose``)."""
        return len(self._queue)

    def record(self, entry: Entry, key: str | None = None) -> None:
        """Queue one entry (O(1); never blocks); ``key`` ends the call :meth:`started`."""
        self._queue.append(_Item(entry, key))
        if len(self._queue) >= BATCH:
            self._wake.set()

    def started(self, key: str, entry: Entry,
                session: Callable[[], str | None] | None = None) -> None:
        """Queue the start of a call: ``entry`` (outcome ``interrupted``) is what the history
        keeps if this server dies before :meth:`record` with the same ``key``; ``session``
        names the call's session once resolved (asked when the batch is written)."""
        self._queue.append(_Item(entry, key, True, session))

    def start(self) -> None:
        """Start the background writer (first recording what dead servers left running)."""
        self._task = asyncio.create_task(self._run(), name="coderx-history-writer")

    async def _recover(self) -> None:
        if self._gone is None:
            return
        try:
            n = await asyncio.to_thread(self.store.recover, self._gone)
        except sqlite3.Error as exc:
            _log.error("history: interrupted calls not recovered", error=str(exc))
            return
        if n:
            _log.warning("history: calls of a server that stopped recorded as interrupted",
                         calls=n)

    def _split(self, batch: list[_Item]) -> tuple[list[Entry], list[tuple[str, str, Entry]],
                                                  list[str]]:
        """Entries to insert, starts still running, and in-flight records now finished."""
        ended = {i.key for i in batch if not i.start and i.key is not None}
        started = [(i.key, self._owner, i.resolved()) for i in batch
                   if i.start and i.key is not None and i.key not in ended]
        finished = [k for k in ended if k in self._open]
        return [i.entry for i in batch if not i.start], started, finished

    async def flush(self) -> None:
        """Write everything queued so far (readers call this to see their own calls)."""
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
            entries, started, finished = self._split(batch)
            try:
                await asyncio.to_thread(self.store.add, entries, started, finished)
            except sqlite3.Error as exc:  # a full disk must not fail tool calls
                _log.error("history write failed; entries dropped", error=str(exc),
                           entries=len(batch))
            self._open.difference_update(finished)
            self._open.update(k for k, _, _ in started)
        if time.monotonic() - self._pruned > 3600:
            self._pruned = time.monotonic()
            try:
                await asyncio.to_thread(self.store.prune, *self._retention)
            except sqlite3.Error as exc:
                _log.error("history retention failed", error=str(exc))

    async def close(self) -> None:
        """Stop the writer and write what is left."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
        self.store.close()

    async def _run(self) -> None:
        await self._recover()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FLUSH_EVERY_S)
            self._wake.clear()
            await self.flush()
