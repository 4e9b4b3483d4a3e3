"""``GET /healthz``: ok or degraded for anyone, details for a valid token.

Details: the sandbox backend (Docker reachable, image present and current), sessions (per
principal for an admin token, one's own otherwise), the warm pool, uptime, server RSS and
tool latency p50/p99 since start (recorded by :class:`CallStats`) and the history's queue.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from typing import Any

import mcp.types as mt
import structlog
from fastmcp.server.auth import TokenVerifier
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools.base import ToolResult
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse

from coderx_mcp.server.app import PRINCIPAL_PREFIX, App, app_of
from coderx_mcp.sessions import HostStatus

_log = structlog.get_logger("coderx.calls")
_SAMPLES = 2000  # latest durations kept per tool: percentiles of recent traffic


class CallStats(Middleware):
    """Times every tool call, logs its start and end (with the request id, principal and,
    once resolved, session id bound for every line of the call), keeps samples."""

    def __init__(self) -> None:
        self.samples: dict[str, deque[float]] = {}

    async def on_call_tool(
        self,
        context: MiddlewareContext[mt.CallToolRequestParams],
        call_next: CallNext[mt.CallToolRequestParams, ToolResult],
    ) -> Any:
        ctx = context.fastmcp_context
        owner = app_of(ctx).owner(ctx) if ctx is not None else "local"
        rid = ctx.request_id if ctx is not None and ctx.request_context else None
        tool = context.message.name
        # Every line logged during the call (the session's too) carries these.
        with structlog.contextvars.bound_contextvars(request_id=rid, principal=owner):
            _log.info("tool call started", tool=tool)
            start = time.perf_counter()
            ok = False
            try:
                result = await call_next(context)
                ok = True
                return result
            finally:
                ms = (time.perf_counter() - start) * 1000
                self.samples.setdefault(tool, deque(maxlen=_SAMPLES)).append(ms)
                _log.info("tool call ended", tool=tool, ok=ok, duration_ms=round(ms, 1))

    def latency(self) -> dict[str, dict[str, float]]:
        """p50 and p99 (milliseconds) and the sample count of each tool."""
        out = {}
        for tool, values in self.samples.items():
            ordered = sorted(values)
            if ordered:
                out[tool] = {"p50": round(_pct(ordered, 0.50), 1),
                             "p99": round(_pct(ordered, 0.99), 1), "n": len(ordered)}
        return out


def _pct(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rss_bytes() -> int | None:
    """This process's resident memory (Linux), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class Health(BaseModel):
    """What ``/healthz?verbose`` answers."""

    status: str
    sandbox: str
    image_current: bool | None
    sessions: int
    sessions_by_principal: dict[str, int] | None
    warm_pool: int
    uptime_s: float
    rss_bytes: int | None
    latency_ms: dict[str, dict[str, float]]
    history_queue: int | None
    docker_hosts: list[HostStatus] | None = None
    """Each engine of ``CODERX_DOCKER_HOSTS`` (None: one engine)."""
    """History entries waiting to be written (None: no history)."""


async def image_current(app: App) -> bool | None:
    """Whether the sandbox image matches this server's runner (None: not Docker)."""
    client = getattr(app.sessions.backend, "client", None)
    if client is None:
        return None
    from coderx_mcp.image import image_status

    try:
        status = await asyncio.to_thread(image_status, client, app.settings.image)
    except Exception:  # reported as the sandbox problem already
        return None
    return status.up_to_date


async def health(app: App, stats: CallStats, owner: str | None, admin: bool) -> Health:
    """The server's health; ``owner`` None gives only the status."""
    problem = await app.sessions.problem()
    status = "ok" if problem is None else "degraded"
    by = Counter(s.owner for s in app.sessions.list_all())
    return Health(
        status=status, sandbox=problem or "ok",
        image_current=await image_current(app) if problem is None else None,
        sessions=sum(by.values()) if admin else by.get(owner or "", 0),
        sessions_by_principal={k.removeprefix(PRINCIPAL_PREFIX): v for k, v in by.items()}
        if admin else None,
        warm_pool=app.sessions.pool.ready, uptime_s=round(time.monotonic() - app.started, 1),
        rss_bytes=rss_bytes(), latency_ms=stats.latency(),
        history_queue=app.history.pending if app.history is not None else None,
        docker_hosts=await app.sessions.host_status() or None)


def healthz_route(apps: list[App], stats: CallStats, verifier: TokenVerifier | None) -> Any:
    """The ``/healthz`` handler: no auth for the status, a token for ``?verbose``."""
    async def healthz(request: Request) -> JSONResponse:
        if not apps:
            return JSONResponse({"status": "starting"}, status_code=503)
        app = apps[0]
        if "verbose" not in request.query_params:
            problem = await app.sessions.problem()
            return JSONResponse({"status": "ok" if problem is None else "degraded"},
                                status_code=200 if problem is None else 503)
        owner, admin = "local", True
        if verifier is not None:
            header = request.headers.get("authorization", "")
            scheme, _, token = header.partition(" ")
            access = await verifier.verify_token(token) if scheme.lower() == "bearer" else None
            if access is None:
                return JSONResponse({"error": "a valid bearer token is needed for details"},
                                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
            owner = PRINCIPAL_PREFIX + access.client_id
            policy = app.tokens.policy(access.client_id) if app.tokens else None
            admin = policy is not None and policy.admin
        report = await health(app, stats, owner, admin)
        return JSONResponse(report.model_dump(), status_code=200 if report.status == "ok"
                            else 503)

    return healthz
