"""A session's changes against where it started, from a shadow git repository.

The shadow repository belongs to the server (its own directory, its own config, no system
or global config): ``git add -A`` of the workspace into the shadow index records a tree at
session start and again when a diff is asked for. It never touches the workspace's own
``.git`` and never runs anything the workspace contains (no hooks, filters or attributes
drivers are defined in the shadow's config). It works for every mode, git repository or
not; ``.gitignore`` files in the workspace are honoured.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pydantic import BaseModel

from coderx_mcp.errors import GitError
from coderx_mcp.workspace.hostgit import git, git_text

# A work tree of its own, no line-ending conversion, no gc or reflogs in the way.
_CONFIG = """[core]
\tbare = false
\tautocrlf = false
\tsafecrlf = false
\tlogAllRefUpdates = false
[gc]
\tauto = 0
"""


class FileChange(BaseModel):
    """One changed path."""

    path: str
    status: str  # A added, M modified, D deleted, R renamed, T type changed
    added: int | None  # lines; None for binary files
    removed: int | None


class Diff(BaseModel):
    """Changes between two trees: the file list, a stat line and the unified diff."""

    files: list[FileChange]
    stat: str
    patch: str


class Shadow:
    """The shadow repository of one session.

    Args:
        git_dir: Where the shadow repository lives (created on first use).
        work_tree: The workspace directory on the host.
    """

    def __init__(self, git_dir: Path, work_tree: Path) -> None:
        self.git_dir = git_dir
        self.work_tree = work_tree
        self.base: str | None = None

    def _env(self) -> dict[str, str]:
        return {"GIT_DIR": str(self.git_dir), "GIT_WORK_TREE": str(self.work_tree)}

    async def _git(self, args: list[str]) -> str:
        # safe.directory: the workspace may belong to the sandbox's user, not the server's.
        return await git_text(["-c", "safe.directory=*", *args], env=self._env(),
                              isolated=True, cwd=self.work_tree)

    async def snapshot(self) -> str:
        """Record the workspace as a tree now and return its id."""
        if not (self.git_dir / "HEAD").exists():
            self.git_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            await git(["init", "-q", "--bare", str(self.git_dir)], isolated=True)
            _add_config(self.git_dir)
        await self._git(["add", "-A", "--ignore-errors", "."])
        return await self._git(["write-tree"])

    async def start(self) -> str:
        """Take the baseline (where the session started); one recorded already for this
        session (by another replica, shared sessions) is kept."""
        mark = self.git_dir / "coderx-base"
        if mark.is_file():
            self.base = mark.read_text().strip()
            return self.base
        self.base = await self.snapshot()
        mark.write_text(self.base)
        return self.base

    async def diff(self, context: int = 3) -> Diff:
        """Changes of the workspace since :meth:`start`.

        Raises:
            GitError: No baseline was taken, or git failed.
        """
        if self.base is None:
            raise GitError("this session has no baseline to diff against")
        now = await self.snapshot()
        opts = ["--no-ext-diff", "--no-textconv", "--no-color", "-M", self.base, now]
        status = await self._git(["diff-tree", "-r", "--name-status", "-z", *opts])
        numstat = await self._git(["diff-tree", "-r", "--numstat", "-z", *opts])
        stat = await self._git(["diff-tree", "-r", "--shortstat", *opts])
        patch = await self._git(["diff-tree", "-r", "-p", f"-U{context}", "--binary", *opts])
        return Diff(files=_files(status, numstat), stat=stat.strip() or "no changes",
                    patch=patch)

    def remove(self) -> None:
        """Delete the shadow repository."""
        shutil.rmtree(self.git_dir, ignore_errors=True)


def _add_config(git_dir: Path) -> None:
    # Written directly: one git process fewer per setting on a session's first call.
    with open(git_dir / "config", "a") as f:
        f.write(_CONFIG)


def _files(name_status: str, numstat: str) -> list[FileChange]:
    """Join ``--name-status -z`` and ``--numstat -z`` output into one list."""
    counts: dict[str, tuple[int | None, int | None]] = {}
    parts = numstat.split("\0")
    i = 0
    while i < len(parts) - 1:
        fields = parts[i].split("\t")
        if len(fields) == 3 and fields[2] == "":  # a rename: two paths follow
            path, i = parts[i + 2], i + 3
        else:
            path, i = fields[-1], i + 1
        a, r = fields[0], fields[1]
        counts[path] = (int(a) if a.isdigit() else None, int(r) if r.isdigit() else None)
    files: list[FileChange] = []
    parts = name_status.split("\0")
    i = 0
    while i < len(parts) - 1:
        code = parts[i]
        if code[:1] in ("R", "C"):
            path, i = parts[i + 2], i + 3
        else:
            path, i = parts[i + 1], i + 2
        added, removed = counts.get(path, (None, None))
        files.append(FileChange(path=path, status=code[:1], added=added, removed=removed))
    return files
