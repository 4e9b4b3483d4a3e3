"""What server replicas must share, behind small interfaces.

Today each is a local file (SQLite or JSON) in the server's state directory, which is
enough for replicas on one machine (or sharing that directory). A shared store (a Postgres
URL, say) replaces one by implementing the Protocol here and being passed where the server
is built (``server/app.py``, ``server/build.py``); nothing else changes:

- ``TokenStoreLike``: managed tokens and their policies (``principals.TokenStore``).
- ``HistoryStoreLike``: the call history (``history.HistoryStore``, SQLite).
- ``SessionRegistry``: session heartbeats and tombstones (``FileSessionRegistry``): which
  sessions some replica used lately (the orphan reaper's clock) and which were closed (a
  replica that still holds a closed session's stream must not bring it back).

The sessions themselves need no store: their containers' labels say who owns them and how
to rebuild them (``sandbox/docker_find.py``).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from coderx_mcp.history import Entry, SessionSummary
    from coderx_mcp.principals import PrincipalPolicy, TokenRecord

_SID = re.compile(r"^s-[0-9a-f]{8,64}$")


class TokenStoreLike(Protocol):
    """Managed bearer tokens (hashes) and each principal's policy."""

    def verify(self, token: str) -> TokenRecord | None:
        """The record of a valid token (its last use noted), else None."""

    def policy(self, name: str) -> PrincipalPolicy | None:
        """The policy of principal ``name``, if it has a managed token."""

    def list(self) -> list[TokenRecord]:
        """Every token's record (never the token)."""

    def create(self, name: str, policy: PrincipalPolicy) -> str:
        """A new token for ``name`` (returned once)."""

    def revoke(self, name: str) -> None:
        """Delete the token of ``name``."""


class HistoryStoreLike(Protocol):
    """Where the call history is kept."""

    def add(self, entries: list[Entry]) -> None:
        """Append entries."""

    def query(self, principal: str | None, session: str | None = None,
              tool: str | None = None, *args: Any, **kwargs: Any) -> list[Entry]:
        """Entries matching the filters, newest last."""

    def sessions(self, principal: str | None) -> list[SessionSummary]:
        """One summary per session."""

    def prune(self, max_age_days: float, max_bytes: int) -> int:
        """Drop old entries; returns how many."""

    def close(self) -> None:
        """Release the store."""


class SessionRegistry(Protocol):
    """Heartbeats and tombstones of sessions, shared by the replicas."""

    def beat(self, session_id: str) -> None:
        """Note that the session is in use now (cheap; may be throttled)."""

    def last_seen(self, session_id: str) -> float | None:
        """When any replica last noted the session in use (epoch seconds), or None."""

    def closed(self, session_id: str) -> bool:
        """Whether some replica closed the session."""

    def mark_closed(self, session_id: str) -> None:
        """Record that the session was closed (its heartbeat goes)."""


class FileSessionRegistry:
    """``SessionRegistry`` as files: ``<dir>/<session>`` (its mtime is the heartbeat) and
    ``<dir>/<session>.closed``. Tombstones older than ``keep_s`` are removed by
    :meth:`prune`.

    Args:
        directory: Shared by the replicas (the state directory's ``sessions/``).
        throttle_s: A session's heartbeat is written at most this often by this process.
    """

    def __init__(self, directory: Path, throttle_s: float = 5.0) -> None:
        self._dir = directory
        self._throttle = throttle_s
        self._written: dict[str, float] = {}

    def _path(self, session_id: str, suffix: str = "") -> Path:
        if not _SID.match(session_id):
            raise ValueError(f"not a session id: {session_id!r}")
        return self._dir / f"{session_id}{suffix}"

    def beat(self, session_id: str) -> None:
        now = time.monotonic()
        if now - self._written.get(session_id, -1e9) < self._throttle:
            return
        self._written[session_id] = now
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._path(session_id)
        path.touch()
        os.utime(path)

    def last_seen(self, session_id: str) -> float | None:
        try:
            return self._path(session_id).stat().st_mtime
        except FileNotFoundError:
            return None

    def closed(self, session_id: str) -> bool:
        return self._path(session_id, ".closed").exists()

    def mark_closed(self, session_id: str) -> None:
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._path(session_id, ".closed").touch()
        self._written.pop(session_id, None)
        with contextlib.suppress(FileNotFoundError):
            self._path(session_id).unlink()

    def prune(self, keep_s: float) -> None:
        """Remove tombstones older than ``keep_s`` seconds."""
        cutoff = time.time() - keep_s
        for path in self._dir.glob("*.closed"):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
