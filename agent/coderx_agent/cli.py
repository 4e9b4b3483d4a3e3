"""``coderx-agent``: the command line (headless ``-p`` runs, models, config, conversations).

Without ``-p`` it starts the interactive terminal (``repl``), which drives the same
``loop.Agent``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from coderx_agent import __version__
from coderx_agent.cli_admin import register
from coderx_agent.config import (
    LoadedConfig,
    flatten,
    load_config,
    project_config_path,
    user_config_path,
)
from coderx_agent.conversations import ConversationStore
from coderx_agent.errors import AgentError, UsageError
from coderx_agent.headless import OutputFormat, Printer, read_prompt, run_headless
from coderx_agent.keys import Keys
from coderx_agent.session import Request

app = typer.Typer(help="coderx-agent: a coding agent whose every tool runs in a container.",
                  add_completion=False, invoke_without_command=True,
                  context_settings={"help_option_names": ["-h", "--help"]})
models_app = typer.Typer(help="Models the configured providers offer.", no_args_is_help=True)
config_app = typer.Typer(help="Show and change the configuration.", no_args_is_help=True)
conv_app = typer.Typer(help="Saved conversations.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(config_app, name="config")
app.add_typer(conv_app, name="conversations")


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one line on stderr and return the exit to raise."""
    sys.stderr.write(f"error: {message}\n")
    return typer.Exit(code)


def configured(flags: dict[str, Any] | None = None) -> LoadedConfig:
    """The layered config for the current directory, or exit 2 with the problem."""
    try:
        return load_config(Path.cwd(), flags)
    except AgentError as exc:
        raise fail(str(exc), exc.exit_code) from None


