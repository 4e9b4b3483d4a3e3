"""``coderx-mcp``: serve the tools, build the sandbox image, try a tool from the terminal."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import structlog
import typer
from pydantic import ValidationError
from rich.console import Console

from coderx_mcp import __version__
from coderx_mcp.cli_history import history_app
from coderx_mcp.cli_keys import keys_app
from coderx_mcp.cli_ops import doctor, sessions_app
from coderx_mcp.cli_tokens import tokens_app
from coderx_mcp.config import Settings
from coderx_mcp.errors import CoderxError
from coderx_mcp.logs import configure_logging
from coderx_mcp.startup import started

app = typer.Typer(help="Coder-X MCP: container-isolated coding tools for AI agents.",
                  no_args_is_help=True, add_completion=False,
                  rich_markup_mode=None)  # plain click help: no <bool> on flags


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"coderx-mcp {__version__}\n")
        raise typer.Exit()


@app.callback()
def _main(ctx: typer.Context, version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print the version and exit.")] = False) -> None:
    """Coder-X MCP: container-isolated coding tools for AI agents."""
    if ctx.invoked_subcommand != "serve":
        started()  # only serve keeps the collector off until it has answered (startup.py)
image_app = typer.Typer(help="Build and inspect the sandbox image.", no_args_is_help=True,
                        rich_markup_mode=None)
app.add_typer(image_app, name="image")
app.add_typer(keys_app, name="keys")
app.add_typer(history_app, name="history")
app.add_typer(tokens_app, name="tokens")
app.add_typer(sessions_app, name="sessions")
app.command()(doctor)
err = Console(stderr=True, soft_wrap=True)  # one error, one line, whatever the width


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one readable line on stderr and return the exit to raise."""
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def load_settings(**overrides: Any) -> Settings:
    """Settings from ``CODERX_*`` variables plus command-line overrides."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors(include_input=False, include_url=False))
        raise fail(f"invalid settings: {problems}") from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _serve(settings: Settings, http: bool, host: str, port: int) -> None:
    from coderx_mcp.server import build_server
    from coderx_mcp.server.app import App
    from coderx_mcp.server.stdio import run_stdio

    apps: list[App] = []

    def ready(app: App) -> None:
        apps.append(app)
        if http:  # listening now; a stdio start ends with its first answer (below)
            started()

    mcp = build_server(settings, http=http, on_ready=ready,
                       on_answered=None if http else started)
    loop = asyncio.get_running_loop()

    async def stop(sig: signal.Signals) -> None:
        # The stdio reader blocks in a thread that cannot be cancelled, so unwinding the
        # lifespan is not enough: remove every sandbox here, then leave.
        log = structlog.get_logger("coderx.server")
        log.info("shutting down", signal=sig.name)
        for a in apps:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(a.sessions.shutdown(), 20)
        sys.stdout.flush()
        os._exit(0)

    stopping: list[asyncio.Task[None]] = []

    def on_signal(sig: signal.Signals) -> None:
        stopping.append(loop.create_task(stop(sig)))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    if http:
        from starlette.middleware import Middleware

        from coderx_mcp.server.envelope import JsonRpcEnvelope
        from coderx_mcp.server.http_guard import HttpGuard

        guard = Middleware(HttpGuard, max_body=settings.max_request_bytes,
                           failures_per_minute=settings.auth_failures_per_minute)
        await mcp.run_async("http", show_banner=False, host=host, port=port,
                            host_origin_protection=True,
                            middleware=[guard, Middleware(JsonRpcEnvelope)],
                            allowed_hosts=list(settings.allowed_hosts) or None)
    else:
        await run_stdio(mcp)


def _workspace_overrides(dirs: list[Path] | None) -> dict[str, Any]:
    """``--workspace A --workspace B``: default A, allowed roots A and B."""
    if not dirs:
        return {}
    resolved = [d.expanduser().absolute() for d in dirs]
    return {"workspace": resolved[0], "workspace_roots": resolved}


def _check_workspaces(settings: Settings, http: bool = False) -> None:
    """Refuse a bad --workspace or root at start, in one line (not at the first tool call)."""
    from coderx_mcp.workspace.policy import WorkspacePolicy, sandbox_ids

    try:
        policy = WorkspacePolicy.from_settings(settings, Path.cwd(), http)
        if policy.default is not None and settings.backend == "docker":
            sandbox_ids(policy.default, settings)
    except CoderxError as exc:
        raise fail(str(exc)) from None


@app.command()
def serve(
    http: Annotated[bool, typer.Option("--http", help="Serve streamable HTTP instead of stdio.")]
    = False,
    host: Annotated[str, typer.Option(help="HTTP bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8765,
    workspace: Annotated[list[Path] | None, typer.Option(
        help="Allowed workspace root (repeatable); the first is the default session's "
             "workspace. Default: the MCP host's roots, else the current directory (unless "
             "it is /, your home or a system directory: then scratch directories).")] = None,
    sandbox_uid: Annotated[int | None, typer.Option(
        help="Run sandboxes as this uid (default: the workspace owner's; never root).")]
    = None,
    backend: Annotated[str | None, typer.Option(help="docker (default), kubernetes, local")] = None,
    log_json: Annotated[bool, typer.Option("--log-json", help="Logs as JSON lines.")] = False,
    log_format: Annotated[str | None, typer.Option(
        "--log-format", help="console or json (JSON lines).")] = None,
    allowed_host: Annotated[list[str] | None, typer.Option(
        "--allowed-host", help="Extra Host header value HTTP accepts (repeatable).")] = None,
    insecure_no_auth: Annotated[bool, typer.Option(
        "--insecure-no-auth", help="Allow a non-loopback HTTP bind without authentication.")]
    = False,
    allow_network: Annotated[bool, typer.Option(
        "--allow-network", help="Let session_open ask for network='bridge' (off by default: "
        "network is the operator's decision).")] = False,
    log_file: Annotated[Path | None, typer.Option(
        help="Append logs to this file instead of stderr.")] = None,
) -> None:
    """Run the MCP server (stdio by default: what an MCP host launches)."""
    if log_format not in (None, "console", "json"):
        raise fail(f"--log-format takes console or json, got {log_format!r}")
    log_json = log_json or log_format == "json"
    settings = load_settings(**_workspace_overrides(workspace), sandbox_uid=sandbox_uid,
                             backend=backend, log_json=log_json or None,
                             allowed_hosts=allowed_host or None,
                             allow_network=allow_network or None, log_file=log_file)
    try:
        configure_logging(settings.log_level, settings.log_json, settings.log_file)
    except OSError as exc:
        raise fail(f"cannot open the log file {settings.log_file}: {exc.strerror}") from None
    if (http and not _is_loopback(host) and not settings.http_tokens
            and not settings.tokens_path.exists() and not insecure_no_auth):
        raise fail(f"refusing to serve HTTP on {host} without authentication; create "
                   "a token (coderx-mcp tokens create NAME) or set CODERX_HTTP_TOKENS, bind "
                   "127.0.0.1, or pass --insecure-no-auth behind your "
                   "own authenticating proxy")
    _check_workspaces(settings, http)
    asyncio.run(_serve(settings, http, host, port))


@image_app.command("build")
def image_build(
    image: Annotated[str | None, typer.Option(help="Image name.")] = None,
    base: Annotated[str | None, typer.Option(
        help="Base image (default: python:3.12-slim when a registry answers, else an offline "
             "Debian base made with debootstrap).")] = None,
    if_stale: Annotated[bool, typer.Option(
        "--if-stale", help="Do nothing when the image exists and matches this version.")]
    = False,
    with_: Annotated[str | None, typer.Option(
        "--with", help="Add language toolchains from Debian packages, comma-separated: "
                       "node (nodejs, npm), go (golang-go).")] = None,
) -> None:
    """Build the sandbox image, showing progress."""
    import docker

    from coderx_mcp.image import ImageBuildError, build_image, image_status
    from coderx_mcp.toolchains import has_toolchains, parse_with

    try:
        toolchains = parse_with(with_)
    except ValueError as exc:
        raise fail(str(exc)) from None
    settings = load_settings(image=image)
    configure_logging(settings.log_level, settings.log_json)
    try:
        client = docker.from_env(timeout=600)
        if if_stale and image_status(client, settings.image).up_to_date and \
                has_toolchains(client.images.get(settings.image).labels, toolchains):
            err.print(f"{settings.image} is up to date")
            return
        with err.status(f"building {settings.image}…") as status:
            def progress(line: str) -> None:
                err.print(line, markup=False, highlight=False)
                status.update(f"building {settings.image}: {line[:60]}")

            image_id = build_image(client, settings.image, base_image=base,
                                   on_progress=progress, toolchains=toolchains,
                                   wheels_dir=settings.image_wheels)
    except (ImageBuildError, docker.errors.DockerException) as exc:
        raise fail(str(exc)) from None
    err.print(f"[green]built[/] {settings.image} ({image_id[:19]})")


@image_app.command("status")
def image_status_cmd(image: Annotated[str | None, typer.Option(help="Image name.")] = None
                     ) -> None:
    """Say whether the sandbox image is up to date; print its size, Python and tools."""
    import docker

    from coderx_mcp.image import image_report, image_status, missing_image_message

    settings = load_settings(image=image)
    try:
        client = docker.from_env()
        status = image_status(client, settings.image)
        report = image_report(client, settings.image) if status.exists else []
    except docker.errors.DockerException as exc:
        raise fail(f"cannot reach the Docker engine: {exc}") from None
    sys.stdout.write("".join(f"  {line}\n" for line in report))
    if not status.up_to_date:
        raise fail(missing_image_message(settings.image))
    err.print(f"{settings.image} is up to date ({status.context_hash})")


def _accepts_string(prop: dict[str, Any]) -> bool:
    types = [prop.get("type")] + [alt.get("type") for alt in prop.get("anyOf", [])]
    return "string" in types


def _parse_args(pairs: list[str], schema: dict[str, Any]) -> dict[str, Any]:
    """``key=value`` pairs typed by the tool's input schema: text stays text where the
    parameter takes a string, anything else is read as JSON (numbers, booleans, lists)."""
    props: dict[str, Any] = schema.get("properties", {})
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise fail(f"--arg takes key=value, got {pair!r}")
        if _accepts_string(props.get(key, {"type": "string"})):
            out[key] = raw
            continue
        try:
            out[key] = json.loads(raw)
        except ValueError:
            raise fail(f"--arg {key}= needs a JSON value (a number, true/false, a list…), "
                       f"got {raw!r}") from None
    return out


@app.command()
def tools(
    as_json: Annotated[bool, typer.Option(
        "--json", help="Every tool as MCP lists it: description, input and output schema.")]
    = False,
) -> None:
    """List the tools this server publishes.

    One line each: name, read-only or writes, the description's first sentence.
    """
    from coderx_mcp.server import build_server

    mcp = build_server(Settings(pool_size=0))

    async def listing() -> list[Any]:
        return [t.to_mcp_tool() for t in await mcp.list_tools()]

    listed = asyncio.run(listing())
    if as_json:
        sys.stdout.write(json.dumps([t.model_dump(mode="json", by_alias=True, exclude_none=True)
                                     for t in listed], indent=2) + "\n")
        return
    for t in listed:
        ann = t.annotations
        flag = "read-only" if ann and ann.read_only_hint else "writes"
        sys.stdout.write(f"{t.name:<16} {flag:<9} {_first_sentence(t.description or '')}\n")


def _first_sentence(doc: str) -> str:
    """The first sentence of a description, whole even when it spans lines."""
    flat = " ".join(doc.split())
    end = flat.find(". ")
    return flat if end < 0 else flat[:end + 1]


@app.command()
def call(
    tool: Annotated[str, typer.Argument(metavar="TOOL",
                                        help="Tool name (see `coderx-mcp tools`).")],
    arg: Annotated[list[str] | None, typer.Option(
        "--arg", "-a", metavar="KEY=VALUE", help="Tool argument (repeatable).")] = None,
    workspace: Annotated[Path | None, typer.Option(
        help="Host directory mounted at /workspace (default: a throwaway scratch dir).")] = None,
    sandbox_uid: Annotated[int | None, typer.Option(
        help="Run the sandbox as this uid (default: the workspace owner's; never root).")]
    = None,
    backend: Annotated[str | None, typer.Option(help="docker (default), kubernetes, local")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the structured result.")]
    = False,
) -> None:
    """Run one tool in a throwaway session and print its result."""
    from fastmcp import Client

    from coderx_mcp.server import build_server

    # No workspace: a scratch directory, whatever the current directory is.
    overrides = _workspace_overrides([workspace]) if workspace else {"client_roots": False,
                                                                        "use_cwd": False}
    settings = load_settings(**overrides, sandbox_uid=sandbox_uid, backend=backend, pool_size=0)
    # Only what cannot be reported otherwise: a tool error is printed once, as the result.
    configure_logging("critical", settings.log_json)
    _check_workspaces(settings)

    async def run() -> Any:
        async with Client(build_server(settings)) as client:
            known = {t.name: t for t in await client.list_tools()}
            if tool not in known:
                raise fail(f"no tool named {tool!r}; `coderx-mcp tools` lists them")
            arguments = _parse_args(arg or [], known[tool].input_schema)
            return await client.call_tool(tool, arguments, raise_on_error=False)

    try:
        res = asyncio.run(run())
    except CoderxError as exc:
        raise fail(str(exc)) from None
    text = "\n".join(getattr(c, "text", "") for c in res.content)
    if res.is_error:
        # The whole message: an edit miss's diagnosis or a regex error spans several lines.
        sys.stderr.write(f"error: {text.strip() or 'the tool failed'}\n")
        raise typer.Exit(1)
    data = _result_data(res.structured_content, res.meta, text)
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        sys.stdout.write(text + ("\n" if not text.endswith("\n") else ""))
    code = data.get("exit_code")
    if isinstance(code, int) and code:  # a command's status, so `call` is scriptable
        raise typer.Exit(code if 0 < code < 256 else 1)


def _result_data(structured: dict[str, Any] | None, meta: dict[str, Any] | None,
                 text: str) -> dict[str, Any]:
    """A result as one JSON object: structured content, or a payload tool's facts and text."""
    from coderx_mcp.tools.common import META_KEY

    if structured is not None:
        return structured
    return {**(meta or {}).get(META_KEY, {}), "text": text}


@app.command()
def version() -> None:
    """Print the version."""
    sys.stdout.write(f"coderx-mcp {__version__}\n")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
