"""What a git guard records, and what happens to the workspace when its sandbox is gone."""

from __future__ import annotations

import os
import time
from pathlib import Path

import structlog
from pydantic import BaseModel

from coderx_mcp.sandbox.base import BindMount

_log = structlog.get_logger("coderx.gitguard")
QUARANTINE = ".coderx-quarantine-"


class GitGuard(BaseModel):
    """What protects the host's git from one workspace's sandbox, decided at session start."""

    mounts: list[BindMount] = []
    """Mounts to add to the sandbox: git metadata read-only, and the directories above it
    writable but mounted onto themselves (a mount point cannot be renamed away)."""
    warnings: list[str] = []
    """Routes that could not be closed, one sentence each (show them to the user)."""
    git_entries: list[str] = []
    """Workspace-relative paths of every ``.git`` (dir, file or link) and bare repository
    found at start; the baseline for :func:`find_new_git_entries`."""
    placeholders: list[Path] = []
    """Host paths the server created to be mounted read-only, in creation order; removed by
    :func:`remove_placeholders` when still empty."""
    complete: bool = True
    """False when the walk stopped at its entry or time cap (entries beyond it unguarded)."""


def find_new_git_entries(ws: Path, before: list[str], *, max_entries: int = 100_000,
                         max_seconds: float = 3.0) -> list[str]:
    """``.git`` entries and bare repositories in ``ws`` that were not there at start."""
    found, _complete = walk_git_entries(ws.resolve(), max_entries, max_seconds)
    known = set(before)
    return [rel for rel, _kind in found if rel not in known]


def quarantine(ws: Path, rels: list[str]) -> list[str]:
    """Make host git stop treating these entries as repositories; returns what was done.

    ``X/.git`` is renamed to ``X/.git.coderx-quarantine-<n>``; the ``HEAD`` of a git
    directory (that one, or a bare repository ``X``) is renamed the same way, so git run
    inside it does not take it for a bare repository either. Nothing outside ``ws`` is
    touched.
    """
    root, done = ws.resolve(), list[str]()
    for rel in rels:
        path = root / rel
        if not inside_without_links(root, path.parent):
            continue
        if path.name == ".git":
            moved = _rename_aside(root, path, done)
            if moved is None or moved.is_symlink() or not moved.is_dir():
                continue
            path = moved
        _rename_aside(root, path / "HEAD", done)
    return done


def _rename_aside(root: Path, victim: Path, done: list[str]) -> Path | None:
    """Rename ``victim`` to ``<name>.coderx-quarantine-<n>``; note it in ``done``."""
    if not os.path.lexists(victim):
        return None
    n = 1
    while os.path.lexists(f"{victim}{QUARANTINE}{n}"):
        n += 1
    dest = victim.with_name(f"{victim.name}{QUARANTINE}{n}")
    try:
        os.rename(victim, dest)
    except OSError:
        return None
    done.append(f"{victim.relative_to(root).as_posix()} -> {dest.relative_to(root).as_posix()}")
    return dest


def remove_placeholders(guard: GitGuard) -> list[Path]:
    """Remove the placeholders that are still empty (newest first); returns the removed ones.

    Call after the sandbox is gone, so they are no longer mount points.
    """
    removed = []
    for path in reversed(guard.placeholders):
        try:
            if path.is_symlink():
                continue
            if path.is_dir():
                path.rmdir()  # fails when not empty: then it is no longer ours to remove
            elif path.is_file() and path.stat().st_size == 0:
                path.unlink()
            else:
                continue
        except OSError:
            continue
        removed.append(path)
    return removed


def release_guard(ws: Path, guard: GitGuard) -> list[str]:
    """At session close, after the sandbox is gone: remove the placeholders, then quarantine
    the repositories created during the session; returns what was done, one sentence each.

    Blocking (walks the workspace): run it in a thread.
    """
    remove_placeholders(guard)
    renamed = quarantine(ws, find_new_git_entries(ws, guard.git_entries))
    if renamed:
        _log.warning("git repositories created in the sandbox were quarantined",
                     workspace=str(ws), renamed=renamed)
    return [f"a git repository made in the sandbox was disabled: {r} (host git would have "
            "run its config and hooks)" for r in renamed]


def hand_over(guard: GitGuard, heir: GitGuard) -> None:
    """Leave ``guard``'s clean-up to ``heir``, the guard of a sandbox on the same workspace
    that is still running (removing a placeholder on the host would unmount it there).

    The heir removes both guards' placeholders, and treats as new every repository not
    present when *either* sandbox started.
    """
    heir.placeholders = [*guard.placeholders,
                         *(p for p in heir.placeholders if p not in guard.placeholders)]
    heir.git_entries = [e for e in heir.git_entries if e in guard.git_entries]


def walk_git_entries(ws: Path, max_entries: int,
                     max_seconds: float) -> tuple[list[tuple[str, str]], bool]:
    """Every ``.git`` and bare repository under ``ws``, without entering either.

    Returns ``(rel, kind)`` pairs (kind: ``dir``, ``file``, ``link`` or ``bare``) and
    whether the walk finished within its caps. Symbolic links are never followed.
    """
    found: list[tuple[str, str]] = []
    deadline = time.monotonic() + max_seconds
    stack, seen = [ws], 0
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = list(it)
        except OSError:
            continue
        seen += len(entries)
        if seen > max_entries or time.monotonic() > deadline:
            return found, False
        rel = d.relative_to(ws)
        dirs = {e.name: e for e in entries if e.is_dir(follow_symlinks=False)}
        names = {e.name: e for e in entries}
        if d != ws and {"objects", "refs"} <= dirs.keys() and "HEAD" in names:
            found.append((rel.as_posix(), "bare"))
            continue
        git = names.get(".git")
        if git is not None:
            kind = "link" if git.is_symlink() else "dir" if git.name in dirs else "file"
            found.append(((rel / ".git").as_posix(), kind))
        stack.extend(Path(e.path) for name, e in sorted(dirs.items(), reverse=True)
                     if name != ".git")
    return found, True


def is_git_dir(path: Path) -> bool:
    """Roughly git's own test: ``HEAD``, ``objects/`` and ``refs/`` present."""
    return (path / "HEAD").is_file() and (path / "objects").is_dir() and (path / "refs").is_dir()


def inside_without_links(root: Path, path: Path) -> bool:
    """Whether ``path`` is ``root`` or below it with no symbolic link on the way."""
    return os.path.realpath(path) == os.path.abspath(path) and Path(path).is_relative_to(root)
