"""Tool schemas kept across starts, so a start does not derive them again.

FastMCP derives each tool's description and input schema from its signature, annotations
and docstring (a docstring parse and a JSON-schema generation per tool), and we generate
each output schema from its pydantic model: ~0.1 s for our tools at every start, before the
server can answer ``initialize``. What it derives depends only on our source files and the
library versions, so it is kept in a file named by a key of both; a file for other sources
is simply not found, and one that cannot be read or written costs nothing but the time.

:func:`registering` makes a cache current while the tools register (``register_all``);
``tools.common.tool`` asks :func:`current` for it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextvars import ContextVar
from importlib import metadata
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel, ValidationError

_log = structlog.get_logger("coderx.tools")
_PACKAGE = Path(__file__).resolve().parents[1]
_LIBRARIES = ("fastmcp", "mcp", "pydantic", "pydantic-core")
KEPT_FILES = 4
"""Cache files kept (one per version of the code that ran lately)."""
_current: ContextVar[SchemaCache | None] = ContextVar("coderx_schema_cache", default=None)


class CachedSchema(BaseModel):
    """What FastMCP derived for one tool."""

    description: str | None
    parameters: dict[str, Any]
    output_schema: dict[str, Any] | None
    returns_any: bool = False
    """The function is annotated ``-> Any`` (it may return what FastMCP passes through, such
    as an elicitation's input-required result), not ``-> ToolResult``."""


class _File(BaseModel):
    key: str
    tools: dict[str, CachedSchema]


def source_key(package: Path = _PACKAGE) -> str:
    """A key of everything the schemas derive from: our modules (by path, size and
    modification time: no file is read) and the versions of the libraries that derive them.
    """
    h = hashlib.sha256()
    for name in _LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            h.update(f"{name}={metadata.version(name)};".encode())
    for path in sorted(package.rglob("*.py")):
        st = path.stat()
        h.update(f"{path.relative_to(package)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


class SchemaCache:
    """The schemas of one server's tools, loaded from and saved to ``directory``.

    Args:
        directory: Where cache files live (the user's cache directory); None keeps nothing.
        key: :func:`source_key` of the running code.
    """

    def __init__(self, directory: Path | None, key: str) -> None:
        self.key = key
        self.path = directory / f"tool-schemas-{key[:24]}.json" if directory else None
        self._tools: dict[str, CachedSchema] = {}
        self._changed = False
        if self.path is not None:
            with contextlib.suppress(OSError, ValidationError, ValueError):
                found = _File.model_validate_json(self.path.read_bytes())
                if found.key == key:
                    self._tools = found.tools

    @classmethod
    def for_user(cls) -> SchemaCache:
        """The cache in the user's cache directory (``XDG_CACHE_HOME`` and the platform's
        equivalents are honoured)."""
        from platformdirs import user_cache_path

        return cls(user_cache_path("coderx-mcp", appauthor=False), source_key())

    def get(self, name: str) -> CachedSchema | None:
        """The schemas of tool ``name``, if kept for this code."""
        return self._tools.get(name)

    def put(self, name: str, schema: CachedSchema) -> None:
        """Keep the schemas derived for tool ``name``."""
        if self._tools.get(name) != schema:
            self._tools[name] = schema
            self._changed = True

    def save(self) -> None:
        """Write the file if anything was added (atomically, readable by its owner only)."""
        if not self._changed or self.path is None:
            return
        tmp: str | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tool-schemas-")
            with os.fdopen(fd, "wb") as f:
                f.write(_File(key=self.key, tools=self._tools).model_dump_json().encode())
            os.replace(tmp, self.path)
            self._changed = False
            self._prune()
        except OSError as exc:  # a read-only home: start-up stays as it was
            _log.debug("tool schemas not cached", path=str(self.path), error=str(exc))
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def _prune(self) -> None:
        """Keep the newest few files: every upgrade or edit writes one under a new key
        (a few, not one, so installs side by side do not evict each other at each start)."""
        assert self.path is not None
        files = sorted(self.path.parent.glob("tool-schemas-*.json"),
                       key=lambda f: f.stat().st_mtime_ns, reverse=True)
        for old in files[KEPT_FILES:]:
            with contextlib.suppress(OSError):
                old.unlink()


@contextlib.contextmanager
def registering(cache: SchemaCache | None) -> Iterator[None]:
    """Make ``cache`` the one tools use while they register; saved at the end."""
    token = _current.set(cache)
    try:
        yield
    finally:
        _current.reset(token)
    if cache is not None:
        cache.save()


def current() -> SchemaCache | None:
    """The cache of the registration under way, if any."""
    return _current.get()
