"""Bearer tokens for the HTTP transport: each token names a principal (the session owner)."""

from __future__ import annotations

import hmac

from fastmcp.server.auth import AccessToken, TokenVerifier

from coderx_mcp.errors import ConfigError
from coderx_mcp.principals import TokenStore


class BearerTokens(TokenVerifier):
    """Tokens from the environment (compared in constant time) and managed tokens.

    Args:
        tokens: Principal name → token, from ``CODERX_HTTP_TOKENS``.
        store: Managed tokens (``coderx-mcp tokens``), looked up by hash on every request,
            so a revoked token is refused on its next request.
    """

    def __init__(self, tokens: dict[str, str], store: TokenStore | None = None) -> None:
        super().__init__()
        self._tokens = [(principal, token.encode()) for principal, token in tokens.items()]
        self._store = store

    async def verify_token(self, token: str) -> AccessToken | None:
        """The principal's access token, or None (401) when no token matches."""
        given = token.encode()
        match = None
        for principal, known in self._tokens:  # no early exit: timing says nothing
            if hmac.compare_digest(given, known):
                match = principal
        if match is None and self._store is not None:
            try:
                record = self._store.verify(token)
            except ConfigError:
                record = None  # a damaged file refuses everyone; doctor says why
            match = record.name if record is not None else None
        if match is None:
            return None
        return AccessToken(token=token, client_id=match, scopes=[])
