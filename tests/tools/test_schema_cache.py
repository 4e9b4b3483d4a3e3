"""Tool schemas kept across starts (``tools/schema_cache.py``): a server built from kept
schemas lists and runs exactly the tools a server that derived them does."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from fastmcp.tools.base import ToolResult
from fastmcp.tools.function_tool import FunctionTool

from coderx_mcp.config import Settings
from coderx_mcp.server import build_server
from coderx_mcp.tools.schema_cache import KEPT_FILES, CachedSchema, SchemaCache, source_key

MakeSettings = Any


def _derivations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the tools FastMCP derives from their functions from now on."""
    seen: list[str] = []
    real = FunctionTool.from_function.__func__  # type: ignore[attr-defined]

    def spy(cls: type[FunctionTool], fn: Any, **kw: Any) -> FunctionTool:
        seen.append(kw.get("name") or fn.__name__)
        return real(cls, fn, **kw)  # type: ignore[no-any-return]

    monkeypatch.setattr(FunctionTool, "from_function", classmethod(spy))
    return seen


async def test_kept_schemas_give_the_same_tools(tmp_path: Path, settings: Settings,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    derived = _derivations(monkeypatch)
    first = build_server(settings)
    names = list(derived)
    assert len(names) > 30
    [kept_file] = (tmp_path / "coderx-mcp").glob("tool-schemas-*.json")
    assert kept_file.stat().st_mode & 0o777 == 0o600
    # Every tool is built from kept schemas at the next start, including key_set, whose
    # function returns Any (an elicitation's input-required result passes through).
    returns = {t.name: t.return_type for t in await first.list_tools()
               if isinstance(t, FunctionTool)}
    assert returns["key_set"] is Any and returns["read_file"] is ToolResult
    derived.clear()
    second = build_server(settings)
    assert derived == []
    assert {t.name: t.return_type for t in await second.list_tools()
            if isinstance(t, FunctionTool)} == returns
    # The same objects, every field (run_in_thread, task config, tags, ...), not just the
    # listing.
    kept = {t.name: t.model_dump(exclude={"fn"}) for t in await second.list_tools()}
    assert kept == {t.name: t.model_dump(exclude={"fn"}) for t in await first.list_tools()}
    async with Client(first) as a, Client(second) as b:
        listed_a = {t.name: t.model_dump() for t in await a.list_tools()}
        listed_b = {t.name: t.model_dump() for t in await b.list_tools()}
        assert listed_a == listed_b and set(listed_a) == set(names)
        # Arguments are still validated by the function's signature, with the same words.
        bad = {"path": "x", "limit": 0}
        ra = await a.call_tool("read_file", bad, raise_on_error=False)
        rb = await b.call_tool("read_file", bad, raise_on_error=False)
        assert ra.is_error and rb.is_error
        assert ra.content[0].text == rb.content[0].text  # type: ignore[union-attr]
        assert "limit" in rb.content[0].text  # type: ignore[union-attr]


def test_key_follows_the_sources(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    module = pkg / "tools.py"
    module.write_text("def f(): pass\n")
    before = source_key(pkg)
    assert source_key(pkg) == before
    module.write_text("def f(x: int): pass\n")
    assert source_key(pkg) != before
    after = source_key(pkg)
    os.utime(module, ns=(1, 1))  # same size, other time: another build of the file
    assert source_key(pkg) != after


def test_other_key_or_damaged_file_is_not_used(tmp_path: Path) -> None:
    cache = SchemaCache(tmp_path, "k1")
    cache.put("t", CachedSchema(description="d", parameters={"type": "object"},
                                output_schema=None))
    cache.save()
    assert SchemaCache(tmp_path, "k1").get("t") is not None
    assert SchemaCache(tmp_path, "k2").get("t") is None
    assert cache.path is not None
    cache.path.write_text("{not json")
    assert SchemaCache(tmp_path, "k1").get("t") is None


def test_unwritable_directory_costs_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    cache = SchemaCache(blocker / "sub", "k")  # cannot be made: a file is in the way
    cache.put("t", CachedSchema(description=None, parameters={}, output_schema=None))
    cache.save()  # no error
    assert SchemaCache(blocker / "sub", "k").get("t") is None
    assert list(tmp_path.iterdir()) == [blocker]


def test_only_the_newest_files_are_kept(tmp_path: Path) -> None:
    for n in range(KEPT_FILES + 3):
        cache = SchemaCache(tmp_path, f"key{n:02d}")
        cache.put("t", CachedSchema(description=None, parameters={}, output_schema=None))
        cache.save()
        assert cache.path is not None
        os.utime(cache.path, ns=(n * 10**9, n * 10**9))  # written in this order
    kept = sorted(p.name for p in tmp_path.glob("tool-schemas-*.json"))
    assert kept == sorted(f"tool-schemas-key{n:02d}.json"
                          for n in range(3, KEPT_FILES + 3))
