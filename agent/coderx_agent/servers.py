"""The agent's MCP client side: the coderx-mcp server plus any configured ``mcpServers``.

The coderx server's tools keep their own names (``read_file``, ``run_command``): they are
the agent's native tools, and the model reads them in every prompt. Tools of other servers
are named ``mcp__<server>__<tool>`` so they cannot shadow ours or each other.

A server that dies mid-call gives the model a tool error at once (the SDK sees the pipe or
connection close; a hang is cut by the server's ``timeout_s``) and is started again on its
next call. Servers get no API keys: their environment is built without them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fastmcp import Client
from fastmcp.client.transports import StdioTransport, StreamableHttpTransport
from pydantic import BaseModel

from coderx_agent.config import ServerEntry
from coderx_agent.errors import ToolServerError
from coderx_agent.keys import SECRET_ENV
from coderx_agent.messages import ToolSpec

CODERX = "coderx"
#: Longest a server may take to start and list its tools (the coderx server starts Docker
#: clients and reaps orphans first).
START_TIMEOUT_S = 60.0
#: Longest we wait for a broken connection to close.
CLOSE_TIMEOUT_S = 5.0

ClientFactory = Callable[[], Client[Any]]


def server_env(environ: Mapping[str, str]) -> dict[str, str]:
    """Our environment without secrets: what a stdio server is started with."""
    return {k: v for k, v in environ.items()
            if k not in SECRET_ENV and not k.endswith(("_API_KEY", "_AUTH_TOKEN"))}


def coderx_entry(workspace: Path, url: str | None, token: str | None,
                 timeout_s: float) -> ServerEntry:
    """The coderx server: ``coderx-mcp serve --workspace <dir>`` with this Python, or HTTP."""
    if url:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return ServerEntry(url=url, headers=headers, timeout_s=timeout_s)
    return ServerEntry(command=sys.executable,
                       args=["-m", "coderx_mcp", "serve", "--workspace", str(workspace)],
                       timeout_s=timeout_s)


def client_factory(entry: ServerEntry, environ: Mapping[str, str], inherit_env: bool,
                   log_file: Path | None = None) -> ClientFactory:
    """How to (re)connect to ``entry``: a new client (and process, for stdio) each time;
    a stdio server's stderr goes to ``log_file`` (default: ours)."""
    if entry.url is not None:
        url, headers = entry.url, dict(entry.headers)
        return lambda: Client(StreamableHttpTransport(url, headers=headers))
    assert entry.command is not None
    command, args = entry.command, list(entry.args)
    env = {**(server_env(environ) if inherit_env else {}), **entry.env} or None
    return lambda: Client(StdioTransport(command, args, env=env, keep_alive=False,
                                         log_file=log_file))


class ToolOutcome(BaseModel):
    """What a tool call gave the model."""

    ok: bool
    text: str


def render(result: Any) -> str:
    """A tool result's content as text (non-text content is named, not inlined)."""
    parts = []
    for c in result.content:
        text = getattr(c, "text", None)
        parts.append(text if text is not None else f"[{getattr(c, 'type', 'content')} omitted]")
    return "\n".join(parts) or ("(no output)" if not result.is_error else "the tool failed")