@app.callback()
def main_command(
    ctx: typer.Context,
    prompt: Annotated[str | None, typer.Option(
        "-p", "--print", help="Run this prompt headless and exit ('-': read it from stdin).")]
    = None,
    output_format: Annotated[OutputFormat, typer.Option(
        "--output-format", help="text, json or stream-json.")] = OutputFormat.text,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="anthropic:<model>, ollama:<model> or an alias.")] = None,
    max_turns: Annotated[int | None, typer.Option(help="Model turns at most.", min=1)] = None,
    max_budget_usd: Annotated[float | None, typer.Option(
        help="Refuse a turn that would take the spend past this.")] = None,
    permission_mode: Annotated[str | None, typer.Option(
        help="ask, accept-edits, plan or yolo.")] = None,
    allow: Annotated[list[str] | None, typer.Option(
        help="Permission rule `tool` or `tool(glob)` that always runs (repeatable).")] = None,
    deny: Annotated[list[str] | None, typer.Option(
        help="Permission rule that never runs (repeatable).")] = None,
    server: Annotated[str | None, typer.Option(
        help="coderx-mcp over streamable HTTP at this URL (default: start it over stdio).")]
    = None,
    token: Annotated[str | None, typer.Option(
        help="Bearer token for --server.", envvar="CODERX_SERVER_TOKEN")] = None,
    workspace: Annotated[Path | None, typer.Option(
        help="Project directory (default: the current one).")] = None,
    continue_last: Annotated[bool, typer.Option(
        "--continue", "-c", help="Continue the last conversation of this directory.")] = False,
    resume: Annotated[str | None, typer.Option(
        "--resume", "-r", help="Resume the conversation with this id (a prefix is enough).")]
    = None,
    fork: Annotated[bool, typer.Option(
        "--fork", help="Continue a copy of the resumed conversation.")] = False,
    start_ollama: Annotated[bool, typer.Option(
        "--start-ollama", help="Start `ollama serve` (with the saved storage path) when "
        "nothing answers at ollama.host.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    """Run a prompt headless with -p; see the commands below for the rest."""
    if version:
        sys.stdout.write(f"coderx-agent {__version__}\n")
        raise typer.Exit(0)
    if ctx.invoked_subcommand is not None:
        return
    if fork and not (resume or continue_last):
        raise fail("--fork needs --continue or --resume", 2)
    flags: dict[str, Any] = {"model": model, "max_turns": max_turns,
                             "max_budget_usd": max_budget_usd, "server_url": server}
    if permission_mode:
        flags["permissions"] = {"mode": permission_mode}
    if start_ollama:
        flags["ollama"] = {"start": True}
    loaded = configured(flags)
    if prompt is None:
        raise typer.Exit(interactive(loaded, Request(
            workspace=(workspace or Path.cwd()).resolve(), server_token=token,
            continue_last=continue_last, resume=resume, fork=fork, allow=allow or [],
            deny=deny or [], model=model,
            permission_mode=loaded.config.permissions.mode if permission_mode else None)))
    text = read_prompt(prompt)
    if not text.strip():
        raise fail("the prompt is empty", 2)
    req = Request(workspace=(workspace or Path.cwd()).resolve(), server_token=token,
                  continue_last=continue_last, resume=resume, fork=fork, allow=allow or [],
                  deny=deny or [], model=model,
                  permission_mode=loaded.config.permissions.mode if permission_mode else None)
    if not req.workspace.is_dir():
        raise fail(f"the workspace {req.workspace} is not a directory", 2)
    printer = Printer(output_format, sys.stdout, sys.stderr)
    code = asyncio.run(run_headless(text, loaded.config, req, Keys(), ConversationStore(),
                                    printer))
    raise typer.Exit(code)


def interactive(loaded: LoadedConfig, req: Request) -> int:
    """Run the interactive terminal; one error line and its exit code when it cannot."""
    from coderx_agent.repl import commands
    from coderx_agent.repl.app import run_repl

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise fail("the interactive terminal needs a terminal; run a prompt with -p", 2)
    if not req.workspace.is_dir():
        raise fail(f"the workspace {req.workspace} is not a directory", 2)
    try:
        return asyncio.run(run_repl(loaded, req, Keys(), ConversationStore(), commands()))
    except AgentError as exc:
        raise fail(str(exc), exc.exit_code) from None


@models_app.command("list")
def models_list() -> None:
    """What each provider offers (Anthropic: the API's list; Ollama: the local models)."""
    from coderx_agent.models import PROVIDERS, make_model

    config = configured().config

    async def listing() -> None:
        for provider in PROVIDERS:
            try:
                model = make_model(provider, "-", config, Keys())
                try:
                    found = await model.list_models()
                finally:
                    await model.aclose()
            except AgentError as exc:
                sys.stdout.write(f"{provider}: unavailable ({exc})\n")
                continue
            for m in found:
                mark = "" if m.tools is not False else "  (no tool support: cannot be used)"
                sys.stdout.write(f"{m.name:<44} {m.description}{mark}\n")

    asyncio.run(listing())


@models_app.command("pull")
def models_pull(name: Annotated[str, typer.Argument(help="ollama:<model>")]) -> None:
    """Download an Ollama model, showing progress."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    from coderx_agent.models import resolve
    from coderx_agent.models.ollama import OllamaModel

    config = configured().config
    try:
        provider, model_id = resolve(name, config.aliases)
    except UsageError as exc:
        raise fail(str(exc), 2) from None
    if provider != "ollama":
        raise fail("only Ollama models are pulled", 2)
    model = OllamaModel(model_id, config.ollama)

    async def pull() -> None:
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                      console=None, transient=False) as bar:
            task = bar.add_task(model_id, total=None)

            def progress(status: str, done: int, total: int) -> None:
                bar.update(task, description=f"{model_id}: {status}", completed=done,
                           total=total or None)

            try:
                await model.pull(progress)
            finally:
                await model.aclose()

    try:
        asyncio.run(pull())
    except AgentError as exc:
        raise fail(str(exc)) from None


@config_app.command("show")
def config_show(origin: Annotated[bool, typer.Option(
        "--origin", help="Say which layer set each key.")] = False) -> None:
    """The effective configuration, one ``key = value`` a line."""
    loaded = configured()
    origins = loaded.origins()
    for key, value in flatten(loaded.config.model_dump(mode="json")).items():
        line = f"{key} = {json.dumps(value)}"
        sys.stdout.write(f"{line:<60} # {origins.get(key, 'default')}\n" if origin
                         else line + "\n")


def _target(project: bool) -> Path:
    return project_config_path(Path.cwd()) if project else user_config_path()


@config_app.command("set")
def config_set(key: str, value: str, project: Annotated[bool, typer.Option(
        "--project", help="Change .coderx/config.toml instead of the user's file.")] = False
               ) -> None:
    """Set one key (dotted: ``ollama.num_ctx``) in the user's or the project's file."""
    from coderx_agent.config_edit import parse_value, set_key

    path = _target(project)
    try:
        set_key(path, key, parse_value(value))
    except AgentError as exc:
        raise fail(str(exc), 2) from None
    sys.stderr.write(f"set {key} in {path}\n")


@config_app.command("unset")
def config_unset(key: str, project: Annotated[bool, typer.Option(
        "--project", help="Change .coderx/config.toml instead of the user's file.")] = False
                 ) -> None:
    """Remove one key from the user's or the project's file."""
    from coderx_agent.config_edit import unset_key

    path = _target(project)
    try:
        unset_key(path, key)
    except AgentError as exc:
        raise fail(str(exc), 2) from None
    sys.stderr.write(f"unset {key} in {path}\n")


@conv_app.command("list")
def conversations_list() -> None:
    """Saved conversations, newest first."""
    for h in ConversationStore().listing():
        sys.stdout.write(f"{h.id}  {h.model:<32} {h.cwd}\n")


register(app, models_app)


def main() -> None:
    """Console-script entry point."""
    app()
