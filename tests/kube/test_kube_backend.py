"""The Kubernetes backend through the real official client against the loopback stand-in.

Each Pod is a real hardened container of the sandbox image and each exec a real
``docker exec``, so the whole path runs: manifests → API → Pod; the runner over one
pod-exec WebSocket (v5 with stdin half-close, v4), re-attach after a dropped stream.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable

import pytest
from kubernetes import client as k8s
from tests.kube.conftest import MakeKube, standin_client
from tests.kube.standin import V4, V5, StandIn
from tests.sandbox.conftest import out, sh

from coderx_mcp.errors import SandboxError, SandboxGone, SandboxUnavailable
from coderx_mcp.sandbox.instance import LABEL_SESSION, Instance
from coderx_mcp.sandbox.kube_sandbox import KubernetesSandbox
from coderx_mcp.sandbox.kube_spec import claim_name, pod_name

pytestmark = pytest.mark.docker
MakeStandIn = Callable[..., StandIn]


def _kube_sandbox(sandbox: object) -> KubernetesSandbox:
    assert isinstance(sandbox, KubernetesSandbox)
    return sandbox


async def test_session_runs_in_a_hardened_pod_and_leaves_nothing(
        make_standin: MakeStandIn, make_kube: MakeKube) -> None:
    standin = make_standin()
    manager = await make_kube(standin)
    session = await manager.open("tester")
    name = pod_name(session.id)
    assert set(standin.objects["pods"]) == {name}
    assert standin.objects["pods"][name]["metadata"]["labels"][LABEL_SESSION] == session.id
    assert set(standin.objects["networkpolicies"]) == {name}
    assert set(standin.objects["persistentvolumeclaims"]) == {claim_name(session.id)}
    r = await sh(session, "id -u; grep CapEff /proc/self/status; touch /etc/x 2>&1; "
                          "ls /sys/class/net; echo hi > /workspace/f && cat /workspace/f")
    lines = out(r).splitlines()
    assert lines[0] == "1000"
    assert lines[1].split() == ["CapEff:", "0000000000000000"]
    assert "Read-only file system" in lines[2]
    assert lines[3:] == ["lo", "hi"]  # deny-all egress: no network at all
    assert session.sandbox.ident == name
    await manager.close(session.id, "tester", keep=False)
    assert not any(standin.objects.values())


@pytest.mark.parametrize("protocols", [(V5, V4), (V4,)], ids=["v5", "v4-fallback"])
async def test_runner_stream_over_exec_websocket(
        make_standin: MakeStandIn, make_kube: MakeKube, protocols: tuple[str, ...]) -> None:
    standin = make_standin(protocols)
    manager = await make_kube(standin)
    session = await manager.open("tester")
    # A request and a reply much larger than one WebSocket message, many calls at once.
    r = await sh(session, f": '{'y' * 300_000}'; head -c 3000000 /dev/zero | tr '\\0' x > big")
    assert r["exit_code"] == 0
    big = await session.call("read", path="big", max_bytes=4_000_000, line_limit=1)
    assert big["text"] == "x" * 3_000_000
    results = await asyncio.gather(*(sh(session, f"echo {i}") for i in range(20)))
    assert [out(r) for r in results] == [f"{i}\n" for i in range(20)]
    await manager.close(session.id, "tester", keep=False)
    entry = standin.exec_log[0]
    assert entry["protocol"] == protocols[0]
    # v5: stdin half-closed, the runner ended on its own and its status came back;
    # v4 cannot half-close: the connection itself ended the runner's input.
    assert entry["half_closed"] is (protocols[0] == V5)
    assert (entry["status"] == {"metadata": {}, "status": "Success"}) is (protocols[0] == V5)


async def test_dropped_exec_stream_is_reattached_with_shell_state(
        make_standin: MakeStandIn, make_kube: MakeKube) -> None:
    standin = make_standin()
    manager = await make_kube(standin)
    session = await manager.open("tester")
    await sh(session, "mkdir -p /tmp/deep && cd /tmp/deep && export KEPT=yes")
    in_flight = asyncio.create_task(sh(session, "sleep 30", timeout=60))
    await asyncio.sleep(0.5)
    assert standin.drop_exec_streams() == 1  # an idle timeout or a kubelet restart
    with pytest.raises(SandboxError, match="re-attached") as info:
        await asyncio.wait_for(in_flight, 20)
    assert not isinstance(info.value, SandboxGone)
    r = await sh(session, 'pwd; echo "$KEPT"')
    assert out(r) == "/tmp/deep\nyes\n"
    sandbox = _kube_sandbox(session.sandbox)
    assert sandbox.reattached == 1 and sandbox.alive
    assert len(standin.exec_log) == 2 and standin.exec_log[0]["status"] is None


async def test_pod_deleted_from_outside_reported_then_recreated(
        make_standin: MakeStandIn, make_kube: MakeKube) -> None:
    standin = make_standin()
    manager = await make_kube(standin)
    session = await manager.open("tester")
    await sh(session, "echo kept > marker")
    old = session.sandbox.ident
    k8s.CoreV1Api(standin_client(standin)).delete_namespaced_pod(old, "coderx")
    with pytest.raises(SandboxGone, match="deleted from outside") as info:
        await sh(session, "echo hi")
    assert "next call" in str(info.value)
    assert out(await sh(session, "cat marker")) == "kept\n"  # the session's claim stayed
    assert session.sandbox.ident == old and old in standin.objects["pods"]  # same name, new Pod


async def test_bind_workspace_is_a_subpath_of_the_shared_claim(
        make_standin: MakeStandIn, make_kube: MakeKube) -> None:
    standin = make_standin()
    claim_dir = standin.claims / "shared"
    k8s.CoreV1Api(standin_client(standin)).create_namespaced_persistent_volume_claim(
        "coderx", {"metadata": {"name": "shared"}, "spec": {
            "accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}})
    project = claim_dir / "team" / "project"
    project.mkdir(parents=True)
    (project / "README").write_text("from the claim\n")
    os.chown(project, 1000, 1000)
    manager = await make_kube(standin, workspace_claim="shared", workspace_root=claim_dir,
                              workspace_size="1Gi")
    session = await manager.open("tester", workspace=str(project))
    assert out(await sh(session, "cat README; echo back > out")) == "from the claim\n"
    assert (project / "out").read_text() == "back\n"
    mounts = standin.objects["pods"][session.sandbox.ident]["spec"]["containers"][0][
        "volumeMounts"]
    assert mounts[0] == {"name": "workspace", "mountPath": "/workspace", "subPath": "team/project"}
    assert set(standin.objects["persistentvolumeclaims"]) == {"shared"}  # no claim of its own


async def test_image_missing_on_the_node_fails_at_once_with_the_kubelets_reason(
        make_standin: MakeStandIn, make_kube: MakeKube) -> None:
    standin = make_standin()
    manager = await make_kube(standin, settings={"image": "coderx-sandbox:not-on-any-node"},
                              image_pull_policy="Never")
    t0 = time.monotonic()
    with pytest.raises(SandboxUnavailable, match=r"ErrImageNeverPull .*docs/kubernetes\.md"):
        await manager.open("tester")
    assert time.monotonic() - t0 < 10  # not the 30 s start timeout
    assert not any(standin.objects.values())  # the policy and claim went with it


async def test_warm_pool_hands_out_a_started_pod(
        make_standin: MakeStandIn, make_kube: MakeKube) -> None:
    standin = make_standin()
    manager = await make_kube(standin, settings={"pool_size": 1})
    assert await manager.pool.wait_full(60)
    pooled = set(standin.objects["pods"])
    session = await manager.default("tester")
    assert session.sandbox.ident in pooled
    assert out(await sh(session, "echo warm")) == "warm\n"


async def test_cr01_pods_of_a_gone_server_are_reaped(
        make_standin: MakeStandIn, make_kube: MakeKube) -> None:
    standin = make_standin()
    gone = Instance(id="deadbeef00000000", pid=2**22 + 7, start="1", host=socket.gethostname())
    dead = await make_kube(standin, instance=gone)
    session = await dead.open("tester")
    sandbox = _kube_sandbox(session.sandbox)
    await sandbox.call("exec", command="true", timeout=10)
    assert standin.objects["pods"]
    await make_kube(standin)  # starting reaps what servers that are gone left
    assert not any(standin.objects.values())
