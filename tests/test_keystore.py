"""The encrypted key store: round trips, wrong passphrase, damage, mode and rotation."""

import json
import stat
import threading
from pathlib import Path

import pytest

from coderx_mcp.errors import (
    KeyNotFound,
    KeyStoreCorrupt,
    KeyStoreError,
    KeyStoreLocked,
    WrongPassphrase,
)
from coderx_mcp.keystore import ITERATIONS, open_store


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "keys.enc"


def test_set_get_list_delete_round_trip(store_path: Path) -> None:
    ks = open_store(store_path, "pass-1")
    ks.set("API_TOKEN", "s3cr3t-value")
    ks.set("OTHER", "x" * 100)
    again = open_store(store_path, "pass-1")
    assert again.get("API_TOKEN") == "s3cr3t-value" and again.get("MISSING") is None
    assert [k.name for k in again.list()] == ["API_TOKEN", "OTHER"]
    again.delete("OTHER")
    with pytest.raises(KeyNotFound):
        again.delete("OTHER")
    assert [k.name for k in open_store(store_path, "pass-1").list()] == ["API_TOKEN"]


def test_file_is_0600_versioned_and_holds_no_plaintext(store_path: Path) -> None:
    open_store(store_path, "pass-1").set("API_TOKEN", "plain-needle-123")
    assert stat.S_IMODE(store_path.stat().st_mode) == 0o600
    raw = store_path.read_bytes()
    assert b"plain-needle-123" not in raw and b"API_TOKEN" not in raw
    head = json.loads(raw)
    assert (head["version"], head["iterations"], head["kdf"]) == (1, ITERATIONS, "pbkdf2-sha256")
    assert len(list(store_path.parent.iterdir())) == 2  # the store and its lock file, no temp


def test_se03_wrong_passphrase_is_clear_and_leaves_the_file(store_path: Path) -> None:
    open_store(store_path, "right").set("K1", "value-1")
    before = store_path.read_bytes()
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        open_store(store_path, "wrong")
    assert store_path.read_bytes() == before


@pytest.mark.parametrize("damage", ["token", "truncate", "garbage", "iterations"])
def test_se03_tampered_or_truncated_file_is_refused_untouched(store_path: Path,
                                                               damage: str) -> None:
    open_store(store_path, "right").set("K1", "value-1")
    raw = store_path.read_bytes()
    head = json.loads(raw)
    if damage == "token":
        tok = head["token"]
        head["token"] = tok[:50] + ("A" if tok[50] != "A" else "B") + tok[51:]
        bad = json.dumps(head).encode()
    elif damage == "iterations":
        head["iterations"] = 1
        bad = json.dumps(head).encode()
    elif damage == "truncate":
        bad = raw[: len(raw) // 2]
    else:
        bad = b"\x00\x01not a store"
    store_path.write_bytes(bad)
    with pytest.raises(KeyStoreCorrupt):
        open_store(store_path, "right")
    assert store_path.read_bytes() == bad


def test_se08_rotate_passphrase_reencrypts(store_path: Path) -> None:
    ks = open_store(store_path, "old")
    ks.set("K1", "value-1")
    salt_before = json.loads(store_path.read_bytes())["salt"]
    ks.rotate("new")
    with pytest.raises(WrongPassphrase):
        open_store(store_path, "old")
    reopened = open_store(store_path, "new")
    assert reopened.get("K1") == "value-1"
    assert json.loads(store_path.read_bytes())["salt"] != salt_before


def test_passphrase_from_environment_and_missing(store_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CODERX_KEY_PASSPHRASE", raising=False)
    with pytest.raises(KeyStoreLocked, match="CODERX_KEY_PASSPHRASE"):
        open_store(store_path)
    monkeypatch.setenv("CODERX_KEY_PASSPHRASE", "from-env")
    open_store(store_path).set("K1", "value-1")
    assert open_store(store_path, "from-env").get("K1") == "value-1"


@pytest.mark.parametrize("name", ["1ABC", "A-B", "A B", "", "x" * 200])
def test_bad_names_are_refused(store_path: Path, name: str) -> None:
    with pytest.raises(KeyStoreError, match="invalid"):
        open_store(store_path, "p").set(name, "value")


def test_concurrent_writers_keep_every_key(store_path: Path) -> None:
    open_store(store_path, "p").set("K0", "value-0")
    stores = [open_store(store_path, "p") for _ in range(4)]
    threads = [threading.Thread(target=s.set, args=(f"K{i + 1}", f"value-{i}"))
               for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [k.name for k in open_store(store_path, "p").list()] == ["K0", "K1", "K2", "K3", "K4"]
