"""The encrypted key store: named secrets in one file, usable without the server.

File format (JSON, mode 0600, replaced atomically on every change)::

    {"format": "coderx-keys", "version": 1, "kdf": "pbkdf2-sha256", "iterations": 600000,
     "salt": <base64, 16 random bytes>, "check": <base64 HMAC of a fixed label>,
     "token": <Fernet token of {"keys": {NAME: {"value", "created", "updated"}}}>}

The Fernet key is PBKDF2-HMAC-SHA256 of the passphrase with the file's salt. ``check``
tells a wrong passphrase apart from a damaged file: it matches for the right passphrase
even when the token was tampered with. A lost passphrase cannot be recovered: the keys
are gone with it. No MCP or Docker imports here (the agent CLI uses this module too).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from pydantic import BaseModel

from coderx_mcp.errors import (
    KeyNotFound,
    KeyStoreCorrupt,
    KeyStoreError,
    KeyStoreLocked,
    WrongPassphrase,
)

PASSPHRASE_ENV = "CODERX_KEY_PASSPHRASE"
PATH_ENV = "CODERX_KEY_FILE"
DEFAULT_PATH = Path("~/.coder_x_key.enc")
FORMAT, VERSION, ITERATIONS = "coderx-keys", 1, 600_000
# Stores written with an older, lower work factor still open (and are re-encrypted at
# ITERATIONS on that unlock); a count outside this range is damage, not a setting.
MIN_ITERATIONS, MAX_ITERATIONS = 100_000, 10_000_000
NAME_RX = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_VALUE = 64 << 10
_CHECK_LABEL = b"coderx-keys passphrase check v1"


class KeyInfo(BaseModel):
    """A key's name and dates; never its value."""

    name: str
    created: str
    updated: str


def default_path() -> Path:
    """``$CODERX_KEY_FILE``, else ``~/.coder_x_key.enc``."""
    return Path(os.environ.get(PATH_ENV) or DEFAULT_PATH).expanduser()


def check_name(name: str) -> str:
    """A key name must be usable as an environment variable name.

    Raises:
        KeyStoreError: It is not.
    """
    if not NAME_RX.match(name):
        raise KeyStoreError(f"key name {name[:40]!r} is invalid: use letters, digits and _, "
                            "not starting with a digit (it becomes an environment variable)")
    return name


