"""Shared state of the local server: configuration, rooms, channels, presence and fan-out.

A *room* is everything joined to one topic, public and private being separate rooms (PROTOCOL.md
section 5.2). It keeps its subscribers split by serializer version, each mapped to the enqueue
function of its connection, so a fan-out encodes a frame once per vsn (as the real server's
dispatcher caches per serializer) and then only appends the same bytes to each send buffer.

Nothing here awaits: every operation runs synchronously inside the task that triggered it (a
connection's reader, or a test calling the server API), so there is no interleaving to reason
about. Enqueue functions never block; what a full buffer means is the connection's business
(see ``_server_connection``).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from .._exceptions import ProtocolError
from .._frames import (
    BROADCAST,
    POSTGRES_CHANGES,
    PRESENCE_DIFF,
    Frame,
    JSONObject,
    JSONValue,
    make_frame,
)
from .._serializer import VSN_1, VSN_2, encode_server_frame
from .._transport import OutgoingMessage
from ._limits import TOO_MANY_EVENTS, Limiter, RateLimits
from ._postgres_changes import Binding, Change, matching_ids
from ._replay import MessageStore
from ._select import selected_data

logger = logging.getLogger("trio_realtime.testing")

ChannelAuthorization = Callable[[str, str | None, str], bool]
"""Decides private-channel access: ``(sub_topic, token, action)`` -> allowed, ``action`` being
``"read"`` (join) or ``"write"`` (broadcast). Stands in for the RLS policies on
``realtime.messages``."""

TokenCheck = Callable[[str], str | None]
"""Validates a token: returns ``None`` when it is valid, else the error message."""

Enqueue = Callable[[OutgoingMessage], bool]
"""Appends an encoded frame to a connection's send buffer; ``False`` if it was not accepted."""

MAX_TRACKED_TOPICS = 10_000
"""Per-topic receive counters kept at most; frames on further topics are only counted in total."""


def encode(frame: Frame, vsn: str, *, user_broadcast: bool = False) -> OutgoingMessage:
    """Encode a server frame (with the shared serializer) for a send buffer.

    orjson hands back its output inside its whole working buffer, about 4 KiB, so an encoded
    frame that waits in a send buffer keeps all of it alive (measured: 3.9 KB of memory per
    67-byte frame). Text frames are copied to an exact-size object: that costs ~0.5 us per
    encode, once per vsn for a fan-out, and keeps a full buffer of 10,000 small frames near 1 MB
    instead of 40 MB. Binary frames are already built with ``join`` at their exact size.

    Raises:
        ProtocolError: when the frame cannot be encoded.
    """
    data, binary = encode_server_frame(frame, vsn, user_broadcast=user_broadcast)
    return (data, True) if binary else (bytes(memoryview(data)), False)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Settings fixed for the server's lifetime; see :func:`serve_realtime` for each."""

    apikey: str | None
    token_check: TokenCheck | None
    jwt_secret: str | None
    join_error_delay: float
    connect_error_delay: float
    max_channels_per_client: int
    max_message_size: int
    send_buffer: int
    idle_timeout: float | None
    record_frames: int
    authorize: ChannelAuthorization | None = None
    max_events_per_second: int = 100
    wall_clock: Callable[[], float] = time.time
    rate_limits: RateLimits | None = None


@dataclass(frozen=True, slots=True)
class Policies:
    """What the RLS policies on ``realtime.messages`` let a private channel's user do.

    Attributes:
        broadcast_read: Receive broadcasts (SELECT with ``extension = 'broadcast'``).
        presence_read: Receive presence (SELECT with ``extension = 'presence'``).
        broadcast_write: Send broadcasts (INSERT with ``extension = 'broadcast'``).
        presence_write: Track presence (INSERT with ``extension = 'presence'``).
    """

    broadcast_read: bool
    presence_read: bool
    broadcast_write: bool
    presence_write: bool

    @property
    def can_read(self) -> bool:
        """Whether the channel may be joined at all (either read policy passes)."""
        return self.broadcast_read or self.presence_read


class PostgresBackend(Protocol):
    """The database behind the server, when it has one (``_database``)."""

    async def subscribe(self, channel: Channel) -> str | None:
        """Check and register a joined channel's bindings; return an error message or ``None``."""
        ...

    async def authorize(self, token: str | None, topic: str) -> Policies | None:
        """Evaluate the ``realtime.messages`` policies for ``topic`` (the sub-topic) under the
        token's claims; ``None`` when a policy raised."""
        ...


