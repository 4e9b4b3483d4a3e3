"""``DockerSandbox``: a hardened container per session with one persistent runner inside.

The runner is started once with ``docker exec`` and kept: every later tool call is one
JSON line on its stream (well under a millisecond) instead of a new ``docker exec``
(tens of milliseconds). Docker SDK calls are blocking, so they run in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from typing import Any

import docker
import docker.errors
import requests
import structlog
from docker.types import Mount, Ulimit

from coderx_mcp.config import parse_size
from coderx_mcp.errors import CoderxError, SandboxGone, SandboxUnavailable
from coderx_mcp.sandbox.base import SandboxSpec
from coderx_mcp.sandbox.docker_stream import DockerExecStream
from coderx_mcp.sandbox.instance import Instance, sandbox_labels
from coderx_mcp.sandbox.link import LINK_DIR, LinkPolicy, RunnerLink
from coderx_mcp.sandbox.protocol import DEFAULT_LINE_CAP, RunnerClient
from coderx_mcp.sandbox.stream import PipeStream

WORKDIR = "/workspace"
HOME = "/home/coder"
STATE = "/run/coderx"
# The runner package lives in RUNNER_DIR; it is started there as a module.
RUNNER_DIR = "/opt/coderx"
RUNNER = ["python3", "-u", "-m", "coderx_runner"]
SAVED_SHELL_STATE = f"{STATE}/shell.env.prev"
"""Where a runner started on a running container (a replica adopting a session) finds the
shell state of the runner before it."""
_log = structlog.get_logger("coderx.docker")


def network_name(session_id: str) -> str:
    """The private bridge network of a session that asked for network access."""
    return f"coderx-{session_id}"


def container_kwargs(
    spec: SandboxSpec, image: str, labels: dict[str, str], network: str | None = None,
    link_dir: str | None = None,
) -> dict[str, Any]:
    """The ``containers.create`` arguments that make a sandbox container.

    Hardening lives here, in one place: non-root user, no capabilities, no privilege
    gain, read-only root with size-capped tmpfs, memory (no swap), CPU and pid limits,
    no network unless asked, an init process that reaps zombies, no Docker socket.
    ``link_dir`` is the runner link's directory (``link.py``), mounted read-only.
    """
    uid, gid, lim = spec.uid, spec.gid, spec.limits
    memory = parse_size(lim.memory)
    # spec.mounts: git protection (gitguard), a worktree's git directory, the git identity.
    mounts = [Mount(WORKDIR, str(spec.workspace), type="bind", read_only=False),
              *(Mount(m.target, str(m.source), type="bind", read_only=m.read_only)
                for m in spec.mounts),
              *([Mount(LINK_DIR, link_dir, type="bind", read_only=True)] if link_dir else [])]
    owned = f"uid={uid},gid={gid},mode=0700"
    return {
        "image": image,
        "command": ["sleep", "infinity"],
        "user": f"{uid}:{gid}",
        "working_dir": WORKDIR,
        "environment": {"HOME": HOME, "USER": "coder",
                        **(spec.egress.env if spec.egress else {})},
        "labels": labels,
        "hostname": "sandbox",
        "init": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "read_only": True,
        "tmpfs": {
            "/tmp": f"rw,noexec,nosuid,nodev,size={parse_size(lim.tmp_size)}",
            HOME: f"rw,nosuid,nodev,size={parse_size(lim.home_size)},{owned}",
            STATE: f"rw,noexec,nosuid,nodev,size={parse_size(lim.spool_size)},{owned}",
        },
        "mem_limit": memory,
        "memswap_limit": memory,
        "nano_cpus": int(lim.cpus * 1e9),
        "pids_limit": lim.pids,
        "ulimits": [Ulimit(name="nofile", soft=lim.nofile, hard=lim.nofile)],
        # A bridge session gets a network of its own, so sessions cannot reach each other.
        # An allowlist session joins the server's internal egress network (proxy only).
        **({"network": network} if spec.network == "bridge" and network
           else {"network": spec.egress.network} if spec.egress is not None
           else {"network_mode": "none"}),
        "ipc_mode": "private",
        "cgroupns": "private",
        "mounts": mounts,
        "restart_policy": {"Name": "no"},
        # The container's own output is never read, and with a log driver a command writing
        # to /proc/1/fd/1 (init and `sleep` are the sandbox's uid) would fill the host's disk.
        "log_config": {"type": "none", "config": {}},
    }


class DockerSandbox:
    """A session's container and the runner inside it.

    Args:
        client: Docker SDK client (shared by the server).
        spec: What to start.
        image: Sandbox image name.
        instance: This server process, stamped in the labels.
        session_id: The session the container is for (a label too).
        start_timeout: Seconds to wait for the runner's hello.
        max_line: The longest reply line accepted (see ``reply_line_cap``).
        links: Whether to link the runner directly (``link.py``); None: never.
    """

    backend = "docker"

    def __init__(self, client: docker.DockerClient, spec: SandboxSpec, image: str,
                 instance: Instance, session_id: str, start_timeout: float = 30.0,
                 max_line: int = DEFAULT_LINE_CAP, links: LinkPolicy | None = None) -> None:
        self.spec = spec
        self._max_line = max_line
        self.session_id = session_id
        self._client = client
        self._image = image
        self._instance = instance
        self._start_timeout = start_timeout
        self._container_id: str | None = None
        self._network: str | None = None
        self._network_made = False
        self._labels: dict[str, str] = {}
        self._runner: RunnerClient | None = None
        self._keep: list[Any] = []
        self._links = links
        self._link: RunnerLink | None = None
        self.lost_reason: str | None = None

    @property
    def ident(self) -> str:
        return (self._container_id or "")[:12]

    @property
    def alive(self) -> bool:
        return self._runner is not None and self._runner.alive

    @property
    def linked(self) -> bool:
        """Whether calls travel on a direct link to the runner (not the exec stream)."""
        return self._runner is not None and self._runner.linked

    async def start(self) -> None:
        labels = sandbox_labels(self._instance, self.spec.labels, self.session_id)
        if self.spec.network == "bridge":
            self._network = network_name(self.session_id)
        if self._links is not None and self._links.enabled:
            try:
                self._link = await RunnerLink.open()
            except OSError as exc:  # no usable temporary directory: the exec stream works
                self._links.failed(f"cannot make the link's socket: {exc}", self.session_id)
        self._labels = labels
        try:
            self._container_id = await self._create(labels)
        except docker.errors.ImageNotFound:
            from coderx_mcp.image import missing_image_message

            raise SandboxUnavailable(missing_image_message(self._image)) from None
        except Exception as exc:  # requests' connection errors arrive unwrapped
            if not is_engine_error(exc):
                raise
            await self.close()
            raise SandboxUnavailable(f"could not start the sandbox container: {_said(exc)}") \
                from None
        await self._connect()
        _log.info("sandbox started", session_id=self.session_id, container=self.ident,
                  network=self.spec.network, uid=self.spec.uid)

    async def _create(self, labels: dict[str, str]) -> str:
        """Create and start the container; again without the link when the engine cannot
        mount the link's directory (a server running in a container: its /tmp is not the
        engine's)."""
        link = self._link
        kwargs = container_kwargs(self.spec, self._image, labels, self._network,
                                  str(link.directory) if link else None)
        try:
            return await asyncio.to_thread(self._create_and_start, kwargs)
        except docker.errors.APIError as exc:
            if link is None or str(link.directory) not in str(exc):
                raise
            self._drop_link(f"the engine cannot mount {link.directory}: {exc.explanation or exc}")
        return await asyncio.to_thread(self._create_and_start, container_kwargs(
            self.spec, self._image, labels, self._network))

    def _drop_link(self, reason: str) -> None:
        """Give the link up for this sandbox and, through the policy, for later ones."""
        if self._link is not None:
            self._link.close()
            self._link = None
        if self._links is not None:
            self._links.failed(reason, self.session_id)

    async def attach(self, container_id: str, network: str | None = None) -> None:
        """Start a runner in a running container of this session that another server made
        (replicas: the engine, not a server's memory, holds the sessions).

        Raises:
            SandboxUnavailable: The container cannot be reached.
        """
        self._container_id, self._network = container_id, network
        await self._connect(adopting=True)
        assert self._runner is not None
        # The shell state lives in the container: the new runner takes the last one's cwd
        # and exported variables (saved before it wrote its own initial state).
        await self._runner.call("exec", command=f". {SAVED_SHELL_STATE} 2>/dev/null; true",
                                timeout=30, cap=1024)
        _log.info("sandbox attached", session_id=self.session_id, container=self.ident)

    async def _connect(self, adopting: bool = False) -> None:
        """Start the runner in the container and wait for its hello."""
        try:
            stream = await self._attach_runner(adopting)
        except Exception as exc:
            if not is_engine_error(exc):
                raise
            await self.close()
            raise SandboxUnavailable(f"could not start the sandbox's runner: {_said(exc)}") \
                from None
        self._runner = RunnerClient(stream, name=self.session_id, max_line=self._max_line)
        self._runner.on_lost = self._on_lost
        try:
            await self._runner.start(self._start_timeout)
        except BaseException:
            await self.close()
            raise
        if self._runner.hello.get("undumpable") is not True:  # an image older than IS-13
            _log.warning("the sandbox runner is dumpable, so commands can reach its stream; "
                         "rebuild the image", session_id=self.session_id,
                         command="coderx-mcp image build")
        if self._link is not None and not adopting:
            await self._make_link(self._runner, self._link)

    async def _make_link(self, runner: RunnerClient, link: RunnerLink) -> None:
        """Ask the runner to connect to the link; on failure keep the exec stream."""
        try:
            await runner.call("link", path=link.socket_path, token=link.token)
            reader, writer = await link.accepted(self._start_timeout)
        except SandboxGone:
            raise
        except (CoderxError, OSError, TimeoutError) as exc:
            self._drop_link(str(exc) or type(exc).__name__)
            return
        runner.add_link(PipeStream(reader, writer))

    def _create_and_start(self, kwargs: dict[str, Any]) -> str:
        if self._network is not None and not self._network_made:
            self._client.networks.create(self._network, driver="bridge", labels=self._labels,
                                         check_duplicate=True)
            self._network_made = True  # a second attempt (without the link) reuses it
        # create + start, not run: run would try to pull a missing image from a registry.
        container = self._client.containers.create(**kwargs)
        self._container_id = str(container.id)
        container.start()
        return self._container_id

    def _exec_create(self, adopting: bool = False) -> str:
        """Create (not start) the runner's exec in the container; returns its id."""
        command = RUNNER if not adopting else [
            "sh", "-c", f"cp -p {STATE}/shell.env {SAVED_SHELL_STATE} 2>/dev/null; exec "
            + " ".join(RUNNER)]
        return str(self._client.api.exec_create(
            self._container_id, command, stdin=True, stdout=True,
            stderr=True, user=f"{self.spec.uid}:{self.spec.gid}", workdir=RUNNER_DIR,
            environment={"CODERX_ROOT": WORKDIR, "CODERX_STATE": STATE},
        )["Id"])

    async def _attach_runner(self, adopting: bool = False) -> DockerExecStream:
        def exec_socket() -> socket.socket:
            raw = self._client.api.exec_start(self._exec_create(adopting), socket=True)
            sock = getattr(raw, "_sock", raw)
            self._keep.append(raw)  # the HTTP response owns the socket: keep it alive
            dup = socket.socket(fileno=os.dup(sock.fileno()))
            dup.setblocking(False)
            return dup

        sock = await asyncio.to_thread(exec_socket)
        # The limit bounds what is buffered ahead of the reader (reading pauses at twice it).
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=1 << 20)
        return DockerExecStream(reader, writer, self._max_line)

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        if self._runner is None:
            raise SandboxGone("the sandbox was not started or is closed")
        try:
            return await self._runner.call(op, **args)
        except SandboxGone:
            if self._runner.violation is not None:  # the container runs; its runner is cut off
                raise SandboxGone(f"the sandbox was stopped because {self._runner.violation}.",
                                  self._runner.violation) from None
            reason = self.lost_reason or await self._diagnose()
            raise SandboxGone(f"the sandbox container stopped: {reason}", reason) from None

    async def _on_lost(self) -> None:
        self.lost_reason = await self.diagnose()
        _log.warning("sandbox lost", session_id=self.session_id, container=self.ident,
                     reason=self.lost_reason)

    async def diagnose(self) -> str:
        """Why the sandbox is lost, asked now: the engine may have stopped or come back
        since the stream ended."""
        violation = self._runner.violation if self._runner is not None else None
        return violation or await self._diagnose()

    async def _diagnose(self) -> str:
        """Say why the runner's stream ended, from the container's state."""
        if self._container_id is None:
            return "it was never created"

        def inspect() -> str:
            # The stream ends a moment before Docker marks a dying container stopped (and
            # OOM-killed): a container still running is asked again for up to two seconds.
            for _ in range(10):
                try:
                    state = self._client.api.inspect_container(self._container_id)["State"]
                except docker.errors.NotFound:
                    return "the container was removed from outside"
                except Exception as exc:
                    if not is_engine_error(exc):
                        raise
                    _log.warning("the Docker engine does not answer", error=str(exc))
                    return "the Docker engine does not answer (stopped or restarted?)"
                if not state.get("Running"):
                    break
                time.sleep(0.2)
            if state.get("OOMKilled"):
                return "killed: out of memory"
            if not state.get("Running"):
                code = state.get("ExitCode")
                return f"the container exited with code {code} (killed from outside?)"
            return "the runner process inside the container exited"

        with contextlib.suppress(Exception):
            return await asyncio.wait_for(asyncio.to_thread(inspect), 10)
        return "the Docker engine did not answer"

    async def detach(self) -> None:
        """Stop this server's runner stream and leave the container running (replicas: the
        session outlives this server)."""
        if self._runner is not None:
            await self._runner.close()
        if self._link is not None:
            self._link.close()
            self._link = None
        for raw in self._keep:
            with contextlib.suppress(Exception):
                raw.close()
        self._keep.clear()

    async def close(self) -> None:
        await self.detach()
        cid, self._container_id = self._container_id, None
        net, self._network = self._network, None
        try:
            if cid is not None:
                await asyncio.to_thread(remove_container, self._client, cid)
                _log.info("sandbox removed", session_id=self.session_id, container=cid[:12])
            if net is not None:
                await asyncio.to_thread(remove_network, self._client, net)
        except Exception as exc:
            if not is_engine_error(exc):
                raise
            # The engine is away (restarting?): the container goes with this server's others
            # by label at shutdown, or with the next server's reaping.
            _log.warning("could not remove a sandbox: the Docker engine does not answer",
                         session_id=self.session_id, error=str(exc))


def _said(exc: BaseException) -> str:
    """What the engine said, or that it does not answer (not a connection's traceback)."""
    if isinstance(exc, docker.errors.APIError):
        return str(exc)
    return "the Docker engine does not answer (stopped or restarted?)"


def is_engine_error(exc: BaseException) -> bool:
    """Whether ``exc`` means the engine could not be reached (docker-py lets requests'
    connection errors through unwrapped)."""
    return isinstance(exc, docker.errors.DockerException | requests.RequestException | OSError)


def remove_network(client: docker.DockerClient, name: str) -> None:
    """Remove a session network, ignoring one that is already gone."""
    with contextlib.suppress(docker.errors.NotFound):
        client.api.remove_network(name)


def remove_container(client: docker.DockerClient, cid: str) -> None:
    """Force-remove a container, ignoring one that is already gone."""
    try:
        client.api.remove_container(cid, force=True, v=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if exc.status_code != 409:  # 409: removal already in progress
            raise
