"""The proxy.py plugin: allow CONNECT/GET to a session's allowlist, refuse the rest, log all.

It runs inside the proxy's process (``python -m proxy --plugins …``), so it imports only
the standard library, proxy.py and :mod:`coderx_mcp.egress.rules`. It re-reads
``allow.json`` when the file changes and appends every request to ``requests.jsonl``
(one ``write`` of one line on an ``O_APPEND`` descriptor: lines never interleave).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from proxy.http.exception import HttpRequestRejected
from proxy.http.parser import HttpParser
from proxy.http.proxy import HttpProxyBasePlugin

from coderx_mcp.egress.rules import ALLOW_FILE, DIR_ENV, LOG_FILE, Client, Request, allowed


class _Shared:
    """``allow.json`` as last read, per proxy process."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._mtime = -1
        self.clients: dict[str, Client] = {}

    def refresh(self) -> None:
        path = self.directory / ALLOW_FILE
        try:
            mtime = path.stat().st_mtime_ns
            if mtime != self._mtime:
                raw = json.loads(path.read_text())
                self.clients = {ip: Client(**c) for ip, c in raw.items()}
                self._mtime = mtime
        except (OSError, ValueError):
            self.clients = {}  # no file (yet) or a broken one: nobody may go out

    def log(self, request: Request) -> None:
        fd = os.open(self.directory / LOG_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (request.model_dump_json() + "\n").encode())
        finally:
            os.close(fd)


_shared: list[_Shared] = []  # one per process, made on first use (the plugin API has no init)


def shared() -> _Shared:
    if not _shared:
        _shared.append(_Shared(Path(os.environ[DIR_ENV])))
    return _shared[0]


class AllowlistPlugin(HttpProxyBasePlugin):
    """Refuses requests whose host is not in the client's session allowlist (403)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._entry: Request | None = None

    def before_upstream_connection(self, request: HttpParser) -> HttpParser | None:
        s = shared()
        s.refresh()
        ip = self.client.addr[0] if self.client.addr else ""
        client = s.clients.get(ip)
        host = (request.host or b"").decode("ascii", "replace")  # punycode on the wire
        method = (request.method or b"").decode("ascii", "replace")
        ok = client is not None and allowed(host, client.allow)
        entry = Request(ts=time.time(), client=ip, session=client.session if client else None,
                        owner=client.owner if client else None, method=method, host=host,
                        port=request.port, allowed=ok)
        if not ok:
            s.log(entry)
            why = ("is not in this session's egress allowlist" if client is not None
                   else "comes from an address that is no coderx session")
            reason = f"coderx egress: {host} {why}"
            raise HttpRequestRejected(status_code=403, reason=reason.encode(),
                                      body=(reason + "\n").encode())
        self._entry = entry
        return request

    def on_access_log(self, context: dict[str, Any]) -> dict[str, Any] | None:
        if self._entry is not None:
            sent = int(context.get("request_bytes") or 0)
            got = int(context.get("response_bytes") or 0)
            shared().log(self._entry.model_copy(update={"bytes": sent + got}))
            self._entry = None
        return context
