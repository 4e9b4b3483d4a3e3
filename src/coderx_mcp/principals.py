"""Managed HTTP tokens: each names a principal and carries that principal's policy.

``coderx-mcp tokens create NAME`` prints a random token once; only its SHA-256 is kept, in
``tokens.json`` of the server's state directory (0600, written atomically under a lock).
The server re-reads the file when it changes, so ``tokens revoke`` takes effect on the next
request without a restart. A hash of a random 256-bit token needs no slow KDF: nothing
about the token can be guessed from it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from coderx_mcp.config import parse_size
from coderx_mcp.errors import ConfigError

TOKEN_PREFIX = "cx_"
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_TOUCH_EVERY_S = 60.0  # last-used times are written at most this often per principal


class PrincipalPolicy(BaseModel):
    """What one principal may do (None: the server's setting).

    Attributes:
        roots: Directories inside which this principal's sessions may mount a workspace;
            the first is its default workspace. Empty: the server's roots.
        max_sessions: Sessions this principal may hold at once.
        max_commands: ``run_command`` calls this principal may have running at once.
        cpus: Default CPU quota of its sessions.
        memory: Default memory limit of its sessions.
        network: Whether its sessions may ask for network access.
        egress: The hosts its ``allowlist`` sessions may reach (None: the server's list).
        admin: May see every principal's sessions in ``/healthz?verbose``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    roots: tuple[Path, ...] = ()
    max_sessions: int | None = Field(None, ge=1, le=1000)
    max_commands: int | None = Field(None, ge=1, le=1000)
    cpus: float | None = Field(None, gt=0, le=64)
    memory: str | None = None
    network: bool | None = None
    egress: tuple[str, ...] | None = None
    admin: bool = False

    @field_validator("egress")
    @classmethod
    def _egress(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        from coderx_mcp.egress.rules import check_rule

        return None if v is None else tuple(check_rule(r) for r in v)

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str | None) -> str | None:
        if v is not None:
            parse_size(v)
        return v


class TokenRecord(BaseModel):
    """One managed token as stored: never the token itself."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    created: datetime
    last_used: datetime | None = None
    policy: PrincipalPolicy = PrincipalPolicy()


class TokenFile(BaseModel):
    """The whole ``tokens.json``."""

    model_config = ConfigDict(extra="forbid")

    version: int = 1
    tokens: list[TokenRecord] = []


def digest(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """The managed tokens of one server.

    Args:
        path: ``tokens.json`` (its directory is created 0700 when a token is first written).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._loaded = False
        self._by_hash: dict[str, TokenRecord] = {}
        self._by_name: dict[str, TokenRecord] = {}
        self._touched: dict[str, float] = {}

    # --- reading -------------------------------------------------------------------------
    def _read(self) -> TokenFile:
        try:
            raw = self.path.read_text()
        except FileNotFoundError:
            return TokenFile()
        except OSError as exc:
            raise ConfigError(f"cannot read the token file {self.path}: {exc.strerror}") from None
        try:
            return TokenFile.model_validate_json(raw)
        except ValidationError:
            raise ConfigError(f"the token file {self.path} is damaged; restore it or delete it "
                              "and create the tokens again") from None

    def _refresh(self) -> None:
        """Re-read the file if it changed since the last look (a revoke, a new token)."""
        try:
            st = self.path.stat()
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if self._loaded and stamp == self._stamp:
            return
        data = self._read()
        self._stamp, self._loaded = stamp, True
        self._by_hash = {r.sha256: r for r in data.tokens}
        self._by_name = {r.name: r for r in data.tokens}

    def verify(self, token: str) -> TokenRecord | None:
        """The record of a valid token (its last-used time updated), else None."""
        self._refresh()
        record = self._by_hash.get(digest(token))
        if record is None:
            return None
        now = time.monotonic()
        if now - self._touched.get(record.name, -_TOUCH_EVERY_S) >= _TOUCH_EVERY_S:
            self._touched[record.name] = now
            with contextlib.suppress(OSError, ConfigError):
                # A full disk must not lock principals out: last-used is best effort.
                self._update(lambda f: _touch(f, record.name))
        return record

    def policy(self, name: str) -> PrincipalPolicy | None:
        """The policy of a managed principal (None: not a managed token's principal)."""
        self._refresh()
        record = self._by_name.get(name)
        return record.policy if record is not None else None

    def list(self) -> list[TokenRecord]:
        """Every managed token's record, by name."""
        return sorted(self._read().tokens, key=lambda r: r.name)

    # --- writing -------------------------------------------------------------------------
    def create(self, name: str, policy: PrincipalPolicy) -> str:
        """Create a token for ``name`` and return it (the only time it is ever shown).

        Raises:
            ConfigError: The name is taken or not a valid principal name.
        """
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        try:
            record = TokenRecord(name=name, sha256=digest(token), created=datetime.now(UTC),
                                 policy=policy)
        except ValidationError:
            raise ConfigError(f"{name!r} is not a valid principal name (letters, digits, "
                              "'.', '_' and '-', up to 64 characters)") from None

        def add(f: TokenFile) -> None:
            if any(r.name == name for r in f.tokens):
                raise ConfigError(f"a token named {name!r} exists; revoke it first")
            f.tokens.append(record)

        self._update(add)
        return token

    def revoke(self, name: str) -> None:
        """Delete the token of ``name``.

        Raises:
            ConfigError: No token has that name.
        """
        def drop(f: TokenFile) -> None:
            if not any(r.name == name for r in f.tokens):
                raise ConfigError(f"no token named {name!r}; `coderx-mcp tokens list` shows "
                                  "them")
            f.tokens = [r for r in f.tokens if r.name != name]

        self._update(drop)

    def _update(self, change: Callable[[TokenFile], None]) -> None:
        """Read, change and atomically replace the file under an exclusive lock."""
        with self._locked():
            data = self._read()
            change(data)
            fd, tmp = tempfile.mkstemp(prefix=".tokens-", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w") as out:  # mkstemp files are 0600 already
                    out.write(json.dumps(data.model_dump(mode="json"), indent=1))
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(".tokens.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _touch(f: TokenFile, name: str) -> None:
    for r in f.tokens:
        if r.name == name:
            r.last_used = datetime.now(UTC)
