"""The items subscriptions yield: broadcasts, system messages, channel and connection events.

Postgres changes are :class:`trio_realtime.protocol.PostgresChange` and presence changes are
:class:`trio_realtime.protocol.PresenceEvent`; both live in the protocol layer because they are
pure conversions of server payloads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from ._exceptions import DecodeError, RateLimit
from ._frames import JSONValue, Payload

T = TypeVar("T")


# Slotted: the reader fills the slots directly (see the end of ``_session``).
@dataclass(frozen=True, slots=True)
class Broadcast:
    """A broadcast message received on a channel.

    Attributes:
        event: The user event name the sender chose, for example ``"cursor"``.
        payload: The sender's payload, unchanged: usually an object, but any JSON value, or
            ``bytes`` for a binary broadcast under vsn 2.0.0.
        topic: The channel topic, with its ``realtime:`` prefix.
        meta: The server's metadata when present (``{"id": ..., "replayed": true}`` for a
            replayed message), else ``None``.
    """

    event: str
    payload: Payload
    topic: str
    meta: JSONValue = None

    def json(self) -> JSONValue:
        """Return the payload as JSON, for code that does not expect binary broadcasts.

        Raises:
            TypeError: the payload is ``bytes`` (a binary broadcast under vsn 2.0.0).
        """
        payload = self.payload
        if isinstance(payload, bytes):
            raise TypeError(f"broadcast {self.event!r} has a binary payload; use .data")
        return payload

    @property
    def data(self) -> bytes:
        """The payload of a binary broadcast (vsn 2.0.0).

        Raises:
            TypeError: the payload is JSON, not ``bytes``.
        """
        payload = self.payload
        if not isinstance(payload, bytes):
            raise TypeError(f"broadcast {self.event!r} has a JSON payload; use .json()")
        return payload


@dataclass(frozen=True, slots=True)
class DecodedBroadcast(Generic[T]):
    """A broadcast whose payload a subscription's decoder has turned into a ``T``.

    What ``channel.broadcasts(decode=...)`` yields; see :class:`DecodeError` for a payload the
    decoder refuses.

    Attributes:
        event: The user event name the sender chose.
        payload: What the decoder returned for the sender's JSON payload.
        topic: The channel topic, with its ``realtime:`` prefix.
        meta: The server's metadata when present, else ``None`` (as in :class:`Broadcast`).
    """

    event: str
    payload: T
    topic: str
    meta: JSONValue = None


def broadcast_decoder(
    decode: Callable[[JSONValue], T],
) -> Callable[[Broadcast], DecodedBroadcast[T]]:
    """Wrap a payload decoder into the conversion a decoding subscription applies to each item.

    Whatever ``decode`` raises (an ``Exception``: a validation error, a ``KeyError``...) becomes
    a :class:`DecodeError` carrying the message, chained to the decoder's error. A binary
    payload (``bytes``, vsn 2.0.0) is refused the same way, with a ``TypeError``, without
    calling ``decode``.
    """

    def convert(message: Broadcast) -> DecodedBroadcast[T]:
        payload = message.payload
        try:
            if isinstance(payload, bytes):
                raise TypeError(
                    f"the payload is binary ({len(payload)} bytes); a decoder takes JSON"
                )
            value = decode(payload)
        except Exception as exc:
            raise DecodeError(message, exc) from exc
        return DecodedBroadcast(message.event, value, message.topic, message.meta)

    return convert


@dataclass(frozen=True, slots=True)
class SystemMessage:
    """A ``system`` message from the server about a channel.

    Attributes:
        extension: ``"postgres_changes"`` or ``"system"``.
        status: ``"ok"`` or ``"error"``.
        message: The server's text, for example ``"Subscribed to PostgreSQL"``.
        channel: The sub-topic the message is about, when the server names it.
        payload: The whole payload as received.
    """

    extension: str
    status: str
    message: str
    channel: str | None
    payload: JSONValue

    @property
    def ok(self) -> bool:
        """Whether ``status`` is ``"ok"``."""
        return self.status == "ok"


@dataclass(frozen=True, slots=True)
class ChannelJoined:
    """The channel was joined, or joined again.

    Attributes:
        topic: The channel topic.
        join_ref: The join's ref, which tags every reply and channel push that follows.
        rejoin: ``False`` for the first join; ``True`` for a join after the connection was
            lost, after a server ``phx_error``, or to send new bindings. After a rejoin, events
            sent while the channel was not joined are lost: fetch what you need to catch up.
    """

    topic: str
    join_ref: str
    rejoin: bool


@dataclass(frozen=True, slots=True)
class ChannelJoinFailed:
    """A background rejoin attempt failed; another follows after ``retry_in`` seconds.

    Attributes:
        topic: The channel topic.
        reason: The server's reason, or a description of the timeout.
        attempt: How many rejoin attempts have failed in a row.
        retry_in: Seconds until the next attempt, or ``None`` when the refusal is permanent
            and the channel is closed.
    """

    topic: str
    reason: str
    attempt: int
    retry_in: float | None


ChannelEvent = ChannelJoined | ChannelJoinFailed


@dataclass(frozen=True, slots=True)
class Connected:
    """The WebSocket connection is open.

    Attributes:
        url: The endpoint, with the apikey redacted.
        reconnect: ``False`` for the first connection, ``True`` after a reconnect.
    """

    url: str
    reconnect: bool


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection was lost.

    Attributes:
        code: The WebSocket close code (1006 for a dropped connection), if any.
        reason: Why: the close reason, ``"heartbeat timeout"``, ``"message too big"`` and so on.
        will_reconnect: Whether a reconnect follows.
    """

    code: int | None
    reason: str
    will_reconnect: bool


@dataclass(frozen=True, slots=True)
class Reconnecting:
    """A reconnect attempt is scheduled.

    Attributes:
        attempt: The attempt number, from 1.
        delay: Seconds until the attempt.
    """

    attempt: int
    delay: float


@dataclass(frozen=True, slots=True)
class HeartbeatEvent:
    """A heartbeat round trip completed.

    Attributes:
        status: ``"ok"``, or ``"error"`` when the server replied with an error status.
        latency: Seconds between sending the heartbeat and its reply.
    """

    status: Literal["ok", "error"]
    latency: float


@dataclass(frozen=True, slots=True)
class RateLimitReached:
    """The server applied one of its rate limits (see :class:`RateLimited`).

    Attributes:
        topic: The channel topic, or ``None`` when the server refused the connection itself
            (HTTP 429 at the upgrade).
        reason: The server's text, for example
            ``"ClientJoinRateLimitReached: Too many joins per second"``.
        limit: Which limit: ``"joins"``, ``"users"``, ``"channels"``,
            ``"database_connections"``, ``"messages"``, ``"presence"`` or
            ``"client_presence"``.
    """

    topic: str | None
    reason: str
    limit: RateLimit


ConnectionEvent = Connected | Disconnected | Reconnecting | HeartbeatEvent | RateLimitReached
