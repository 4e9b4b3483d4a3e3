"""Making and ending a session's workspace in each mode.

``bind`` mounts a host directory as it is; ``worktree`` a new git worktree on branch
``coderx/<session>``; ``copy`` a private copy; ``scratch`` an empty directory. Whatever the
server creates (scratch, copy, worktree, diff baseline) is recorded in
``<data_dir>/records/<session>.json`` with the owning server's identity: only a recorded
directory is ever deleted, and a later server removes those of a server that died.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Literal

import structlog
from pydantic import BaseModel, ConfigDict

from coderx_mcp.config import Settings
from coderx_mcp.errors import GitError
from coderx_mcp.gitguard import GitGuard, guard_workspace, hand_over, release_guard
from coderx_mcp.sandbox.base import BindMount
from coderx_mcp.sandbox.instance import Instance, owner_is_gone
from coderx_mcp.workspace import worktree as wtree
from coderx_mcp.workspace.hostgit import git, split_author
from coderx_mcp.workspace.policy import created_ids, sandbox_ids
from coderx_mcp.workspace.shadow import Shadow

Mode = Literal["bind", "worktree", "copy", "scratch"]
_log = structlog.get_logger("coderx.workspace")


class Workspace(BaseModel):
    """A session's workspace on the host.

    Attributes:
        mode: How it was made.
        host: The directory mounted at ``/workspace``.
        source: The directory asked for (bind/worktree/copy), None for scratch.
        rule: Who chose it: ``session_open``, ``--workspace``, ``mcp-roots``, ``cwd``,
            ``scratch``.
        created: The server created ``host`` (deleted when the session ends).
        uid: The sandbox's uid.
        gid: The sandbox's gid.
        mounts: Extra mounts (git protection, the worktree's git directory).
        worktree: The worktree, in mode ``worktree``.
        notes: Warnings for the user (shown by ``session_info``).
        git_guard: What keeps host git from running what the sandbox writes (bind mode).
    """

    model_config = ConfigDict(frozen=True)

    session_id: str
    mode: Mode
    host: Path
    source: Path | None
    rule: str
    created: bool
    uid: int
    gid: int
    mounts: tuple[BindMount, ...] = ()
    worktree: wtree.Worktree | None = None
    notes: tuple[str, ...] = ()
    git_guard: GitGuard | None = None


class Workspaces:
    """Makes, records and removes session workspaces.

    Args:
        settings: Where the server's own directories are, who owns what it creates.
        instance: This server, stamped in every record.
    """

    def __init__(self, settings: Settings, instance: Instance) -> None:
        self.settings = settings
        self.instance = instance
        self.root = settings.data_dir.resolve()
        # Guarded workspaces in use (sessions and pooled sandboxes), by session id.
        self._guarded: dict[str, Workspace] = {}

    def _dir(self, kind: str) -> Path:
        d = self.root / kind
        d.mkdir(parents=True, exist_ok=True, mode=0o755)
        return d

    def shadow(self, session_id: str, ws: Workspace) -> Shadow:
        """The diff baseline repository of a session."""
        return Shadow(self._dir("shadow") / f"{session_id}.git", ws.host)

    def _gitconfig(self) -> Path:
        """A read-only ``~/.gitconfig`` for sandboxes: the git identity of commits made
        inside (the runner passes no ``GIT_*`` identity variables to commands)."""
        name, email = split_author(self.settings.git_author)
        text = f"[user]\n\tname = {name}\n\temail = {email}\n"
        path = self._dir("etc") / "gitconfig"
        if not path.exists() or path.read_text() != text:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.chmod(0o644)
            tmp.replace(path)
        return path

    def _record(self, ws: Workspace) -> None:
        rec = {"labels": self.instance.labels(), "workspace": ws.model_dump(mode="json"),
               "time": time.time()}
        path = self._dir("records") / f"{ws.session_id}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(rec))
        tmp.replace(path)

    async def prepare(self, session_id: str, mode: Mode, source: Path | None,
                      rule: str) -> Workspace:
        """Make the workspace of a new session.

        Args:
            session_id: The session (names the branch and the directories).
            mode: bind, worktree, copy or scratch.
            source: The vetted host directory (None for scratch).
            rule: Who chose it (for ``session_info``).

        Raises:
            WorkspaceRefused: The directory cannot be used in this mode.
            GitError: A git step failed.
        """
        s = self.settings
        identity = (BindMount(source=self._gitconfig(), target="/home/coder/.gitconfig",
                              read_only=True),)
        if mode == "bind":
            assert source is not None
            uid, gid = sandbox_ids(source, s)
            # Host git must run nothing the sandbox writes (no mounts without isolation).
            guard = await guard_workspace(source) if s.backend == "docker" else None
            ws = Workspace(session_id=session_id, mode=mode, host=source, source=source,
                           rule=rule, created=False, uid=uid, gid=gid,
                           mounts=identity + tuple(guard.mounts if guard else ()),
                           notes=tuple(guard.warnings if guard else ()), git_guard=guard)
            if guard is not None:
                self._guarded[session_id] = ws
        elif mode == "worktree":
            assert source is not None
            uid, gid = sandbox_ids(source, s)
            dest = self._dir("worktrees") / session_id
            ws = Workspace(session_id=session_id, mode=mode, host=dest, source=source,
                           rule=rule, created=True, uid=uid, gid=gid)
            self._record(ws)  # before git runs: a crash midway is still cleaned up
            try:
                wt = await wtree.create(source, dest, session_id)
            except BaseException:
                shutil.rmtree(dest, ignore_errors=True)
                self._forget(session_id)
                raise
            ws = ws.model_copy(update={"worktree": wt, "mounts": identity + tuple(
                wtree.mounts(wt, "/workspace"))})
        else:
            uid, gid = created_ids(s)
            dest = self._dir("copies" if mode == "copy" else "scratch") / session_id
            ws = Workspace(session_id=session_id, mode=mode, host=dest, source=source,
                           rule=rule, created=True, uid=uid, gid=gid,
                           mounts=identity)
            self._record(ws)
            try:
                if mode == "copy":
                    assert source is not None
                    await _copy(source, dest, s.copy_ignored)
                else:
                    dest.mkdir(mode=0o755)
                _chown_tree(dest, uid, gid)
            except BaseException:
                shutil.rmtree(dest, ignore_errors=True)
                self._forget(session_id)
                raise
        self._record(ws)
        return ws

    def _forget(self, session_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / "records" / f"{session_id}.json").unlink()

    async def release(self, ws: Workspace, keep: bool = True) -> list[str]:
        """End a workspace: delete what the server created for it; a worktree's branch is
        kept (``keep``) or deleted. Returns what was done, one sentence each."""
        done: list[str] = []
        try:
            if ws.git_guard is not None:
                done += await self._release_guard(ws, ws.git_guard)
            if ws.worktree is not None:
                done += await wtree.remove(ws.worktree, keep, self.settings.git_author)
            elif ws.created and ws.host.is_relative_to(self.root):
                shutil.rmtree(ws.host, ignore_errors=True)
                done.append(f"{ws.mode} workspace deleted")
        except GitError as exc:
            done.append(str(exc))
        finally:
            shutil.rmtree(self.root / "shadow" / f"{ws.session_id}.git", ignore_errors=True)
            self._forget(ws.session_id)
        return done

    async def _release_guard(self, ws: Workspace, guard: GitGuard) -> list[str]:
        """Remove the placeholders and disable repositories made inside, unless another live
        sandbox uses the same directory: a placeholder removed on the host would be unmounted
        in that sandbox too, so the last one out does it."""
        self._guarded.pop(ws.session_id, None)
        heir = next((w for w in self._guarded.values() if w.host == ws.host), None)
        if heir is not None and heir.git_guard is not None:
            hand_over(guard, heir.git_guard)
            self._record(heir)
            return []
        return await asyncio.to_thread(release_guard, ws.host, guard)

    async def reap_dead(self) -> int:
        """Release the workspaces recorded by servers that no longer run (branches kept)."""
        records = self.root / "records"
        if not records.is_dir():
            return 0
        n = 0
        for path in records.glob("*.json"):
            try:
                rec = json.loads(path.read_text())
                if not owner_is_gone(rec["labels"], self.instance):
                    continue
                ws = Workspace.model_validate(rec["workspace"])
            except (OSError, ValueError, KeyError):
                continue
            _log.info("cleaning up a session of a server that is gone",
                      session_id=ws.session_id, mode=ws.mode, path=str(ws.host))
            if ws.mode == "worktree" and ws.worktree is None and ws.source is not None:
                shutil.rmtree(ws.host, ignore_errors=True)  # died while creating it
                await git(["-C", str(ws.source), "worktree", "prune"], check=False)
            await self.release(ws, keep=True)
            n += 1
        return n


async def _copy(source: Path, dest: Path, include_ignored: bool) -> None:
    """Copy ``source`` to ``dest`` (symlinks as links; no reflinks or hard links).

    In a git repository, files ignored by ``.gitignore`` are left out unless
    ``include_ignored``; ``.git`` itself is copied (the copy is private).
    """
    st = os.stat(source)
    owner = (st.st_uid, st.st_gid)
    listed: list[str] | None = None
    if not include_ignored and _is_repo(source):
        code, out, _ = await git(["-C", str(source), "ls-files", "-z", "--cached", "--others",
                                  "--exclude-standard"], owner=owner, check=False)
        if code == 0:
            listed = [p for p in out.decode("utf-8", "surrogateescape").split("\0") if p]
    if listed is None:
        await asyncio.to_thread(shutil.copytree, source, dest, symlinks=True)
        return
    def copy_listed() -> None:
        dest.mkdir(mode=0o755)
        shutil.copytree(source / ".git", dest / ".git", symlinks=True)
        for rel in listed:
            src, dst = source / rel, dest / rel
            if not os.path.lexists(src):
                continue  # deleted but still in the index
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir() and not src.is_symlink():
                shutil.copytree(src, dst, symlinks=True)  # a nested repository
            else:
                shutil.copy2(src, dst, follow_symlinks=False)

    await asyncio.to_thread(copy_listed)


def _is_repo(path: Path) -> bool:
    return os.path.lexists(path / ".git")


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    """Give a tree the server just created to the sandbox's user."""
    if os.geteuid() != 0:
        return
    os.lchown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)
