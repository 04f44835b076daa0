"""The local server's checks of a join, in the real server's order, before it asks the database.

:func:`join_refusal` returns the reason a join is refused with (and the back-off before the
reply), with the server's error strings; :func:`may` applies
the ``authorize`` callback of a server without a database to a private channel.
"""

from __future__ import annotations

import trio

from .._frames import TOPIC_PREFIX, sub_topic
from ._payloads import JoinParams
from ._state import ChannelAuthorization, Hub
from ._tokens import expired_message, token_expiry

CHANNEL_LIMIT = "ChannelRateLimitReached: Too many channels"
TOPIC_REQUIRED = "TopicNameRequired: You must provide a topic name"
UNAUTHORIZED_READ = "Unauthorized: You do not have permissions to read from this Channel topic: "

# The code a refused join's reason starts with, by token error message, as the
# real server words them.
TOKEN_CODES = {
    "The token provided is not a valid JWT": "MalformedJWT",
    "Failed to validate JWT signature": "JwtSignatureError",
    "Failed to generate JWT signer, check your JWT secret or JWKS configuration": (
        "JwtSignerError"
    ),
}


def join_refusal(
    hub: Hub, topic: str, params: JoinParams, token: str | None, *, connection_id: int, joined: int
) -> tuple[str, float]:
    """Decide a join before the database is asked: the refusal's reason and the back-off
    before its reply, or ``("", 0.0)`` to go on.

    The checks come in the real server's order: a rejection set by the test, a missing topic
    name, the rate limits, the channel limit (``joined`` is how many channels the connection
    has), the token (``token_check``, then its ``exp``), private-channel access, replay.
    """
    config = hub.config
    rejection = hub.rejections.get(topic)
    if rejection is not None:
        return rejection
    delay = config.join_error_delay
    if topic == TOPIC_PREFIX:
        return TOPIC_REQUIRED, delay
    if hub.limiter is not None:
        refusal = hub.limiter.join_refusal(connection_id, trio.current_time())
        if refusal is not None:
            return refusal, delay
    if joined >= config.max_channels_per_client:
        return CHANNEL_LIMIT, delay
    if token is not None and config.token_check is not None:
        message = config.token_check(token)
        if message is not None:
            return f"{TOKEN_CODES.get(message, 'InvalidJWTToken')}: {message}", delay
    exp = token_expiry(token)
    expired = None if exp is None else expired_message(exp, config.wall_clock())
    if expired is not None:
        return f"InvalidJWTToken: {expired}", delay
    if params.private and not may(config.authorize, topic, token, "read"):
        return f"{UNAUTHORIZED_READ}{sub_topic(topic)}", delay
    if params.replay_error is not None:
        return params.replay_error, delay
    return "", 0.0


def may(authorize: ChannelAuthorization | None, topic: str, token: str | None, action: str) -> bool:
    """Whether the server's private-channel check allows ``action`` on ``topic``."""
    return authorize is None or authorize(sub_topic(topic), token, action)
