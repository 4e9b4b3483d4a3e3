"""The Kubernetes manifests of a sandbox, checked offline against the API's JSON schema
(``kubernetes-validate`` bundles the schemas of each release) and for their hardening."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from pydantic import ValidationError

from coderx_mcp.config import KubernetesSettings, SandboxLimits, Settings
from coderx_mcp.errors import ConfigError, SandboxUnavailable
from coderx_mcp.sandbox.backends import BACKENDS, make_backend
from coderx_mcp.sandbox.base import BindMount, SandboxSpec
from coderx_mcp.sandbox.instance import Instance
from coderx_mcp.sandbox.kube_spec import (
    claim_manifest,
    network_policy_manifest,
    pod_manifest,
)

SID = "s-" + "ab" * 16
LABELS = {"coderx.managed": "1", "coderx.instance": "0123abcd", "coderx.session": SID}
SHARED = KubernetesSettings(workspace_claim="work", workspace_root=Path("/srv/work"))
# The oldest and newest releases the schemas cover that are still supported upstream.
VERSIONS = ["1.30.0", "1.37.0"]


def _spec(**kw: Any) -> SandboxSpec:
    return SandboxSpec(workspace=Path("/srv/work/team/app"), uid=1234, gid=1234, **kw)


def _valid(manifest: dict[str, Any]) -> None:
    for version in VERSIONS:
        kubernetes_validate.validate(manifest, version, strict=True)


def test_manifests_validate_against_the_openapi_schema() -> None:
    spec = _spec(network="bridge", mounts=(
        BindMount(source=Path("/srv/work/team/app/.git"), target="/workspace/.git",
                  read_only=True),))
    for kube in (KubernetesSettings(), SHARED.model_copy(update={"runtime_class": "gvisor"})):
        _valid(pod_manifest(spec, "reg.example/coderx-sandbox:1", SID, LABELS, kube))
        _valid(claim_manifest(SID, LABELS, kube.model_copy(update={"storage_class": "fast"})))
    _valid(network_policy_manifest(spec, SID, LABELS))
    _valid(network_policy_manifest(_spec(), SID, LABELS))


def test_schema_check_catches_a_misspelt_field() -> None:
    pod = pod_manifest(_spec(), "img", SID, LABELS, KubernetesSettings())
    pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, VERSIONS[-1], strict=True)


def test_pod_is_hardened_like_the_container() -> None:
    limits = SandboxLimits(memory="512m", cpus=1.5, tmp_size="100m", home_size="10m",
                           spool_size="200m")
    pod = pod_manifest(_spec(limits=limits), "img", SID, LABELS,
                       KubernetesSettings(runtime_class="gvisor", ephemeral_storage="2g"))
    spec = pod["spec"]
    c = spec["containers"][0]
    assert pod["metadata"]["labels"] == LABELS
    assert spec["automountServiceAccountToken"] is False
    assert spec["runtimeClassName"] == "gvisor"
    assert spec["restartPolicy"] == "Never"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 1234
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    want = {"memory": str(512 << 20), "cpu": "1500m", "ephemeral-storage": str(2 << 30)}
    assert c["resources"] == {"limits": want, "requests": want}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["tmp"]["emptyDir"] == {"medium": "Memory", "sizeLimit": str(100 << 20)}
    assert volumes["home"]["emptyDir"] == {"medium": "Memory", "sizeLimit": str(10 << 20)}
    assert volumes["state"]["emptyDir"] == {"medium": "Memory", "sizeLimit": str(200 << 20)}
    assert volumes["workspace"]["persistentVolumeClaim"] == {"claimName": f"coderx-{SID}-ws"}
    assert {m["mountPath"] for m in c["volumeMounts"]} == {
        "/workspace", "/tmp", "/home/coder", "/run/coderx"}


def test_network_policy_denies_all_unless_network_is_asked() -> None:
    closed = network_policy_manifest(_spec(), SID, LABELS)["spec"]
    assert closed["podSelector"] == {"matchLabels": {"coderx.session": SID}}
    assert closed["policyTypes"] == ["Ingress", "Egress"]
    assert closed["ingress"] == [] and closed["egress"] == []
    opened = network_policy_manifest(_spec(network="bridge"), SID, LABELS)["spec"]
    assert opened["ingress"] == [] and opened["egress"] == [{}]  # out yes, in (sessions) no


def test_bind_workspace_is_a_subpath_with_git_protection_read_only() -> None:
    spec = _spec(mounts=(
        BindMount(source=Path("/srv/work/team/app/.git"), target="/workspace/.git",
                  read_only=True),
        BindMount(source=Path("/var/lib/coderx/etc/gitconfig"), target="/home/coder/.gitconfig",
                  read_only=True)))
    pod = pod_manifest(spec, "img", SID, LABELS, SHARED)
    mounts = pod["spec"]["containers"][0]["volumeMounts"]
    assert mounts[:2] == [
        {"name": "workspace", "mountPath": "/workspace", "subPath": "team/app"},
        {"name": "workspace", "mountPath": "/workspace/.git", "subPath": "team/app/.git",
         "readOnly": True}]
    # The git identity lives off the claim: a convenience, left out; the rest are tmpfs.
    assert [m["mountPath"] for m in mounts[2:]] == ["/tmp", "/home/coder", "/run/coderx"]
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"] == {"claimName": "work"}


def test_workspace_or_protection_off_the_shared_claim_is_refused() -> None:
    with pytest.raises(SandboxUnavailable, match="not under /srv/work"):
        pod_manifest(SandboxSpec(workspace=Path("/home/u/app")), "img", SID, LABELS, SHARED)
    guarded = _spec(mounts=(BindMount(source=Path("/elsewhere/.git"), target="/workspace/.git",
                                      read_only=True),))
    with pytest.raises(SandboxUnavailable, match=r"cannot mount /elsewhere/\.git"):
        pod_manifest(guarded, "img", SID, LABELS, SHARED)


def test_claim_and_root_settings_go_together() -> None:
    with pytest.raises(ValidationError, match="go together"):
        KubernetesSettings(workspace_claim="work")
    with pytest.raises(ValidationError, match="ephemeral"):
        KubernetesSettings(ephemeral_storage="lots")


def test_backends_are_chosen_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(BACKENDS) == {"docker", "local", "kubernetes"}
    monkeypatch.setenv("CODERX_BACKEND", "kubernetes")
    monkeypatch.setenv("CODERX_KUBERNETES__NAMESPACE", "agents")
    s = Settings()
    assert s.kubernetes.namespace == "agents"
    backend = make_backend(s, Instance.current())
    assert backend.name == "kubernetes" and backend.isolated
    with pytest.raises(ConfigError, match="unknown sandbox backend 'kubernetes': use one of "
                                          "docker, local"):
        make_backend(s, Instance.current(), {k: BACKENDS[k] for k in ("docker", "local")})


async def test_no_cluster_configuration_is_one_clear_error(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    backend = make_backend(Settings(backend="kubernetes"), Instance.current())
    with pytest.raises(SandboxUnavailable, match=r"no Kubernetes configuration .*set KUBECONFIG"):
        await backend.check()
