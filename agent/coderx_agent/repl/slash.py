"""Slash commands about the conversation: each a small function ``(repl, arg)``.

The account, project and diagnostics commands are in ``slash_admin``; ``commands()``
gathers both for the terminal and ``/help``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import cast, get_args

from rich.table import Table
from rich.text import Text

from coderx_agent.config import PermissionMode
from coderx_agent.errors import UsageError
from coderx_agent.loop import system_prompt
from coderx_agent.memory import load_memory, repo_root
from coderx_agent.messages import Message, TextBlock, ToolResultBlock, ToolUseBlock
from coderx_agent.models import PROVIDERS, make_model, resolve
from coderx_agent.pricing import price_of
from coderx_agent.repl.core import Command, Repl
from coderx_agent.repl.diffs import coloured, unified
from coderx_agent.repl.render import Renderer

INIT_PROMPT = (
    "Write the project memory file CODERX.md for this repository. Look at it with the "
    "tools first (list the files, read the README, the build and test configuration, a "
    "few source files). Cover: what the project is, its layout (main directories and "
    "what lives where), how to build, run and test it (exact commands), and the coding "
    "conventions you see. Be concise: at most about 60 lines. Do not write any file: "
    "reply with the file's complete markdown content only, nothing before or after it.")

REVIEW_PROMPT = (
    "Review {what}. Read the diff with the tools ({how}); read the surrounding code where "
    "you need context. Do not change any file. Reply with the findings only, one per "
    "line, most severe first, as `path:line: severity (high, medium or low): the problem "
    "and the fix`; say `no findings` when there are none.")


async def cmd_help(repl: Repl, _arg: str) -> None:
    """List every command."""
    table = Table(show_header=False, box=None, padding=(0, 2))
    for c in repl.commands:
        names = ", ".join((c.name, *c.aliases))
        table.add_row(Text(f"{names} {c.usage}".rstrip(), style="bold"), c.help)
    repl.console.print(table)
    repl.console.print("Enter sends; Alt+Enter or a trailing \\ starts a new line; Ctrl-R "
                       "searches the history; Tab completes commands and paths; Ctrl-C "
                       "interrupts, twice exits; Ctrl-D exits.")


async def cmd_clear(repl: Repl, _arg: str) -> None:
    """Start a new conversation (the old one stays saved)."""
    a = repl.agent
    old = a.conversation.id
    a.conversation = repl.store.create(repl.workspace, a.conversation.header.model,
                                       a.permissions.mode)
    repl.renderer.calls.clear()
    repl.console.clear()
    repl.console.print(f"new conversation {a.conversation.id} ({old} is saved: /resume)")


async def cmd_model(repl: Repl, arg: str) -> None:
    """List the models, or switch to one for the rest of the conversation."""
    config = repl.loaded.config
    a = repl.agent
    if not arg:
        repl.console.print(f"current: {a.model.name}")
        for provider in PROVIDERS:
            try:
                model = make_model(provider, "-", config, repl.keys)
                try:
                    found = await model.list_models()
                finally:
                    await model.aclose()
            except Exception as exc:  # one provider down must not hide the others
                repl.console.print(f"{provider}: unavailable ({exc})")
                continue
            for m in found:
                note = "  (no tool support)" if m.tools is False else ""
                mark = "*" if m.name == a.model.name else " "
                repl.console.print(f"{mark} {m.name:<40} {m.description}{note}")
        repl.console.print("switch with /model NAME (aliases: "
                           f"{', '.join(sorted(config.aliases))})")
        return
    provider, model_id = resolve(arg, config.aliases)
    new = make_model(provider, model_id, config, repl.keys)
    old = a.model
    a.model, a.price = new, price_of(provider, model_id)
    a.last_prompt_tokens = 0
    await old.aclose()
    a.conversation.settings(arg, a.permissions.mode)
    repl.console.print(f"model: {new.name}")


async def cmd_cost(repl: Repl, _arg: str) -> None:
    """Tokens and cost of this conversation."""
    conv = repl.agent.conversation
    u = conv.usage
    repl.console.print(f"input {u.input_tokens}, output {u.output_tokens}, cache read "
                       f"{u.cache_read_tokens}, cache write {u.cache_write_tokens} tokens; "
                       f"${conv.cost_usd:.4f} this conversation, "
                       f"${repl.agent.spent_usd:.4f} since this terminal started")


async def cmd_tools(repl: Repl, _arg: str) -> None:
    """The tools the model can call."""
    for t in repl.agent.tools.tools():
        first = t.description.strip().splitlines()[0] if t.description.strip() else ""
        repl.console.print(f"{t.name:<32} {'read-only ' if t.read_only else ''}{first[:80]}")


async def cmd_permissions(repl: Repl, arg: str) -> None:
    """The permission mode, the rules, why the last question was asked; or set the mode."""
    p = repl.agent.permissions
    if arg:
        modes = get_args(PermissionMode)
        if arg not in modes:
            raise UsageError(f"unknown permission mode {arg!r}: use {', '.join(modes)}")
        p.mode = cast(PermissionMode, arg)
        repl.agent.conversation.settings(repl.agent.conversation.header.model, p.mode)
    repl.console.print(f"mode: {p.mode}")
    repl.console.print(f"allow: {', '.join(p.allow_rules) or '(none)'}")
    repl.console.print(f"deny: {', '.join(p.deny_rules) or '(none)'}")
    repl.console.print(f"last question: {repl.approver.last_reason}")


async def cmd_history(repl: Repl, _arg: str) -> None:
    """This session's tool calls."""
    if not repl.renderer.calls:
        repl.console.print("no tool calls yet")
    for n, c in enumerate(repl.renderer.calls, 1):
        line = Renderer.tool_line(c)
        repl.console.print(Text(f"{n:>3} ").append_text(line))


