"""API key check: constant-time comparison so response timing leaks nothing about the key."""

from __future__ import annotations

import hmac


def bearer_token(authorization: str | None, x_api_key: str | None = None) -> str | None:
    """The key a client sent: `Authorization: Bearer KEY` or `x-api-key: KEY`."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return x_api_key


def key_matches(expected: str | None, given: str | None) -> bool:
    """True when no key is configured, or `given` equals `expected` (hmac.compare_digest)."""
    if expected is None:
        return True
    if given is None:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))
