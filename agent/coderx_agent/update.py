"""``coderx-agent update``: upgrade with the installer that installed the package.

The installer is read from the package's ``INSTALLER`` record (pip writes ``pip``, uv
writes ``uv``) and from where the environment lives (pipx and ``uv tool`` keep theirs
under their own directories). The update check (``ui.update_check``) runs at most once a
day; its last time is kept in the user's state directory.
"""

from __future__ import annotations

import re
import sys
import time
from importlib import metadata
from pathlib import Path

import httpx
import platformdirs

PACKAGE = "coderx-mcp"
DAY_S = 24 * 3600
DEFAULT_INDEX = "https://pypi.org/simple"
#: Final releases only (``1.2.3``); pre-releases are not offered.
RELEASE = re.compile(r"^\d+(?:\.\d+)*$")


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


def release_key(version: str) -> tuple[int, ...]:
    """A final release's version as a sortable tuple."""
    return tuple(int(p) for p in version.split("."))


async def newer_release(current: str, index_url: str | None = None,
                        timeout_s: float = 5.0) -> str | None:
    """The newest final release on the index when it is newer than ``current`` (None when
    it is not, or the index cannot be read: an update check never gets in the way).

    Reads the index's JSON project page (PEP 691/700: its ``versions`` list).
    """
    url = f"{(index_url or DEFAULT_INDEX).rstrip('/')}/{PACKAGE}/"
    try:
        async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=True) as client:
            r = await client.get(url, headers={
                "Accept": "application/vnd.pypi.simple.v1+json"})
            versions = [v for v in r.json().get("versions", [])
                        if isinstance(v, str) and RELEASE.match(v)]
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    if not versions:
        return None
    best = max(versions, key=release_key)
    if not RELEASE.match(current) or release_key(best) > release_key(current):
        return best
    return None
