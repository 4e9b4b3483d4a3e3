"""What host git would read or run in a repository, asked of host git itself (read-only)."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from coderx_mcp.errors import GitError
from coderx_mcp.workspace.hostgit import git

BOOLS = {"", "true", "false", "yes", "no", "on", "off", "1", "0"}
# Config keys whose value is a command host git runs (the program, or a script it is given).
COMMAND_KEY = re.compile(
    r"(filter\..+\.(clean|smudge|process)|diff\..+\.(textconv|command)|merge\..+\.driver"
    r"|core\.(pager|editor|sshcommand|askpass|gitproxy)|sequence\.editor|pager\..+"
    r"|gpg(\..+)?\.program|credential(\..+)?\.helper|alias\..+|(diff|merge)tool\..+\.cmd"
    r"|interactive\.difffilter|web\.browser|browser\..+\.cmd|man\..+\.cmd"
    r"|remote\..+\.(uploadpack|receivepack|vcs))", re.IGNORECASE)
INCLUDE_KEY = re.compile(r"include(if\..+)?\.path", re.IGNORECASE)
# Read as the server's user (whose system and global config the user's git reads too),
# whoever owns the repository.
_ANY_OWNER = ("-c", "safe.directory=*")


async def _out(repo: Path, *args: str) -> str | None:
    try:
        code, out, _err = await git([*_ANY_OWNER, *args], cwd=repo, check=False, timeout=10)
    except GitError:
        return None
    return out.decode("utf-8", "surrogateescape").rstrip("\n") if code == 0 else None


async def config_entries(repo: Path) -> list[tuple[Path, str, str]]:
    """Every config entry host git sees in ``repo`` (system, global, repository, includes).

    Returns ``(file, lowercased key, value)`` (``file`` as git names it, joined to ``repo``);
    entries not from a file (our own ``-c`` options, blobs) are left out.
    """
    listing = await _out(repo, "config", "--list", "--show-origin", "-z")
    if listing is None:
        return []
    items = listing.split("\0")
    found = []
    for origin, entry in zip(items[::2], items[1::2], strict=False):
        if origin.startswith("file:"):
            key, _, value = entry.partition("\n")
            found.append((repo / origin[len("file:"):], key.lower(), value))
    return found


async def toplevel(repo: Path) -> Path:
    """The work tree root git uses in ``repo`` (where relative hook paths start)."""
    return Path(await _out(repo, "rev-parse", "--show-toplevel") or repo)


async def gitlinks(repo: Path) -> list[str]:
    """Submodule paths in the index of the repository ``repo`` is in, relative to ``repo``."""
    listing = await _out(repo, "ls-files", "--stage", "-z")
    if listing is None:
        return []
    return [e.split("\t", 1)[1] for e in listing.split("\0") if e.startswith("160000 ")]


def config_path(value: str, base: Path) -> Path:
    """A path-valued config entry as git reads it (``~`` expanded, relative to ``base``)."""
    return (base / os.path.expanduser(value)).resolve()


def paths_in(command: str, base: Path) -> list[Path]:
    """The words of a config command that are paths (contain a slash), resolved."""
    try:
        words = shlex.split(command.lstrip("!"))
    except ValueError:
        words = command.lstrip("!").split()
    return [config_path(w, base) for w in words if "/" in w]
