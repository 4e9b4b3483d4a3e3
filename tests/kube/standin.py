"""A loopback stand-in for the Kubernetes API server, just big enough for our backend.

It serves what ``KubernetesBackend`` calls through the real ``kubernetes`` client: create,
read, list (by equality label selector) and delete of Pods, NetworkPolicies and
PersistentVolumeClaims, and pod exec over WebSocket (``v5.channel.k8s.io`` with its stdin
half-close, or ``v4.channel.k8s.io`` only). A Pod is a real Docker container made from
the Pod's own spec (user, read-only root, dropped capabilities, no privilege gain, memory
and CPU limits, memory ``emptyDir`` volumes as size-capped tmpfs, claims as host
directories, no network under a deny-all egress policy); each exec is a real
``docker exec`` relayed frame by frame. It runs its own event loop in a thread, so the
blocking client can be called from anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import threading
import uuid
from pathlib import Path
from typing import Any

import docker
import docker.errors
from aiohttp import WSMsgType, web

from coderx_mcp.sandbox.docker_stream import DockerExecStream
from coderx_mcp.sandbox.stream import STDERR

V5, V4 = "v5.channel.k8s.io", "v4.channel.k8s.io"
STANDIN_LABEL = "coderx-test.kube-standin"


def _selected(labels: dict[str, str], selector: str | None) -> bool:
    for term in filter(None, (selector or "").split(",")):
        key, _, value = term.partition("=")
        if key not in labels or ("=" in term and labels[key] != value):
            return False
    return True


def _status(code: int, reason: str, message: str) -> web.Response:
    return web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {},
                              "status": "Failure", "message": message, "reason": reason,
                              "code": code}, status=code)


class StandIn:
    """The stand-in API server. ``url`` once started; ``protocols`` what exec offers.

    Args:
        client: Docker client that runs the Pods.
        claims: Directory holding one subdirectory per claim.
        protocols: Exec subprotocols accepted, in order of preference.
    """

    def __init__(self, client: docker.DockerClient, claims: Path,
                 protocols: tuple[str, ...] = (V5, V4)) -> None:
        self.docker = client
        self.claims = claims
        self.protocols = protocols
        self.objects: dict[str, dict[str, dict[str, Any]]] = {
            "pods": {}, "networkpolicies": {}, "persistentvolumeclaims": {}}
        self.containers: dict[str, str] = {}  # pod name -> container id
        self.exec_log: list[dict[str, Any]] = []  # one entry per exec: protocol, how it ended
        self._streams: set[tuple[web.WebSocketResponse, asyncio.StreamWriter]] = set()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- life cycle (called from the test's thread) --------------------------------------

    def start(self) -> StandIn:
        threading.Thread(target=self._loop.run_forever, name="kube-standin", daemon=True).start()
        self.url = self._run(self._serve())
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        for c in self.docker.containers.list(all=True, filters={"label": STANDIN_LABEL}):
            with contextlib.suppress(docker.errors.APIError):
                c.remove(force=True)

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(60)

    def drop_exec_streams(self) -> int:
        """Cut every exec connection without a status, as an idle timeout on the way does
        (the runner's input ends, as the kubelet ends it); returns how many."""
        return int(self._run(self._drop()))

    # -- server ---------------------------------------------------------------------------

    async def _serve(self) -> str:
        app = web.Application()
        core, net = "/api/v1/namespaces/{ns}", "/apis/networking.k8s.io/v1/namespaces/{ns}"
        app.router.add_get(core + "/pods/{name}/exec", self._exec)
        for base, kind in ((core, "pods"), (core, "persistentvolumeclaims"),
                           (net, "networkpolicies")):
            app.router.add_post(f"{base}/{kind}", self._create)
            app.router.add_get(f"{base}/{kind}", self._list)
            app.router.add_get(f"{base}/{kind}/{{name}}", self._read)
            app.router.add_delete(f"{base}/{kind}/{{name}}", self._delete)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    async def _shutdown(self) -> None:
        await self._drop()
        if self._runner is not None:
            await self._runner.cleanup()

    @staticmethod
    def _kind(request: web.Request) -> str:
        return request.path.rstrip("/").split("/namespaces/", 1)[1].split("/")[1]

    async def _create(self, request: web.Request) -> web.StreamResponse:
        kind, body = self._kind(request), await request.json()
        name = body["metadata"]["name"]
        if name in self.objects[kind]:
            return _status(409, "AlreadyExists", f"{kind} {name} already exists")
        body["metadata"].update(namespace=request.match_info["ns"], uid=str(uuid.uuid4()))
        if kind == "persistentvolumeclaims":
            (self.claims / name).mkdir()
            body["status"] = {"phase": "Bound"}
        if kind == "pods":
            try:
                self.containers[name] = await asyncio.to_thread(self._run_pod, body)
            except docker.errors.ImageNotFound:
                pass  # the "node" lacks the image (pull policy Never): the Pod waits forever
            except docker.errors.APIError as exc:
                return _status(422, "Invalid", str(exc))
        self.objects[kind][name] = body
        return web.json_response(body, status=201)

    async def _read(self, request: web.Request) -> web.StreamResponse:
        kind, name = self._kind(request), request.match_info["name"]
        obj = self.objects[kind].get(name)
        if obj is None:
            return _status(404, "NotFound", f"{kind} {name} not found")
        if kind == "pods":
            obj = {**obj, "status": await asyncio.to_thread(self._pod_status, name)}
        return web.json_response(obj)

    async def _list(self, request: web.Request) -> web.StreamResponse:
        kind, sel = self._kind(request), request.query.get("labelSelector")
        items = [o for o in self.objects[kind].values()
                 if _selected(o["metadata"].get("labels") or {}, sel)]
        return web.json_response({"apiVersion": "v1", "kind": "List", "metadata": {},
                                  "items": items})

    async def _delete(self, request: web.Request) -> web.StreamResponse:
        kind, name = self._kind(request), request.match_info["name"]
        obj = self.objects[kind].pop(name, None)
        if obj is None:
            return _status(404, "NotFound", f"{kind} {name} not found")
        cid = self.containers.pop(name, None) if kind == "pods" else None
        if cid is not None:
            await asyncio.to_thread(self._remove_container, cid)
        if kind == "persistentvolumeclaims":
            await asyncio.to_thread(shutil.rmtree, self.claims / name, True)
        return web.json_response(obj)

    def _remove_container(self, cid: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self.docker.api.remove_container(cid, force=True)

    # -- Pods as containers ---------------------------------------------------------------

    def _run_pod(self, pod: dict[str, Any]) -> str:
        spec = pod["spec"]
        c = spec["containers"][0]
        psc, sc = spec.get("securityContext", {}), c.get("securityContext", {})
        uid = sc.get("runAsUser", psc.get("runAsUser"))
        gid = sc.get("runAsGroup", psc.get("runAsGroup", uid))
        fs_group = psc.get("fsGroup", gid)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        tmpfs: dict[str, str] = {}
        mounts: list[docker.types.Mount] = []
        for m in c.get("volumeMounts", []):
            vol = volumes[m["name"]]
            if "emptyDir" in vol:
                size = vol["emptyDir"].get("sizeLimit", "64m")
                tmpfs[m["mountPath"]] = f"rw,nosuid,nodev,size={size},uid={uid},gid={fs_group}"
                continue
            claim = self.claims / vol["persistentVolumeClaim"]["claimName"]
            source = claim / m.get("subPath", "")
            if not source.exists():  # the kubelet creates a missing sub-path directory
                source.mkdir(parents=True)
            os.chown(claim, uid, fs_group)
            mounts.append(docker.types.Mount(m["mountPath"], str(source), type="bind",
                                             read_only=bool(m.get("readOnly"))))
        egress_denied = any(
            _selected(pod["metadata"].get("labels") or {},
                      ",".join(f"{k}={v}" for k, v in
                               p["spec"]["podSelector"].get("matchLabels", {}).items()))
            and not p["spec"].get("egress")
            for p in self.objects["networkpolicies"].values())
        limits = c.get("resources", {}).get("limits", {})
        cpu = limits.get("cpu", "1000m")
        nano = int(float(cpu[:-1]) * 1e6) if cpu.endswith("m") else int(float(cpu) * 1e9)
        container = self.docker.containers.create(
            c["image"], c.get("command"), user=f"{uid}:{gid}", working_dir=c.get("workingDir"),
            environment={e["name"]: e["value"] for e in c.get("env", [])},
            labels={STANDIN_LABEL: "1"}, hostname=spec.get("hostname"),
            init=bool(spec.get("shareProcessNamespace")),  # the pause process reaps there
            cap_drop=sc.get("capabilities", {}).get("drop"),
            security_opt=(["no-new-privileges"] if sc.get("allowPrivilegeEscalation") is False
                          else None),
            read_only=bool(sc.get("readOnlyRootFilesystem")), tmpfs=tmpfs, mounts=mounts,
            mem_limit=int(limits["memory"]), memswap_limit=int(limits["memory"]),
            nano_cpus=nano, network_mode="none" if egress_denied else "bridge",
            log_config={"type": "none", "config": {}})
        container.start()
        return str(container.id)

    def _pod_status(self, name: str) -> dict[str, Any]:
        base = {"name": "sandbox", "image": "x", "imageID": "", "restartCount": 0}
        try:
            state = self.docker.api.inspect_container(self.containers[name])["State"]
        except KeyError:
            return {"phase": "Pending", "containerStatuses": [
                {**base, "ready": False, "state": {"waiting": {
                    "reason": "ErrImageNeverPull",
                    "message": "Container image is not present with pull policy of Never"}}}]}
        except docker.errors.NotFound:
            return {"phase": "Unknown"}
        if state.get("Running"):
            return {"phase": "Running", "containerStatuses": [
                {**base, "ready": True, "state": {"running": {}}}]}
        code = state.get("ExitCode", 0)
        reason = "OOMKilled" if state.get("OOMKilled") else ("Completed" if code == 0 else "Error")
        return {"phase": "Succeeded" if code == 0 else "Failed", "containerStatuses": [
            {**base, "ready": False, "state": {"terminated": {"exitCode": code,
                                                              "reason": reason}}}]}

    # -- exec -----------------------------------------------------------------------------

    async def _exec(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        cid = self.containers.get(name)
        if cid is None:
            return _status(404, "NotFound", f"pods {name} not found")
        ws = web.WebSocketResponse(protocols=self.protocols)
        await ws.prepare(request)
        entry: dict[str, Any] = {"pod": name, "protocol": ws.ws_protocol, "half_closed": False,
                                 "status": None}
        self.exec_log.append(entry)
        command = request.query.getall("command")
        eid, sock = await asyncio.to_thread(self._docker_exec, cid, command)
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=1 << 20)
        frames = DockerExecStream(reader, writer, 1 << 30)
        self._streams.add((ws, writer))
        pump = asyncio.create_task(self._pump_out(ws, frames, eid, entry))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.BINARY or not msg.data:
                    continue
                if msg.data[0] == 0:
                    writer.write(msg.data[1:])
                elif msg.data[:2] == b"\xff\x00" and ws.ws_protocol == V5:
                    entry["half_closed"] = True
                    writer.write_eof()  # stdin ends; stdout and the status still come
        finally:
            self._streams.discard((ws, writer))
            if not pump.done():  # the client went: the kubelet ends the process's input
                with contextlib.suppress(Exception):
                    writer.write_eof()
                pump.cancel()
            with contextlib.suppress(BaseException):
                await pump
            writer.close()
        return ws

    def _docker_exec(self, cid: str, command: list[str]) -> tuple[str, socket.socket]:
        api = self.docker.api
        eid = api.exec_create(cid, command, stdin=True, stdout=True, stderr=True)["Id"]
        raw = api.exec_start(eid, socket=True)
        sock = getattr(raw, "_sock", raw)
        dup = socket.socket(fileno=os.dup(sock.fileno()))
        raw.close()
        dup.setblocking(False)
        return str(eid), dup

    async def _pump_out(self, ws: web.WebSocketResponse, frames: DockerExecStream, eid: str,
                        entry: dict[str, Any]) -> None:
        while True:
            kind, chunk = await frames.read()
            if not chunk:
                break
            await ws.send_bytes(bytes([2 if kind == STDERR else 1]) + chunk)
        code = (await asyncio.to_thread(self.docker.api.exec_inspect, eid)).get("ExitCode")
        status: dict[str, Any] = {"metadata": {}, "status": "Success"}
        if code:
            status = {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                      "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}
        entry["status"] = status
        await ws.send_bytes(b"\x03" + json.dumps(status).encode())
        await ws.close()

    async def _drop(self) -> int:
        streams = list(self._streams)
        for ws, writer in streams:
            await ws.close()  # first: the runner still reads, so no status can slip in
            with contextlib.suppress(Exception):
                writer.write_eof()
        return len(streams)
