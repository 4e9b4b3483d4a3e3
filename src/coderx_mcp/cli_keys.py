"""``coderx-mcp keys``: manage the encrypted key store from the terminal."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from coderx_mcp.errors import CoderxError
from coderx_mcp.keystore import PASSPHRASE_ENV, KeyStore, default_path, open_store

keys_app = typer.Typer(
    help="Manage the encrypted key store (default ~/.coder_x_key.enc). Its passphrase comes "
         f"from {PASSPHRASE_ENV} or a hidden prompt. A lost passphrase cannot be recovered: "
         "the keys are gone with it.",
    no_args_is_help=True)

FileOpt = Annotated[Path | None, typer.Option(
    "--file", help="Key store file (default $CODERX_KEY_FILE or ~/.coder_x_key.enc).")]


def _fail(message: str) -> typer.Exit:
    from coderx_mcp.cli import fail

    return fail(message)


def _secret(prompt: str, confirm: bool) -> str:
    """A secret from stdin when it is piped, else a hidden prompt."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().removesuffix("\n")
    value: str = typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm, err=True)
    return value


def _open(file: Path | None, creating: bool = False) -> KeyStore:
    path = (file or default_path()).expanduser()
    phrase = os.environ.get(PASSPHRASE_ENV)
    if not phrase:
        if not sys.stdin.isatty():
            raise _fail(f"no passphrase: set {PASSPHRASE_ENV} (stdin is not a terminal to ask)")
        phrase = typer.prompt("key store passphrase", hide_input=True,
                              confirmation_prompt=creating and not path.exists(), err=True)
    try:
        return open_store(path, phrase)
    except CoderxError as exc:
        raise _fail(str(exc)) from None


@keys_app.command("set")
def keys_set(name: Annotated[str, typer.Argument(help="Key name (becomes an env variable).")],
             file: FileOpt = None) -> None:
    """Store a key: the value from a hidden prompt, or from stdin when piped."""
    store = _open(file, creating=True)
    value = _secret(f"value of {name}", confirm=True)
    try:
        store.set(name, value)
    except CoderxError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"stored {name} in {store.path}", err=True)


@keys_app.command("list")
def keys_list(file: FileOpt = None) -> None:
    """List key names with their dates (never values)."""
    for k in _open(file).list():
        typer.echo(f"{k.name}\tcreated {k.created}\tupdated {k.updated}")


@keys_app.command("delete")
def keys_delete(name: Annotated[str, typer.Argument(help="Key name.")],
                file: FileOpt = None) -> None:
    """Delete a key."""
    store = _open(file)
    try:
        store.delete(name)
    except CoderxError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"deleted {name}", err=True)


@keys_app.command("rotate-passphrase")
def keys_rotate(file: FileOpt = None) -> None:
    """Re-encrypt every key under a new passphrase (hidden prompt, or stdin when piped).

    The file is replaced atomically: it holds either the old or the new encryption.
    """
    store = _open(file)
    new = _secret("new passphrase", confirm=True)
    try:
        store.rotate(new)
    except CoderxError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"re-encrypted {store.path} under the new passphrase", err=True)
