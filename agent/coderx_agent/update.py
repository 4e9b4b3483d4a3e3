"""``coderx-agent update``: upgrade with the installer that installed the package.

The installer is read from the package's ``INSTALLER`` record (pip writes ``pip``, uv
writes ``uv``) and from where the environment lives (pipx and ``uv tool`` keep theirs
under their own directories). The update check (``ui.update_check``) runs at most once a
day; its last time is kept in the user's state directory.
"""

from __future__ import annotations

import sys
import time
from importlib import metadata
from pathlib import Path

import platformdirs

PACKAGE = "coderx-mcp"
DAY_S = 24 * 3600


def installer(prefix: str | None = None, record: str | None = None) -> str:
    """``pipx``, ``uv-tool``, ``uv`` or ``pip``."""
    prefix = prefix if prefix is not None else sys.prefix
    if record is None:
        try:
            record = metadata.distribution(PACKAGE).read_text("INSTALLER") or ""
        except metadata.PackageNotFoundError:
            record = ""
    parts = Path(prefix).parts
    if "pipx" in parts:
        return "pipx"
    if "uv" in parts and "tools" in parts:
        return "uv-tool"
    return "uv" if record.strip() == "uv" else "pip"


def upgrade_argv(kind: str, index_url: str | None = None) -> list[str]:
    """The command that upgrades the package with ``kind`` of installer."""
    index = ["--index-url", index_url] if index_url else []
    if kind == "pipx":
        return ["pipx", "upgrade", *(["--pip-args", f"--index-url={index_url}"]
                                     if index_url else []), PACKAGE]
    if kind == "uv-tool":
        return ["uv", "tool", "upgrade", *index, PACKAGE]
    if kind == "uv":
        return ["uv", "pip", "install", "--python", sys.executable, "--upgrade", *index,
                PACKAGE]
    return [sys.executable, "-m", "pip", "install", "--upgrade", *index, PACKAGE]


def check_due(stamp: Path | None = None, now: float | None = None) -> bool:
    """Whether a day has passed since the last update check; records this one if so."""
    stamp = stamp or Path(platformdirs.user_state_dir("coderx")) / "update-check"
    now = time.time() if now is None else now
    try:
        last = float(stamp.read_text().strip())
    except (OSError, ValueError):
        last = 0.0
    if now - last < DAY_S:
        return False
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(str(now))
    return True
