"""``KubernetesSandbox``: a hardened Pod per session, its runner reached by one pod exec.

The runner is started with one exec (a WebSocket through the API server, access is RBAC
``pods/exec``; nothing listens inside the Pod) and kept, as with Docker. An exec stream
can drop while the Pod runs on (an idle timeout on the way, a kubelet restart): the
sandbox then attaches a new runner. The shell state lives in the Pod (``/run/coderx``),
so cwd and exported variables survive; background processes of the old runner do not, and
calls in flight at the drop fail with an error saying their effect is unknown.

The official client is blocking, so API calls run in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream as k8s_stream

from coderx_mcp.config import KubernetesSettings
from coderx_mcp.errors import SandboxError, SandboxGone, SandboxUnavailable
from coderx_mcp.sandbox.base import SandboxSpec
from coderx_mcp.sandbox.docker import RUNNER, RUNNER_DIR, STATE, WORKDIR
from coderx_mcp.sandbox.instance import LABEL_INSTANCE, LABEL_MANAGED, LABEL_SESSION, Instance
from coderx_mcp.sandbox.kube_spec import (
    CONTAINER,
    claim_manifest,
    claim_name,
    network_policy_manifest,
    pod_manifest,
    pod_name,
)
from coderx_mcp.sandbox.kube_stream import KubeExecStream
from coderx_mcp.sandbox.protocol import DEFAULT_LINE_CAP, RunnerClient

_log = structlog.get_logger("coderx.kubernetes")
_SAVED_STATE = f"{STATE}/shell.env.prev"
# Keep the last runner's shell state before the new runner writes its initial one.
RUNNER_COMMAND = [
    "sh", "-c",
    f"cp -p {STATE}/shell.env {_SAVED_STATE} 2>/dev/null; cd {RUNNER_DIR} && "
    f"CODERX_ROOT={WORKDIR} CODERX_STATE={STATE} exec " + " ".join(RUNNER)]
# A container that waits for one of these will not start by waiting longer.
_FATAL_WAITING = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName",
                  "CreateContainerConfigError", "CreateContainerError", "ErrImageNeverPull"}


def k8s_labels(instance: Instance, session_id: str) -> dict[str, str]:
    """Labels of every object of a session (values Kubernetes accepts as label values)."""
    full = instance.labels()  # pid, start time and host may not be label values: annotations
    return {LABEL_MANAGED: full[LABEL_MANAGED], LABEL_INSTANCE: full[LABEL_INSTANCE],
            LABEL_SESSION: session_id}


def ignore_missing(call: Any, *args: Any, **kw: Any) -> None:
    """Run one delete call; an object already gone is fine."""
    try:
        call(*args, **kw)
    except ApiException as exc:
        if exc.status != 404:
            raise


class KubernetesSandbox:
    """A session's Pod (with its NetworkPolicy and maybe its own claim) and its runner.

    Args:
        api: The API client (shared by the backend).
        spec: What to start.
        image: Sandbox image.
        instance: This server process (labels and annotations).
        session_id: The session the Pod is for.
        kube: Namespace, claims, runtime class, timeouts.
        start_timeout: Seconds to wait for the runner's hello.
        max_line: The longest reply line accepted.
    """

    backend = "kubernetes"

    def __init__(self, api: k8s.ApiClient, spec: SandboxSpec, image: str, instance: Instance,
                 session_id: str, kube: KubernetesSettings, start_timeout: float = 30.0,
                 max_line: int = DEFAULT_LINE_CAP) -> None:
        self.spec = spec
        self.session_id = session_id
        self.lost_reason: str | None = None
        self._api = api
        self._core = k8s.CoreV1Api(api)
        self._net = k8s.NetworkingV1Api(api)
        self._image = image
        self._instance = instance
        self._kube = kube
        self._ns = kube.namespace
        self._name = pod_name(session_id)
        self._start_timeout = start_timeout
        self._max_line = max_line
        self._runner: RunnerClient | None = None
        self._stream: KubeExecStream | None = None
        self._attach = asyncio.Lock()
        self._created = False
        self._closing = False
        self.reattached = 0
        """How many times a dropped exec stream was replaced (for logs and tests)."""

    @property
    def ident(self) -> str:
        return self._name

    @property
    def alive(self) -> bool:
        if self._runner is None or self._closing or self.lost_reason is not None:
            return False
        return self._runner.alive or self._attach.locked()

    async def start(self) -> None:
        labels = k8s_labels(self._instance, self.session_id)
        try:
            await asyncio.to_thread(self._create, labels)
            await self._wait_running()
            async with self._attach:
                await self._attach_runner()
        except ApiException as exc:
            await self.close()
            raise SandboxUnavailable(
                f"could not start the sandbox pod: {exc.status} {exc.reason}") from None
        except BaseException:
            await self.close()
            raise
        _log.info("sandbox started", session_id=self.session_id, pod=self._name,
                  namespace=self._ns, network=self.spec.network, uid=self.spec.uid)

    def _create(self, labels: dict[str, str]) -> None:
        def owned(manifest: dict[str, Any]) -> Any:
            # Who owns it (pid, start, host) for the reaper; the API takes plain manifests.
            manifest["metadata"]["annotations"] = self._instance.labels()
            return manifest

        self._created = True
        # The policy first: the Pod never runs a moment without it.
        self._net.create_namespaced_network_policy(
            self._ns, owned(network_policy_manifest(self.spec, self.session_id, labels)))
        if self._kube.workspace_claim is None:
            try:
                self._core.create_namespaced_persistent_volume_claim(
                    self._ns, owned(claim_manifest(self.session_id, labels, self._kube)))
            except ApiException as exc:
                if exc.status != 409:  # 409: a lost predecessor's workspace: carry on with it
                    raise
        self._core.create_namespaced_pod(self._ns, owned(
            pod_manifest(self.spec, self._image, self.session_id, labels, self._kube)))

    async def _wait_running(self) -> None:
        deadline = time.monotonic() + self._kube.api_timeout_s
        note = "it was not scheduled"
        while True:
            pod = await asyncio.to_thread(self._core.read_namespaced_pod, self._name, self._ns)
            phase = pod.status.phase if pod.status else None
            if phase == "Running":
                return
            for cs in (pod.status.container_statuses or []) if pod.status else []:
                waiting = cs.state.waiting if cs.state else None
                if waiting is not None and waiting.reason in _FATAL_WAITING:
                    raise SandboxUnavailable(
                        f"the sandbox pod cannot start: {waiting.reason} "
                        f"({waiting.message or self._image}); see docs/kubernetes.md on "
                        "getting the image to the nodes")
                if waiting is not None:
                    note = f"its container waits: {waiting.reason}"
            for cond in (pod.status.conditions or []) if pod.status else []:
                if cond.type == "PodScheduled" and cond.status == "False" and cond.message:
                    note = f"it is not scheduled: {cond.message}"
            if phase in ("Failed", "Succeeded"):
                raise SandboxUnavailable(f"the sandbox pod ended at start ({phase})")
            if time.monotonic() > deadline:
                raise SandboxUnavailable(
                    f"the sandbox pod did not run within {self._kube.api_timeout_s:.0f} s: "
                    f"{note}")
            await asyncio.sleep(0.25)

    async def _open_stream(self) -> KubeExecStream:
        def connect() -> Any:
            # A client of its own: stream() swaps the client's call_api while it connects,
            # which would send other threads' requests through a WebSocket meanwhile.
            api = k8s.ApiClient(self._api.configuration)
            try:
                return k8s_stream(k8s.CoreV1Api(api).connect_get_namespaced_pod_exec,
                                  self._name, self._ns, container=CONTAINER,
                                  command=RUNNER_COMMAND, stdin=True, stdout=True, stderr=True,
                                  tty=False, _preload_content=False, binary=True)
            finally:
                api.close()  # type: ignore[no-untyped-call]

        try:
            ws = await asyncio.wait_for(asyncio.to_thread(connect), self._kube.api_timeout_s)
        except (ApiException, TimeoutError) as exc:
            raise SandboxUnavailable(f"could not reach the runner in pod {self._name}: "
                                     f"{getattr(exc, 'reason', None) or 'timed out'}") from None
        return KubeExecStream(ws, self._max_line, asyncio.get_running_loop())

    async def _attach_runner(self) -> None:
        """Start a runner on a new exec stream (the caller holds ``_attach``)."""
        self._stream = await self._open_stream()
        runner = RunnerClient(self._stream, name=self.session_id, max_line=self._max_line)
        runner.on_lost = self._on_lost
        await runner.start(self._start_timeout)
        self._runner = runner

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        if self._attach.locked():  # a call arriving during a re-attach waits for the runner
            async with self._attach:
                pass
        runner = self._runner
        if runner is None or self._closing:
            raise SandboxGone("the sandbox was not started or is closed")
        try:
            return await runner.call(op, **args)
        except SandboxGone:
            if runner.violation is not None:
                raise SandboxGone(f"the sandbox was stopped because {runner.violation}.",
                                  runner.violation) from None
            async with self._attach:  # a re-attach in progress finishes first
                pass
            if self.lost_reason is None and self._runner is not runner and self.alive:
                raise SandboxError(
                    "the connection to the sandbox dropped during this call and was re-attached; "
                    "whether the call took effect is unknown, so check before repeating it "
                    "(background processes of the session ended)") from None
            reason = self.lost_reason or await self._diagnose()
            raise SandboxGone(f"the sandbox pod stopped: {reason}", reason) from None

    async def _on_lost(self) -> None:
        stream, runner = self._stream, self._runner
        async with self._attach:
            if self._closing or runner is None:
                return
            if (runner.violation is None and stream is not None and stream.dropped
                    and await self._pod_running()):
                try:
                    await runner.close()  # its stream ended; this flushes its stderr log
                    await self._attach_runner()
                    await self._runner_restore()
                    self.reattached += 1
                    _log.warning("runner stream dropped; re-attached", session_id=self.session_id,
                                 pod=self._name)
                    return
                except Exception as exc:
                    _log.warning("re-attach failed", session_id=self.session_id, error=str(exc))
            self.lost_reason = runner.violation or await self._diagnose()
        _log.warning("sandbox lost", session_id=self.session_id, pod=self._name,
                     reason=self.lost_reason)

    async def _runner_restore(self) -> None:
        """Give the new runner the old one's shell state (cwd, exported variables)."""
        assert self._runner is not None
        await self._runner.call("exec", command=f". {_SAVED_STATE} 2>/dev/null; true",
                                timeout=30)

    async def _pod_running(self) -> bool:
        with contextlib.suppress(Exception):
            pod = await asyncio.to_thread(self._core.read_namespaced_pod, self._name, self._ns)
            return bool(pod.status and pod.status.phase == "Running")
        return False

    async def _diagnose(self) -> str:
        """Say why the runner's stream ended, from the Pod's state."""
        if not self._created:
            return "it was never created"

        def inspect() -> str:
            try:
                pod = self._core.read_namespaced_pod(self._name, self._ns)
            except ApiException as exc:
                if exc.status == 404:
                    return "the pod was deleted from outside"
                return f"the API server did not answer ({exc.status} {exc.reason})"
            for cs in (pod.status.container_statuses or []) if pod.status else []:
                term = cs.state.terminated if cs.state else None
                if term is not None and term.reason == "OOMKilled":
                    return "killed: out of memory"
                if term is not None:
                    return f"the container exited with code {term.exit_code} ({term.reason})"
            if pod.status and pod.status.phase != "Running":
                return f"the pod is {pod.status.phase} ({pod.status.reason or 'no reason given'})"
            return "the runner process inside the pod exited"

        with contextlib.suppress(Exception):
            return await asyncio.wait_for(asyncio.to_thread(inspect), self._kube.api_timeout_s)
        return "the API server did not answer"

    async def close(self) -> None:
        self._closing = True
        if self._stream is not None:
            await self._stream.close_input(2.0)  # v5: the runner ends before its pod goes
        if self._runner is not None:
            await self._runner.close()
        if self._created:
            self._created = False
            await asyncio.to_thread(self._delete_all)
            _log.info("sandbox removed", session_id=self.session_id, pod=self._name)

    def _delete_all(self) -> None:
        ignore_missing(self._core.delete_namespaced_pod, self._name, self._ns,
                       grace_period_seconds=0)
        ignore_missing(self._net.delete_namespaced_network_policy, self._name, self._ns)
        # A lost sandbox's claim stays for the successor the session starts on the same
        # workspace; the server's shutdown (or the reaper) removes it with the rest.
        if self._kube.workspace_claim is None and self.lost_reason is None:
            ignore_missing(self._core.delete_namespaced_persistent_volume_claim,
                           claim_name(self.session_id), self._ns)
