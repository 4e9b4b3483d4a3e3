"""Identity of this server process, stamped on every container it owns.

A later server removes containers whose owner is gone; the pid alone is not enough
(pids are reused), so the owner's start time is stamped too.
"""

from __future__ import annotations

import os
import secrets
import socket

from pydantic import BaseModel, ConfigDict

LABEL_MANAGED = "coderx.managed"
LABEL_SESSION = "coderx.session"
LABEL_INSTANCE = "coderx.instance"
LABEL_PID = "coderx.instance-pid"
LABEL_START = "coderx.instance-start"
LABEL_HOST = "coderx.instance-host"
LABEL_OWNER = "coderx.owner"
"""Shared sessions: the principal a session belongs to."""
LABEL_DEFAULT = "coderx.default"
"""Shared sessions: ``1`` on the owner's default session."""
LABEL_STATE = "coderx.session-state"
"""Shared sessions: JSON of what another server needs to rebuild the session (workspace,
spec)."""


def process_start_time(pid: int) -> str | None:
    """Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


class Instance(BaseModel):
    """This server process as seen in container labels."""

    model_config = ConfigDict(frozen=True)

    id: str
    pid: int
    start: str
    host: str

    @classmethod
    def current(cls) -> Instance:
        """Describe the running process with a fresh random instance id."""
        pid = os.getpid()
        return cls(id=secrets.token_hex(8), pid=pid, start=process_start_time(pid) or "?",
                   host=socket.gethostname())

    def labels(self) -> dict[str, str]:
        """Labels that name this instance as the owner."""
        return {LABEL_MANAGED: "1", LABEL_INSTANCE: self.id, LABEL_PID: str(self.pid),
                LABEL_START: self.start, LABEL_HOST: self.host}


def sandbox_labels(instance: Instance, extra: dict[str, str], session_id: str) -> dict[str, str]:
    """The labels of a session's container (and network).

    A shared session (``extra`` holds its state) outlives the server that made it, so it
    carries no pid, start time or host: a server judging owners by pid leaves it alone, and
    replicas reap it by heartbeat instead.
    """
    labels = {**instance.labels(), **extra, LABEL_SESSION: session_id}
    if LABEL_STATE in extra:
        for key in (LABEL_PID, LABEL_START, LABEL_HOST):
            labels.pop(key, None)
    return labels


def owner_is_gone(labels: dict[str, str], here: Instance) -> bool:
    """Whether the server that labelled a container no longer runs.

    Only owners on this host are judged; a container of another host, or a shared session
    (reaped by heartbeat, ``replicas.py``), is left alone.
    """
    if (labels.get(LABEL_HOST) != here.host or labels.get(LABEL_INSTANCE) == here.id
            or LABEL_STATE in labels):
        return False
    try:
        pid = int(labels.get(LABEL_PID, ""))
    except ValueError:
        return True
    return process_start_time(pid) != labels.get(LABEL_START)
