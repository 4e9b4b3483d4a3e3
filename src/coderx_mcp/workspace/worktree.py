"""Per-session git worktrees: a branch ``coderx/<session>`` and a directory of its own.

The server creates the worktree on the host (git argv, as the repository's owner), mounts
it at ``/workspace``, and mounts the main repository's git directory at its own host path
(the worktree's ``.git`` file points there) **read-only**, except what a commit on the
session's branch writes: the object store, ``refs/heads/coderx/`` and its reflogs, and the
worktree's private git directory — whose ``commondir``, ``gitdir`` and ``config.worktree``
stay read-only. Hooks and config of the repository are therefore out of reach, and git
works inside the sandbox (status, diff, add, commit).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from coderx_mcp.errors import GitError, WorkspaceRefused
from coderx_mcp.sandbox.base import BindMount
from coderx_mcp.workspace.hostgit import git, git_text, split_author

BRANCH_PREFIX = "coderx/"


class Worktree(BaseModel):
    """A session's worktree.

    Attributes:
        repo: Top level of the repository's main working tree.
        common_dir: The repository's git directory (shared by all worktrees).
        git_dir: The worktree's private git directory (``<common>/worktrees/<name>``).
        path: The worktree directory (mounted at ``/workspace``).
        branch: The session's branch.
        base: The commit the branch started from.
        owner: (uid, gid) that owns the repository; git runs as this user.
    """

    model_config = ConfigDict(frozen=True)

    repo: Path
    common_dir: Path
    git_dir: Path
    path: Path
    branch: str
    base: str
    owner: tuple[int, int]


class CommitResult(BaseModel):
    """A commit made on a session's branch."""

    commit: str
    branch: str
    stat: str


