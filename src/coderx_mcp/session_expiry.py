"""Idle sessions: which may be closed, and what their owners are told afterwards.

The session manager's reaper closes a session idle longer than ``idle_timeout_s`` with
nothing running in it; :class:`ExpiredSessions` remembers it (bounded) so the owner's next
call naming it, or the owner's next default call, says "expired", when and why, instead of
"not found" or a fresh session that silently forgot the shell state.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import UTC, datetime

from coderx_mcp.errors import SessionExpired
from coderx_mcp.session import Session

_KEPT = 1000  # expired sessions remembered, newest last


class ExpiredSessions:
    """Sessions closed for idleness: session id -> (owner, message); and owners whose
    default session expired, told once on their next default call."""

    def __init__(self) -> None:
        self._expired: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._default: dict[str, str] = {}

    def remember(self, s: Session, limit: float, was_default: bool) -> None:
        """Record that ``s`` was closed after ``limit`` seconds idle."""
        when = datetime.now(UTC).strftime("%H:%M:%S UTC")
        self._expired[s.id] = (s.owner, (
            f"session {s.id} expired at {when}: it was idle for more than {limit:.0f} s with "
            "nothing running, so it was closed; its shell state (cwd, exported variables), "
            "background processes and the record of files read are gone (files in the "
            "workspace stay)."))
        if was_default:
            self._default[s.owner] = s.id
        while len(self._expired) > _KEPT:
            self._expired.popitem(last=False)

    def check(self, session_id: str, owner: str) -> None:
        """Raise ``SessionExpired`` if ``owner``'s session ``session_id`` expired."""
        gone = self._expired.get(session_id)
        if gone is not None and gone[0] == owner:
            raise SessionExpired(f"{gone[1]} Open a new one with session_open, or omit "
                                 "`session` to use your default session.")

    def check_default(self, owner: str) -> None:
        """Raise ``SessionExpired`` once if ``owner``'s default session expired; the next
        default call then opens a new one."""
        sid = self._default.pop(owner, None)
        if sid is not None and sid in self._expired:
            raise SessionExpired(f"Your default {self._expired[sid][1]} A new default "
                                 "session starts with your next call: repeat this call (and "
                                 "read files again before editing them).")


async def busy(s: Session) -> bool:
    """Whether a background process still runs in ``s`` (asked without touching last_used)."""
    if not s.sandbox.alive:
        return False
    try:
        r = await s.sandbox.call("procs")
    except Exception:  # a broken sandbox is not work worth keeping alive
        return False
    return any(p.get("running") for p in r.get("processes", []))
