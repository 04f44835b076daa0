"""The local server's stored broadcasts (its ``realtime.messages``) and their replay on join.

On Supabase, ``realtime.send()`` (and ``realtime.broadcast_changes()``) insert a row into
``realtime.messages``; the row reaches the topic's subscribers as a broadcast carrying
``meta.id`` (V2 sockets get binary kind 4 with metadata ``{"id": ...}``, V1 sockets text), and a
private channel joining with ``config.broadcast.replay`` gets the stored private messages again.
:meth:`RealtimeServer.realtime_send` is that path here, and
:class:`MessageStore` the table: bounded to :data:`MAX_PER_TOPIC` messages per topic (the oldest
are dropped first) and :data:`MAX_TOPICS` topics (the least recently written are dropped
first), and messages older than :data:`RETENTION` are never replayed, as the server drops
partitions older than 72 hours.

Replay on join, as ``RealtimeChannel.maybe_replay_messages`` and ``Realtime.Messages.replay`` do
it: private channels only; ``since`` in Unix ms; ``limit`` (25 when absent) clamped to 1..25;
the newest ``limit`` messages with ``since <= inserted_at < now + 1 min``, pushed oldest first
after the join reply, as ``broadcast`` with ``meta = {"id": ..., "replayed": true}`` (binary ones
as kind 4 to V2, skipped for V1). The replayed ids are remembered by the channel, whose live
copies of them are then not sent again.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

from .._exceptions import ProtocolError
from .._frames import BROADCAST, JSONObject, JSONValue, make_frame, realtime_topic, sub_topic
from .._serializer import VSN_1, VSN_2

if TYPE_CHECKING:
    from ._state import Channel, Hub, Room

MAX_PER_TOPIC: Final = 1000
"""Stored messages kept per topic."""

MAX_TOPICS: Final = 1000
"""Topics with stored messages kept at most."""

RETENTION: Final = timedelta(hours=72)
"""Stored messages older than this are not replayed (the server drops them)."""

HARD_LIMIT: Final = 25
"""Most messages one join replays."""

_FUTURE: Final = timedelta(minutes=1)
_YEAR_1_MS: Final = -62_135_596_800_000


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One row of the local ``realtime.messages``.

    Attributes:
        id: The message's UUID, sent as ``meta.id``.
        topic: The sub-topic (without ``realtime:``).
        event: The user event.
        payload: A JSON object, or bytes for a binary message.
        private: Whether it went to the private channel.
        inserted_at: When it was stored (UTC).
    """

    id: str
    topic: str
    event: str
    payload: JSONValue | bytes
    private: bool
    inserted_at: datetime


class MessageStore:
    """The stored messages of one server, by topic, bounded (see the module docstring)."""

    def __init__(self) -> None:
        self._topics: OrderedDict[str, deque[StoredMessage]] = OrderedDict()

    def __len__(self) -> int:
        return sum(len(messages) for messages in self._topics.values())

    def add(self, message: StoredMessage) -> None:
        """Store ``message``, dropping the oldest of its topic or the stalest topic if full."""
        messages = self._topics.get(message.topic)
        if messages is None:
            messages = self._topics[message.topic] = deque(maxlen=MAX_PER_TOPIC)
            if len(self._topics) > MAX_TOPICS:
                self._topics.popitem(last=False)
        else:
            self._topics.move_to_end(message.topic)
        messages.append(message)

    def messages(self, topic: str) -> list[StoredMessage]:
        """The stored messages of ``topic``, oldest first."""
        return list(self._topics.get(topic, ()))

    def replay(self, topic: str, since_ms: int, limit: int, now: datetime) -> list[StoredMessage]:
        """The private messages a join replays: the newest ``limit`` (clamped to 1..25) of
        those stored at or after ``since_ms``, oldest first."""
        count = max(min(limit, HARD_LIMIT), 1)
        # Elixir reads times before year 1 too; nothing is stored that early.
        since = datetime.fromtimestamp(max(since_ms, _YEAR_1_MS) / 1000, UTC)
        oldest = now - RETENTION
        until = now + _FUTURE
        chosen: list[StoredMessage] = []
        for message in reversed(self._topics.get(topic, ())):
            if len(chosen) == count:
                break
            at = message.inserted_at
            if message.private and at >= since and oldest <= at < until:
                chosen.append(message)
        chosen.reverse()
        return chosen