class Peer(Protocol):
    """What a channel needs from its connection."""

    @property
    def id(self) -> int:
        """The connection id."""
        ...

    def enqueue(self, item: OutgoingMessage) -> bool:
        """Queue an encoded frame; ``False`` when it was not accepted."""
        ...

    def system_close(self, channel: Channel, message: str) -> None:
        """Close ``channel`` with a ``system`` error carrying ``message``, then ``phx_close``."""
        ...


@dataclass(eq=False, slots=True)
class Channel:
    """One joined channel of one connection (the server's side of a ``phx_join``).

    Attributes:
        peer: The connection.
        vsn: The connection's serializer version.
        topic: The full topic, ``realtime:<name>``.
        private: Whether it joined the private room.
        join_ref: The channel's join ref, ``join_ref || ref`` of the join; pushes carry it.
        raw_join_ref: The join_ref as the client sent it; ``phx_close``/``phx_error`` carry it.
        broadcast_self: Deliver the channel's own broadcasts to it.
        broadcast_ack: Reply ok to each broadcast.
        presence_enabled: Joined with presence, or tracked since.
        presence_key: The key its presence is tracked under.
        bindings: Active postgres_changes bindings (empty if none, or if they failed to parse).
        token: The token the channel runs with (never logged).
        policies: For a private channel on a database-backed server, what its user may do.
    """

    peer: Peer
    vsn: str
    topic: str
    private: bool
    join_ref: str | None
    raw_join_ref: str | None
    broadcast_self: bool = False
    broadcast_ack: bool = False
    presence_enabled: bool = False
    presence_key: str = ""
    bindings: tuple[Binding, ...] = ()
    token: str | None = field(default=None, repr=False)
    room: Room | None = None
    replayed_ids: frozenset[str] = frozenset()
    policies: Policies | None = None

    def push(self, event: str, payload: JSONValue) -> bool:
        """Queue a push from the channel: ``[join_ref, null, topic, event, payload]``."""
        frame = make_frame(self.topic, event, payload, None, self.join_ref)
        return self.peer.enqueue(encode(frame, self.vsn))

    def push_close(self, event: str = "phx_close", payload: JSONValue = None) -> bool:
        """Queue ``phx_close`` (or ``phx_error``), whose ref is the raw join_ref."""
        body: JSONValue = {} if payload is None else payload
        frame = make_frame(self.topic, event, body, self.raw_join_ref, self.raw_join_ref)
        return self.peer.enqueue(encode(frame, self.vsn))


def _new_phx_ref() -> str:
    """Return a presence ref: 12 random bytes, base64url (16 characters)."""
    return secrets.token_urlsafe(12)


def _deliver(
    subscribers: dict[Channel, Enqueue],
    item: OutgoingMessage,
    exclude: object,
    allowed: Callable[[Channel], bool] | None = None,
    recipients: list[Channel] | None = None,
) -> int:
    delivered = 0
    for channel, enqueue in subscribers.items():
        if channel is exclude or (allowed is not None and not allowed(channel)):
            continue
        if enqueue(item):
            delivered += 1
            if recipients is not None:
                recipients.append(channel)
    return delivered


def _may_read_broadcast(channel: Channel) -> bool:
    return channel.policies is None or channel.policies.broadcast_read


def _may_read_presence(channel: Channel) -> bool:
    return channel.policies is None or channel.policies.presence_read


def _reader_check(private: bool, event: str) -> Callable[[Channel], bool] | None:
    """In a private room, who may receive ``event``: the read policy of its extension."""
    if not private:
        return None
    if event == BROADCAST:
        return _may_read_broadcast
    if event == PRESENCE_DIFF:
        return _may_read_presence
    return None


