"""Pure parsing of what a client puts in a ``phx_join`` payload.

Nothing here does I/O or reads a clock. An invalid payload never fails a join on the real server
(errors are only logged), so every parser here falls back to the default instead of raising.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import orjson

from .._frames import JSONObject, JSONValue, Payload

SB_PREFIX = "sb_"
"""Tokens starting with this are publishable keys: "use the socket's token" (section 4.1)."""

REPLAY_PUBLIC = "UnableToReplayMessages: Replay is not allowed for public channels"
REPLAY_INVALID = "UnableToReplayMessages: Replay params are not valid"
MAX_UNIX_MS = 253_402_300_799_999
"""The last millisecond of year 9999, the latest ``since`` the server can read."""


def flexible_bool(value: object) -> bool:
    """Return a join-config boolean: ``true`` or the string ``"true"`` in any case."""
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _section(config: JSONObject, name: str) -> JSONObject:
    value = config.get(name)
    return value if isinstance(value, dict) else {}


def presence_key(value: JSONValue) -> str:
    """Return the presence key: a fresh UUID v1 for ``""``/missing, else the value as text."""
    if value is None or value == "":
        return str(uuid.uuid1())
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


@dataclass(frozen=True, slots=True)
class JoinParams:
    """What the server takes from a join payload.

    Attributes:
        broadcast_self: ``config.broadcast.self``: the sender receives its own broadcasts.
        broadcast_ack: ``config.broadcast.ack``: each broadcast gets an ok reply.
        presence_enabled: ``config.presence.enabled``: ``presence_state`` follows the join.
        presence_key: The presence key (a generated UUID when the client gave none).
        private: ``config.private``: the channel lives in the private room of its topic.
        bindings: The raw ``config.postgres_changes`` objects (non-objects dropped).
        token: ``user_token``, else ``access_token``, when a string.
        replay_error: The join error a ``config.broadcast.replay`` causes, if any.
    """

    broadcast_self: bool
    broadcast_ack: bool
    presence_enabled: bool
    presence_key: str
    private: bool
    bindings: list[JSONObject]
    token: str | None
    replay_error: str | None


def _replay_error(broadcast: JSONObject, private: bool) -> str | None:
    if "replay" not in broadcast or broadcast["replay"] is None:
        return None
    if not private:
        return REPLAY_PUBLIC
    replay = broadcast["replay"]
    if not isinstance(replay, dict):
        return REPLAY_INVALID
    since = replay.get("since")
    if not isinstance(since, int) or isinstance(since, bool):
        return REPLAY_INVALID
    if since > MAX_UNIX_MS:  # DateTime.from_unix fails past year 9999
        return REPLAY_INVALID
    limit = replay.get("limit")
    if limit is not None and type(limit) is not int:
        return REPLAY_INVALID
    return None


def parse_join(payload: Payload) -> JoinParams:
    """Read a ``phx_join`` payload the way the real server does, defaulting what is invalid."""
    body = payload if isinstance(payload, dict) else {}
    raw_config = body.get("config")
    config = raw_config if isinstance(raw_config, dict) else {}
    broadcast = _section(config, "broadcast")
    presence = _section(config, "presence")
    private = flexible_bool(config.get("private"))
    raw_bindings = config.get("postgres_changes")
    bindings = (
        [entry for entry in raw_bindings if isinstance(entry, dict)]
        if isinstance(raw_bindings, list)
        else []
    )
    token: str | None = None
    for key in ("user_token", "access_token"):
        value = body.get(key)
        if isinstance(value, str):
            token = value
            break
    return JoinParams(
        broadcast_self=flexible_bool(broadcast.get("self")),
        broadcast_ack=flexible_bool(broadcast.get("ack")),
        presence_enabled=flexible_bool(presence.get("enabled")),
        presence_key=presence_key(presence.get("key")),
        private=private,
        bindings=bindings,
        token=token,
        replay_error=_replay_error(broadcast, private),
    )


def channel_token(join_token: str | None, socket_token: str | None) -> str | None:
    """Return the token a channel runs with: the join's own, unless absent or an ``sb_`` key."""
    if join_token is None or join_token.startswith(SB_PREFIX):
        return socket_token
    return join_token
