"""Structured logging to stderr (stdout is the stdio protocol stream)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import structlog
from structlog.typing import EventDict, WrappedLogger

from coderx_mcp.context import maybe_current


def redact_secrets(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """Replace granted secret values in a log event (the tool call's server grants)."""
    scope = maybe_current()
    redactor = scope.app.grants.redactor() if scope is not None else None
    if redactor is None:
        return event
    return {k: redactor.redact_data(v) if isinstance(v, (str, dict, list, tuple)) else v
            for k, v in event.items()}


def configure_logging(level: str = "info", json: bool = False,
                      file: Path | None = None) -> None:
    """Send structlog and stdlib logs (FastMCP's included) to stderr, as JSON lines on request.

    Every event carries the context bound per call (``request_id``, ``tool``,
    ``session_id``) through ``structlog.contextvars``.

    Args:
        level: debug, info, warning or error.
        json: One JSON object per line instead of console lines.
        file: Append the logs to this file instead of stderr (never stdout).
    """
    import fastmcp  # noqa: F401 - its import installs a rich handler, replaced below

    # Line-buffered and open for the life of the process, like stderr.
    out = open(file, "a", buffering=1, encoding="utf-8") if file else sys.stderr  # noqa: SIM115
    lvl = getattr(logging, level.upper(), logging.INFO)
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json
        else structlog.dev.ConsoleRenderer(colors=False))
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, redact_secrets, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, redact_secrets, renderer]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(lvl, logging.WARNING))
    # FastMCP installs its own (rich) handler; route it through ours instead.
    for name in ("fastmcp", "mcp", "uvicorn", "uvicorn.error", "docker"):
        lib = logging.getLogger(name)
        lib.handlers.clear()
        lib.propagate = True
        lib.setLevel(max(lvl, logging.WARNING))
