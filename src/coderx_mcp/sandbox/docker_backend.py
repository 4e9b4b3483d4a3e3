"""The Docker backend: hardened containers on the local engine (``CODERX_BACKEND=docker``).

The server makes this backend before it answers ``initialize``, so this module imports
neither the Docker SDK nor ``sandbox/docker.py`` (~90 ms of imports with requests and
urllib3): they load with the backend's first use, in its start after ``initialize``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

from coderx_mcp.config import Settings
from coderx_mcp.errors import SandboxUnavailable
from coderx_mcp.sandbox.base import Sandbox, SandboxSpec
from coderx_mcp.sandbox.channel import reply_line_cap
from coderx_mcp.sandbox.instance import LABEL_INSTANCE, LABEL_MANAGED, Instance, owner_is_gone
from coderx_mcp.sandbox.link import LinkPolicy

if TYPE_CHECKING:
    import docker

_log = structlog.get_logger("coderx.backend")


class DockerBackend:
    """Sandboxes as hardened Docker containers."""

    name = "docker"
    isolated = True

    def __init__(self, settings: Settings, instance: Instance,
                 client: docker.DockerClient | None = None) -> None:
        self._settings = settings
        self._instance = instance
        self._client = client
        self.links = LinkPolicy(settings.runner_link)

    @property
    def client(self) -> docker.DockerClient:
        """The Docker client, connected on first use."""
        if self._client is None:
            import docker

            try:
                self._client = docker.from_env(timeout=int(self._settings.docker_timeout_s))
            except docker.errors.DockerException as exc:
                raise SandboxUnavailable(
                    f"sandbox unavailable: cannot reach the Docker engine ({exc}); start Docker "
                    "(on Debian: `bash containers/ensure-docker.sh`) or use CODERX_BACKEND=local"
                ) from None
        return self._client

    async def check(self) -> None:
        def probe() -> None:
            # Imported here, in the worker thread, not on the event loop: this is the first
            # import of docker (see above), and the loop keeps serving while it loads.
            from coderx_mcp.image import image_status, missing_image_message
            from coderx_mcp.sandbox.docker import is_engine_error

            try:
                self.client.ping()
            except Exception as exc:  # requests' connection errors arrive unwrapped
                if not is_engine_error(exc):
                    raise
                raise SandboxUnavailable(
                    f"sandbox unavailable: the Docker engine does not answer ({exc})") from None
            status = image_status(self.client, self._settings.image)
            if not status.exists:
                raise SandboxUnavailable(missing_image_message(self._settings.image))
            if not status.up_to_date:
                _log.warning("sandbox image is older than this server's runner; rebuild it",
                             image=self._settings.image, command="coderx-mcp image build")

        await asyncio.wait_for(asyncio.to_thread(probe), self._settings.docker_timeout_s)

    def make(self, spec: SandboxSpec, session_id: str) -> Sandbox:
        from coderx_mcp.sandbox.docker import DockerSandbox

        return DockerSandbox(self.client, spec, self._settings.image, self._instance, session_id,
                             self._settings.start_timeout_s,
                             reply_line_cap(self._settings.max_file_bytes), self.links)

    async def reap_orphans(self) -> int:
        def reap() -> int:
            from coderx_mcp.sandbox.docker import remove_container, remove_network

            removed = 0
            # ignore_removed: another server may remove a container while we list.
            for c in self.client.containers.list(all=True, filters={"label": LABEL_MANAGED},
                                                 ignore_removed=True):
                if owner_is_gone(c.labels, self._instance):
                    remove_container(self.client, c.id)
                    removed += 1
            # Session networks go after their containers (a network in use cannot go).
            for n in self.client.networks.list(filters={"label": LABEL_MANAGED}):
                if owner_is_gone(n.attrs.get("Labels") or {}, self._instance):
                    remove_network(self.client, n.name)
            return removed

        n = await asyncio.to_thread(reap)
        if n:
            _log.info("removed containers of servers that are gone", count=n)
        return n

    def remove_all_of_instance(self) -> int:
        if self._client is None:
            return 0
        from coderx_mcp.sandbox.docker import remove_container, remove_network

        found = self._client.containers.list(
            all=True, filters={"label": f"{LABEL_INSTANCE}={self._instance.id}"},
            ignore_removed=True)
        for c in found:
            remove_container(self._client, c.id)
        for n in self._client.networks.list(
                filters={"label": f"{LABEL_INSTANCE}={self._instance.id}"}):
            remove_network(self._client, n.name)
        return len(found)

