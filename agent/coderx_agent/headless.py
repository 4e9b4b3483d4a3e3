"""Headless runs (``coderx-agent -p``): one prompt, no questions, output for scripts.

Formats: ``text`` (the answer on stdout), ``json`` (one result object), ``stream-json``
(every event as a JSON line as it happens, then the result object). The result carries
``schema_version``; exit codes are the ``exit_code`` of ``errors``: 0 done, 1 error,
2 usage error, 3 budget exceeded, 4 turn limit, 5 tool server failure, 130 interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import signal
import sys
import time
from collections.abc import Mapping
from typing import IO, Any

from pydantic import BaseModel

from coderx_agent.config import AgentConfig
from coderx_agent.conversations import ConversationStore
from coderx_agent.errors import AgentError, Interrupted
from coderx_agent.events import Event, Notice
from coderx_agent.keys import KeySource
from coderx_agent.loop import RunResult
from coderx_agent.session import Request, open_agent

SCHEMA_VERSION = 1


class OutputFormat(enum.StrEnum):
    """How ``-p`` reports."""

    text = "text"
    json = "json"
    stream_json = "stream-json"


class Report(RunResult):
    """The headless result object."""

    schema_version: int = SCHEMA_VERSION
    type: str = "result"
    session_id: str | None = None
    model: str | None = None
    duration_s: float = 0.0


class Printer:
    """Writes events and the result in one format (stdout: data; stderr: notices)."""

    def __init__(self, fmt: OutputFormat, out: IO[str], err: IO[str]) -> None:
        self.fmt, self.out, self.err = fmt, out, err

    def _line(self, obj: BaseModel) -> None:
        self.out.write(obj.model_dump_json() + "\n")
        self.out.flush()

    def event(self, event: Event) -> None:
        """Stream the event (stream-json) or show notices (other formats)."""
        if self.fmt is OutputFormat.stream_json:
            self._line(event)
        elif isinstance(event, Notice):
            self.err.write(f"coderx-agent: {event.message}\n")

    def result(self, report: Report) -> None:
        """The end of the run."""
        if self.fmt is OutputFormat.text:
            if report.answer:
                self.out.write(report.answer.rstrip("\n") + "\n")
            if report.error:
                self.err.write(f"error: {report.error}\n")
        else:
            self._line(report)


async def run_headless(prompt: str, config: AgentConfig, req: Request, keys: KeySource,
                       store: ConversationStore, printer: Printer,
                       environ: Mapping[str, str] | None = None) -> int:
    """Run one prompt to its end and report; returns the exit code."""
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    target: list[asyncio.Future[Any]] = []
    main = asyncio.current_task()
    assert main is not None

    def interrupt() -> None:
        (target[-1] if target else main).cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupt)
    report = Report(status="error", exit_code=1)
    try:
        async with open_agent(config, req, keys, store, printer.event,
                              environ=environ) as agent:
            report.session_id = agent.conversation.id
            report.model = agent.model.name
            run = asyncio.ensure_future(agent.run(prompt))
            target.append(run)
            result = await run
            report = Report(**result.model_dump(), session_id=report.session_id,
                            model=report.model)
    except AgentError as exc:
        report.status, report.exit_code, report.error = exc.status, exc.exit_code, str(exc)
    except asyncio.CancelledError:
        stop = Interrupted("interrupted")
        report.status, report.exit_code, report.error = stop.status, stop.exit_code, str(stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
    report.duration_s = round(time.monotonic() - started, 3)
    printer.result(report)
    return report.exit_code


def read_prompt(value: str) -> str:
    """``-p`` text, or stdin when it is ``-``."""
    return sys.stdin.read() if value == "-" else value
