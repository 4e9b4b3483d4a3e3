"""Which host directories may become a sandbox's ``/workspace``, and as which uid.

The operator (``serve --workspace``, ``CODERX_WORKSPACE_ROOTS``) or the MCP host
(``roots/list`` on stdio) chooses the allowed roots; a tool argument only picks a directory
*inside* one of them, checked after symlinks are resolved. The sandbox never runs as root,
and the server never changes the owner of a directory it did not create.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlparse

from pydantic import BaseModel, ConfigDict

from coderx_mcp.config import Settings
from coderx_mcp.errors import WorkspaceRefused

Rule = Literal["--workspace", "mcp-roots", "cwd", "scratch"]

# Mounting one of these, or anything under the first group, would hand the host to the sandbox.
_SYSTEM_TREES = tuple(Path(p) for p in ("/proc", "/sys", "/dev", "/etc", "/boot", "/run",
                                         "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64",
                                         "/libx32", "/var/run", "/var/lib", "/root/.ssh"))
_SYSTEM_DIRS = {Path(p) for p in ("/", "/home", "/root", "/var", "/tmp", "/opt", "/srv",
                                   "/mnt", "/media", "/snap")}


def is_system_dir(path: Path) -> bool:
    """Whether ``path`` (resolved) is ``/``, a home directory itself or system territory."""
    home = Path.home().resolve()
    return (path in _SYSTEM_DIRS or path == home
            or any(path == t or path.is_relative_to(t) for t in _SYSTEM_TREES))


def _vet(path: Path, what: str, protected: tuple[Path, ...], may_hold: bool = False) -> Path:
    """Resolve a directory and refuse system or server directories.

    ``may_hold``: a root may contain the server's directories (they stay refused as
    workspaces themselves); a workspace may not.

    Raises:
        WorkspaceRefused: It is missing, not a directory, or off limits.
    """
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise WorkspaceRefused(f"{what} {str(path)!r} does not exist") from None
    if not real.is_dir():
        raise WorkspaceRefused(f"{what} {str(real)!r} is not a directory")
    if is_system_dir(real):
        raise WorkspaceRefused(f"{what} {str(real)!r} is a system or home directory; "
                               "use a project directory")
    for p in protected:
        if real == p or real.is_relative_to(p) or (p.is_relative_to(real) and not may_hold):
            raise WorkspaceRefused(f"{what} {str(real)!r} is or holds this server's own "
                                   f"directory {str(p)!r}")
    if (real / "docker.sock").exists() or (real / "var" / "run" / "docker.sock").exists():
        raise WorkspaceRefused(f"{what} {str(real)!r} holds a Docker socket")
    return real


def server_dirs(settings: Settings) -> tuple[Path, ...]:
    """The server's own directories, never usable as (or inside) a workspace."""
    return tuple(p.resolve() for p in (settings.data_dir, settings.state_dir))


