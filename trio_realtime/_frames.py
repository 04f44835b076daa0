"""Frames, refs, topics and the builders for every frame a Realtime client sends.

Everything here is pure: no I/O, no clock, no trio. A builder returns a :class:`Frame`; turning it
into wire bytes is the serializer's job (``_serializer.encode``), so the same builder serves both
vsn 1.0.0 and 2.0.0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

JSONValue: TypeAlias = bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"] | None
"""Any value JSON can carry, as orjson decodes it."""

JSONObject: TypeAlias = dict[str, JSONValue]

Payload: TypeAlias = JSONValue | bytes
"""A frame payload: JSON, or raw bytes for a V2 binary broadcast (encoding 0)."""

PHOENIX_TOPIC = "phoenix"
TOPIC_PREFIX = "realtime:"

# Event names of the Phoenix and Realtime protocols.
PHX_JOIN = "phx_join"
PHX_LEAVE = "phx_leave"
PHX_REPLY = "phx_reply"
PHX_CLOSE = "phx_close"
PHX_ERROR = "phx_error"
HEARTBEAT = "heartbeat"
BROADCAST = "broadcast"
PRESENCE = "presence"
PRESENCE_STATE = "presence_state"
PRESENCE_DIFF = "presence_diff"
POSTGRES_CHANGES = "postgres_changes"
SYSTEM = "system"
ACCESS_TOKEN = "access_token"


# Payload keys whose values are secrets; reprs show them redacted.
SECRET_KEYS = frozenset({"access_token", "user_token", "apikey"})


# Not slotted: parsers build frames through ``make_frame``, which fills ``__dict__`` in one
# step and is about twice as fast as the generated frozen ``__init__`` (the reader's hot path).
@dataclass(frozen=True, repr=False)
class Frame:
    """One Phoenix Channels message, in either direction.

    Attributes:
        topic: The channel topic, ``realtime:<name>``, or ``phoenix`` for heartbeats.
        event: The event name, for example ``phx_join``, ``broadcast`` or ``presence_diff``.
        payload: The payload as decoded JSON. For a V2 binary broadcast it is the same
            ``{"type": "broadcast", "event": ..., "payload": ...}`` object a text broadcast
            carries, where the inner ``payload`` is ``bytes`` when the sender used raw binary
            encoding.
        ref: The message reference. Client pushes carry one; the server echoes it in its reply.
            Server pushes carry ``None``.
        join_ref: The ref of the ``phx_join`` that opened the channel this message belongs to.
            Set only on channel-bound messages. V1 server frames never carry it.
    """

    topic: str
    event: str
    payload: Payload
    ref: str | None = None
    join_ref: str | None = None

    def __repr__(self) -> str:
        payload = self.payload
        if isinstance(payload, dict) and not SECRET_KEYS.isdisjoint(payload):
            payload = {k: ("<redacted>" if k in SECRET_KEYS else v) for k, v in payload.items()}
        try:
            payload_text = repr(payload)
        except RecursionError:  # nested deeper than repr goes (the parser accepts 1,024 levels)
            payload_text = f"<{type(payload).__name__} nested too deep to show>"
        return (
            f"Frame(topic={self.topic!r}, event={self.event!r}, payload={payload_text}, "
            f"ref={self.ref!r}, join_ref={self.join_ref!r})"
        )


_new_object = object.__new__
_set_attribute = object.__setattr__


def make_frame(
    topic: str, event: str, payload: Payload, ref: str | None = None, join_ref: str | None = None
) -> Frame:
    """Build a :class:`Frame`, like ``Frame(...)`` but faster; used by the parsers."""
    frame: Frame = _new_object(Frame)
    _set_attribute(
        frame,
        "__dict__",
        {"topic": topic, "event": event, "payload": payload, "ref": ref, "join_ref": join_ref},
    )
    return frame


def realtime_topic(topic: str) -> str:
    """Return ``topic`` with the ``realtime:`` prefix, adding it only when missing.

    Raises:
        TypeError: if ``topic`` is not a string.
        ValueError: if the sub-topic is empty.
    """
    if not isinstance(topic, str):
        raise TypeError(f"topic must be a string, not {type(topic).__name__}")
    full = topic if topic.startswith(TOPIC_PREFIX) else TOPIC_PREFIX + topic
    if len(full) == len(TOPIC_PREFIX):
        raise ValueError("topic must not be empty")
    return full


def sub_topic(topic: str) -> str:
    """Return the topic without its ``realtime:`` prefix."""
    return topic[len(TOPIC_PREFIX) :] if topic.startswith(TOPIC_PREFIX) else topic


# 2**53 - 1 is the largest integer a JavaScript peer can hold exactly.
_DEFAULT_REF_LIMIT = 2**53 - 1


class RefCounter:
    """A counter for outgoing refs; see :func:`ref_counter` and :func:`next_ref`.

    The counter is explicit state owned by the caller, not hidden in the module.
    """

    __slots__ = ("limit", "value")

    def __init__(self, start: int = 0, limit: int = _DEFAULT_REF_LIMIT) -> None:
        if not 0 <= start <= limit or limit < 1:
            raise ValueError("need 0 <= start <= limit and limit >= 1")
        self.value = start
        self.limit = limit

    def __repr__(self) -> str:
        return f"RefCounter(value={self.value}, limit={self.limit})"


def ref_counter(start: int = 0, *, limit: int = _DEFAULT_REF_LIMIT) -> RefCounter:
    """Return a new ref counter. The first :func:`next_ref` gives ``str(start + 1)``."""
    return RefCounter(start, limit)


def next_ref(counter: RefCounter) -> str:
    """Advance ``counter`` and return its new value as a string.

    Refs increase monotonically. After ``limit`` the counter wraps around to ``"1"``: refs only
    need to be unique among the pushes still awaiting a reply, and the limit leaves room for
    billions of them.
    """
    value = counter.value + 1
    if value > counter.limit:
        value = 1
    counter.value = value
    return str(value)


def channel_config(
    *,
    broadcast_self: bool = False,
    broadcast_ack: bool = False,
    presence_key: str = "",
    presence_enabled: bool = False,
    private: bool = False,
) -> JSONObject:
    """Return the ``config`` object of a join payload, without ``postgres_changes``."""
    return {
        "broadcast": {"ack": broadcast_ack, "self": broadcast_self},
        "presence": {"key": presence_key, "enabled": presence_enabled},
        "private": private,
    }


def postgres_binding(
    event: str = "*",
    *,
    schema: str = "public",
    table: str | None = None,
    filter: str | None = None,
) -> JSONObject:
    """Return one ``config.postgres_changes`` entry.

    Raises:
        ValueError: for an event other than ``*``, ``INSERT``, ``UPDATE`` or ``DELETE``, or a
            filter without a table.
    """
    normalised = event.upper()
    if normalised not in ("*", "INSERT", "UPDATE", "DELETE"):
        raise ValueError(
            f"postgres_changes event must be *, INSERT, UPDATE or DELETE, not {event!r}"
        )
    if filter is not None and table is None:
        raise ValueError("a postgres_changes filter needs a table")
    binding: JSONObject = {"event": normalised, "schema": schema}
    if table is not None:
        binding["table"] = table
    if filter is not None:
        binding["filter"] = filter
    return binding


def join_frame(
    ref: str,
    topic: str,
    config: Mapping[str, JSONValue],
    bindings: Sequence[Mapping[str, JSONValue]] = (),
    access_token: str | None = None,
    *,
    version: str | None = None,
) -> Frame:
    """Build a ``phx_join``. Its ``join_ref`` is its own ``ref``.

    Args:
        ref: A fresh ref, which becomes the channel's join_ref.
        topic: The topic; the ``realtime:`` prefix is added when missing.
        config: The channel config, as from :func:`channel_config`.
        bindings: The postgres_changes bindings, as from :func:`postgres_binding`.
        access_token: Put in the payload when given.
        version: A client version string put in the payload when given (realtime-js sends
            ``"realtime-js/<version>"``); the server ignores it.
    """
    full_config: JSONObject = dict(config)
    full_config["postgres_changes"] = [dict(binding) for binding in bindings]
    payload: JSONObject = {"config": full_config}
    if access_token is not None:
        payload["access_token"] = access_token
    if version is not None:
        payload["version"] = version
    return Frame(realtime_topic(topic), PHX_JOIN, payload, ref, ref)


def leave_frame(ref: str, join_ref: str | None, topic: str) -> Frame:
    """Build a ``phx_leave`` for the channel joined with ``join_ref``."""
    return Frame(realtime_topic(topic), PHX_LEAVE, {}, ref, join_ref)


def heartbeat_frame(ref: str) -> Frame:
    """Build a heartbeat on topic ``phoenix``. It has no join_ref."""
    return Frame(PHOENIX_TOPIC, HEARTBEAT, {}, ref)


def broadcast_frame(
    ref: str | None, join_ref: str | None, topic: str, event: str, payload: Payload
) -> Frame:
    """Build a broadcast push of user event ``event``.

    ``payload`` may be any JSON value, or ``bytes`` (V2 only: sent as binary encoding 0).
    """
    body: JSONObject = {"type": BROADCAST, "event": event, "payload": payload}  # type: ignore[dict-item]
    # SPEED: every send builds one (benchmarks/sends.py); the session's topics are full already.
    full = (
        topic if topic.startswith(TOPIC_PREFIX) and topic != TOPIC_PREFIX else realtime_topic(topic)
    )
    return make_frame(full, BROADCAST, body, ref, join_ref)


def presence_track_frame(
    ref: str, join_ref: str | None, topic: str, state: Mapping[str, JSONValue]
) -> Frame:
    """Build a presence ``track`` push carrying ``state``."""
    body: JSONObject = {"type": PRESENCE, "event": "track", "payload": dict(state)}
    return Frame(realtime_topic(topic), PRESENCE, body, ref, join_ref)


def presence_untrack_frame(ref: str, join_ref: str | None, topic: str) -> Frame:
    """Build a presence ``untrack`` push."""
    body: JSONObject = {"type": PRESENCE, "event": "untrack"}
    return Frame(realtime_topic(topic), PRESENCE, body, ref, join_ref)


def access_token_frame(ref: str, join_ref: str | None, topic: str, token: str) -> Frame:
    """Build an ``access_token`` push. The server never replies to it."""
    return Frame(realtime_topic(topic), ACCESS_TOKEN, {"access_token": token}, ref, join_ref)
