"""Catalogue B8 (secrets) and the key store's crash cases (CR-07, CR-09), in process [U]
and with real server and CLI processes where the process boundary is the point."""

import base64
import contextlib
import hashlib
import hmac
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from fastmcp import Client
from fastmcp.client.transports import StdioTransport
from tests.conftest import SERVE, child_env

from coderx_mcp.errors import KeyStoreError, WrongPassphrase
from coderx_mcp.keystore import ITERATIONS, open_store


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "keys.enc"


def _derive(passphrase: str, head: dict[str, object]) -> bytes:
    salt = base64.b64decode(str(head["salt"]))
    return hashlib.pbkdf2_hmac("sha256", passphrase.encode(), salt, int(str(head["iterations"])))


def test_se01_kdf_parameters_in_the_header_are_the_ones_used(store_path: Path,
                                                             tmp_path: Path) -> None:
    assert ITERATIONS >= 600_000  # the OWASP floor for PBKDF2-HMAC-SHA256
    open_store(store_path, "pass").set("K1", "v1")
    other = tmp_path / "other.enc"
    open_store(other, "pass").set("K1", "v1")
    head = json.loads(store_path.read_bytes())
    assert (head["kdf"], head["version"], head["iterations"]) == ("pbkdf2-sha256", 1, ITERATIONS)
    assert len(base64.b64decode(head["salt"])) == 16
    assert head["salt"] != json.loads(other.read_bytes())["salt"]  # random per store
    # The header is the truth: its KDF with its salt and count gives the 32-byte Fernet key.
    key = _derive("pass", head)
    assert len(key) == 32
    plain = Fernet(base64.urlsafe_b64encode(key)).decrypt(head["token"].encode())
    assert json.loads(plain)["keys"]["K1"]["value"] == "v1"


def test_se02_old_work_factor_unlocks_and_is_upgraded_atomically(store_path: Path) -> None:
    salt = os.urandom(16)
    key = hashlib.pbkdf2_hmac("sha256", b"pass", salt, 100_000)
    old = {"format": "coderx-keys", "version": 1, "kdf": "pbkdf2-sha256", "iterations": 100_000,
           "salt": base64.b64encode(salt).decode(),
           "check": base64.b64encode(hmac.new(key, b"coderx-keys passphrase check v1",
                                              "sha256").digest()).decode(),
           "token": Fernet(base64.urlsafe_b64encode(key)).encrypt(json.dumps({"keys": {
               "OLD": {"value": "old-value", "created": "c", "updated": "u"}}}).encode()
           ).decode()}
    fd = os.open(store_path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, json.dumps(old).encode())
    os.close(fd)
    before = os.stat(store_path).st_ino
    assert open_store(store_path, "pass").get("OLD") == "old-value"
    head = json.loads(store_path.read_bytes())
    assert head["iterations"] == ITERATIONS and head["salt"] != old["salt"]
    assert os.stat(store_path).st_ino != before  # replaced by rename, not rewritten in place
    assert stat.S_IMODE(store_path.stat().st_mode) == 0o600
    assert open_store(store_path, "pass").get("OLD") == "old-value"
    with pytest.raises(WrongPassphrase):
        open_store(store_path, "wrong")


def test_se04_private_from_creation_and_readable_stores_refused(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "keys.enc"
    old = os.umask(0o022)
    try:
        open_store(path, "pass").set("K1", "v1")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.parent.iterdir()} == {
        "keys.enc": 0o600, "keys.enc.lock": 0o600}
    for mode in (0o644, 0o640, 0o604):
        path.chmod(mode)
        with pytest.raises(KeyStoreError, match="open to other users"):
            open_store(path, "pass")
    path.chmod(0o600)
    assert open_store(path, "pass").get("K1") == "v1"


_WRITER = """
import sys
from coderx_mcp.keystore import open_store
path, mode = sys.argv[1], sys.argv[2]
ks = open_store(__import__("pathlib").Path(path), "p0")
print("ready", flush=True)
i = 0
while True:
    i += 1
    if mode == "set":
        ks.set("COUNTER", str(i))
    elif mode == "rotate":
        ks.rotate(f"p{i % 2}")
    else:
        with ks._locked():
            print("locked", flush=True)
            __import__("time").sleep(60)
"""


def _killed_writer(store_path: Path, mode: str, after: float) -> None:
    """Run a writer process in ``mode`` and SIGKILL it ``after`` seconds into its work."""
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(store_path), mode],
                            stdout=subprocess.PIPE, env=child_env())
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    if mode == "lock":
        assert proc.stdout.readline() == b"locked\n"
    time.sleep(after)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    proc.stdout.close()


def test_cr07_killed_mid_write_leaves_the_old_or_the_new_state(store_path: Path) -> None:
    open_store(store_path, "p0").set("COUNTER", "0")
    for after in (0.4, 1.3):  # inside the first write, and a few writes later
        _killed_writer(store_path, "set", after)
        value = open_store(store_path, "p0").get("COUNTER")
        assert value is not None and value.isdigit()
    _killed_writer(store_path, "rotate", 1.0)
    opened = []
    for phrase in ("p0", "p1"):
        with contextlib.suppress(WrongPassphrase):
            opened.append(open_store(store_path, phrase).get("COUNTER"))
    assert opened == [value]  # exactly one passphrase opens it, with the whole content


def test_cr09_lock_of_a_killed_writer_is_not_waited_for(store_path: Path) -> None:
    open_store(store_path, "p0").set("K1", "v1")
    _killed_writer(store_path, "lock", 0)
    start = time.monotonic()
    open_store(store_path, "p0").set("K2", "v2")  # flock dies with its holder: nothing stale
    assert time.monotonic() - start < 10
    assert [k.name for k in open_store(store_path, "p0").list()] == ["K1", "K2"]


@pytest.mark.docker
async def test_se10_stdio_takes_the_passphrase_from_the_environment(tmp_path: Path) -> None:
    store = tmp_path / "keys.enc"
    open_store(store, "env-pass").set("API_TOKEN", "sk-SENTINEL-se10-value")
    ws = tmp_path / "proj"
    ws.mkdir()
    os.chown(ws, 1000, 1000)
    # Missing and empty are one case to the server (``if not phrase``): the empty one is run.
    for env, expect in (({"CODERX_KEY_PASSPHRASE": "env-pass"}, None),
                        ({"CODERX_KEY_PASSPHRASE": ""}, "CODERX_KEY_PASSPHRASE")):
        transport = StdioTransport(
            command=SERVE[0], args=[*SERVE[1:], "--workspace", str(ws)],
            env=child_env(CODERX_KEY_FILE=str(store), **env))
        # A prompt on stdout would break the client's JSON-RPC stream: the call would fail.
        async with Client(transport) as client:
            r = await client.call_tool("keys_list", {}, raise_on_error=False)
        text = r.content[0].text  # type: ignore[union-attr]
        if expect is None:
            assert not r.is_error and "API_TOKEN" in text
        else:
            assert r.is_error and expect in text and "\n" not in text.strip()
        assert "sk-SENTINEL" not in text
