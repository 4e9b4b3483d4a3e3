"""``coderx-agent`` commands for the account, the installation and local models:
``login``, ``logout``, ``whoami``, ``doctor``, ``update`` and ``models storage-path|load|
unload|rm``. Registered on the main app by ``cli``."""

from __future__ import annotations

import asyncio
import getpass
import os
import subprocess
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer

from coderx_agent.config import AgentConfig, load_config, user_config_path
from coderx_agent.errors import AgentError
from coderx_agent.keys import Keys


def _fail(message: str, code: int = 1) -> typer.Exit:
    sys.stderr.write(f"error: {message}\n")
    return typer.Exit(code)


def _config() -> AgentConfig:
    try:
        return load_config(Path.cwd()).config
    except AgentError as exc:
        raise _fail(str(exc), exc.exit_code) from None


def _passphrase() -> str | None:
    from coderx_mcp.keystore import PASSPHRASE_ENV

    return os.environ.get(PASSPHRASE_ENV) or getpass.getpass("key store passphrase: ") or None


def _run(work: Coroutine[Any, Any, None]) -> None:
    try:
        asyncio.run(work)
    except AgentError as exc:
        raise _fail(str(exc), exc.exit_code) from None


def _ollama_model(name: str, config: AgentConfig) -> str:
    from coderx_agent.models import resolve

    try:
        known = name in config.aliases or name.startswith(("ollama:", "anthropic:"))
        provider, model_id = resolve(name if known else f"ollama:{name}", config.aliases)
    except AgentError as exc:
        raise _fail(str(exc), 2) from None
    if provider != "ollama":
        raise _fail("only Ollama models are loaded, unloaded or removed", 2)
    return model_id


def register(app: typer.Typer, models_app: typer.Typer) -> None:
    """Add the commands to ``app`` and ``models_app``."""

    @app.command("login")
    def login_command(provider: Annotated[str, typer.Argument(
            help="anthropic or ollama")] = "anthropic") -> None:
        """Store a provider's API key in the key store (asked for, not shown)."""
        from coderx_agent.account import login

        value = getpass.getpass(f"{provider} API key (not shown): ")
        try:
            fp = login(provider, value, _passphrase())
        except AgentError as exc:
            raise _fail(str(exc), exc.exit_code) from None
        sys.stdout.write(f"stored the {provider} key {fp}\n")

    @app.command("logout")
    def logout_command(provider: Annotated[str, typer.Argument(
            help="anthropic or ollama")] = "anthropic") -> None:
        """Remove a provider's API key from the key store."""
        from coderx_agent.account import logout

        try:
            logout(provider, _passphrase())
        except AgentError as exc:
            raise _fail(str(exc), exc.exit_code) from None
        sys.stdout.write(f"removed the {provider} key\n")

    @app.command("whoami")
    def whoami_command() -> None:
        """Which providers have keys (fingerprints only) and the model each would use."""
        from coderx_agent.account import whoami

        for line in whoami(Keys(), _config()):
            sys.stdout.write(line + "\n")

    @app.command("doctor")
    def doctor_command() -> None:
        """Check Python, the server, Docker, keys, providers and storage; one line each."""
        from coderx_agent.doctor import run_checks

        checks = asyncio.run(run_checks(Path.cwd(), Keys()))
        for c in checks:
            sys.stdout.write(c.line() + "\n")
        raise typer.Exit(0 if all(c.ok for c in checks) else 1)

    @app.command("update")
    def update_command(
            index_url: Annotated[str | None, typer.Option(
                "--index-url", help="Package index to upgrade from.",
                envvar="PIP_INDEX_URL")] = None,
            dry_run: Annotated[bool, typer.Option(
                "--dry-run", help="Print the command instead of running it.")] = False,
    ) -> None:
        """Upgrade coderx with the installer that installed it (pip, pipx or uv)."""
        from coderx_agent.update import installer, upgrade_argv

        kind = installer()
        argv = upgrade_argv(kind, index_url)
        sys.stdout.write(f"installed with {kind}: {' '.join(argv)}\n")
        if dry_run:
            return
        try:
            code = subprocess.run(argv, check=False).returncode
        except FileNotFoundError:
            raise _fail(f"{argv[0]} is not on PATH; upgrade by hand") from None
        raise typer.Exit(code)

    @models_app.command("storage-path")
    def storage_path(
            path: Annotated[Path, typer.Argument(help="Directory for Ollama's models.")],
            min_free: Annotated[str, typer.Option(
                "--min-free", help="Free space it must have (20G).")] = "0",
    ) -> None:
        """Check a directory for Ollama's models and save it (OLLAMA_MODELS)."""
        from coderx_agent.config_edit import set_key
        from coderx_agent.ollama_admin import check_storage, parse_size

        target = path.expanduser().absolute()
        try:
            check_storage(target, parse_size(min_free))
            set_key(user_config_path(), "ollama.models_path", str(target))
        except AgentError as exc:
            raise _fail(str(exc), exc.exit_code) from None
        sys.stdout.write(f"Ollama models will be stored in {target}\n")

    def admin(action: str, done: str, help_text: str,
              call: Callable[[Any, str], Coroutine[Any, Any, None]]) -> None:
        @models_app.command(action, help=help_text)
        def command(name: Annotated[str, typer.Argument(help="ollama:<model>")]) -> None:
            config = _config()
            model_id = _ollama_model(name, config)
            _run(call(config.ollama, model_id))
            sys.stdout.write(f"{done} {model_id}\n")

    from coderx_agent import ollama_admin

    admin("load", "loaded", "Load an Ollama model into memory (keep_alive 30m).",
          ollama_admin.load)
    admin("unload", "unloaded", "Unload an Ollama model from memory (keep_alive 0).",
          ollama_admin.unload)
    admin("rm", "removed", "Delete an Ollama model from its storage.", ollama_admin.remove)
