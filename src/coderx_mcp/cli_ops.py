"""``coderx-mcp doctor`` and ``coderx-mcp sessions``: for an operator on the machine."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    import docker

sessions_app = typer.Typer(help="List, kill and prune the sandboxes of every server on this "
                                "machine.", no_args_is_help=True)


def doctor(port: Annotated[int, typer.Option(help="The HTTP port to check.")] = 8765) -> None:
    """Check Docker, the image, directories, tokens, key store, port, roots, clock and disk:
    one line each, with the fixing command; exit status 1 when something is wrong."""
    from coderx_mcp.cli import load_settings
    from coderx_mcp.doctor import run_checks

    checks = run_checks(load_settings(), port)
    for c in checks:
        mark = "ok  " if c.ok else "FAIL"
        fix = f"  → {c.fix}" if not c.ok and c.fix else ""
        sys.stdout.write(f"{mark} {c.name}: {c.detail}{fix}\n")
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


def _client() -> docker.DockerClient:
    import docker

    from coderx_mcp.cli import fail

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise fail(f"cannot reach the Docker engine: {exc}") from None
    return client


@sessions_app.command("list")
def list_cmd() -> None:
    """Every sandbox: session id, container, state, owning server and whether it runs."""
    from coderx_mcp.operator import list_sandboxes

    for r in list_sandboxes(_client()):
        owner = "running" if r.server_alive else "gone"
        sys.stdout.write(f"{r.session}\t{r.container}\t{r.status}\tserver {r.server_pid} "
                         f"({owner})\t{r.created}\n")


@sessions_app.command("kill")
def kill_cmd(session: Annotated[str, typer.Argument(help="Session id (s-…).")]) -> None:
    """Remove a session's container; its server reports the loss on the next call."""
    from coderx_mcp.cli import fail
    from coderx_mcp.operator import kill_session

    if kill_session(_client(), session) == 0:
        raise fail(f"no sandbox of session {session!r}; `coderx-mcp sessions list` shows them")
    typer.echo(f"session {session} killed", err=True)


@sessions_app.command("prune")
def prune_cmd() -> None:
    """Remove the containers, networks and workspaces of servers that are gone."""
    from coderx_mcp.cli import load_settings
    from coderx_mcp.operator import prune

    _client()
    containers, workspaces = asyncio.run(prune(load_settings()))
    typer.echo(f"removed {containers} container(s) and {workspaces} workspace(s) of servers "
               "that are gone", err=True)