def file_uri_path(uri: str) -> Path | None:
    """The local path of a ``file://`` URI, or None for any other URI."""
    parsed = urlparse(uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        return None
    return Path(unquote(parsed.path))


class WorkspacePolicy(BaseModel):
    """Allowed roots and the default workspace, with the rule that chose it.

    Attributes:
        roots: Resolved directories inside which a workspace may be mounted.
        default: The default workspace (None: scratch workspaces).
        rule: Which rule chose the default: ``--workspace`` (operator), ``mcp-roots`` (the
            host's roots), ``cwd`` (the server's directory) or ``scratch``.
        note: Why a fallback was taken (shown in ``health`` and logged once).
        protected: The server's own directories.
    """

    model_config = ConfigDict(frozen=True)

    roots: tuple[Path, ...]
    default: Path | None
    rule: Rule
    note: str | None = None
    protected: tuple[Path, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings, cwd: Path, http: bool = False
                      ) -> WorkspacePolicy:
        """The policy at start-up: configured workspace and roots, else ``cwd`` (not over
        HTTP, whose clients are elsewhere), else scratch.

        Raises:
            WorkspaceRefused: A configured workspace or root is missing or off limits.
        """
        protected = server_dirs(settings)
        roots = [_vet(r, "workspace root", protected, may_hold=True)
                 for r in settings.workspace_roots]
        if settings.workspace is not None:
            default = _vet(settings.workspace, "workspace", protected)
            if not any(default.is_relative_to(r) for r in roots):
                roots.insert(0, default)
            return cls(roots=tuple(roots), default=default, rule="--workspace",
                       protected=protected)
        if roots:
            return cls(roots=tuple(roots), default=None, rule="scratch", protected=protected,
                       note="no default workspace configured: sessions opened without one get "
                            "a scratch directory")
        if not settings.use_cwd or http:
            return cls(roots=(), default=None, rule="scratch", protected=protected)
        try:
            here = _vet(cwd, "current directory", protected)
            sandbox_ids(here, settings)
        except WorkspaceRefused as exc:
            return cls(roots=(), default=None, rule="scratch", protected=protected,
                       note=f"{exc}: sessions get scratch workspaces (pass --workspace DIR)")
        return cls(roots=(here,), default=here, rule="cwd", protected=protected)

    def with_host_roots(self, uris: list[str]) -> WorkspacePolicy:
        """This policy with the MCP host's roots, unless the operator chose workspaces.

        Roots that are not local directories, or are off limits, are skipped with a note.
        """
        if self.rule == "--workspace" or (self.roots and self.rule == "scratch"):
            return self
        roots: list[Path] = []
        skipped: list[str] = []
        for uri in uris:
            path = file_uri_path(uri)
            try:
                if path is None:
                    raise WorkspaceRefused(f"root {uri!r} is not a file:// URI")
                roots.append(_vet(path, "MCP root", self.protected, may_hold=True))
            except WorkspaceRefused as exc:
                skipped.append(str(exc))
        note = "; ".join(skipped) or None
        if not roots:
            return self.model_copy(update={"note": note or self.note})
        return WorkspacePolicy(roots=tuple(roots), default=roots[0], rule="mcp-roots",
                               note=note, protected=self.protected)

    def resolve(self, requested: str) -> Path:
        """The directory a ``session_open(workspace=...)`` argument names, if allowed.

        Relative paths are taken from the default workspace. The path is resolved
        (symlinks followed) and must then lie inside an allowed root.

        Raises:
            WorkspaceRefused: Outside every root, missing, or off limits; the message names
                the allowed roots.
        """
        if not self.roots:
            raise WorkspaceRefused(
                "no workspace roots are configured: sessions get scratch workspaces only (the "
                "operator allows directories with `coderx-mcp serve --workspace DIR`)")
        path = Path(requested)
        if not path.is_absolute():
            if self.default is None:
                raise WorkspaceRefused(f"workspace {requested!r} must be an absolute path")
            path = self.default / path
        real = _vet(path, "workspace", self.protected)
        if not any(real == r or real.is_relative_to(r) for r in self.roots):
            allowed = ", ".join(str(r) for r in self.roots)
            raise WorkspaceRefused(f"workspace {str(real)!r} is outside the allowed roots "
                                   f"({allowed})")
        return real


def sandbox_ids(workspace: Path, settings: Settings) -> tuple[int, int]:
    """The uid and gid the sandbox of a host workspace runs as (never 0).

    Raises:
        WorkspaceRefused: The uid would be root, or it cannot write the directory.
    """
    st = workspace.stat()
    if settings.sandbox_uid is not None:
        uid = gid = settings.sandbox_uid
    else:
        uid, gid = st.st_uid, st.st_gid
    if uid == 0:
        raise WorkspaceRefused(
            f"workspace {str(workspace)!r} is owned by root, and the sandbox never runs as root "
            "nor does the server change the owner of your files: run the server as the "
            "project's owner, or give the directory to a user (`chown -R 1000:1000 DIR`) or "
            "make it writable for one and pass --sandbox-uid with that uid")
    writable = ((st.st_uid == uid and st.st_mode & stat.S_IWUSR)
                or (st.st_gid == gid and st.st_mode & stat.S_IWGRP)
                or st.st_mode & stat.S_IWOTH)
    if not writable:
        raise WorkspaceRefused(
            f"workspace {str(workspace)!r} (owner uid {st.st_uid}, mode "
            f"{stat.S_IMODE(st.st_mode):o}) is not writable by the sandbox uid {uid}: run "
            "the server as the directory's owner, or pass --sandbox-uid with a uid that can "
            "write it")
    return uid, gid


def created_ids(settings: Settings) -> tuple[int, int]:
    """Owner of directories the server creates for a sandbox (scratch, copies)."""
    if settings.sandbox_uid is not None:
        return settings.sandbox_uid, settings.sandbox_uid
    if os.geteuid() == 0:
        return settings.scratch_uid, settings.scratch_uid
    return os.geteuid(), os.getegid()
