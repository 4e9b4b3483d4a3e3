"""Project memory: ``CODERX.md`` (and ``AGENTS.md`` / ``CLAUDE.md``) in the system prompt.

Loaded from general to specific: the user's config directory, then every directory from
the repository root down to the current one. The system prompt is rebuilt for every model
call, so memory survives compaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import platformdirs

#: Cap per memory file: memory is read on every turn.
MAX_CHARS = 20_000


def repo_root(cwd: Path) -> Path:
    """The nearest directory with ``.git`` at or above ``cwd`` (``cwd`` when none)."""
    for d in (cwd, *cwd.parents):
        if (d / ".git").exists():
            return d
    return cwd


def memory_dirs(cwd: Path, user_dir: Path | None = None) -> list[Path]:
    """Where memory files are looked for, most general first."""
    root = repo_root(cwd)
    chain = [cwd, *[p for p in cwd.parents if p.is_relative_to(root)]]
    return [user_dir or Path(platformdirs.user_config_dir("coderx")), *reversed(chain)]


def load_memory(cwd: Path, names: Sequence[str], user_dir: Path | None = None) -> str:
    """The memory files' text, each under a heading naming it ('' when there are none)."""
    parts = []
    seen: set[Path] = set()
    for d in memory_dirs(cwd, user_dir):
        for name in names:
            path = d / name
            if not path.is_file() or path.resolve() in seen:
                continue
            seen.add(path.resolve())
            text = path.read_text(encoding="utf-8", errors="replace")
            if len(text) > MAX_CHARS:
                text = text[:MAX_CHARS] + f"\n[… cut at {MAX_CHARS} characters]"
            parts.append(f"## {path}\n\n{text.strip()}")
    return "\n\n".join(parts)
