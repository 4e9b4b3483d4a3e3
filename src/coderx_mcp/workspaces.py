"""Host directories that become a sandbox's ``/workspace``, and who owns them.

The sandbox runs as the workspace owner's uid, so files it creates belong to that user.
A root-owned workspace is run as ``settings.sandbox_uid`` (1000 by default) instead, never
as root; when the server itself runs as root it hands such a workspace to that uid.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from coderx_mcp.config import Settings
from coderx_mcp.errors import ConfigError

# Binding these would hand the host's system to the sandbox.
_FORBIDDEN = {Path(p) for p in ("/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc",
                                "/root", "/run", "/sbin", "/sys", "/tmp", "/usr", "/var", "/home")}


def check_workspace(path: Path, settings: Settings) -> Path:
    """Resolve and vet a workspace directory given by a client or the settings.

    Raises:
        ConfigError: If it does not exist, is not a directory, or is a system directory.
    """
    if not path.is_absolute():
        raise ConfigError(f"workspace {str(path)!r} must be an absolute path")
    real = path.resolve()
    if not real.is_dir():
        raise ConfigError(f"workspace {str(path)!r} does not exist or is not a directory")
    state = settings.state_dir.resolve()
    if real in _FORBIDDEN or real == Path.home().resolve() or real == state \
            or state.is_relative_to(real):
        raise ConfigError(f"workspace {str(real)!r} is a system or server directory; "
                          "use a project directory")
    if (real / "var" / "run" / "docker.sock").exists() or real == Path("/var/run"):
        raise ConfigError(f"workspace {str(real)!r} holds a Docker socket; refusing to mount it")
    return real


def sandbox_ids(workspace: Path, settings: Settings) -> tuple[int, int]:
    """The uid and gid the sandbox of this workspace runs as (never 0)."""
    st = workspace.stat()
    if st.st_uid != 0:
        return st.st_uid, st.st_gid
    uid = gid = settings.sandbox_uid
    if settings.chown_root_workspace and os.geteuid() == 0:
        _chown_tree(workspace, uid, gid)
    return uid, gid


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.lchown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            if os.lstat(p).st_uid == 0:
                os.lchown(p, uid, gid)


def new_scratch(settings: Settings) -> Path:
    """A fresh, empty scratch workspace (removed with its session)."""
    settings.workspaces_root.mkdir(parents=True, exist_ok=True, mode=0o755)
    path = settings.workspaces_root.resolve() / f"scratch-{secrets.token_hex(6)}"
    path.mkdir(mode=0o755)
    return path


def is_scratch(path: Path, settings: Settings) -> bool:
    """Whether a workspace is a scratch directory this server made."""
    return path.parent == settings.workspaces_root.resolve() and path.name.startswith("scratch-")


def remove_scratch(path: Path, settings: Settings) -> None:
    """Delete a scratch workspace; any other directory is left alone."""
    if is_scratch(path, settings):
        shutil.rmtree(path, ignore_errors=True)
