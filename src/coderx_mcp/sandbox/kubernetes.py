"""The Kubernetes backend (``CODERX_BACKEND=kubernetes``): a hardened Pod per session.

Needs the optional ``kubernetes`` client (``pip install 'coderx-mcp[kubernetes]'``). The
cluster comes from ``KUBECONFIG`` / ``~/.kube/config`` (context
``CODERX_KUBERNETES__CONTEXT``) or, inside a Pod, its service account. The RBAC the
server needs is in docs/kubernetes.md: pods, pods/exec, persistentvolumeclaims and
networkpolicies in one namespace.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

from coderx_mcp.config import Settings
from coderx_mcp.errors import SandboxUnavailable
from coderx_mcp.sandbox.base import Sandbox, SandboxSpec
from coderx_mcp.sandbox.channel import reply_line_cap
from coderx_mcp.sandbox.instance import LABEL_INSTANCE, LABEL_MANAGED, Instance, owner_is_gone

try:
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException
except ImportError:  # pragma: no cover - the extra is not installed
    k8s = None  # type: ignore[assignment]

_log = structlog.get_logger("coderx.backend")
_MISSING = ("the kubernetes backend needs the kubernetes client: "
            "pip install 'coderx-mcp[kubernetes]'")


def load_api_client(settings: Settings) -> k8s.ApiClient:
    """An API client from kubeconfig (its context from the settings), else in-cluster.

    Raises:
        SandboxUnavailable: No client library or no usable configuration.
    """
    if k8s is None:
        raise SandboxUnavailable(_MISSING)
    cfg = k8s.Configuration()
    try:
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            context=settings.kubernetes.context,
                                    client_configuration=cfg)
    except (ConfigException, OSError, TypeError) as kube_exc:
        try:
            k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=cfg)
        except ConfigException:
            raise SandboxUnavailable(
                f"sandbox unavailable: no Kubernetes configuration ({kube_exc}); set KUBECONFIG "
                "or run the server in the cluster") from None
    return k8s.ApiClient(cfg)


class KubernetesBackend:
    """Sandboxes as Pods in one namespace.

    Args:
        settings: Server settings (``settings.kubernetes`` holds the namespace and so on).
        instance: This server process (labels and annotations of what it creates).
        api: An API client; default: :func:`load_api_client` on first use.
    """

    name = "kubernetes"
    isolated = True

    def __init__(self, settings: Settings, instance: Instance,
                 api: k8s.ApiClient | None = None) -> None:
        if k8s is None:
            raise SandboxUnavailable(_MISSING)
        self._settings = settings
        self._instance = instance
        self._api = api

    @property
    def api(self) -> k8s.ApiClient:
        """The API client, configured on first use."""
        if self._api is None:
            self._api = load_api_client(self._settings)
        return self._api

    async def check(self) -> None:
        ns = self._settings.kubernetes.namespace

        def probe() -> None:
            try:
                k8s.CoreV1Api(self.api).list_namespaced_pod(ns, limit=1)
            except ApiException as exc:
                raise SandboxUnavailable(
                    f"sandbox unavailable: the Kubernetes API refused to list pods in namespace "
                    f"{ns} ({exc.status} {exc.reason}); see docs/kubernetes.md for the Role"
                ) from None
            except OSError as exc:
                raise SandboxUnavailable(
                    f"sandbox unavailable: the Kubernetes API does not answer ({exc})") from None

        await asyncio.wait_for(asyncio.to_thread(probe), self._settings.kubernetes.api_timeout_s)

    def make(self, spec: SandboxSpec, session_id: str) -> Sandbox:
        from coderx_mcp.sandbox.kube_sandbox import KubernetesSandbox

        return KubernetesSandbox(self.api, spec, self._settings.image, self._instance,
                                 session_id, self._settings.kubernetes,
                                 self._settings.start_timeout_s,
                                 reply_line_cap(self._settings.max_file_bytes))

    def _remove(self, selector: str, only_orphans: bool = False) -> int:
        """Delete the Pods, policies and claims matching ``selector``; returns the Pods.

        ``only_orphans``: only those whose owning server is gone.
        """
        from coderx_mcp.sandbox.kube_sandbox import ignore_missing

        ns = self._settings.kubernetes.namespace
        core, net = k8s.CoreV1Api(self.api), k8s.NetworkingV1Api(self.api)
        kinds: list[tuple[Callable[..., Any], Callable[..., Any]]] = [
            (core.list_namespaced_pod, core.delete_namespaced_pod),
            (net.list_namespaced_network_policy, net.delete_namespaced_network_policy),
            (core.list_namespaced_persistent_volume_claim,
             core.delete_namespaced_persistent_volume_claim)]
        pods = 0
        for i, (list_, delete) in enumerate(kinds):
            for obj in list_(ns, label_selector=selector).items:
                meta = obj.metadata
                marks = {**(meta.annotations or {}), **(meta.labels or {})}
                if only_orphans and not owner_is_gone(marks, self._instance):
                    continue
                ignore_missing(delete, meta.name, ns)
                pods += i == 0
        return pods

    async def reap_orphans(self) -> int:
        n = await asyncio.to_thread(self._remove, LABEL_MANAGED, True)
        if n:
            _log.info("removed pods of servers that are gone", count=n)
        return n

    def remove_all_of_instance(self) -> int:
        if self._api is None:
            return 0
        return self._remove(f"{LABEL_INSTANCE}={self._instance.id}")