async def cmd_last(repl: Repl, arg: str) -> None:
    """The whole output of the last tool call (or of call N of /history)."""
    calls = repl.renderer.calls
    if not calls:
        repl.console.print("no tool calls yet")
        return
    n = int(arg) if arg.isdigit() else len(calls)
    if not 1 <= n <= len(calls):
        raise UsageError(f"there is no tool call {n}: /history lists {len(calls)}")
    if n == len(calls):
        repl.show_last()
        return
    c = calls[n - 1]
    repl.console.print(Renderer.tool_line(c))
    repl.console.print(Text(c.output))


async def cmd_resume(repl: Repl, arg: str) -> None:
    """Continue a saved conversation (pick one from the list, or give its id)."""
    if not arg:
        listing = repl.store.listing()[:15]
        if not listing:
            repl.console.print("no saved conversations")
            return
        for n, h in enumerate(listing, 1):
            repl.console.print(f"{n:>3}  {h.id}  {h.model:<28} {h.cwd}")
        arg = (await repl.prompter.ask("number or id (Enter: cancel): ")).strip()
        if not arg:
            return
        if arg.isdigit() and 1 <= int(arg) <= len(listing):
            arg = listing[int(arg) - 1].id
    conv = repl.store.load(repl.store.find(arg))
    conv.repair()
    repl.agent.conversation = conv
    repl.agent.last_prompt_tokens = 0
    repl.console.print(f"resumed {conv.id}: {len(conv.messages)} messages")


def to_markdown(messages: list[Message]) -> str:
    """A conversation as markdown (tool results cut to 2000 characters)."""
    out = []
    for m in messages:
        for b in m.content:
            if isinstance(b, TextBlock):
                out.append(f"## {m.role}\n\n{b.text}\n")
            elif isinstance(b, ToolUseBlock):
                out.append(f"**tool call** `{b.name}`\n\n```json\n"
                           f"{json.dumps(b.input, indent=2, ensure_ascii=False)}\n```\n")
            elif isinstance(b, ToolResultBlock):
                status = "error" if b.is_error else "result"
                out.append(f"**tool {status}**\n\n```\n{b.content[:2000]}\n```\n")
    return "\n".join(out)


async def cmd_export(repl: Repl, arg: str) -> None:
    """Write the conversation as markdown (default: coderx-<id>.md in the project)."""
    conv = repl.agent.conversation
    path = Path(arg) if arg else Path(f"coderx-{conv.id}.md")
    if not path.is_absolute():
        path = repl.workspace / path
    path.write_text(f"# Conversation {conv.id}\n\n{to_markdown(conv.messages)}",
                    encoding="utf-8")
    repl.console.print(f"exported to {path}")


async def cmd_compact(repl: Repl, arg: str) -> None:
    """Summarise the older turns now (optionally saying what to keep in detail)."""
    n = await repl.agent.compact(focus=arg or None, keep=2)
    repl.console.print("nothing to compact yet" if n == 0 else
                       f"compacted {n} messages into a summary")


