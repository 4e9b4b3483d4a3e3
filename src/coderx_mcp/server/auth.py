"""Bearer tokens for the HTTP transport: each token names a principal (the session owner)."""

from __future__ import annotations

import hmac

from fastmcp.server.auth import AccessToken, TokenVerifier


class BearerTokens(TokenVerifier):
    """Static bearer tokens from the settings, compared in constant time.

    Args:
        tokens: Principal name → token. A request with a matching ``Authorization:
            Bearer`` header acts as that principal; anything else gets 401.
    """

    def __init__(self, tokens: dict[str, str]) -> None:
        super().__init__()
        self._tokens = [(principal, token.encode()) for principal, token in tokens.items()]

    async def verify_token(self, token: str) -> AccessToken | None:
        """The principal's access token, or None (401) when no token matches."""
        given = token.encode()
        match = None
        for principal, known in self._tokens:  # no early exit: timing says nothing
            if hmac.compare_digest(given, known):
                match = principal
        if match is None:
            return None
        return AccessToken(token=token, client_id=match, scopes=[])
