"""API keys: the coderx key store first, then the environment.

Keys are handed to the model provider's SDK client and nowhere else: not to the MCP
servers (``servers.server_env`` strips them), not to events, logs or saved conversations.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from coderx_agent.errors import MissingKey

#: Environment variables that hold secrets for the agent's own use; never passed on.
SECRET_ENV = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "OLLAMA_API_KEY",
              "CODERX_KEY_PASSPHRASE")


class KeySource(Protocol):
    """Where a named key comes from."""

    def get(self, name: str) -> str | None:
        """The key's value, or None when it is not set."""
        ...


class Keys:
    """The key store (when the ``coderx_mcp.keystore`` module is installed) over the environment.

    Args:
        environ: The environment to read (``os.environ`` by default).
        store_path: The key store's file (the store's own default when None).
    """

    def __init__(self, environ: Mapping[str, str] | None = None,
                 store_path: Path | None = None) -> None:
        self._environ = os.environ if environ is None else environ
        self._store_path = store_path

    def _from_store(self, name: str) -> str | None:
        try:  # lazily: a library module without MCP or Docker imports (allowed for the agent)
            from coderx_mcp import errors
            from coderx_mcp.keystore import open_store
        except ImportError:
            return None
        # The store raises KeyStoreError subclasses (looked up so this module type-checks
        # before the key store lands in coderx_mcp).
        store_error: type[Exception] = getattr(errors, "KeyStoreError", OSError)
        try:
            store = open_store(self._store_path,
                               passphrase=self._environ.get("CODERX_KEY_PASSPHRASE"))
            value = store.get(name)
        except store_error:
            return None  # an unusable store: the environment may still have the key
        return value if isinstance(value, str) and value else None

    def get(self, name: str) -> str | None:
        """The key from the store, else from the environment, else None."""
        return self._from_store(name) or self._environ.get(name) or None

    def source(self, name: str) -> tuple[str | None, str]:
        """``(value, where)``: where is ``key store``, ``environment`` or ``not set``."""
        if value := self._from_store(name):
            return value, "key store"
        if value := self._environ.get(name):
            return value, "environment"
        return None, "not set"

    def store_path(self) -> Path | None:
        """The key store's file (None: the store's own default)."""
        return self._store_path


def require(keys: KeySource, name: str, provider: str) -> str:
    """The key ``name``, or ``MissingKey`` with one line saying how to set it."""
    value = keys.get(name)
    if value is None:
        raise MissingKey(f"no {provider} API key: run `coderx-agent login`, or set {name} "
                         "in the environment")
    return value