def strip_fence(text: str) -> str:
    """A reply without the one code fence wrapped around all of it, if any."""
    lines = text.strip().splitlines()
    if len(lines) >= 2 and lines[0].startswith("```") and lines[-1].strip() == "```":
        lines = lines[1:-1]
    return "\n".join(lines).strip() + "\n"


async def cmd_init(repl: Repl, _arg: str) -> None:
    """Write CODERX.md from a look at the repository (shown as a diff first)."""
    path = repo_root(repl.workspace) / "CODERX.md"
    result = await repl.ask_agent(INIT_PROMPT)
    if result.status != "done" or not result.answer.strip():
        repl.console.print("no CODERX.md written")
        return
    new = strip_fence(result.answer)
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    diff = unified("CODERX.md", old, new)
    if not diff:
        repl.console.print("CODERX.md is already up to date")
        return
    repl.console.print(coloured(diff))
    answer = (await repl.prompter.ask(f"Write {path}? [y/n] ")).strip().lower()
    if answer not in ("y", "yes"):
        repl.console.print("not written")
        return
    path.write_text(new, encoding="utf-8")
    reload_memory(repl)
    repl.console.print(f"wrote {path}")


def reload_memory(repl: Repl) -> None:
    """Rebuild the system prompt from the memory files (after /init or /memory)."""
    repl.agent.system = system_prompt(load_memory(repl.workspace,
                                                  repl.loaded.config.memory_files))


async def cmd_memory(repl: Repl, _arg: str) -> None:
    """Edit the project's memory file (CODERX.md) in $VISUAL or $EDITOR."""
    path = repo_root(repl.workspace) / "CODERX.md"
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    done = await asyncio.to_thread(subprocess.run, [*shlex.split(editor), str(path)],
                                   check=False)
    if done.returncode != 0:
        raise UsageError(f"the editor {editor!r} exited with status {done.returncode}")
    reload_memory(repl)
    repl.console.print(f"memory reloaded from {path}")


async def cmd_review(repl: Repl, arg: str) -> None:
    """Have the model review a diff: the working tree, a ref or branch, or `session`."""
    if arg == "session":
        what, how = "the changes of this worktree session", "session_diff"
    elif arg:
        if arg.startswith("-") or any(ch.isspace() for ch in arg):
            raise UsageError(f"{arg!r} is not a ref or branch name")
        what, how = f"the changes of {arg} against HEAD", f"run_command `git diff {arg}`"
    else:
        what, how = "the uncommitted changes", "run_command `git diff HEAD`"
    await repl.ask_agent(REVIEW_PROMPT.format(what=what, how=how))


async def cmd_vim(repl: Repl, _arg: str) -> None:
    """Toggle vi key bindings (saved in the user's config)."""
    from coderx_agent.config import user_config_path
    from coderx_agent.config_edit import set_key

    repl.vi_mode = not repl.vi_mode
    set_key(user_config_path(), "ui.vi_mode", repl.vi_mode)
    repl.console.print(f"vi mode {'on' if repl.vi_mode else 'off'} (saved)")


async def cmd_exit(repl: Repl, _arg: str) -> None:
    """Leave (the conversation is saved)."""
    repl.done = True


CONVERSATION_COMMANDS = (
    Command("/help", "", "this list", cmd_help),
    Command("/clear", "", "start a new conversation", cmd_clear),
    Command("/model", "[name]", "list the models, or switch", cmd_model),
    Command("/cost", "", "tokens and cost so far", cmd_cost),
    Command("/tools", "", "the tools the model can call", cmd_tools),
    Command("/permissions", "[mode]", "mode, rules, why the last question; or set the mode",
            cmd_permissions),
    Command("/history", "", "this session's tool calls", cmd_history),
    Command("/last", "[n]", "the whole output of the last (or n-th) tool call", cmd_last),
    Command("/resume", "[id]", "continue a saved conversation", cmd_resume),
    Command("/export", "[file]", "write the conversation as markdown", cmd_export),
    Command("/compact", "[focus]", "summarise the older turns now", cmd_compact),
    Command("/init", "", "write CODERX.md from a look at the repository", cmd_init),
    Command("/memory", "", "edit CODERX.md in $EDITOR", cmd_memory),
    Command("/review", "[ref|branch|session]", "the model reviews a diff", cmd_review),
    Command("/vim", "", "toggle vi key bindings", cmd_vim),
    Command("/exit", "", "leave (the conversation is saved)", cmd_exit, ("/quit",)),
)
