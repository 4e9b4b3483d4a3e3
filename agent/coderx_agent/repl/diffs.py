"""File edits as unified diffs: what an edit will do (approvals) and what it did (the log).

The coderx tools see the project at ``/workspace``; the terminal sees the same files on the
host under the workspace directory, so a tool's path maps onto a host path. When it does
not (a remote server, a path outside the project), the diff is built from the edit's own
arguments.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from rich.text import Text

#: Where the sandbox mounts the project.
SANDBOX_ROOT = "/workspace"
#: Tools whose arguments describe a change to one file.
FILE_TOOLS = frozenset({"write_file", "edit_file", "multi_edit"})


def host_path(workspace: Path, tool_path: str) -> Path | None:
    """The host file a tool's ``path`` argument names, if it is inside ``workspace``."""
    rel = tool_path
    if rel == SANDBOX_ROOT or rel.startswith(SANDBOX_ROOT + "/"):
        rel = rel[len(SANDBOX_ROOT):].lstrip("/")
    if rel.startswith("/"):
        return None
    path = (workspace / rel).resolve()
    return path if path.is_relative_to(workspace.resolve()) else None


def read_text(path: Path | None) -> str | None:
    """A host file's text (None: absent, unreadable or not text)."""
    if path is None or not path.is_file():
        return None
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _replace(text: str, edit: dict[str, Any]) -> str:
    old, new = str(edit.get("old_string", "")), str(edit.get("new_string", ""))
    if not old:
        return text
    return text.replace(old, new) if edit.get("replace_all") else text.replace(old, new, 1)


def proposed(name: str, arguments: dict[str, Any], current: str | None) -> tuple[str, str]:
    """``(before, after)`` of an edit call, from the file's current text when known, else
    from the edit's own strings."""
    if name == "write_file":
        return current or "", str(arguments.get("content", ""))
    edits: list[dict[str, Any]] = (list(arguments.get("edits") or []) if name == "multi_edit"
                                   else [arguments])
    if current is None:
        before = "\n".join(str(e.get("old_string", "")) for e in edits)
        after = "\n".join(str(e.get("new_string", "")) for e in edits)
        return before, after
    after = current
    for e in edits:
        after = _replace(after, e)
    return current, after


def unified(path: str, before: str, after: str) -> str:
    """The unified diff of ``before`` → ``after`` ('' when they are equal)."""
    lines = difflib.unified_diff(before.splitlines(keepends=True),
                                 after.splitlines(keepends=True),
                                 fromfile=f"a/{path}", tofile=f"b/{path}")
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def edit_diff(workspace: Path, name: str, arguments: dict[str, Any]) -> str:
    """The diff an edit call would make now ('' for other tools)."""
    if name not in FILE_TOOLS:
        return ""
    path = str(arguments.get("path", ""))
    before, after = proposed(name, arguments, read_text(host_path(workspace, path)))
    return unified(path, before, after)


def coloured(diff: str) -> Text:
    """A unified diff with added lines green, removed red and hunk headers cyan."""
    out = Text()
    for line in diff.splitlines(keepends=True):
        style = ("bold" if line.startswith(("+++", "---")) else
                 "green" if line.startswith("+") else "red" if line.startswith("-") else
                 "cyan" if line.startswith("@@") else "")
        out.append(line, style=style)
    out.rstrip()
    return out