class Room:
    """Every channel joined to one topic in one privacy mode, and its presence."""

    __slots__ = ("limiter", "presences", "private", "topic", "v1", "v2")

    def __init__(self, topic: str, private: bool, limiter: Limiter | None = None) -> None:
        self.topic = topic
        self.private = private
        self.limiter = limiter
        self.v1: dict[Channel, Enqueue] = {}
        self.v2: dict[Channel, Enqueue] = {}
        # channel -> (key, tracked state, meta sent to clients)
        self.presences: dict[Channel, tuple[str, JSONObject, JSONObject]] = {}

    def __len__(self) -> int:
        return len(self.v1) + len(self.v2)

    def fan_out(self, event: str, payload: JSONValue, exclude: Channel | None = None) -> int:
        """Queue ``[null, null, topic, event, payload]`` to every channel but ``exclude``.

        Returns:
            How many channels accepted it.
        """
        delivered = 0
        frame = make_frame(self.topic, event, payload)
        allowed = _reader_check(self.private, event)
        recipients = self._recipients(event)
        for vsn, subscribers in ((VSN_1, self.v1), (VSN_2, self.v2)):
            if len(subscribers) > (exclude in subscribers):
                try:
                    item = encode(frame, vsn)
                except ProtocolError as exc:
                    logger.warning(
                        "cannot encode %s on %s for vsn %s: %s", event, self.topic, vsn, exc
                    )
                    continue
                delivered += _deliver(subscribers, item, exclude, allowed, recipients)
        self._count_delivered(event, delivered, recipients)
        return delivered

    def _recipients(self, event: str) -> list[Channel] | None:
        """A list to collect a broadcast's recipients in, when the events limit is on."""
        limiter = self.limiter
        if limiter is not None and limiter.events is not None and event == BROADCAST:
            return []
        return None

    def _count_delivered(
        self, event: str, delivered: int, recipients: list[Channel] | None
    ) -> None:
        """Count deliveries against the rate limits; close the channels over the events limit
        (each got the broadcast first, as on the server)."""
        limiter = self.limiter
        if limiter is None:
            return
        now = trio.current_time()
        if event == PRESENCE_DIFF:
            limiter.delivered_presence(now, delivered)
        for channel in recipients or ():
            if limiter.delivered_event(now) and channel.room is self:
                channel.peer.system_close(channel, TOO_MANY_EVENTS)

    def fan_out_user_broadcast(self, payload: JSONObject, exclude: Channel | None = None) -> int:
        """Queue a user broadcast: binary kind 4 to V2, the JSON form to V1 (section 2.3).

        ``payload`` is ``{"type": "broadcast", "event": ..., "payload": ...}``. V1 subscribers
        get nothing when the inner payload is bytes, as on the real server.

        Returns:
            How many channels accepted it.
        """
        delivered = 0
        frame = make_frame(self.topic, BROADCAST, payload)
        allowed = _reader_check(self.private, BROADCAST)
        recipients = self._recipients(BROADCAST)
        if len(self.v2) > (exclude in self.v2):
            try:
                item = encode(frame, VSN_2, user_broadcast=True)
            except ProtocolError as exc:
                logger.warning("cannot encode a user broadcast on %s: %s", self.topic, exc)
            else:
                delivered += _deliver(self.v2, item, exclude, allowed, recipients)
        if len(self.v1) > (exclude in self.v1) and not isinstance(payload.get("payload"), bytes):
            try:
                item = encode(frame, VSN_1)
            except ProtocolError as exc:
                logger.warning("cannot encode a broadcast on %s: %s", self.topic, exc)
            else:
                delivered += _deliver(self.v1, item, exclude, allowed, recipients)
        self._count_delivered(BROADCAST, delivered, recipients)
        return delivered

    # -- presence ---------------------------------------------------------------------------

    def presence_state(self) -> JSONObject:
        """Return what ``presence_state`` carries now: ``{key: {"metas": [meta, ...]}}``."""
        state: dict[str, list[JSONValue]] = {}
        for key, _tracked, meta in self.presences.values():
            state.setdefault(key, []).append(meta)
        return {key: {"metas": metas} for key, metas in state.items()}

    def track(self, channel: Channel, state: JSONObject) -> JSONObject | None:
        """Track (or re-track) ``channel``'s presence; return the diff, or ``None`` if unchanged."""
        current = self.presences.get(channel)
        if current is not None and current[1] == state:
            return None
        key = channel.presence_key
        meta: JSONObject = {"phx_ref": _new_phx_ref()}
        leaves: JSONObject = {}
        if current is not None:
            meta["phx_ref_prev"] = current[2]["phx_ref"]
            leaves[key] = {"metas": [current[2]]}
        meta.update((k, v) for k, v in state.items() if k not in ("phx_ref", "phx_ref_prev"))
        self.presences[channel] = (key, state, meta)
        return {"joins": {key: {"metas": [meta]}}, "leaves": leaves}

    def tracked(self, channel: Channel) -> JSONObject | None:
        """The state ``channel`` tracks now, if any."""
        current = self.presences.get(channel)
        return None if current is None else current[1]

    def untrack(self, channel: Channel) -> JSONObject | None:
        """Stop tracking ``channel``; return the diff, or ``None`` if it was not tracked."""
        current = self.presences.pop(channel, None)
        if current is None:
            return None
        key, _tracked, meta = current
        return {"joins": {}, "leaves": {key: {"metas": [meta]}}}


