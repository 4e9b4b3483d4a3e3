"""The ``Sandbox`` protocol and the description of a sandbox to start."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from coderx_mcp.config import Network, SandboxLimits


class BindMount(BaseModel):
    """A host path mounted into the sandbox (git protection, a worktree's git directory)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Path
    target: str
    read_only: bool


class EgressAttach(BaseModel):
    """How an ``allowlist`` sandbox reaches the egress proxy (``coderx_mcp.egress``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    network: str
    """The server's internal egress network (shared; never created or removed here)."""
    env: dict[str, str]
    """Proxy settings for the sandbox's environment (HTTP(S)_PROXY, pip, npm)."""
    allow: tuple[str, ...]
    """The session's allowlist rules."""


class EgressHook(Protocol):
    """The egress proxy as the session manager uses it."""

    async def attach(self, allow: list[str]) -> EgressAttach:
        """Start the proxy if needed; how a sandbox with ``allow`` joins it."""
        ...

    async def register(self, session_id: str, owner: str, sandbox: Sandbox,
                       allow: list[str]) -> None:
        """Tell the proxy which session a started sandbox is; point its tools at it."""
        ...

    def unregister(self, session_id: str) -> None:
        """Forget a closed session."""
        ...


class SandboxSpec(BaseModel):
    """Everything needed to start one sandbox."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workspace: Path
    mounts: tuple[BindMount, ...] = ()
    """Mounted after the workspace, in order (a later mount may cover part of an earlier)."""
    network: Network = "none"
    limits: SandboxLimits = SandboxLimits()
    uid: int = 1000
    gid: int = 1000
    labels: dict[str, str] = {}
    """Extra labels of the sandbox (with shared sessions: its owner and how to rebuild the
    session, so that another server finds it)."""
    egress: EgressAttach | None = None
    """Set for ``network="allowlist"``: the proxy network and environment."""


class HostStatus(BaseModel):
    """One engine (or node) a backend places sandboxes on, as health and doctor show it."""

    name: str
    url: str
    ok: bool
    sandboxes: int | None
    """Running sandbox containers of every server (None: not reachable)."""
    detail: str


@runtime_checkable
class ReportsHosts(Protocol):
    """A backend over several engines (``CODERX_DOCKER_HOSTS``) says how each one is."""

    async def status(self) -> list[HostStatus]:
        """Every engine, in configured order."""


class Sandbox(Protocol):
    """One running sandbox with its runner; every operation goes through :meth:`call`."""

    backend: str
    spec: SandboxSpec
    session_id: str
    lost_reason: str | None
    """Why the sandbox was lost, once known (None while alive or when no reason is known)."""

    @property
    def alive(self) -> bool:
        """False once the container or runner is known to be gone."""

    @property
    def ident(self) -> str:
        """Container or pod name (or a local label) for logs and ``session_info``."""

    async def start(self) -> None:
        """Create the container, start the runner, and wait for its hello."""

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        """Send one request to the runner and return its result.

        Raises:
            SandboxGone: The container or runner died; the message says why.
        """

    async def close(self) -> None:
        """Stop the runner and remove the container. Safe to call twice."""
