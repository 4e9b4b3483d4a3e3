"""Slash commands about the project, the account and diagnostics."""

from __future__ import annotations

import os
import shlex

from rich.text import Text

from coderx_agent import __version__
from coderx_agent.account import login, logout, whoami
from coderx_agent.bugreport import config_lines, issue_text, secrets_of, write_bundle
from coderx_agent.config import flatten, project_config_path
from coderx_agent.config_edit import load_doc, save_doc
from coderx_agent.doctor import run_checks
from coderx_agent.errors import UsageError
from coderx_agent.repl.core import Command, Repl
from coderx_agent.servers import ToolHub


def hub_of(repl: Repl) -> ToolHub | None:
    """The agent's MCP servers (None when its tools are not a ``ToolHub``)."""
    tools = repl.agent.tools
    return tools if isinstance(tools, ToolHub) else None


async def cmd_config(repl: Repl, _arg: str) -> None:
    """The effective configuration and where each key came from."""
    loaded = repl.loaded
    values = flatten(loaded.config.model_dump(mode="json"))
    for line in config_lines(values, loaded.origins()):
        repl.console.print(Text(line))


async def cmd_status(repl: Repl, _arg: str) -> None:
    """Version, project, conversation file, model, mode and the servers."""
    a = repl.agent
    hub = hub_of(repl)
    servers = ", ".join(f"{s.name} ({'up' if s.connected else 'down'})"
                        for s in hub.servers) if hub else "-"
    for line in (f"coderx-agent {__version__}", f"project: {repl.workspace}",
                 f"conversation: {a.conversation.path}", f"model: {a.model.name}",
                 f"permission mode: {a.permissions.mode}", f"MCP servers: {servers}",
                 f"vi mode: {'on' if repl.vi_mode else 'off'}", repl.status().strip()):
        repl.console.print(Text(line))


async def cmd_mcp(repl: Repl, arg: str) -> None:
    """The MCP servers, their status and tools; `add NAME COMMAND…|URL`, `remove NAME`."""
    words = shlex.split(arg)
    path = project_config_path(repl.workspace)
    if words and words[0] in ("add", "remove"):
        if len(words) < 2 or (words[0] == "add" and len(words) < 3):
            raise UsageError("use /mcp add NAME COMMAND [ARGS…] (or NAME URL), "
                             "/mcp remove NAME")
        name = words[1]
        doc = load_doc(path)
        servers = doc.setdefault("mcpServers", {})
        if words[0] == "remove":
            if name not in servers:
                raise UsageError(f"no MCP server {name!r} in {path}")
            del servers[name]
        else:
            target = words[2:]
            entry = ({"url": target[0]} if target[0].startswith(("http://", "https://"))
                     else {"command": target[0], "args": target[1:]})
            servers[name] = entry
        save_doc(path, doc)
        done = "added to" if words[0] == "add" else "removed from"
        repl.console.print(f"{name} {done} {path}; it takes effect when coderx-agent starts "
                           "again")
        return
    if words:
        raise UsageError(f"unknown /mcp action {words[0]!r}: use add or remove")
    hub = hub_of(repl)
    for s in hub.servers if hub else []:
        repl.console.print(Text(f"{s.name}: {'connected' if s.connected else 'not connected'}"
                                f", {len(s.tools)} tools", style="bold"))
        repl.console.print(Text("  " + ", ".join(sorted(s.tools)), style="dim"))


async def cmd_connect(repl: Repl, arg: str) -> None:
    """Connect a third-party service: ``/mcp add`` under another name."""
    await cmd_mcp(repl, f"add {arg}")


async def _passphrase(repl: Repl) -> str | None:
    from coderx_mcp.keystore import PASSPHRASE_ENV

    return os.environ.get(PASSPHRASE_ENV) or (
        await repl.prompter.ask("key store passphrase: ", hidden=True)) or None


async def cmd_login(repl: Repl, arg: str) -> None:
    """Store a provider's API key in the key store (hidden prompt)."""
    provider = arg or "anthropic"
    value = await repl.prompter.ask(f"{provider} API key (not shown): ", hidden=True)
    fp = login(provider, value, await _passphrase(repl), repl.keys.store_path())
    repl.console.print(f"stored the {provider} key {fp}; it is used from the next start")


async def cmd_logout(repl: Repl, arg: str) -> None:
    """Remove a provider's API key from the key store."""
    provider = arg or "anthropic"
    logout(provider, await _passphrase(repl), repl.keys.store_path())
    repl.console.print(f"removed the {provider} key from the key store")


async def cmd_whoami(repl: Repl, _arg: str) -> None:
    """Which providers have keys (fingerprints only) and the model each would use."""
    for line in whoami(repl.keys, repl.loaded.config):
        repl.console.print(Text(line))


async def cmd_doctor(repl: Repl, _arg: str) -> None:
    """Check the installation: one line each, with the fix."""
    for check in await run_checks(repl.workspace, repl.keys, hub_of(repl)):
        repl.console.print(Text(check.line(), style="" if check.ok else "red"))


async def cmd_bug(repl: Repl, _arg: str) -> None:
    """Write a bug-report bundle (secrets redacted; nothing is sent)."""
    loaded = repl.loaded
    values = flatten(loaded.config.model_dump(mode="json"))
    doctor = [c.line() for c in await run_checks(repl.workspace, repl.keys, hub_of(repl))]
    token = repl.req.server_token
    secrets = secrets_of(repl.keys, os.environ, loaded.config,
                         [("server_token", token)] if token else [])
    path = write_bundle(config_lines(values, loaded.origins()), doctor,
                        list(repl.renderer.events), secrets)
    repl.console.print(f"bug report written to {path} (nothing was sent)")
    repl.console.print(Text(issue_text(path), style="dim"))


ADMIN_COMMANDS = (
    Command("/mcp", "[add NAME CMD…|URL | remove NAME]",
            "MCP servers, status and tools; add or remove one", cmd_mcp),
    Command("/connect", "NAME COMMAND…|URL", "connect a service (same as /mcp add)",
            cmd_connect),
    Command("/config", "", "the configuration and where each key came from", cmd_config),
    Command("/status", "", "version, project, conversation, model, servers", cmd_status),
    Command("/doctor", "", "check the installation", cmd_doctor),
    Command("/login", "[provider]", "store an API key in the key store", cmd_login),
    Command("/logout", "[provider]", "remove an API key from the key store", cmd_logout),
    Command("/whoami", "", "which providers have keys (fingerprints)", cmd_whoami),
    Command("/bug", "", "write a bug-report bundle (secrets redacted)", cmd_bug),
)
