"""Decide a workspace's read-only git mounts and placeholders (see the package docstring)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from coderx_mcp.gitguard.gitconfig import (
    BOOLS,
    COMMAND_KEY,
    INCLUDE_KEY,
    config_entries,
    config_path,
    gitlinks,
    paths_in,
    toplevel,
)
from coderx_mcp.gitguard.state import GitGuard, inside_without_links, is_git_dir, walk_git_entries
from coderx_mcp.sandbox.base import BindMount

_MAX_REPOS = 64  # repositories whose config and submodules are read
_MAX_GITLINKS = 1000


async def guard_workspace(ws: Path, target: str = "/workspace", *,
                          max_entries: int = 100_000, max_seconds: float = 3.0) -> GitGuard:
    """Decide the read-only mounts that keep ``ws``'s git metadata out of the sandbox's reach.

    Creates placeholders in ``ws`` (empty directories or files, owned by the workspace's
    owner) where git would look but nothing exists yet; :func:`remove_placeholders` removes
    them after the sandbox is gone. Runs host ``git`` (argv, no shell, no hooks or
    fsmonitor) to read the effective configuration, including system and global files.

    Args:
        ws: The workspace directory on the host.
        target: Where ``ws`` is mounted in the sandbox.
        max_entries: Stop walking for nested repositories after this many directory entries.
        max_seconds: ... or after this long.
    """
    root = await asyncio.to_thread(ws.resolve)
    found, complete = await asyncio.to_thread(walk_git_entries, root, max_entries, max_seconds)
    repos = [root, *((root / rel).parent for rel, kind in found
                     if kind != "bare" and rel != ".git")]
    facts = []
    for repo in repos[:_MAX_REPOS]:
        entries = await config_entries(repo)
        top = await toplevel(repo) if entries else repo
        facts.append(_Repo(path=repo, top=top, config=entries, gitlinks=await gitlinks(repo)))
    guard = _Guard(root, target.rstrip("/"), max_entries, max_seconds)
    return await asyncio.to_thread(guard.build, found, complete, facts, len(repos))


@dataclass(frozen=True)
class _Repo:
    """What host git told about one repository (asked before the file work, in a thread)."""

    path: Path
    top: Path
    config: list[tuple[Path, str, str]]
    gitlinks: list[str]


class _Guard:
    """One run of :func:`guard_workspace` (collects mounts, placeholders and warnings)."""

    def __init__(self, ws: Path, target: str, max_entries: int, max_seconds: float) -> None:
        self.ws, self.target = ws, target
        self.max_entries, self.max_seconds = max_entries, max_seconds
        self.read_only: list[Path] = []
        self.guard = GitGuard()
        self.owner = (-1, -1)  # the workspace's, read in build (a thread)

    def build(self, found: list[tuple[str, str]], complete: bool, repos: list[_Repo],
              n_repos: int) -> GitGuard:
        st = self.ws.stat()
        self.owner = (st.st_uid, st.st_gid)
        g = self.guard
        g.git_entries, g.complete = [rel for rel, _ in found], complete
        if not complete:
            g.warnings.append(
                f"the workspace has more than {self.max_entries} entries or took over "
                f"{self.max_seconds:g}s to scan; repositories nested beyond that point are not "
                "protected: do not run git inside subdirectories of it while the session is open")
        root_git = self.ws / ".git"
        if not os.path.lexists(root_git) or (root_git.is_dir() and not root_git.is_symlink()
                                             and not is_git_dir(root_git)):
            self._no_root_git()
        for rel, kind in found:
            path = self.ws / rel
            if kind == "link":
                self._link(path, rel)
            elif kind in ("dir", "bare"):
                self._git_dir(path)
            else:
                self._mount(path)
                self._gitfile(path)
        if n_repos > len(repos):
            g.warnings.append(f"only the first {len(repos)} of {n_repos} repositories' "
                              "configuration was checked for paths inside the workspace")
        for repo in repos:
            self._config(repo)
            self._gitlinks(repo)
        g.mounts = [BindMount(source=p, target=self._target_of(p), read_only=False)
                    for p in self._pins()]
        g.mounts += [BindMount(source=p, target=self._target_of(p), read_only=True)
                     for p in self.read_only]
        return g

    def _pins(self) -> list[Path]:
        """Directories between the root and a read-only mount, to be mounted onto themselves.

        Renaming a directory takes the mounts inside it along: without this, ``mv vendor x``
        would move ``vendor/lib/.git`` away and free its path for a planted one. A mount point
        cannot be renamed or removed; these stay writable.
        """
        pins: set[Path] = set()
        for path in self.read_only:
            for parent in path.parents:
                if parent == self.ws or not parent.is_relative_to(self.ws):
                    break
                if not any(parent.is_relative_to(ro) for ro in self.read_only):
                    pins.add(parent)
        return sorted(pins)

    # -- the sources of what host git reads ----------------------------------------------------

    def _no_root_git(self) -> None:
        """No repository at the root (or a ``.git`` that is none, say another session's empty
        placeholder): none may be made there, nor a bare one (git takes the directory itself
        for a bare repository when ``.git`` is not a repository; a ``HEAD`` directory is never
        a valid ``HEAD``)."""
        for name in (".git", "HEAD"):
            path = self.ws / name
            if path.is_symlink():
                self._warn_link(path)
            elif path.exists():
                self._mount(path)
            else:
                self._placeholder(path, directory=True)

    def _link(self, path: Path, rel: str) -> None:
        self.guard.warnings.append(
            f"{rel} is a symbolic link, which the sandbox can replace; do not run git in "
            f"{Path(rel).parent.as_posix()} on the host while the session is open")
        real = path.resolve()
        if self._inside(real) and real.is_dir():
            self._mount(real)
            self._git_dir(real)

    def _gitfile(self, path: Path) -> None:
        """A ``gitdir: X`` file: protect X when it lies inside the workspace."""
        try:
            text = path.read_text(errors="replace").strip()
        except OSError:
            return
        if text.startswith("gitdir:"):
            real = (path.parent / text[len("gitdir:"):].strip()).resolve()
            if self._inside(real) and real.is_dir():
                self._mount(real)
                self._git_dir(real)

    def _git_dir(self, gitdir: Path, depth: int = 0) -> None:
        """Protect what a git dir links to inside the workspace: ``commondir`` and symlinks."""
        self._mount(gitdir)
        try:
            entries = list(os.scandir(gitdir))
        except OSError:
            return
        for e in entries:
            if e.is_symlink():
                real = Path(e.path).resolve()
                if not self._inside(real):
                    continue
                if real.exists():
                    self._mount(real)
                elif e.name == "hooks":
                    self._placeholder(real, directory=True)
                else:
                    self.guard.warnings.append(
                        f"{self._rel(Path(e.path))} links to the missing "
                        f"{self._rel(real)}, which the sandbox can create")
        try:
            common = (gitdir / "commondir").read_text().strip()
        except OSError:
            return
        real = (gitdir / common).resolve()
        if depth < 4 and self._inside(real) and real.is_dir():
            self._git_dir(real, depth + 1)

    def _config(self, repo: _Repo) -> None:
        """Protect config files, hooks, fsmonitor and includes that resolve inside."""
        top = repo.top.resolve()
        for origin, key, value in repo.config:
            source = origin.resolve()
            if self._inside(source):
                self._mount(source)
            if key == "core.hookspath" and value:
                hooks = config_path(value, top)
                self._protect(hooks, directory=True)
                if hooks.name == "_":  # husky 9: the hooks in .husky/_ run .husky/<hook>
                    self._protect(hooks.parent, directory=True)
            elif key == "core.fsmonitor" and value.strip().lower() not in BOOLS:
                for word in paths_in(value, top):
                    self._protect(word, directory=False)
            elif INCLUDE_KEY.fullmatch(key) and value:
                self._protect(config_path(value, source.parent), directory=False)
            elif COMMAND_KEY.fullmatch(key):
                for word in paths_in(value, top):
                    if self._inside(word):
                        self.guard.warnings.append(
                            f"git config {key} runs {self._rel(word)}, a file inside the "
                            "workspace that the sandbox can change; host git will run it "
                            "as you")

    def _gitlinks(self, repo: _Repo) -> None:
        """Submodules not checked out: a read-only placeholder ``.git`` where git would look
        (host ``git status`` recurses into a submodule once its ``.git`` exists)."""
        paths = repo.gitlinks
        if len(paths) > _MAX_GITLINKS:
            self.guard.warnings.append(f"only {_MAX_GITLINKS} of {len(paths)} submodules of "
                                       f"{self._rel(repo.path)} are protected")
        for p in paths[:_MAX_GITLINKS]:
            sub = repo.path / p
            if not os.path.lexists(sub / ".git"):
                self._placeholder(sub / ".git", directory=True)

    # -- mounts and placeholders ---------------------------------------------------------------

    def _protect(self, path: Path, directory: bool) -> None:
        if not self._inside(path):
            return
        if path.is_symlink():
            self._warn_link(path)
        elif path.exists():
            self._mount(path)
        else:
            self._placeholder(path, directory)

    def _placeholder(self, path: Path, directory: bool) -> None:
        """Create an empty directory or file (and missing parents) and mount it read-only."""
        anchor = next(p for p in path.parents if os.path.lexists(p))
        if not inside_without_links(self.ws, anchor):
            self._warn_link(anchor)
            return
        missing = [p for p in (path, *path.parents) if not os.path.lexists(p)]
        try:
            for p in reversed(missing):
                if p == path and not directory:
                    p.touch(mode=0o644, exist_ok=False)
                else:
                    p.mkdir(mode=0o755)
                self.guard.placeholders.append(p)
                if os.geteuid() == 0:
                    os.lchown(p, *self.owner)
        except OSError as exc:
            self.guard.warnings.append(f"could not create the placeholder {self._rel(path)} "
                                       f"({exc.strerror}); the sandbox can create it")
            return
        self._mount(path)

    def _mount(self, path: Path) -> None:
        real = path.resolve()
        if not self._inside(real) or real == self.ws:
            return
        if any(real.is_relative_to(ro) for ro in self.read_only):
            return
        self.read_only = [ro for ro in self.read_only if not ro.is_relative_to(real)]
        self.read_only.append(real)

    def _warn_link(self, path: Path) -> None:
        self.guard.warnings.append(
            f"{self._rel(path)} is a symbolic link in the way of a read-only mount; the "
            "sandbox can replace it: do not run git there on the host while the session is open")

    def _inside(self, path: Path) -> bool:
        return path.resolve().is_relative_to(self.ws)

    def _rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.ws).as_posix()
        except ValueError:
            return str(path)

    def _target_of(self, path: Path) -> str:
        return f"{self.target}/{path.relative_to(self.ws).as_posix()}"