class Hub:
    """The state every connection of one server shares, and its counters.

    Attributes:
        config: The fixed settings.
        answer_heartbeats: Fault knob: reply to heartbeats.
        reply_delay: Fault knob: seconds every ``phx_reply`` is held back.
        rejections: Fault knob: topic -> (reason, delay) for joins to refuse.
        postgres_failures: Fault knob: topic -> the errors its next postgres_changes
            subscription attempts report (``_postgres_subscribe``).
        rooms: (topic, private) -> room; a room is dropped when its last channel leaves.
        changed: Parked tasks are woken whenever a connection or channel comes or goes.
        database: The database postgres_changes come from, when the server has one.
        limiter: The rate limits and their counters, when ``rate_limits`` were given.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.limiter = (
            Limiter(config.rate_limits, trio.current_time())
            if config.rate_limits is not None
            else None
        )
        self.answer_heartbeats = True
        self.reply_delay = 0.0
        self.rejections: dict[str, tuple[str, float]] = {}
        self.postgres_failures: dict[str, deque[str]] = {}
        self.rooms: dict[tuple[str, bool], Room] = {}
        self.postgres_channels: dict[Channel, None] = {}
        self.database: PostgresBackend | None = None
        self.changed = trio.lowlevel.ParkingLot()
        self.frames_by_topic: dict[str, int] = {}
        self.joins = 0
        self.joins_refused = 0
        self.frames_received = 0
        self.frames_sent = 0
        self.malformed_frames = 0
        self.dropped_slow_connections = 0
        self.messages = MessageStore()

    def notify(self) -> None:
        """Wake every task waiting for a change of connections or channels."""
        self.changed.unpark_all()

    def count_received(self, topic: str) -> None:
        """Count one well-formed frame received on ``topic``."""
        self.frames_received += 1
        counts = self.frames_by_topic
        count = counts.get(topic)
        if count is not None:
            counts[topic] = count + 1
        elif len(counts) < MAX_TRACKED_TOPICS:
            counts[topic] = 1

    def room(self, topic: str, private: bool) -> Room | None:
        """Return the room of ``topic``, or ``None`` when nobody is joined to it."""
        return self.rooms.get((topic, private))

    def add_channel(self, channel: Channel) -> None:
        """Put a freshly joined channel into its room."""
        key = (channel.topic, channel.private)
        room = self.rooms.get(key)
        if room is None:
            room = self.rooms[key] = Room(channel.topic, channel.private, self.limiter)
        subscribers = room.v1 if channel.vsn == VSN_1 else room.v2
        subscribers[channel] = channel.peer.enqueue
        channel.room = room
        if channel.bindings:
            self.postgres_channels[channel] = None
        self.joins += 1
        self.notify()

    def remove_channel(self, channel: Channel) -> None:
        """Take a channel out of its room; its presence leaves (a diff to those who remain)."""
        room = channel.room
        if room is None:
            return
        channel.room = None
        room.v1.pop(channel, None)
        room.v2.pop(channel, None)
        self.postgres_channels.pop(channel, None)
        diff = room.untrack(channel)
        if diff is not None:
            room.fan_out(PRESENCE_DIFF, diff)
        if not len(room):
            del self.rooms[(room.topic, room.private)]
        self.notify()

    def joined_count(self, topic: str) -> int:
        """Return how many channels are joined to ``topic``, public and private."""
        return sum(len(room) for room in (self.room(topic, False), self.room(topic, True)) if room)

    def emit_postgres_change(self, change: Change) -> int:
        """Queue ``change`` to every channel with a matching binding (section 7.4).

        Returns:
            How many channels accepted it.
        """
        delivered = 0
        cache: dict[tuple[str, str, tuple[int, ...], object], OutgoingMessage] = {}
        for channel in self.postgres_channels:
            ids = matching_ids(channel.bindings, change)
            if not ids:
                continue
            # One message per distinct ``select`` among the matching bindings.
            groups: dict[tuple[str, ...] | None, list[int]] = {}
            for binding in channel.bindings:
                if binding.id in ids and binding.id not in groups.get(binding.select, ()):
                    groups.setdefault(binding.select, []).append(binding.id)
            accepted = False
            for select, group in groups.items():
                key = (channel.vsn, channel.topic, tuple(group), select)
                item = cache.get(key)
                if item is None:
                    data = selected_data(change.data, select, change.primary_key)
                    payload: JSONObject = {"ids": list(group), "data": data}
                    frame = make_frame(channel.topic, POSTGRES_CHANGES, payload)
                    item = cache[key] = encode(frame, channel.vsn)
                accepted = channel.peer.enqueue(item) or accepted
            if accepted:
                delivered += 1
        return delivered
