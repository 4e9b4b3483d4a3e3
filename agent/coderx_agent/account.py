"""``login``, ``logout``, ``whoami``: provider keys in the coderx key store.

A key is read with a hidden prompt and written to the encrypted key store
(``coderx_mcp.keystore``, a library module with no server code); nothing prints a key,
only its fingerprint (the first 12 hex digits of its SHA-256).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from coderx_agent.config import AgentConfig
from coderx_agent.errors import AgentError, ConfigError, UsageError
from coderx_agent.keys import Keys
from coderx_agent.models import PROVIDERS, resolve

#: The key each provider reads (Ollama needs one only behind an authenticating proxy).
PROVIDER_KEYS = {"anthropic": "ANTHROPIC_API_KEY", "ollama": "OLLAMA_API_KEY"}


class KeyStoreUnavailable(AgentError):
    """The key store cannot be opened or changed."""


def fingerprint(value: str) -> str:
    """``sha256:<12 hex digits>`` of a key: tells keys apart without showing them."""
    return "sha256:" + hashlib.sha256(value.encode("utf-8")).hexdigest()[:12]


def key_name(provider: str) -> str:
    """The key name of a provider.

    Raises:
        UsageError: Unknown provider.
    """
    if provider not in PROVIDER_KEYS:
        raise UsageError(f"unknown provider {provider!r}: use {', '.join(PROVIDER_KEYS)}")
    return PROVIDER_KEYS[provider]


def _store(path: Path | None, passphrase: str | None) -> object:
    from coderx_mcp.errors import KeyStoreError
    from coderx_mcp.keystore import open_store

    try:
        return open_store(path, passphrase=passphrase)
    except KeyStoreError as exc:
        raise KeyStoreUnavailable(str(exc)) from None


def login(provider: str, value: str, passphrase: str | None,
          path: Path | None = None) -> str:
    """Store ``value`` as the provider's key; returns its fingerprint.

    Raises:
        UsageError: Unknown provider or an empty key.
        KeyStoreUnavailable: The store cannot be opened or written.
    """
    from coderx_mcp.errors import KeyStoreError

    name = key_name(provider)
    value = value.strip()
    if not value:
        raise UsageError("the key is empty; nothing was stored")
    store = _store(path, passphrase)
    try:
        store.set(name, value)  # type: ignore[attr-defined]
    except KeyStoreError as exc:
        raise KeyStoreUnavailable(str(exc)) from None
    return fingerprint(value)


def logout(provider: str, passphrase: str | None, path: Path | None = None) -> None:
    """Remove the provider's key from the store.

    Raises:
        UsageError: Unknown provider.
        KeyStoreUnavailable: There is no such key, or the store cannot be changed.
    """
    from coderx_mcp.errors import KeyStoreError

    store = _store(path, passphrase)
    try:
        store.delete(key_name(provider))  # type: ignore[attr-defined]
    except KeyStoreError as exc:
        raise KeyStoreUnavailable(str(exc)) from None


def would_use(provider: str, config: AgentConfig) -> str:
    """The model a provider would serve: the configured one when it is this provider's."""
    try:
        if resolve(config.model, config.aliases)[0] == provider:
            return config.aliases.get(config.model, config.model)
    except (ConfigError, UsageError):
        pass
    return "not the configured model (pick one with --model or /model)"


def whoami(keys: Keys, config: AgentConfig) -> list[str]:
    """One line per provider: whether it has a key (fingerprint and where) and its model."""
    lines = []
    for provider in PROVIDERS:
        name = PROVIDER_KEYS[provider]
        value, where = keys.source(name)
        if value is None:
            has = "no key" + (" (none needed for a local Ollama)" if provider == "ollama"
                              else f": `coderx-agent login {provider}`")
        else:
            has = f"key {fingerprint(value)} from the {where}"
        lines.append(f"{provider}: {has}; model: {would_use(provider, config)}")
    return lines
