"""Sandboxes found on the engine(s) by label, and a runner attached to one of them.

With shared sessions (server replicas) the engine is the source of truth: a server that
does not hold a session finds its container here and starts a runner of its own in it.
"""

from __future__ import annotations

import asyncio

import docker
import structlog
from pydantic import BaseModel

from coderx_mcp.errors import SandboxUnavailable
from coderx_mcp.sandbox.backends import Backend
from coderx_mcp.sandbox.base import Sandbox, SandboxSpec
from coderx_mcp.sandbox.docker import (
    DockerSandbox,
    network_name,
    remove_container,
    remove_network,
)
from coderx_mcp.sandbox.docker_backend import DockerBackend
from coderx_mcp.sandbox.fleet import FleetBackend, FleetSandbox
from coderx_mcp.sandbox.instance import LABEL_MANAGED, LABEL_SESSION

_log = structlog.get_logger("coderx.replicas")


class FoundSandbox(BaseModel):
    """A sandbox container as the engine describes it."""

    session_id: str
    container_id: str
    labels: dict[str, str]
    host: str | None
    """The fleet engine it runs on (None: the only engine)."""
    created: str


def _engines(backend: Backend) -> list[tuple[str | None, docker.DockerClient]]:
    if isinstance(backend, FleetBackend):
        return [(h.name, h.client) for h in backend.hosts]
    if isinstance(backend, DockerBackend):
        return [(None, backend.client)]
    raise SandboxUnavailable(f"shared sessions need the docker backend, not {backend.name!r}")


async def find(backend: Backend, labels: dict[str, str]) -> list[FoundSandbox]:
    """Running sandboxes carrying every one of ``labels`` (an engine that does not answer
    is skipped), oldest first."""
    filters = [LABEL_MANAGED, *(f"{k}={v}" for k, v in labels.items())]

    def look() -> list[FoundSandbox]:
        out = []
        for host, client in _engines(backend):
            try:
                found = client.containers.list(filters={"label": filters}, ignore_removed=True)
            except Exception as exc:  # an engine away: its sessions wait for it
                _log.warning("cannot list sandboxes on an engine", host=host, error=str(exc))
                continue
            out += [FoundSandbox(session_id=c.labels.get(LABEL_SESSION, ""),
                                 container_id=str(c.id), labels=c.labels, host=host,
                                 created=str(c.attrs.get("Created", ""))) for c in found]
        return sorted(out, key=lambda f: f.created)

    return await asyncio.to_thread(look)


async def attach(backend: Backend, found: FoundSandbox, spec: SandboxSpec) -> Sandbox:
    """A sandbox object for ``found`` with a runner of this server's in it.

    Raises:
        SandboxUnavailable: The container cannot be reached.
    """
    sandbox = backend.make(spec, found.session_id)
    network = network_name(found.session_id) if spec.network == "bridge" else None
    if isinstance(sandbox, FleetSandbox) and found.host is not None:
        await sandbox.attach(found.host, found.container_id, network)
    elif isinstance(sandbox, DockerSandbox):
        await sandbox.attach(found.container_id, network)
    else:
        raise SandboxUnavailable(f"cannot attach to a sandbox of backend {backend.name!r}")
    return sandbox


async def remove(backend: Backend, found: FoundSandbox) -> None:
    """Remove ``found``'s container and its session network."""
    clients = dict(_engines(backend))

    def rm() -> None:
        client = clients.get(found.host)
        if client is not None:
            remove_container(client, found.container_id)
            remove_network(client, network_name(found.session_id))

    await asyncio.to_thread(rm)