class ToolServer:
    """One MCP server connection, reconnected after it dies.

    Args:
        name: The server's name (``coderx`` or the ``mcpServers`` key).
        connect: Makes a new, unconnected client.
        entry: Timeouts and allow/deny filters.
        prefix: Name its tools ``mcp__<name>__<tool>``.
    """

    def __init__(self, name: str, connect: ClientFactory, entry: ServerEntry,
                 prefix: bool) -> None:
        self.name = name
        self._connect = connect
        self._entry = entry
        self._prefix = prefix
        self._client: Client[Any] | None = None
        self._lock = asyncio.Lock()
        self.tools: dict[str, ToolSpec] = {}
        """Exposed name → spec."""
        self._remote: dict[str, str] = {}
        """Exposed name → the server's own tool name."""

    def _visible(self, tool: str) -> bool:
        e = self._entry
        if any(fnmatch.fnmatchcase(tool, g) for g in e.deny):
            return False
        return not e.allow or any(fnmatch.fnmatchcase(tool, g) for g in e.allow)

    async def _client_or_start(self) -> Client[Any]:
        async with self._lock:
            if self._client is not None:
                return self._client
            client = self._connect()
            try:
                await asyncio.wait_for(client.__aenter__(), START_TIMEOUT_S)  # type: ignore[no-untyped-call]
                listed = await asyncio.wait_for(client.list_tools(), START_TIMEOUT_S)
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.close(), CLOSE_TIMEOUT_S)  # type: ignore[no-untyped-call]
                if isinstance(exc, asyncio.CancelledError):
                    raise
                raise ToolServerError(f"MCP server {self.name!r} did not start: "
                                      f"{exc or type(exc).__name__}") from None
            self.tools, self._remote = {}, {}
            for t in listed:
                if not self._visible(t.name):
                    continue
                exposed = f"mcp__{self.name}__{t.name}" if self._prefix else t.name
                ann = t.annotations
                self.tools[exposed] = ToolSpec(
                    name=exposed, description=t.description or "", input_schema=t.input_schema,
                    read_only=bool(ann and ann.read_only_hint))
                self._remote[exposed] = t.name
            self._client = client
            return client

    async def start(self) -> None:
        """Connect and list the tools.

        Raises:
            ToolServerError: The server cannot be started or reached.
        """
        await self._client_or_start()

    async def _drop(self, client: Client[Any]) -> None:
        async with self._lock:
            if self._client is client:
                self._client = None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), CLOSE_TIMEOUT_S)  # type: ignore[no-untyped-call]

    async def call(self, exposed: str, arguments: dict[str, Any]) -> ToolOutcome:
        """Run a tool; failures of the tool or the server come back as a failed outcome."""
        try:
            client = await self._client_or_start()
        except ToolServerError as exc:
            return ToolOutcome(ok=False, text=str(exc))
        remote = self._remote.get(exposed, exposed)
        try:
            result = await asyncio.wait_for(
                client.call_tool(remote, arguments, raise_on_error=False), self._entry.timeout_s)
        except TimeoutError:
            await self._drop(client)
            return ToolOutcome(ok=False, text=(
                f"{exposed} did not answer within {self._entry.timeout_s:g} s; the MCP server "
                f"{self.name!r} was stopped and starts again on the next call"))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._drop(client)
            return ToolOutcome(ok=False, text=(
                f"the MCP server {self.name!r} failed during {exposed} ({exc}); it starts "
                "again on the next call, so the call may be retried"))
        return ToolOutcome(ok=not result.is_error, text=render(result))

    @property
    def connected(self) -> bool:
        """Whether a connection is open now."""
        return self._client is not None

    async def close(self) -> None:
        """Disconnect (a stdio server sees EOF and exits)."""
        if self._client is not None:
            await self._drop(self._client)


class ToolHub:
    """All the agent's MCP servers, as one set of tools.

    Use ``async with``: the coderx server must start (else ``ToolServerError``); an extra
    server that cannot start is left out with a notice.
    """

    def __init__(self, servers: Sequence[ToolServer],
                 notify: Callable[[str], None] = lambda _m: None) -> None:
        self._servers = list(servers)
        self._notify = notify
        self._owner: dict[str, ToolServer] = {}

    async def __aenter__(self) -> ToolHub:
        for s in self._servers:
            try:
                await s.start()
            except ToolServerError as exc:
                if s.name == CODERX:
                    await self.aclose()
                    raise
                self._notify(f"{exc}; continuing without it")
        self._refresh()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every server."""
        for s in self._servers:
            await s.close()

    @property
    def servers(self) -> list[ToolServer]:
        """The servers, coderx first."""
        return list(self._servers)

    def _refresh(self) -> None:
        self._owner = {name: s for s in self._servers for name in s.tools}

    def tools(self) -> list[ToolSpec]:
        """Every exposed tool, coderx's first."""
        return [s.tools[n] for s in self._servers for n in sorted(s.tools)]

    def spec(self, name: str) -> ToolSpec | None:
        """The tool named ``name``, if any server offers it."""
        owner = self._owner.get(name)
        return owner.tools.get(name) if owner else None

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolOutcome:
        """Run a tool by its exposed name."""
        owner = self._owner.get(name)
        if owner is None:
            return ToolOutcome(ok=False, text=f"no tool named {name!r}")
        return await owner.call(name, arguments)


def build_servers(coderx: ServerEntry, extra: Mapping[str, ServerEntry],
                  environ: Mapping[str, str] | None = None,
                  log_file: Path | None = None) -> list[ToolServer]:
    """The coderx server (plain tool names) and the configured ones (prefixed); stdio
    servers log to ``log_file``."""
    environ = os.environ if environ is None else environ
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
    out = [ToolServer(CODERX, client_factory(coderx, environ, True, log_file), coderx,
                      prefix=False)]
    out += [ToolServer(name, client_factory(e, environ, False, log_file), e, prefix=True)
            for name, e in extra.items() if name != CODERX]
    return out


def timed() -> Callable[[], float]:
    """A stopwatch: call the result for the seconds since."""
    start = time.monotonic()
    return lambda: time.monotonic() - start
