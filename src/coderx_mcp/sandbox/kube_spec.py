"""The Kubernetes objects of one sandbox: its Pod, NetworkPolicy and workspace claim.

Pure functions from a ``SandboxSpec`` to manifests (plain dicts, as the API takes them), so
the hardening is one readable place, the Kubernetes twin of ``docker.container_kwargs``,
and can be checked offline against the API's schema.

What Docker has and a Pod cannot say: a pids limit (the kubelet's ``podPidsLimit``), the
open-file limit (the node's runtime default) and ``noexec`` on ``/tmp``; see
docs/kubernetes.md.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from coderx_mcp.config import KubernetesSettings, parse_size
from coderx_mcp.errors import SandboxUnavailable
from coderx_mcp.sandbox.base import SandboxSpec
from coderx_mcp.sandbox.docker import HOME, STATE, WORKDIR
from coderx_mcp.sandbox.instance import LABEL_SESSION

CONTAINER = "sandbox"
WORKSPACE_VOLUME = "workspace"


def pod_name(session_id: str) -> str:
    """The Pod (and claim, and policy) name of a session: a valid DNS-1123 name."""
    return f"coderx-{session_id}".lower()


def claim_name(session_id: str) -> str:
    """The per-session workspace claim of a session without a shared workspace claim."""
    return f"{pod_name(session_id)}-ws"


def _subpath(path: PurePosixPath, root: PurePosixPath) -> str | None:
    """``path`` relative to ``root`` ("" for the root itself), or None outside it."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        return None
    return "" if str(rel) == "." else str(rel)


def workspace_mounts(spec: SandboxSpec, kube: KubernetesSettings) -> list[dict[str, Any]]:
    """The volume mounts of the workspace and of ``spec.mounts`` (git protection).

    With a shared claim (``workspace_claim``, which the server sees at ``workspace_root``)
    the workspace is a sub-path of it, like a Docker bind mount; every extra mount must
    then lie on that claim too. Without one, the workspace is the session's own (empty)
    claim: the host directory and its git protection mounts play no part (host git never
    sees what the Pod writes there).

    Raises:
        SandboxUnavailable: The workspace or a mount is outside the shared claim.
    """
    if kube.workspace_claim is None:
        return [{"name": WORKSPACE_VOLUME, "mountPath": WORKDIR}]
    root = PurePosixPath(str(kube.workspace_root))
    sub = _subpath(PurePosixPath(str(spec.workspace)), root)
    if sub is None:
        raise SandboxUnavailable(
            f"the workspace {spec.workspace} is not under {root}, where the kubernetes backend's "
            f"shared claim {kube.workspace_claim} is mounted")
    mounts: list[dict[str, Any]] = [{"name": WORKSPACE_VOLUME, "mountPath": WORKDIR,
                                     "subPath": sub}]
    for m in spec.mounts:
        msub = _subpath(PurePosixPath(str(m.source)), root)
        inside = _subpath(PurePosixPath(m.target), PurePosixPath(WORKDIR)) is not None
        if msub is None and inside:  # git protection of the workspace: never dropped
            raise SandboxUnavailable(
                f"the kubernetes backend cannot mount {m.source}: it is not on the shared "
                f"workspace claim {kube.workspace_claim} (mounted at {root})")
        if msub is None:  # a convenience outside the workspace (git identity, a worktree's
            continue      # main repository): there only when it lives on the claim
        mounts.append({"name": WORKSPACE_VOLUME, "mountPath": m.target, "subPath": msub,
                       "readOnly": m.read_only})
    return mounts


def pod_manifest(spec: SandboxSpec, image: str, session_id: str, labels: dict[str, str],
                 kube: KubernetesSettings) -> dict[str, Any]:
    """The Pod of one sandbox, hardened as the Docker container is.

    Non-root (the workspace uid), read-only root, no capabilities, no privilege gain,
    seccomp ``RuntimeDefault``, no service-account token, memory/CPU/ephemeral-storage
    limits equal to the requests (guaranteed QoS), memory-backed size-capped ``emptyDir``
    volumes for ``/tmp``, home and the runner state, no restarts. The pause container
    is PID 1 of a shared process namespace, so it reaps zombies (Docker's ``--init``).
    """
    lim = spec.limits
    resources = {"memory": str(parse_size(lim.memory)), "cpu": f"{int(lim.cpus * 1000)}m",
                 "ephemeral-storage": str(parse_size(kube.ephemeral_storage))}
    workspace_volume: dict[str, Any] = {
        "name": WORKSPACE_VOLUME,
        "persistentVolumeClaim": {"claimName": kube.workspace_claim or claim_name(session_id)}}

    def tmpfs(name: str, size: str) -> dict[str, Any]:
        return {"name": name, "emptyDir": {"medium": "Memory", "sizeLimit": str(parse_size(size))}}

    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "hostname": "sandbox",
        "restartPolicy": "Never",
        "shareProcessNamespace": True,
        "terminationGracePeriodSeconds": 2,
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": spec.uid, "runAsGroup": spec.gid,
            "fsGroup": spec.gid, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": CONTAINER,
            "image": image,
            "imagePullPolicy": kube.image_pull_policy,
            "command": ["sleep", "infinity"],
            "workingDir": WORKDIR,
            "env": [{"name": "HOME", "value": HOME}, {"name": "USER", "value": "coder"}],
            "securityContext": {
                "runAsNonRoot": True, "runAsUser": spec.uid, "runAsGroup": spec.gid,
                "allowPrivilegeEscalation": False, "privileged": False,
                "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"}},
            "resources": {"limits": resources, "requests": dict(resources)},
            "volumeMounts": [
                *workspace_mounts(spec, kube),
                {"name": "tmp", "mountPath": "/tmp"},
                {"name": "home", "mountPath": HOME},
                {"name": "state", "mountPath": STATE},
            ],
        }],
        "volumes": [workspace_volume, tmpfs("tmp", lim.tmp_size), tmpfs("home", lim.home_size),
                    tmpfs("state", lim.spool_size)],
    }
    if kube.runtime_class:
        pod_spec["runtimeClassName"] = kube.runtime_class
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name(session_id), "labels": labels},
            "spec": pod_spec}


def network_policy_manifest(spec: SandboxSpec, session_id: str,
                            labels: dict[str, str]) -> dict[str, Any]:
    """The session's NetworkPolicy: nothing in or out, or (network asked) nothing in.

    Sessions never reach each other's Pods either way: ingress is always denied.
    """
    egress: list[dict[str, Any]] = [{}] if spec.network == "bridge" else []
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": pod_name(session_id), "labels": labels},
            "spec": {"podSelector": {"matchLabels": {LABEL_SESSION: session_id}},
                     "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": egress}}


def claim_manifest(session_id: str, labels: dict[str, str],
                   kube: KubernetesSettings) -> dict[str, Any]:
    """The session's own workspace claim (used without a shared workspace claim)."""
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": kube.workspace_size}}}
    if kube.storage_class:
        spec["storageClassName"] = kube.storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim_name(session_id), "labels": labels}, "spec": spec}
