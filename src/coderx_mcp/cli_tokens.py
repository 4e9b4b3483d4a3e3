"""``coderx-mcp tokens``: managed HTTP tokens (a token is shown once, only its hash kept)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from coderx_mcp.errors import ConfigError
from coderx_mcp.principals import PrincipalPolicy, TokenStore

tokens_app = typer.Typer(help="Create, list and revoke the HTTP server's bearer tokens.",
                         no_args_is_help=True)


def _store() -> TokenStore:
    from coderx_mcp.cli import load_settings

    return TokenStore(load_settings().tokens_path)


@tokens_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Principal name (owns the token's sessions).")],
    roots: Annotated[list[Path] | None, typer.Option(
        "--roots", help="Directory this principal's sessions may mount (repeatable); the "
                        "first is its default workspace. Default: the server's roots.")] = None,
    max_sessions: Annotated[int | None, typer.Option(help="Sessions open at once.")] = None,
    max_commands: Annotated[int | None, typer.Option(
        help="run_command calls running at once.")] = None,
    cpus: Annotated[float | None, typer.Option(help="Default CPU quota of a session.")] = None,
    memory: Annotated[str | None, typer.Option(help="Default memory limit (512m, 2g).")]
    = None,
    network: Annotated[bool | None, typer.Option(
        "--network/--no-network", help="May its sessions ask for network access.")] = None,
    egress: Annotated[list[str] | None, typer.Option(
        "--egress", help="Host (pypi.org) or *.domain its network='allowlist' sessions may "
                         "reach (repeatable). Default: the server's CODERX_EGRESS__ALLOW.")]
    = None,
    admin: Annotated[bool, typer.Option(help="May see every principal's sessions in "
                                              "/healthz?verbose.")] = False,
) -> None:
    """Create a token and print it once on stdout (only its hash is stored)."""
    from pydantic import ValidationError

    from coderx_mcp.cli import fail

    resolved = []
    for r in roots or []:
        path = r.expanduser().absolute()
        if not path.is_dir():
            raise fail(f"--roots {r}: no such directory")
        resolved.append(path.resolve())
    try:
        policy = PrincipalPolicy(roots=tuple(resolved), max_sessions=max_sessions,
                                 max_commands=max_commands, cpus=cpus, memory=memory,
                                 network=network, admin=admin,
                                 egress=None if egress is None else tuple(egress))
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        raise fail(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}") from None
    try:
        token = _store().create(name, policy)
    except (ConfigError, OSError) as exc:
        raise fail(str(exc)) from None
    sys.stdout.write(token + "\n")
    typer.echo(f"token for {name!r} created; it is not shown again. Restart a server started "
               "before the first token was created (its authentication is decided at start).",
               err=True)


@tokens_app.command("list")
def list_tokens() -> None:
    """List the principals with a token: name, created, last used, policy (never tokens)."""
    from coderx_mcp.cli import fail

    try:
        records = _store().list()
    except ConfigError as exc:
        raise fail(str(exc)) from None
    for r in records:
        used = r.last_used.isoformat(timespec="seconds") if r.last_used else "never"
        policy = r.policy.model_dump(mode="json", exclude_defaults=True)
        sys.stdout.write(f"{r.name}\tcreated {r.created.isoformat(timespec='seconds')}\t"
                         f"last used {used}\t{policy}\n")


@tokens_app.command("revoke")
def revoke(name: Annotated[str, typer.Argument(help="Principal name.")]) -> None:
    """Revoke a principal's token: refused from its next request on, no restart needed."""
    from coderx_mcp.cli import fail

    try:
        _store().revoke(name)
    except (ConfigError, OSError) as exc:
        raise fail(str(exc)) from None
    typer.echo(f"token of {name!r} revoked", err=True)
