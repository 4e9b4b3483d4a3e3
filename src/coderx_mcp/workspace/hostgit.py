"""Run git on the host for a session: argv only, nothing from the workspace executed.

Every call disables hooks and fsmonitor and uses no pager, editor or external diff, so a
file the sandbox planted can never run here. ``owner`` runs git as the repository's user
when the server is root, so what git creates belongs to that user from the start (and
git's ownership check passes without ``safe.directory``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path

from coderx_mcp.errors import GitError

HARDENING = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false",
             "-c", "core.pager=cat", "-c", "core.editor=false", "-c", "sequence.editor=false",
             "-c", "core.sshCommand=false", "-c", "credential.helper=",
             "-c", "protocol.allow=never", "-c", "core.quotePath=false")
_TIMEOUT = 120.0


def _env(extra: Mapping[str, str] | None, isolated: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_TERMINAL_PROMPT="0", GIT_OPTIONAL_LOCKS="0", LC_ALL="C", GIT_PAGER="cat",
               GIT_EDITOR="false", GIT_ASKPASS="false", SSH_ASKPASS="false")
    if isolated:
        # Only the repository's own config counts (our shadow repositories).
        env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL="/dev/null",
                   HOME="/nonexistent", XDG_CONFIG_HOME="/nonexistent")
    if extra:
        env.update(extra)
    return env


async def git(args: list[str], *, cwd: Path | None = None,
              owner: tuple[int, int] | None = None, env: Mapping[str, str] | None = None,
              isolated: bool = False, stdin: bytes | None = None,
              timeout: float = _TIMEOUT, check: bool = True) -> tuple[int, bytes, bytes]:
    """Run ``git <HARDENING> <args>`` and return (exit status, stdout, stderr).

    Args:
        args: git arguments after the hardening options (never a shell string).
        cwd: Directory to run in.
        owner: (uid, gid) to run as when the server is root (ignored otherwise).
        env: Extra environment (GIT_DIR, GIT_INDEX_FILE ...).
        isolated: Ignore system and global git config (shadow repositories).
        stdin: Bytes for git's standard input.
        timeout: Seconds before git is killed.
        check: Raise on a non-zero exit.

    Raises:
        GitError: git failed (with its first error line), timed out or is not installed.
    """
    run_as: dict[str, object] = {}
    full_env = _env(env, isolated)
    if owner is not None and os.geteuid() == 0 and owner[0] != 0:
        run_as = {"user": owner[0], "group": owner[1], "extra_groups": []}
        if not isolated:
            full_env.update(HOME="/nonexistent", XDG_CONFIG_HOME="/nonexistent")
    try:
        proc = await asyncio.create_subprocess_exec(
            "git", *HARDENING, *args, cwd=cwd, env=full_env,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, **run_as)  # type: ignore[arg-type]
    except FileNotFoundError:
        raise GitError("git is not installed on the server's machine") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise GitError(f"git {args[0]} took longer than {timeout:.0f} s") from None
    code = proc.returncode or 0
    if check and code != 0:
        lines = [ln for ln in err.decode("utf-8", "replace").splitlines() if ln.strip()]
        first = next((ln for ln in lines if ln.startswith(("fatal:", "error:"))),
                     lines[0] if lines else f"exit status {code}")
        raise GitError(f"git {args[0]} failed: {first.strip()}")
    return code, out, err


async def git_text(args: list[str], **kw: object) -> str:
    """``git(...)``'s standard output as text without the trailing newline."""
    _code, out, _err = await git(args, **kw)  # type: ignore[arg-type]
    return out.decode("utf-8", "replace").rstrip("\n")


def split_author(author: str) -> tuple[str, str]:
    """``"Name <email>"`` (validated by the settings) as (name, email)."""
    name, _, email = author.partition(" <")
    return name, email.rstrip(">")
