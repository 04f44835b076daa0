"""When a channel's token expires, as the Realtime server decides it (pure; the caller passes
the Unix time).

The server reads the token's ``exp`` (rounded, when it is a decimal) at join and after every
``access_token`` push, and schedules its next check ``min(5 min, exp - now)`` later, ``now``
being whole Unix seconds (``realtime_channel.ex`` ``confirm_token/1``,
``@confirm_token_ms_interval``). A token is valid while ``exp > now``
(``jwt_verification.ex``); once it is not, the channel is told
``Token has expired <now - exp> seconds ago`` (``channels_authorization.ex``) in a ``system``
error and closed. So a channel whose token expires at ``exp`` closes at ``exp`` with
"Token has expired 0 seconds ago", and a token valid for longer is checked every five minutes
until then.
"""

from __future__ import annotations

import math

from ._jwt import unverified_claims

CONFIRM_TOKEN_INTERVAL = 300.0
"""Seconds between two checks of a channel's token, at most (the server's 5 minutes)."""


def token_expiry(token: str | None) -> int | None:
    """The ``exp`` claim of ``token`` in whole seconds, or ``None`` when it has none (or is not
    a JWT: then it never expires on this server). The signature is not checked here."""
    exp = unverified_claims(token).get("exp")
    if isinstance(exp, int | float) and not isinstance(exp, bool) and math.isfinite(exp):
        return round(exp)
    return None


def expired_message(exp: int, now: float) -> str | None:
    """``"Token has expired N seconds ago"`` when a token with ``exp`` is expired at ``now``
    (Unix seconds), else ``None``."""
    seconds = math.floor(now)
    if exp > seconds:
        return None
    return f"Token has expired {seconds - exp} seconds ago"


def next_check(exp: int, now: float) -> float:
    """Seconds from ``now`` until the server checks a still valid token again."""
    return min(CONFIRM_TOKEN_INTERVAL, float(exp - math.floor(now)))
