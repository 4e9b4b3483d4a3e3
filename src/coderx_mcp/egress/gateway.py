"""The server's egress proxy and network: started once, shared by ``allowlist`` sessions.

Topology: an internal Docker network per server (``coderx-egress-<instance>``: no route
out, containers cannot reach each other, ``enable_icc=false``) whose gateway address is
the host's side of its bridge. The proxy (proxy.py with :mod:`.plugin`) listens there
and nowhere else, so it is a session's only reachable address; it knows a session by its
container's address on that network. Every request becomes a history entry of the
session (tailed from ``requests.jsonl``).

The network carries this server's instance labels, so the backend's reaping removes it
with the containers of a dead server.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import shlex
import shutil
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import docker.errors
import structlog

from coderx_mcp.config import Settings
from coderx_mcp.egress.rules import DIR_ENV, LOG_FILE, Client, Request, write_clients
from coderx_mcp.errors import ConfigError, SandboxUnavailable
from coderx_mcp.history import Entry, HistoryWriter
from coderx_mcp.sandbox.base import EgressAttach, Sandbox
from coderx_mcp.sandbox.instance import Instance

_log = structlog.get_logger("coderx.egress")
START_TIMEOUT_S = 30.0
TAIL_EVERY_S = 0.5


def proxy_env(url: str) -> dict[str, str]:
    """What makes ordinary tools use the proxy: curl, pip, npm, git, Python's urllib."""
    return {"HTTP_PROXY": url, "HTTPS_PROXY": url, "http_proxy": url, "https_proxy": url,
            "PIP_PROXY": url, "npm_config_proxy": url, "npm_config_https_proxy": url,
            "NO_PROXY": "", "no_proxy": ""}


def setup_script(url: str) -> str:
    """Shell lines that point a sandbox's tools at the proxy (exports persist in the
    session's shell state; pip and npm also read their user config)."""
    q = shlex.quote(url)
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in proxy_env(url).items())
    return (f"export {exports}\n"
            f"mkdir -p ~/.config/pip && printf '[global]\\nproxy = %s\\n' {q} "
            "> ~/.config/pip/pip.conf\n"
            f"printf 'proxy=%s\\nhttps-proxy=%s\\n' {q} {q} > ~/.npmrc\n")