def _owner_of(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid


async def create(source: Path, dest: Path, session_id: str) -> Worktree:
    """Add a worktree of the repository holding ``source`` at ``dest`` on a new branch.

    Raises:
        WorkspaceRefused: ``source`` is not in a git repository with a commit.
        GitError: git failed.
    """
    owner = _owner_of(source)
    try:
        top = Path(await git_text(["-C", str(source), "rev-parse", "--show-toplevel"],
                                  owner=owner))
        common = Path(await git_text(["-C", str(source), "rev-parse", "--path-format=absolute",
                                      "--git-common-dir"], owner=owner))
    except GitError as exc:
        if "not a git repository" not in str(exc):
            raise
        raise WorkspaceRefused(f"mode 'worktree' needs a git repository; {str(source)!r} is "
                               "not inside one") from None
    code, out, _ = await git(["-C", str(top), "rev-parse", "--verify", "-q", "HEAD^{commit}"],
                             owner=owner, check=False)
    if code != 0:
        raise WorkspaceRefused(f"mode 'worktree' needs a repository with at least one commit; "
                               f"{str(top)!r} has none")
    base = out.decode().strip()
    branch = BRANCH_PREFIX + session_id
    _make_dest(dest, owner)
    await git(["-C", str(top), "worktree", "add", "-q", "-b", branch, str(dest), base],
              owner=owner)
    return _finish(top, common, dest, branch, base, owner)


def _make_dest(dest: Path, owner: tuple[int, int]) -> None:
    # Made here: git runs as the owner, who cannot write the server's directory.
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    dest.mkdir(mode=0o755)
    if os.geteuid() == 0:
        os.chown(dest, *owner)


def _finish(top: Path, common: Path, dest: Path, branch: str, base: str,
            owner: tuple[int, int]) -> Worktree:
    gitfile = (dest / ".git").read_text().strip()
    git_dir = Path(gitfile.removeprefix("gitdir:").strip())
    if not git_dir.is_absolute():
        git_dir = (dest / git_dir).resolve()
    wt = Worktree(repo=top, common_dir=common.resolve(), git_dir=git_dir, path=dest,
                  branch=branch, base=base, owner=owner)
    _prepare_mount_points(wt)
    return wt


def _prepare_mount_points(wt: Worktree) -> None:
    """Create what the writable and read-only mounts need, owned by the repository's user."""
    uid, gid = wt.owner
    for d in (wt.common_dir / "refs" / "heads" / "coderx",
              wt.common_dir / "logs" / "refs" / "heads" / "coderx"):
        if not d.exists():
            d.mkdir(parents=True, mode=0o755)
            _chown_created(d, wt.common_dir, uid, gid)
    # Read-only even while extensions.worktreeConfig is off: the sandbox cannot plant one.
    cfg = wt.git_dir / "config.worktree"
    if not cfg.exists():
        cfg.touch(mode=0o644)
        if os.geteuid() == 0:
            os.chown(cfg, uid, gid)


def _chown_created(path: Path, stop: Path, uid: int, gid: int) -> None:
    """Give directories this module just created (up to ``stop``) to the repository's user."""
    if os.geteuid() != 0:
        return
    p = path
    while p != stop and p.is_relative_to(stop):
        if p.stat().st_uid == 0:
            os.chown(p, uid, gid)
        p = p.parent


def mounts(wt: Worktree, target: str) -> list[BindMount]:
    """The mounts that make git work in the sandbox on this worktree, and nothing more."""
    c, g = wt.common_dir, wt.git_dir
    rw = [c / "objects", c / "refs" / "heads" / "coderx", c / "logs" / "refs" / "heads" / "coderx",
          g]
    ro = [g / "commondir", g / "gitdir", g / "config.worktree"]
    out = [BindMount(source=c, target=str(c), read_only=True)]
    out += [BindMount(source=p, target=str(p), read_only=False) for p in rw if p.exists()]
    out += [BindMount(source=p, target=str(p), read_only=True) for p in ro if p.exists()]
    out.append(BindMount(source=wt.path / ".git", target=f"{target}/.git", read_only=True))
    return out


def _git_args(wt: Worktree) -> list[str]:
    # Explicit directories: the worktree's .git file is never trusted on the host.
    return ["--git-dir", str(wt.git_dir), "--work-tree", str(wt.path)]


def _identity(author: str) -> list[str]:
    name, email = split_author(author)
    return ["-c", f"user.name={name}", "-c", f"user.email={email}"]


async def has_changes(wt: Worktree) -> bool:
    """Whether the worktree has uncommitted changes (untracked files included)."""
    out = await git_text([*_git_args(wt), "status", "--porcelain", "--untracked-files=all"],
                         owner=wt.owner, cwd=wt.path)
    return bool(out.strip())


async def commit(wt: Worktree, message: str, author: str) -> CommitResult | None:
    """Commit every change of the worktree on its branch; None when there is nothing.

    Raises:
        GitError: git failed (the worktree is gone, say).
    """
    if not wt.path.is_dir():
        raise GitError(f"the worktree {str(wt.path)!r} is gone")
    if not await has_changes(wt):
        return None
    base = _git_args(wt)
    await git([*base, "add", "-A"], owner=wt.owner, cwd=wt.path)
    await git([*_identity(author), *base, "commit", "-q", "--no-verify", "-m", message],
              owner=wt.owner, cwd=wt.path)
    sha = await git_text([*base, "rev-parse", "HEAD"], owner=wt.owner, cwd=wt.path)
    stat = await git_text([*base, "show", "--shortstat", "--format=", "HEAD"],
                          owner=wt.owner, cwd=wt.path)
    return CommitResult(commit=sha, branch=wt.branch, stat=stat.strip())


async def remove(wt: Worktree, keep: bool, author: str) -> list[str]:
    """Remove the worktree directory; keep its branch (uncommitted work committed first)
    or delete it. Returns what was done, one sentence each."""
    done: list[str] = []
    if keep and wt.path.is_dir():
        try:
            made = await commit(wt, "coderx: uncommitted changes at session close", author)
        except GitError as exc:
            done.append(f"uncommitted changes could not be saved: {exc}")
        else:
            if made is not None:
                done.append(f"uncommitted changes committed as {made.commit[:12]}")
    repo = ["-C", str(wt.repo)]
    if wt.path.is_dir():
        await git([*repo, "worktree", "remove", "--force", "--force", str(wt.path)],
                  owner=wt.owner, check=False)
    # git (as the owner) cannot remove the directory itself: the server made it.
    await asyncio.to_thread(shutil.rmtree, wt.path, True)
    await git([*repo, "worktree", "prune"], owner=wt.owner, check=False)
    if keep:
        done.append(f"branch {wt.branch} kept: review it with `git log {wt.branch}` and merge "
                    f"with `git merge {wt.branch}`")
    else:
        await git([*repo, "branch", "-D", wt.branch], owner=wt.owner, check=False)
        done.append(f"branch {wt.branch} deleted")
    return done
