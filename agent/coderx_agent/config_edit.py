"""Changing one key of one config file, keeping its comments and layout (tomlkit).

Used by ``config set|unset`` and by the terminal (``/vim``, ``/mcp add``, an approval
answered ``always``). Every change is validated against ``AgentConfig`` before the file is
replaced (atomically), so a bad value never reaches the disk.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import tomlkit
from pydantic import ValidationError

from coderx_agent.config import AgentConfig, read_toml
from coderx_agent.errors import ConfigError


def parse_value(raw: str) -> Any:
    """A TOML value (``3``, ``true``, ``["a"]``), else the text itself."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def load_doc(path: Path) -> Any:
    """The file as an editable tomlkit document ({} if absent).

    Raises:
        ConfigError: The file is not TOML (names the file and line).
    """
    read_toml(path)  # a syntax error names the file and line, as on load
    return tomlkit.parse(path.read_text(encoding="utf-8")) if path.is_file() else (
        tomlkit.document())


def save_doc(path: Path, doc: Any) -> None:
    """Validate the document as a config layer, then write it atomically.

    Raises:
        ConfigError: The change makes the file invalid (nothing is written).
    """
    try:
        AgentConfig(**doc.unwrap())
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"not set: {where}: {first['msg']}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(tomlkit.dumps(doc), encoding="utf-8")
    tmp.replace(path)


def _table(doc: Any, parents: list[str], key: str) -> Any:
    node = doc
    for p in parents:
        node = node.setdefault(p, tomlkit.table())
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: {p} is not a table")
    return node


def set_key(path: Path, key: str, value: Any) -> None:
    """Set the dotted ``key`` (``ui.vi_mode``) to ``value`` in ``path``.

    Raises:
        ConfigError: The file is not TOML or the value is invalid.
    """
    doc = load_doc(path)
    *parents, last = key.split(".")
    _table(doc, parents, key)[last] = value
    save_doc(path, doc)


def add_to_list(path: Path, key: str, item: str) -> bool:
    """Append ``item`` to the list at ``key`` unless it is there; False when it was.

    Raises:
        ConfigError: The file is not TOML or ``key`` is not a list.
    """
    doc = load_doc(path)
    *parents, last = key.split(".")
    node = _table(doc, parents, key)
    current = node.setdefault(last, tomlkit.array())
    if not isinstance(current, list):
        raise ConfigError(f"{key} in {path} is not a list")
    if item in current:
        return False
    current.append(item)
    save_doc(path, doc)
    return True


def unset_key(path: Path, key: str) -> None:
    """Remove the dotted ``key`` from ``path``.

    Raises:
        ConfigError: The file is not TOML or the key is not set there.
    """
    doc = load_doc(path)
    *parents, last = key.split(".")
    node: Any = doc
    for p in parents:
        node = node.get(p) if isinstance(node, dict) else None
    if not isinstance(node, dict) or last not in node:
        raise ConfigError(f"{key} is not set in {path}")
    del node[last]
    save_doc(path, doc)
