"""Fixtures for the Kubernetes backend: the loopback stand-in API server and managers on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from kubernetes import client as k8s
from tests.kube.standin import V4, V5, StandIn

from coderx_mcp.config import KubernetesSettings
from coderx_mcp.sandbox.instance import Instance
from coderx_mcp.sandbox.kubernetes import KubernetesBackend
from coderx_mcp.sessions import SessionManager

MakeKube = Callable[..., Awaitable[SessionManager]]


def standin_client(standin: StandIn) -> k8s.ApiClient:
    """The real official client, configured for the stand-in (plain HTTP on loopback)."""
    cfg = k8s.Configuration()
    cfg.host = standin.url
    return k8s.ApiClient(cfg)


@pytest.fixture
def make_standin(tmp_path: Path, docker_client: docker.DockerClient) -> Iterator[
        Callable[..., StandIn]]:
    """Start stand-in API servers (``protocols``: exec subprotocols, v5 then v4 by default);
    each is stopped and its containers removed after the test."""
    started: list[StandIn] = []

    def make(protocols: tuple[str, ...] = (V5, V4)) -> StandIn:
        claims = tmp_path / f"claims{len(started)}"
        claims.mkdir()
        standin = StandIn(docker_client, claims, protocols).start()
        started.append(standin)
        return standin

    try:
        yield make
    finally:
        for standin in started:
            standin.stop()


@pytest.fixture
async def make_kube(make_settings: Callable[..., Any]) -> AsyncIterator[MakeKube]:
    """Session managers on the Kubernetes backend, talking to ``standin`` (``settings``:
    other settings, ``kube``: ``KubernetesSettings`` fields); shut down (and checked for
    leftover Pods) after the test."""
    started: list[tuple[SessionManager, StandIn]] = []

    async def make(standin: StandIn, instance: Instance | None = None,
                   settings: dict[str, Any] | None = None, **kube: Any) -> SessionManager:
        s = make_settings(backend="kubernetes",
                          kubernetes=KubernetesSettings(namespace="coderx", **kube),
                          **(settings or {}))
        inst = instance or Instance.current()
        backend = KubernetesBackend(s, inst, api=standin_client(standin))
        manager = SessionManager(s, backend, instance=inst)
        await manager.start()
        started.append((manager, standin))
        return manager

    try:
        yield make
    finally:
        for manager, standin in reversed(started):
            await manager.shutdown()
            assert not standin.objects["pods"], "pods outlived SessionManager.shutdown()"
