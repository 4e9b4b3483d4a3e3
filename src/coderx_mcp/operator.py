"""What an operator on the machine sees and removes: every server's sandboxes, by label.

Sessions live in a server's memory; their containers carry the owning server's identity
(pid, start time, host), so they can be listed, killed and pruned from outside.
"""

from __future__ import annotations

import docker
from pydantic import BaseModel

from coderx_mcp.config import Settings
from coderx_mcp.sandbox.docker import remove_container, remove_network
from coderx_mcp.sandbox.instance import (
    LABEL_MANAGED,
    LABEL_PID,
    LABEL_SESSION,
    Instance,
    owner_is_gone,
)


class SandboxRow(BaseModel):
    """One sandbox container as ``sessions list`` shows it."""

    session: str
    container: str
    status: str
    server_pid: str
    server_alive: bool
    created: str


def list_sandboxes(client: docker.DockerClient) -> list[SandboxRow]:
    """Every sandbox container on this engine, oldest first."""
    here = Instance.current()
    rows = []
    for c in client.containers.list(all=True, filters={"label": LABEL_MANAGED},
                                    ignore_removed=True):
        labels = c.labels
        rows.append(SandboxRow(session=labels.get(LABEL_SESSION, "?"), container=c.short_id,
                               status=c.status, server_pid=labels.get(LABEL_PID, "?"),
                               server_alive=not owner_is_gone(labels, here),
                               created=c.attrs.get("Created", "")[:19]))
    return sorted(rows, key=lambda r: r.created)


def kill_session(client: docker.DockerClient, session_id: str) -> int:
    """Remove the containers of one session (its server reports the loss on the next
    call); returns how many."""
    found = client.containers.list(all=True, filters={"label": f"{LABEL_SESSION}={session_id}"},
                                   ignore_removed=True)
    for c in found:
        remove_container(client, c.id)
    for n in client.networks.list(filters={"label": f"{LABEL_SESSION}={session_id}"}):
        remove_network(client, n.name)
    return len(found)


async def prune(settings: Settings) -> tuple[int, int]:
    """Remove the containers, networks and workspaces of servers that are gone (what a
    starting server does); returns (containers, workspaces) removed."""
    from coderx_mcp.sandbox.backends import make_backend
    from coderx_mcp.workspace.prepare import Workspaces

    instance = Instance.current()
    workspaces = await Workspaces(settings, instance).reap_dead()
    containers = await make_backend(settings, instance).reap_orphans()
    return containers, workspaces

