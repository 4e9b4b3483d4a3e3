"""The managed token store on its own: hashes only, 0600, revocation seen by a running
reader, damage reported in one sentence."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from coderx_mcp.errors import ConfigError
from coderx_mcp.principals import PrincipalPolicy, TokenStore


def test_create_stores_only_a_hash_with_the_policy(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "state" / "tokens.json")
    token = store.create("alice", PrincipalPolicy(max_sessions=2))
    raw = store.path.read_text()
    assert token not in raw and '"max_sessions": 2' in raw
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    record = store.verify(token)
    assert record is not None and record.name == "alice"
    assert store.verify(token + "x") is None
    assert store.list()[0].last_used is not None  # written on first use


def test_a_revoke_by_another_process_is_seen_on_the_next_check(tmp_path: Path) -> None:
    server = TokenStore(tmp_path / "tokens.json")
    cli = TokenStore(tmp_path / "tokens.json")
    token = cli.create("bob", PrincipalPolicy())
    assert server.verify(token) is not None
    cli.revoke("bob")
    assert server.verify(token) is None
    assert server.policy("bob") is None


def test_names_and_damage_are_refused_in_one_sentence(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    with pytest.raises(ConfigError, match="not a valid principal name"):
        store.create("a/b", PrincipalPolicy())
    store.create("carol", PrincipalPolicy())
    with pytest.raises(ConfigError, match="a token named 'carol' exists"):
        store.create("carol", PrincipalPolicy())
    with pytest.raises(ConfigError, match="no token named 'dave'"):
        store.revoke("dave")
    store.path.write_text("{not json")
    with pytest.raises(ConfigError, match="is damaged"):
        store.list()