class EgressGateway:
    """The proxy process, its network and the sessions registered with it.

    Args:
        settings: Server settings (``egress``, ``state_dir``).
        instance: This server (labels of the network).
        client: The Docker client (asked for when the proxy first starts).
        history: Where requests are recorded (None: logs only).
    """

    def __init__(self, settings: Settings, instance: Instance,
                 client: Callable[[], docker.DockerClient],
                 history: HistoryWriter | None) -> None:
        self._settings, self._instance, self._client_of = settings, instance, client
        self._history = history
        self.network = f"coderx-egress-{instance.id}"
        self.directory = settings.state_dir / "egress" / instance.id
        self._proc: asyncio.subprocess.Process | None = None
        self._tail: asyncio.Task[None] | None = None
        self._clients: dict[str, Client] = {}
        self._by_session: dict[str, str] = {}
        self._offset = 0
        self._reading = asyncio.Lock()
        self._starting = asyncio.Lock()
        self.url = ""

    @property
    def _client(self) -> docker.DockerClient:
        return self._client_of()

    async def start(self) -> None:
        """Create the network, start the proxy on its gateway and wait until it listens.

        Raises:
            SandboxUnavailable: Docker or the proxy failed.
        """
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_clients(self.directory, {})
        try:
            gateway = await asyncio.to_thread(self._make_network)
        except docker.errors.DockerException as exc:
            raise SandboxUnavailable(f"cannot create the egress network: {exc}") from None
        port_file = self.directory / "port"
        port_file.unlink(missing_ok=True)
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy", "--hostname", gateway, "--port", "0",
            "--port-file", str(port_file), "--plugins",
            "coderx_mcp.egress.plugin.AllowlistPlugin", "--num-workers", "1",
            "--num-acceptors", "1", "--log-level", "ERROR", "--timeout", "60",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            # HOME: proxy.py makes ~/.proxy (certificate and cache dirs) at start; keep it
            # in our directory, removed at close, not in the user's home.
            stderr=None, env={**os.environ, DIR_ENV: str(self.directory),
                              "HOME": str(self.directory)})
        port = await self._wait_port(gateway, port_file)
        self.url = f"http://{gateway}:{port}"
        # A fresh context: the first allowlist session_open's log bindings stay its own.
        self._tail = asyncio.create_task(self._follow(), name="coderx-egress-log",
                                         context=contextvars.Context())
        _log.info("egress proxy started", url=self.url, network=self.network)

    def _make_network(self) -> str:
        try:
            net = self._client.networks.get(self.network)
        except docker.errors.NotFound:
            net = self._client.networks.create(
                self.network, driver="bridge", internal=True, labels=self._instance.labels(),
                options={"com.docker.network.bridge.enable_icc": "false"})
            net.reload()
        config = (net.attrs.get("IPAM") or {}).get("Config") or []
        gateway = next((c["Gateway"] for c in config if c.get("Gateway")), None)
        if gateway is None:
            raise docker.errors.DockerException(f"network {self.network} has no gateway")
        return str(gateway)

    async def _wait_port(self, gateway: str, port_file: Path) -> int:
        end = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < end:
            assert self._proc is not None
            if self._proc.returncode is not None:
                raise SandboxUnavailable("the egress proxy exited at start (see the log)")
            port = await asyncio.to_thread(_listening, gateway, port_file)
            if port is not None:
                return port
            await asyncio.sleep(0.1)
        raise SandboxUnavailable("the egress proxy did not start listening in time")

    async def attach(self, allow: list[str]) -> EgressAttach:
        """How a sandbox joins: the network and the proxy settings of its environment
        (the proxy starts with the first allowlist session).

        Raises:
            ConfigError: The allowlist is empty.
            SandboxUnavailable: The proxy or its network could not start.
        """
        if not allow:
            raise ConfigError("network='allowlist' needs allowed hosts: the operator sets "
                              "CODERX_EGRESS__ALLOW (or the principal's egress list)")
        async with self._starting:
            if self._proc is None or self._proc.returncode is not None:
                await self.start()
        return EgressAttach(network=self.network, env=proxy_env(self.url), allow=tuple(allow))

    async def register(self, session_id: str, owner: str, sandbox: Sandbox,
                       allow: list[str]) -> None:
        """Tell the proxy that ``sandbox``'s address is ``session_id`` of ``owner`` with
        ``allow``, and
        set the proxy in its shell state (exported, so every later command has it) and in
        pip's and npm's user config (the runner starts commands from a clean environment).

        Raises:
            SandboxUnavailable: The container has no address on the egress network.
        """
        def address() -> str:
            c = self._client.containers.get(sandbox.ident)
            nets: dict[str, Any] = c.attrs["NetworkSettings"]["Networks"]
            return str(nets[self.network]["IPAddress"])

        try:
            ip = await asyncio.to_thread(address)
        except (docker.errors.DockerException, KeyError) as exc:
            raise SandboxUnavailable(f"the sandbox is not on the egress network ({exc})") \
                from None
        self._clients[ip] = Client(session=session_id, owner=owner, allow=allow)
        self._by_session[session_id] = ip
        write_clients(self.directory, self._clients)
        await sandbox.call("exec", command=setup_script(self.url), timeout=30, cap=4096)

    def unregister(self, session_id: str) -> None:
        """Forget a closed session (its address may be reused by the next container)."""
        ip = self._by_session.pop(session_id, None)
        if ip is not None:
            self._clients.pop(ip, None)
            write_clients(self.directory, self._clients)

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(TAIL_EVERY_S)
            await self.flush()

    async def flush(self) -> None:
        """Record what the proxy logged since the last look."""
        async with self._reading:
            self._offset = await asyncio.to_thread(self._read_new, self._offset)

    def _read_new(self, offset: int) -> int:
        try:
            with (self.directory / LOG_FILE).open("rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            return offset
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next round
        for line in data[:end].splitlines():
            with contextlib.suppress(ValueError):
                self._record(Request.model_validate_json(line))
        return offset + end

    def _record(self, r: Request) -> None:
        verdict = "allowed" if r.allowed else "denied"
        where = f"{r.host}:{r.port}" if r.port else r.host
        _log.info("egress request", session_id=r.session, host=r.host, allowed=r.allowed,
                  bytes=r.bytes, method=r.method)
        if self._history is None:
            return
        self._history.record(Entry(
            ts=r.ts, principal=r.owner or "-", session=r.session, tool="egress", kind="audit",
            outcome="ok" if r.allowed else "error", args={"host": r.host, "port": r.port,
                                                          "method": r.method},
            summary=f"{verdict} {r.method} {where}, {r.bytes} bytes"))

    async def close(self) -> None:
        """Stop the proxy and remove the network (after the sessions' containers)."""
        if self._tail is not None:
            self._tail.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tail
            await self.flush()
        if self._proc is None:
            return
        if self._proc.returncode is None:
            self._proc.terminate()
            try:
                await asyncio.wait_for(self._proc.wait(), 10)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        with contextlib.suppress(docker.errors.DockerException):
            await asyncio.to_thread(self._client.api.remove_network, self.network)
        shutil.rmtree(self.directory, ignore_errors=True)


def _listening(host: str, port_file: Path) -> int | None:
    """The port the proxy wrote, once it accepts connections there."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        port = int(port_file.read_text().split()[0])
        with socket.create_connection((host, port), timeout=1):
            return port
    return None
