"""``FleetBackend``: sessions placed over several Docker engines (``CODERX_DOCKER_HOSTS``).

A new session goes to the reachable engine running the fewest sandboxes (of any server:
counted by label, so replicas sharing the engines balance too); the sandbox image is copied
to an engine that lacks it. Each sandbox is a ``DockerSandbox`` whose runner stream is
dialled by :mod:`docker_hosts` (TLS, ssh or unix). An engine that stops answering is
reported by health and skipped by placement; a session whose engine restarted gets one
clear error and a fresh container (on whichever engine answers) with its next call.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import docker
import structlog

from coderx_mcp.config import DockerHostConfig, Settings
from coderx_mcp.errors import SandboxGone, SandboxUnavailable
from coderx_mcp.sandbox.base import HostStatus, Sandbox, SandboxSpec
from coderx_mcp.sandbox.channel import reply_line_cap
from coderx_mcp.sandbox.docker import DockerSandbox, is_engine_error
from coderx_mcp.sandbox.docker_backend import DockerBackend
from coderx_mcp.sandbox.docker_hosts import (
    close_quietly,
    engine_problem,
    make_client,
    open_exec_stream,
)
from coderx_mcp.sandbox.docker_stream import DockerExecStream
from coderx_mcp.sandbox.host_image import ensure_image, log_progress
from coderx_mcp.sandbox.instance import LABEL_MANAGED, Instance

_log = structlog.get_logger("coderx.hosts")
PROBE_TIMEOUT_S = 5.0
LOAD_TIMEOUT_S = 1800
"""An image copy is one long HTTP request."""


class DockerHost:
    """One engine: its client (made on first use), placement load and image state."""

    def __init__(self, config: DockerHostConfig, timeout: float) -> None:
        self.config = config
        self._timeout = timeout
        self._client: docker.DockerClient | None = None
        self.placing = 0
        """Sandboxes this server is starting there now (not counted by the engine yet)."""
        self.image_ready = False
        self.image_lock = asyncio.Lock()

    @property
    def name(self) -> str:
        """The engine's name in messages."""
        return self.config.label

    @property
    def client(self) -> docker.DockerClient:
        """The SDK client (no request is made here)."""
        if self._client is None:
            self._client = make_client(self.config, self._timeout)
        return self._client

    def count(self) -> int:
        """Ping, then count the running sandboxes (blocking)."""
        self.client.ping()
        return len(self.client.containers.list(filters={"label": LABEL_MANAGED},
                                               ignore_removed=True))

    async def probe(self) -> HostStatus:
        """Whether the engine answers, and how loaded it is."""
        try:
            n = await asyncio.wait_for(asyncio.to_thread(self.count), PROBE_TIMEOUT_S)
        except (TimeoutError, Exception) as exc:
            if not isinstance(exc, TimeoutError) and not is_engine_error(exc):
                raise
            self.image_ready = False  # a restarted or replaced engine is checked again
            _log.debug("docker host does not answer", host=self.name, error=str(exc))
            return HostStatus(name=self.name, url=self.config.url, ok=False, sandboxes=None,
                              detail=engine_problem(self.config))
        return HostStatus(name=self.name, url=self.config.url, ok=True, sandboxes=n,
                          detail=f"{n} sandbox(es) running")

    def close(self) -> None:
        """Drop the client."""
        if self._client is not None:
            close_quietly(self._client)
            self._client = None


class HostSandbox(DockerSandbox):
    """A ``DockerSandbox`` on one engine of the fleet; its runner stream is dialled here."""

    def __init__(self, host: DockerHost, spec: SandboxSpec, image: str, instance: Instance,
                 session_id: str, start_timeout: float, max_line: int) -> None:
        super().__init__(host.client, spec, image, instance, session_id, start_timeout,
                         max_line)
        self.host = host

    @property
    def ident(self) -> str:
        return f"{super().ident}@{self.host.name}"

    async def _attach_runner(self, adopting: bool = False) -> DockerExecStream:
        eid = await asyncio.to_thread(self._exec_create, adopting)
        reader, writer = await open_exec_stream(self.host.config, self._client.api._version, eid)
        return DockerExecStream(reader, writer, self._max_line)

    async def _diagnose(self) -> str:
        status = await self.host.probe()
        if not status.ok:
            return f"{status.detail} (stopped or restarted?)"
        return await super()._diagnose()


