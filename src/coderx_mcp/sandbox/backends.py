"""Backends: make sandboxes of one kind and clean up after them, chosen by name.

A backend owns the life cycle (create, find, remove sandboxes); each sandbox hands its
runner's byte stream to a ``RunnerClient`` (``protocol.py``), which does not know which
backend it talks through. The registry maps ``CODERX_BACKEND`` names to factories that
import their module only when chosen, so an optional client library (``kubernetes``)
is needed only by the servers that use it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Protocol

from coderx_mcp.config import Settings
from coderx_mcp.errors import ConfigError
from coderx_mcp.sandbox.base import Sandbox, SandboxSpec
from coderx_mcp.sandbox.instance import Instance


class Backend(Protocol):
    """Makes sandboxes and removes what this (or a dead) server left behind."""

    name: str
    isolated: bool

    async def check(self) -> None:
        """Raise ``SandboxUnavailable`` with a clear reason if no sandbox can start."""

    def make(self, spec: SandboxSpec, session_id: str) -> Sandbox:
        """A sandbox object, not started yet."""

    async def reap_orphans(self) -> int:
        """Remove sandboxes whose owning server is gone; returns how many."""

    def remove_all_of_instance(self) -> int:
        """Synchronously remove every sandbox of this server (last-resort cleanup)."""


BackendFactory = Callable[[Settings, Instance], Backend]


def _docker(settings: Settings, instance: Instance) -> Backend:
    if settings.docker_hosts:  # several engines: placement over them (fleet.py)
        from coderx_mcp.sandbox.fleet import FleetBackend

        return FleetBackend(settings, instance)
    from coderx_mcp.sandbox.docker_backend import DockerBackend

    return DockerBackend(settings, instance)


def _local(settings: Settings, instance: Instance) -> Backend:
    from coderx_mcp.sandbox.local import LocalBackend

    return LocalBackend(settings)


def _kubernetes(settings: Settings, instance: Instance) -> Backend:
    from coderx_mcp.sandbox.kubernetes import KubernetesBackend

    return KubernetesBackend(settings, instance)


BACKENDS: Mapping[str, BackendFactory] = MappingProxyType(
    {"docker": _docker, "local": _local, "kubernetes": _kubernetes})
"""Every backend by its ``CODERX_BACKEND`` name."""


def make_backend(settings: Settings, instance: Instance,
                 registry: Mapping[str, BackendFactory] = BACKENDS) -> Backend:
    """The backend named by ``settings.backend``."""
    factory = registry.get(settings.backend)
    if factory is None:
        raise ConfigError(f"unknown sandbox backend {settings.backend!r}: use one of "
                          + ", ".join(sorted(registry)))
    return factory(settings, instance)