def replay_request(payload: JSONValue | bytes) -> tuple[int, int] | None:
    """``(since, limit)`` of a join's ``config.broadcast.replay``, if it asks for one.

    Only call it for a join the server accepted (the payload checks of ``_payloads`` refuse
    invalid replay params and public channels first).
    """
    config = payload.get("config") if isinstance(payload, dict) else None
    broadcast = config.get("broadcast") if isinstance(config, dict) else None
    replay = broadcast.get("replay") if isinstance(broadcast, dict) else None
    if not isinstance(replay, dict):
        return None
    since = replay.get("since")
    limit = replay.get("limit")
    if type(since) is not int:
        return None
    return since, limit if type(limit) is int else HARD_LIMIT


def _user_broadcast(message: StoredMessage, meta: JSONObject) -> JSONObject:
    return {
        "type": BROADCAST,
        "event": message.event,
        "payload": message.payload,  # type: ignore[dict-item]
        "meta": meta,
    }


def replay_on_join(channel: Channel, store: MessageStore, payload: JSONValue | bytes) -> int:
    """Push the messages the join of ``channel`` asked to replay; return how many.

    JSON messages are pushed by the channel (``[join_ref, null, topic, "broadcast", ...]``),
    binary ones as kind 4 to V2 and not at all to V1.
    """
    request = replay_request(payload)
    if request is None or not channel.private:
        return 0
    since, limit = request
    messages = store.replay(sub_topic(channel.topic), since, limit, datetime.now(UTC))
    from ._state import encode  # noqa: PLC0415 - _state imports this module's types

    sent = 0
    for message in messages:
        meta: JSONObject = {"id": message.id, "replayed": True}
        body = _user_broadcast(message, meta)
        if isinstance(message.payload, bytes):
            if channel.vsn != VSN_2:
                continue
            frame = make_frame(channel.topic, BROADCAST, body, None, channel.join_ref)
            channel.peer.enqueue(encode(frame, VSN_2, user_broadcast=True))
        else:
            channel.push(BROADCAST, body)
        sent += 1
    channel.replayed_ids = frozenset(message.id for message in messages)
    return sent


def realtime_send(
    hub: Hub,
    topic: str,
    event: str,
    payload: JSONValue | bytes,
    *,
    private: bool,
    message_id: str | None,
    inserted_at: datetime | None,
) -> tuple[str, int]:
    """Store a message and fan it out as a database broadcast; return its id and how many
    channels accepted it."""
    if not isinstance(event, str) or not event:
        raise ValueError("event must be a non-empty string")
    if not isinstance(payload, dict | bytes):
        raise TypeError("a stored message's payload is a JSON object or bytes")
    if inserted_at is not None and inserted_at.tzinfo is None:
        raise ValueError("inserted_at must be timezone-aware")
    name = sub_topic(realtime_topic(topic))
    message = StoredMessage(
        id=message_id or str(uuid.uuid4()),
        topic=name,
        event=event,
        payload=payload,
        private=private,
        inserted_at=(inserted_at or datetime.now(UTC)).astimezone(UTC),
    )
    return message.id, deliver_stored(hub, message)


def deliver_stored(hub: Hub, message: StoredMessage) -> int:
    """Store ``message`` and send it to its topic's subscribers (the database's broadcast
    path); return how many channels accepted it."""
    hub.messages.add(message)
    room = hub.room(realtime_topic(message.topic), message.private)
    return _fan_out_stored(room, message) if room is not None else 0


def _fan_out_stored(room: Room, message: StoredMessage) -> int:
    from ._state import encode  # noqa: PLC0415

    body = _user_broadcast(message, {"id": message.id})
    frame = make_frame(room.topic, BROADCAST, body)
    delivered = 0
    for vsn, subscribers in ((VSN_1, room.v1), (VSN_2, room.v2)):
        if not subscribers or (vsn == VSN_1 and isinstance(message.payload, bytes)):
            continue
        try:
            item = encode(frame, vsn, user_broadcast=vsn == VSN_2)
        except ProtocolError:
            continue
        for channel, enqueue in subscribers.items():
            if message.id in channel.replayed_ids:
                continue  # replayed at its join already
            if channel.policies is not None and not channel.policies.broadcast_read:
                continue  # the read policy withholds it
            if enqueue(item):
                delivered += 1
    return delivered
