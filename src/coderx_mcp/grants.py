"""Secrets granted to sessions: per-command environment and what must be redacted."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from coderx_mcp.redact import Redactor


class Grants:
    """Granted values by session id and name; one per server.

    A value granted to any session is redacted everywhere (a result of another session
    could echo a file the first one wrote).
    """

    def __init__(self) -> None:
        self._by_session: dict[str, dict[str, str]] = {}
        self._ever: set[tuple[str, str]] = set()
        self._redactor: Redactor | None = None

    def grant(self, session_id: str, values: Mapping[str, str]) -> None:
        """Add (or replace) values for ``session_id``'s later commands."""
        self._by_session.setdefault(session_id, {}).update(values)
        self._ever |= set(values.items())
        self._redactor = None

    def revoke(self, session_id: str, names: Iterable[str]) -> list[str]:
        """Remove names from a session's grants; returns those that were granted.

        Their values stay redacted for the server's lifetime: earlier output may still
        hold them (in spools the client can page through).
        """
        env = self._by_session.get(session_id, {})
        return [n for n in names if env.pop(n, None) is not None]

    def names(self, session_id: str) -> list[str]:
        """The names granted to a session."""
        return sorted(self._by_session.get(session_id, {}))

    def env_getter(self, session_id: str) -> Callable[[], Mapping[str, str]]:
        """A function returning the session's current per-command environment."""
        return lambda: self._by_session.get(session_id) or {}

    def drop(self, session_id: str) -> None:
        """Forget a closed session's grants (their values stay redacted)."""
        self._by_session.pop(session_id, None)

    def redactor(self) -> Redactor | None:
        """A redactor for every value ever granted by this server, or None if there is none."""
        if self._redactor is None:
            self._redactor = Redactor(sorted(self._ever))
        return self._redactor if self._redactor else None
