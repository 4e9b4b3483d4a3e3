"""The terminal's output: the loop's events drawn with rich.

Answers stream as markdown (code blocks, tables) in a live region that is left on screen
when the answer is complete. A running tool shows a spinner with its name and the seconds
it has run; when it ends it becomes one compact line, its output cut to a few lines (the
whole of it stays available to ``/last``), and a file edit is shown as a coloured unified
diff of the file before and after.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.markdown import Markdown
from rich.spinner import Spinner
from rich.text import Text

from coderx_agent.events import (
    AssistantMessage,
    Compacted,
    Event,
    Notice,
    TextDelta,
    ToolEnd,
    ToolStart,
    TurnStart,
)
from coderx_agent.repl.diffs import FILE_TOOLS, coloured, host_path, read_text, unified

#: Output lines shown under a tool's line (``/last`` shows all of them).
COLLAPSED_LINES = 3
#: Events kept for ``/bug``.
KEPT_EVENTS = 200


class CallRecord(BaseModel):
    """One tool call of this session, for ``/history`` and ``/last``."""

    name: str
    summary: str
    ok: bool | None = None
    duration_s: float = 0.0
    output: str = ""


def summary(arguments: dict[str, Any], width: int = 80) -> str:
    """The one argument that says what a call does (its command, path or pattern)."""
    for key in ("command", "path", "pattern", "query", "url"):
        value = arguments.get(key)
        if isinstance(value, str) and value:
            break
    else:
        value = json.dumps(arguments, ensure_ascii=False) if arguments else ""
    line = " ".join(str(value).split())
    return line if len(line) <= width else line[: width - 1] + "…"


class _Running:
    """The spinner's renderable: the running tools and their elapsed seconds, read at each
    refresh."""

    def __init__(self, renderer: Renderer) -> None:
        self._r = renderer

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        now = time.monotonic()
        names = ", ".join(f"{name} {now - start:.0f}s"
                          for name, start in self._r.running_tools())
        yield Spinner("dots", text=Text(f"{names or 'thinking'}  (Ctrl-C interrupts)",
                                        style="dim"))


class Renderer:
    """Draws events on a console.

    Args:
        console: Where to draw.
        workspace: The project on the host (to diff edited files).
    """

    def __init__(self, console: Console, workspace: Path) -> None:
        self.console = console
        self.workspace = workspace
        self._text = ""
        self._live: Live | None = None
        self._live_kind = ""
        self._running: dict[str, tuple[str, dict[str, Any], float, str | None]] = {}
        self.calls: list[CallRecord] = []
        """Every tool call of this session, oldest first."""
        self.events: deque[Event] = deque(maxlen=KEPT_EVENTS)
        """The last events (for ``/bug``)."""

    # -- the live region --------------------------------------------------------------
    def _show(self, kind: str, renderable: Any, transient: bool) -> None:
        if self._live is not None and self._live_kind == kind:
            self._live.update(renderable, refresh=True)
            return
        self.pause()
        self._live = Live(renderable, console=self.console, transient=transient,
                          refresh_per_second=4, auto_refresh=kind == "spinner",
                          vertical_overflow="visible")
        self._live_kind = kind
        self._live.start()

    def pause(self) -> None:
        """End the live region (before a question or the prompt); the answer so far stays."""
        if self._live is not None:
            self._live.stop()
            self._live = None
            if self._live_kind == "answer":
                self._text = ""
            self._live_kind = ""

    def running_tools(self) -> Iterator[tuple[str, float]]:
        """``(name, start)`` of each tool call now running."""
        for name, _args, start, _before in self._running.values():
            yield name, start

    def thinking(self) -> None:
        """Show the spinner while the model works on its turn."""
        self._show("spinner", _Running(self), transient=True)

    # -- events ---------------------------------------------------------------------
    def event(self, event: Event) -> None:
        """Draw one event of the loop."""
        self.events.append(event)
        if isinstance(event, TurnStart):
            self.thinking()
        elif isinstance(event, TextDelta):
            self._text += event.text
            self._show("answer", Markdown(self._text), transient=False)
        elif isinstance(event, AssistantMessage):
            self.pause()
        elif isinstance(event, ToolStart):
            self._start(event)
        elif isinstance(event, ToolEnd):
            self._end(event)
        elif isinstance(event, Notice):
            self.pause()
            self.console.print(Text(f"! {event.message}", style="yellow"))
        elif isinstance(event, Compacted):
            self.pause()
            self.console.print(Text(f"· compacted {event.summarised_messages} older messages "
                                    f"(the prompt was {event.prompt_tokens} tokens)",
                                    style="dim"))

    def _start(self, event: ToolStart) -> None:
        before = None
        if event.name in FILE_TOOLS:
            before = read_text(host_path(self.workspace, str(event.arguments.get("path", ""))))
        self._running[event.id] = (event.name, event.arguments, time.monotonic(), before)
        self._show("spinner", _Running(self), transient=True)

    def _end(self, event: ToolEnd) -> None:
        name, args, _start, before = self._running.pop(
            event.id, (event.name, {}, time.monotonic(), None))
        if not self._running:
            self.pause()
        record = CallRecord(name=name, summary=summary(args), ok=event.ok,
                            duration_s=event.duration_s, output=event.output)
        self.calls.append(record)
        self.console.print(self.tool_line(record))
        path = str(args.get("path", ""))
        if event.ok and name in FILE_TOOLS:
            after = read_text(host_path(self.workspace, path))
            diff = unified(path, before or "", after) if after is not None else ""
            if diff:
                self.console.print(coloured(diff))
                return
        self.console.print(self.collapsed(record.output))

    @staticmethod
    def tool_line(record: CallRecord) -> Text:
        """``● name  summary  ✓ 0.4s`` (a cross when the call failed or was refused)."""
        mark, style = ("✓", "green") if record.ok else ("✗", "red")
        line = Text("● ", style=style)
        line.append(record.name, style="bold")
        if record.summary:
            line.append(f"  {record.summary}")
        line.append(f"  {mark} {record.duration_s:.1f}s", style=style)
        return line

    @staticmethod
    def collapsed(output: str, lines: int = COLLAPSED_LINES) -> Text:
        """The first lines of a tool's output, indented, and how many more there are."""
        rows = output.rstrip("\n").splitlines()
        text = Text()
        for row in rows[:lines]:
            text.append(f"  │ {row[:200]}\n", style="dim")
        if len(rows) > lines:
            text.append(f"  │ … {len(rows) - lines} more lines (/last shows them)\n",
                        style="dim")
        text.rstrip()
        return text