class FleetSandbox:
    """A sandbox placed on an engine when it starts (and placed again when restarted)."""

    backend = "docker"

    def __init__(self, fleet: FleetBackend, spec: SandboxSpec, session_id: str) -> None:
        self._fleet = fleet
        self.spec = spec
        self.session_id = session_id
        self._inner: HostSandbox | None = None

    @property
    def alive(self) -> bool:
        return self._inner is not None and self._inner.alive

    @property
    def ident(self) -> str:
        return self._inner.ident if self._inner is not None else ""

    @property
    def lost_reason(self) -> str | None:
        """Why the sandbox stopped, when known."""
        return self._inner.lost_reason if self._inner is not None else None

    @lost_reason.setter
    def lost_reason(self, reason: str | None) -> None:
        if self._inner is not None:
            self._inner.lost_reason = reason

    async def start(self) -> None:
        self._inner = await self._fleet.place(self.spec, self.session_id)

    async def diagnose(self) -> str:
        """Why the sandbox is lost, asked now."""
        return await self._inner.diagnose() if self._inner is not None else "it was closed"

    async def attach(self, host: str, container_id: str, network: str | None) -> None:
        """Start a runner in this session's running container on engine ``host``."""
        engine = next((h for h in self._fleet.hosts if h.name == host), None)
        if engine is None:
            raise SandboxUnavailable(f"docker host {host!r} is not in CODERX_DOCKER_HOSTS")
        inner = self._fleet.sandbox_on(engine, self.spec, self.session_id)
        await inner.attach(container_id, network)
        self._inner = inner

    async def detach(self) -> None:
        """Stop this server's runner stream; the container stays."""
        inner, self._inner = self._inner, None
        if inner is not None:
            await inner.detach()

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        if self._inner is None:
            raise SandboxGone("the sandbox was not started or is closed")
        return await self._inner.call(op, **args)

    async def close(self) -> None:
        inner, self._inner = self._inner, None
        if inner is not None:
            await inner.close()


class FleetBackend:
    """Sandboxes as hardened containers on the least-loaded of several Docker engines."""

    name = "docker"
    isolated = True

    def __init__(self, settings: Settings, instance: Instance) -> None:
        self._settings = settings
        self._instance = instance
        self.hosts = [DockerHost(c, settings.docker_timeout_s) for c in settings.docker_hosts]

    async def status(self) -> list[HostStatus]:
        """Every engine, in configured order."""
        return list(await asyncio.gather(*(h.probe() for h in self.hosts)))

    async def check(self) -> None:
        """Raise when no engine can take a session; copy the image where it is missing."""
        found = await self.status()
        usable = []
        for host, st in zip(self.hosts, found, strict=True):
            if st.ok:
                with contextlib.suppress(SandboxUnavailable):
                    await self._ensure_image(host)
                    usable.append(host)
        if not usable:
            raise SandboxUnavailable("sandbox unavailable: " + "; ".join(
                st.detail if not st.ok else f"docker host {st.name} lacks the sandbox image"
                for st in found))

    async def _ensure_image(self, host: DockerHost) -> None:
        async with host.image_lock:
            if host.image_ready:
                return
            image = self._settings.image

            def copy() -> None:
                target = make_client(host.config, LOAD_TIMEOUT_S)
                source = _local_engine()
                try:
                    ensure_image(host.name, target, image, source, log_progress(host.name, image))
                finally:
                    close_quietly(target)
                    if source is not None:
                        close_quietly(source)

            try:
                await asyncio.to_thread(copy)
            except SandboxUnavailable as exc:
                _log.error("docker host cannot run sandboxes", host=host.name, reason=str(exc))
                raise
            host.image_ready = True

    def make(self, spec: SandboxSpec, session_id: str) -> Sandbox:
        return FleetSandbox(self, spec, session_id)

    async def place(self, spec: SandboxSpec, session_id: str) -> HostSandbox:
        """Start a sandbox on the least-loaded engine that answers (the next one when a start
        fails there).

        Raises:
            SandboxUnavailable: No engine answers, or the start failed on every one.
        """
        found = await self.status()
        ranked = sorted((st.sandboxes + h.placing, i) for i, (h, st)
                        in enumerate(zip(self.hosts, found, strict=True))
                        if st.ok and st.sandboxes is not None)
        problems = [st.detail for st in found if not st.ok]
        for _load, i in ranked:
            host = self.hosts[i]
            host.placing += 1
            try:
                await self._ensure_image(host)
                sandbox = self.sandbox_on(host, spec, session_id)
                await sandbox.start()
            except SandboxUnavailable as exc:
                problems.append(str(exc))
                continue
            finally:
                host.placing -= 1
            _log.info("sandbox placed", session_id=session_id, host=host.name)
            return sandbox
        raise SandboxUnavailable("no docker host can start the sandbox: " + "; ".join(problems))

    def sandbox_on(self, host: DockerHost, spec: SandboxSpec, session_id: str) -> HostSandbox:
        """A sandbox object on ``host`` (not started)."""
        return HostSandbox(host, spec, self._settings.image, self._instance, session_id,
                           self._settings.start_timeout_s,
                           reply_line_cap(self._settings.max_file_bytes))

    def _per_host(self, host: DockerHost) -> DockerBackend:
        return DockerBackend(self._settings, self._instance, client=host.client)

    async def reap_orphans(self) -> int:
        removed = 0
        for host, st in zip(self.hosts, await self.status(), strict=True):
            if st.ok:
                removed += await self._per_host(host).reap_orphans()
        return removed

    def remove_all_of_instance(self) -> int:
        removed = 0
        for host in self.hosts:
            try:
                removed += self._per_host(host).remove_all_of_instance()
            except Exception as exc:
                if not is_engine_error(exc):
                    raise
                _log.warning("could not clean a docker host", host=host.name)
        return removed


def _local_engine() -> docker.DockerClient | None:
    """The engine of ``DOCKER_HOST`` (where ``coderx-mcp image build`` puts the image)."""
    try:
        client = docker.from_env(timeout=LOAD_TIMEOUT_S)
        client.ping()
    except Exception:
        return None
    return client