def _derive(passphrase: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", passphrase.encode("utf-8"), salt, iterations)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class KeyStore:
    """An opened key store. Every change re-reads the file under a lock, then replaces it
    atomically, so concurrent writers (server and CLI) never lose each other's keys.

    Args:
        path: The store file (need not exist yet).
        passphrase: Its passphrase.
    """

    def __init__(self, path: Path, passphrase: str) -> None:
        if not passphrase:
            raise KeyStoreLocked(f"the key store passphrase is empty; set {PASSPHRASE_ENV}")
        self.path = path
        self._passphrase = passphrase
        self._derived: dict[tuple[bytes, int], bytes] = {}
        self._iterations = ITERATIONS
        self._keys = self._load()
        if self._iterations < ITERATIONS:
            with self._locked():
                self._save(self._load(), self._passphrase)

    # -- reading ----------------------------------------------------------------------
    def get(self, name: str) -> str | None:
        """The value of ``name``, or None if there is no such key."""
        entry = self._keys.get(name)
        return None if entry is None else str(entry["value"])

    def list(self) -> list[KeyInfo]:
        """Every key's name and dates, sorted by name."""
        return [KeyInfo(name=n, created=e["created"], updated=e["updated"])
                for n, e in sorted(self._keys.items())]

    # -- changing -----------------------------------------------------------------------
    def set(self, name: str, value: str) -> None:
        """Add or replace a key.

        Raises:
            KeyStoreError: A bad name or value.
        """
        check_name(name)
        if not value or len(value.encode("utf-8")) > MAX_VALUE or "\0" in value:
            raise KeyStoreError(f"the value of {name} must be 1 to {MAX_VALUE} bytes without "
                                "NUL characters")
        with self._locked():
            keys = self._load()
            now = _now()
            keys[name] = {"value": value, "created": keys.get(name, {}).get("created", now),
                          "updated": now}
            self._save(keys, self._passphrase)

    def delete(self, name: str) -> None:
        """Remove a key.

        Raises:
            KeyNotFound: There is no such key.
        """
        with self._locked():
            keys = self._load()
            if keys.pop(name, None) is None:
                raise KeyNotFound(f"no key named {name!r} in {self.path}")
            self._save(keys, self._passphrase)

    def rotate(self, new_passphrase: str) -> None:
        """Re-encrypt every key under a new passphrase (and a new salt), atomically."""
        if not new_passphrase:
            raise KeyStoreError("the new passphrase is empty")
        with self._locked():
            keys = self._load()
            self._save(keys, new_passphrase)
            self._passphrase = new_passphrase

    # -- file ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # A directory made for the store is private from the start (not chmod-ed later).
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _key(self, salt: bytes, iterations: int, passphrase: str) -> bytes:
        cached = self._derived.get((salt, iterations))
        if cached is None or passphrase != self._passphrase:
            cached = _derive(passphrase, salt, iterations)
            if passphrase == self._passphrase:
                self._derived[(salt, iterations)] = cached
        return cached

    def _load(self) -> dict[str, dict[str, str]]:
        """The keys in the file now (empty when there is no file)."""
        try:
            with self.path.open("rb") as f:
                mode = os.fstat(f.fileno()).st_mode & 0o777
                raw = f.read()
        except FileNotFoundError:
            self._keys = {}
            return {}
        except OSError as exc:
            raise KeyStoreError(f"cannot read the key store {self.path}: {exc.strerror}") from None
        if mode & 0o077:
            raise KeyStoreError(f"the key store {self.path} is open to other users (mode "
                                f"{mode:04o}); run `chmod 600 {self.path}` and check who read it")
        head = self._header(raw)
        salt = base64.b64decode(head["salt"])
        key = self._key(salt, head["iterations"], self._passphrase)
        self._iterations = head["iterations"]
        check = hmac.new(key, _CHECK_LABEL, "sha256").digest()
        if not hmac.compare_digest(check, base64.b64decode(head["check"])):
            raise WrongPassphrase(f"wrong passphrase for the key store {self.path} (or its "
                                  "header was altered); the file was not changed")
        try:
            plain = Fernet(base64.urlsafe_b64encode(key)).decrypt(head["token"].encode())
            keys = json.loads(plain)["keys"]
        except (InvalidToken, ValueError, KeyError, TypeError):
            raise KeyStoreCorrupt(f"the key store {self.path} is damaged (tampered with or "
                                  "truncated); the file was not changed") from None
        self._keys = keys
        return dict(keys)

    def _header(self, raw: bytes) -> dict[str, Any]:
        try:
            head = json.loads(raw)
            ok = (isinstance(head, dict) and head.get("format") == FORMAT
                  and all(isinstance(head.get(k), str) for k in ("salt", "check", "token")))
        except ValueError:
            ok = False
        if not ok:
            raise KeyStoreCorrupt(f"{self.path} is not a readable key store (damaged, truncated "
                                  "or another kind of file); the file was not changed")
        rounds = head.get("iterations")
        if (head.get("version") != VERSION or not isinstance(rounds, int)
                or not MIN_ITERATIONS <= rounds <= MAX_ITERATIONS):
            raise KeyStoreCorrupt(f"{self.path} is key store version {head.get('version')!r} "
                                  f"with {rounds!r} iterations; this version reads version "
                                  f"{VERSION} with {MIN_ITERATIONS} to {MAX_ITERATIONS}")
        return dict(head)

    def _save(self, keys: dict[str, dict[str, str]], passphrase: str) -> None:
        salt = secrets.token_bytes(16)
        key = self._key(salt, ITERATIONS, passphrase)
        token = Fernet(base64.urlsafe_b64encode(key)).encrypt(json.dumps({"keys": keys}).encode())
        body = json.dumps({
            "format": FORMAT, "version": VERSION, "kdf": "pbkdf2-sha256",
            "iterations": ITERATIONS, "salt": base64.b64encode(salt).decode(),
            "check": base64.b64encode(hmac.new(key, _CHECK_LABEL, "sha256").digest()).decode(),
            "token": token.decode()}).encode()
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._keys = keys
        self._iterations = ITERATIONS


def open_store(path: Path | None = None, passphrase: str | None = None) -> KeyStore:
    """Open (or prepare to create) the key store.

    Args:
        path: The store file; default ``$CODERX_KEY_FILE`` or ``~/.coder_x_key.enc``.
        passphrase: Default ``$CODERX_KEY_PASSPHRASE``.

    Raises:
        KeyStoreLocked: No passphrase.
        WrongPassphrase: The passphrase does not open the existing file.
        KeyStoreCorrupt: The file is damaged or not a key store.
    """
    phrase = passphrase if passphrase is not None else os.environ.get(PASSPHRASE_ENV)
    if not phrase:
        raise KeyStoreLocked(f"no key store passphrase: set {PASSPHRASE_ENV} (the CLI also "
                             "asks for it)")
    return KeyStore((path or default_path()).expanduser(), phrase)
