"""JSON-RPC envelopes checked before the MCP transport sees them (catalogue PR-02).

The SDK's streamable HTTP transport takes a message with ``"id": null`` for a notification
(202, no reply), and answers a malformed envelope (a batch, ``{"foo": 1}``, ``"jsonrpc":
"1.0"``) with pydantic's error, which echoes the whole request. This layer answers those
with HTTP 400 and a JSON-RPC error of its own: one sentence, no part of the input.
Well-formed messages pass through untouched (the body is replayed as it came).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PARSE_ERROR, INVALID_REQUEST = -32700, -32600


def envelope_problem(msg: Any) -> str | None:
    """Why ``msg`` is not one JSON-RPC 2.0 request, notification or response, or None."""
    if isinstance(msg, list):
        return "batches are not supported (MCP 2025-06-18 and later): send one message per request"
    if not isinstance(msg, dict):
        return "a JSON-RPC message must be a JSON object"
    if msg.get("jsonrpc") != "2.0":
        return 'a JSON-RPC message needs "jsonrpc": "2.0"'
    if "id" in msg and (msg["id"] is None or isinstance(msg["id"], bool)
                        or not isinstance(msg["id"], (str, int))):
        return "a request id must be a string or an integer (null is not allowed in MCP)"
    if "method" in msg:
        if not isinstance(msg["method"], str) or not msg["method"]:
            return "method must be a non-empty string"
        if "params" in msg and not isinstance(msg["params"], dict):
            return "params must be an object"
        return None
    if "id" in msg and ("result" in msg or "error" in msg):
        return None
    return "not a JSON-RPC request, notification or response (no method, result or error)"


class JsonRpcEnvelope:
    """ASGI middleware: refuses malformed JSON-RPC envelopes on POST with one clear error.

    Args:
        app: The wrapped ASGI app (FastMCP's streamable HTTP app).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        content_type = dict(scope.get("headers", [])).get(b"content-type", b"")
        if (scope["type"] != "http" or scope.get("method") != "POST"
                or not content_type.startswith(b"application/json")):
            # Other content types are the transport's to refuse (415/406: catalogue TA-05).
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:  # the body is already capped by HttpGuard, outside this layer
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay(message, receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problem: tuple[int, str] | None = None
        try:
            parsed = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            problem = (PARSE_ERROR, "the request body is not valid JSON")
        else:
            why = envelope_problem(parsed)
            if why is not None:
                problem = (INVALID_REQUEST, why)
        if problem is None:
            await self.app(scope, _replay({"type": "http.request", "body": body,
                                            "more_body": False}, receive), send)
            return
        code, text = problem
        reply = json.dumps({"jsonrpc": "2.0", "id": None,
                            "error": {"code": code, "message": text}}).encode()
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(reply)).encode())]})
        await send({"type": "http.response.body", "body": reply})


def _replay(first: Message, receive: Receive) -> Receive:
    """A ``receive`` that gives ``first`` (the buffered body) once, then what the client
    sends next."""
    pending = [first]

    async def replay() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replay
