"""The outermost HTTP layer: request bodies capped, failed authentications logged and
rate-limited per client address.

It wraps FastMCP's app, so it sees the 401 its bearer check answers: a failure is logged
with the client address and path (never the token), and an address with too many
failures in a minute gets 429 without its token being looked at.
"""

from __future__ import annotations

import time
from collections import deque

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_log = structlog.get_logger("coderx.http")
_WINDOW_S = 60.0
_MAX_ADDRESSES = 10000  # the failure table never grows without bound


class HttpGuard:
    """ASGI middleware: body size cap and authentication-failure limit.

    Args:
        app: The wrapped ASGI app.
        max_body: Largest request body in bytes (413 above).
        failures_per_minute: Failed authentications an address may make per minute.
    """

    def __init__(self, app: ASGIApp, max_body: int, failures_per_minute: int) -> None:
        self.app = app
        self.max_body = max_body
        self.per_minute = failures_per_minute
        self._failures: dict[str, deque[float]] = {}

    def _count(self, address: str, now: float) -> int:
        """Failures of ``address`` in the last minute (old ones forgotten)."""
        times = self._failures.get(address)
        if times is None:
            return 0
        while times and now - times[0] >= _WINDOW_S:
            times.popleft()
        if not times:
            del self._failures[address]
        return len(times)

    def _fail(self, address: str, now: float) -> None:
        if address not in self._failures and len(self._failures) >= _MAX_ADDRESSES:
            self._failures = {a: t for a, t in self._failures.items()
                              if t and now - t[-1] < _WINDOW_S}
        self._failures.setdefault(address, deque()).append(now)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        address = (scope.get("client") or ("unknown", 0))[0]
        now = time.monotonic()
        if self._count(address, now) >= self.per_minute:
            await _answer(send, 429, b"too many failed authentications; retry in a minute\n",
                          [(b"retry-after", b"60")])
            return
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await _answer(send, 413, b"request body too large\n")
            return
        received = 0
        too_large = False

        async def counted() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    # Chunked bodies have no length up front: stop reading at the cap.
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if message["status"] == 401:
                    self._fail(address, time.monotonic())
                    _log.warning("authentication failed", client=address,
                                 path=scope.get("path"),
                                 had_token=b"authorization" in dict(scope.get("headers", [])))
            await send(message)

        await self.app(scope, counted, watched)
        if too_large and not started:
            await _answer(send, 413, b"request body too large\n")


async def _answer(send: Send, status: int, body: bytes,
                  extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), *(extra or [])]})
    await send({"type": "http.response.body", "body": body})
