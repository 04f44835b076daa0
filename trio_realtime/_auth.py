"""Access tokens: reading a JWT's expiry without verifying it (pure; the caller passes the time)."""

from __future__ import annotations

import base64
import binascii

import orjson


def jwt_expiry(token: str) -> float | None:
    """Return the ``exp`` claim of a JWT as Unix seconds, or ``None`` when there is none.

    The signature is not checked: the client only uses this to avoid sending a token that the
    server would refuse as expired.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    body = parts[1]
    try:
        decoded = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        claims = orjson.loads(decoded)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        return None
    if not isinstance(claims, dict):
        return None
    exp = claims.get("exp")
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        return float(exp)
    return None


def token_expired(token: str, now: float, *, leeway: float = 0.0) -> bool:
    """Whether ``token`` is a JWT whose ``exp`` is at or before ``now + leeway``."""
    expiry = jwt_expiry(token)
    return expiry is not None and expiry <= now + leeway
