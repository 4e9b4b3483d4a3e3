"""Allowlist rules and the files the server and the proxy share (no I/O beyond them).

A rule is a host name (``pypi.org``: that host only) or ``*.`` plus a domain
(``*.pythonhosted.org``: every host below it, not the domain itself). Hosts compare
case-insensitively, without a trailing dot.

The proxy runs in its own process; the server tells it which client address belongs to
which session and what that session may reach in ``allow.json`` (replaced atomically),
and the proxy appends one JSON line per request to ``requests.jsonl``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel

ALLOW_FILE = "allow.json"
LOG_FILE = "requests.jsonl"
DIR_ENV = "CODERX_EGRESS_DIR"
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_RULE = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})*$")


def check_rule(rule: str) -> str:
    """The rule, normalised (lower case, no trailing dot).

    Raises:
        ValueError: Not a host name or ``*.domain``.
    """
    r = rule.strip().lower().rstrip(".")
    if not _RULE.match(r):
        raise ValueError(f"{rule!r} is not a host name or *.domain allowlist rule")
    return r


def allowed(host: str, rules: Iterable[str]) -> bool:
    """Whether ``host`` matches one of ``rules``."""
    h = host.lower().rstrip(".")
    for r in rules:
        if r.startswith("*."):
            if h.endswith(r[1:]):
                return True
        elif h == r:
            return True
    return False


class Client(BaseModel):
    """One sandbox as the proxy knows it, by its address on the egress network."""

    session: str
    owner: str
    allow: list[str]


class Request(BaseModel):
    """One request the proxy saw (a line of ``requests.jsonl``)."""

    ts: float
    client: str
    session: str | None
    owner: str | None = None
    method: str
    host: str
    port: int | None
    allowed: bool
    bytes: int = 0


def write_clients(directory: Path, clients: dict[str, Client]) -> None:
    """Replace ``allow.json`` atomically (the proxy may read it at any moment)."""
    tmp = directory / f".{ALLOW_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps({ip: c.model_dump() for ip, c in clients.items()}))
    os.replace(tmp, directory / ALLOW_FILE)
