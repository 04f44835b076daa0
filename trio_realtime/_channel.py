"""Channels: the join state machine, pushes, and routing of server frames to subscriptions.

Theory of operation
-------------------
A channel remembers what the user wants (joined or not) separately from what it is
(:class:`ChannelState`). While the user wants it joined and a connection is open, a *join loop*
task runs in that connection's nursery: it sends ``phx_join``, waits for the reply and, for a
background rejoin, retries transient refusals with backoff. A connection loss cancels the loop;
the next connection starts a new one. So every channel rejoins after every reconnect, with a
fresh join_ref, and its subscriptions simply keep receiving.

* A refusal while the user awaits :meth:`Channel.join` raises :class:`JoinError` and is not
  retried. During a background rejoin, a permanent refusal (authorisation, bad token, private
  only, too many channels...) closes the channel: its subscriptions raise
  :class:`ChannelClosed` with the server's reason. Transient ones are retried, each failure
  visible as a :class:`ChannelJoinFailed` event and a warning.
* ``phx_error`` makes the channel rejoin with backoff; ``system`` error + ``phx_close`` ends it
  with :class:`ChannelClosed`; ``phx_close``, ``phx_error`` and replies carrying another
  join_ref are stale and dropped.
* A push (broadcast, track, untrack) made while the channel is not joined waits, bounded by the
  client timeout and by a buffer of :data:`MAX_WAITING_PUSHES`: beyond it the oldest waiting
  push fails. A push that was written but not acknowledged when the connection dropped raises
  :class:`ConnectionClosed` rather than being sent twice.

Every method the reader calls (``on_frame`` and what it calls) is synchronous and never blocks.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

import trio

from ._connection import Connection, MaybeWritten, Waiter
from ._events import Broadcast, ChannelEvent, ChannelJoined, ChannelJoinFailed, SystemMessage
from ._exceptions import (
    ChannelClosed,
    ConnectionClosed,
    JoinError,
    PostgresSubscriptionError,
    PushError,
    PushTimeout,
    RealtimeError,
)
from ._frames import (
    Frame,
    JSONObject,
    JSONValue,
    Payload,
    access_token_frame,
    broadcast_frame,
    channel_config,
    join_frame,
    leave_frame,
    postgres_binding,
    presence_track_frame,
    presence_untrack_frame,
)
from ._postgres import PostgresChange, parse_postgres_change
from ._presence import PresenceEvent, PresenceMap, PresenceTracker
from ._rest import RestSender
from ._session import ChannelState as ChannelState
from ._subscription import DEFAULT_BUFFER, Subscription

logger = logging.getLogger("trio_realtime.channel")

T = TypeVar("T")

MAX_WAITING_PUSHES: Final = 100

# Reasons (their code prefix) that no retry can fix: the channel closes instead of rejoining.
PERMANENT_JOIN_ERRORS: Final = (
    "Unauthorized",
    "InvalidJWTToken",
    "MalformedJWT",
    "JwtSignatureError",
    "JwtSignerError",
    "PrivateOnly",
    "TopicNameRequired",
    "UnableToReplayMessages",
    "RealtimeDisabledForTenant",
    "TenantNotFound",
    "ChannelRateLimitReached",
    "unmatched topic",
    "mismatch between server and client bindings",
)


def is_permanent_join_error(reason: str) -> bool:
    """Whether a join refusal cannot be fixed by retrying."""
    return reason.startswith(PERMANENT_JOIN_ERRORS)


_TRANSITIONS: Final[Mapping[ChannelState, frozenset[ChannelState]]] = {
    ChannelState.CLOSED: frozenset({ChannelState.JOINING}),
    ChannelState.JOINING: frozenset(
        {ChannelState.JOINED, ChannelState.ERRORED, ChannelState.CLOSED, ChannelState.LEAVING}
    ),
    ChannelState.JOINED: frozenset(
        {ChannelState.JOINING, ChannelState.LEAVING, ChannelState.ERRORED, ChannelState.CLOSED}
    ),
    ChannelState.LEAVING: frozenset({ChannelState.CLOSED}),
    ChannelState.ERRORED: frozenset(
        {ChannelState.JOINING, ChannelState.CLOSED, ChannelState.LEAVING}
    ),
}


class ChannelHost(Protocol):
    """What a channel needs from its client."""

    @property
    def timeout(self) -> float: ...

    @property
    def vsn(self) -> str: ...

    @property
    def connection(self) -> Connection | None: ...

    def next_ref(self) -> str: ...

    def encode(self, frame: Frame) -> tuple[bytes, bool]: ...

    async def token_for_join(self) -> str | None: ...

    def rejoin_delay(self, attempt: int) -> float: ...

    def register_channel(self, channel: Channel) -> None: ...

    @property
    def rest(self) -> RestSender: ...

    def unregister_channel(self, channel: Channel) -> None: ...


@dataclass(slots=True)
class _Binding:
    spec: JSONObject
    subscriptions: list[Subscription[PostgresChange]]
    server_id: int | None = None


def _binding_key(spec: Mapping[str, JSONValue]) -> tuple[str, str, str, str]:
    return (
        str(spec.get("event", "*")).upper(),
        str(spec.get("schema", "")),
        str(spec.get("table", "")),
        str(spec.get("filter", "")),
    )


class Channel:
    """One Realtime channel on a shared connection; create it with ``client.channel(topic)``.

    Use ``async with channel:`` to join (raising :class:`JoinError` with the server's reason if
    refused) and to leave on exit, or call :meth:`join` and :meth:`leave`.
    """

    def __init__(
        self,
        host: ChannelHost,
        topic: str,
        *,
        broadcast_self: bool,
        broadcast_ack: bool,
        presence_key: str,
        presence_enabled: bool,
        private: bool,
    ) -> None:
        self._host = host
        self.topic = topic
        self._options = (broadcast_self, broadcast_ack, presence_key, private)
        self._broadcast_self = broadcast_self
        self._broadcast_ack = broadcast_ack
        self._presence_key = presence_key
        self._presence_enabled = presence_enabled
        self._private = private
        self._state = ChannelState.CLOSED
        self._want_joined = False
        self._ever_joined = False
        self._join_ref: str | None = None
        self._join_outcome: Waiter[None] | None = None
        self._user_joins = 0
        self._join_scope: trio.CancelScope | None = None
        self._state_lot = trio.lowlevel.ParkingLot()
        self._waiting_pushes: deque[_Ticket] = deque()
        self._closed_error: RealtimeError | None = None
        self._pending_close_reason: str | None = None
        self._postgres_ready = Waiter[None]()
        # Subscriptions, by kind.
        self._broadcast_by_event: dict[str, list[Subscription[Broadcast]]] = {}
        self._broadcast_all: list[Subscription[Broadcast]] = []
        self._bindings: list[_Binding] = []
        self._presence_subs: list[Subscription[PresenceEvent]] = []
        self._system_subs: list[Subscription[SystemMessage]] = []
        self._channel_event_subs: list[Subscription[ChannelEvent]] = []
        self._presence = PresenceTracker()

    def __repr__(self) -> str:
        return f"<Channel {self.topic!r} {self._state.value}>"

    # -- public state -----------------------------------------------------------------------------

    @property
    def state(self) -> ChannelState:
        """The channel's current state."""
        return self._state

    @property
    def join_ref(self) -> str | None:
        """The ref of the current (or pending) join."""
        return self._join_ref

    @property
    def joined(self) -> bool:
        """Whether the channel is joined right now."""
        return self._state is ChannelState.JOINED

    def same_options(
        self, broadcast_self: bool, broadcast_ack: bool, presence_key: str, private: bool
    ) -> bool:
        """Whether a ``client.channel`` call asked for this channel's options."""
        return self._options == (broadcast_self, broadcast_ack, presence_key, private)

    def _set_state(self, new: ChannelState) -> None:
        old = self._state
        if new is old:
            return
        if new not in _TRANSITIONS[old]:
            raise RealtimeError(
                f"channel {self.topic!r}: illegal transition {old.value} -> {new.value}"
            )
        self._state = new
        self._state_lot.unpark_all()

    # -- subscriptions --------------------------------------------------------------------------

    def _subscription(
        self, kind: str, registry: list[Subscription[T]], buffer: int, overflow: str
    ) -> Subscription[T]:
        def unregister(sub: Subscription[T]) -> None:
            if sub in registry:
                registry.remove(sub)

        sub: Subscription[T] = Subscription(
            f"{kind} on {self.topic}", buffer=buffer, overflow=overflow, on_close=unregister
        )
        registry.append(sub)
        return sub

    def broadcasts(
        self, event: str | None = None, *, buffer: int = DEFAULT_BUFFER, overflow: str = "error"
    ) -> Subscription[Broadcast]:
        """Subscribe to broadcasts of user event ``event``, or of every event for ``None``.

        Registered at once, so nothing sent after this call is missed.
        """
        if event is None:
            return self._subscription("broadcasts", self._broadcast_all, buffer, overflow)
        registry = self._broadcast_by_event.setdefault(event, [])
        sub = self._subscription(f"broadcast {event!r}", registry, buffer, overflow)
        return sub

    def postgres_changes(
        self,
        event: str = "*",
        *,
        schema: str = "public",
        table: str | None = None,
        filter: str | None = None,
        buffer: int = DEFAULT_BUFFER,
        overflow: str = "error",
    ) -> Subscription[PostgresChange]:
        """Subscribe to row changes; the binding travels in the join.

        Declare it before joining. Declared on a joined channel, it makes the channel rejoin
        with the new binding (a short gap, signalled by a :class:`ChannelJoined` event).

        Raises:
            ValueError: for an unknown event or a filter without a table.
        """
        spec = postgres_binding(event, schema=schema, table=table, filter=filter)
        key = _binding_key(spec)
        binding = next((b for b in self._bindings if _binding_key(b.spec) == key), None)
        rejoin = False
        if binding is None:
            binding = _Binding(spec, [])
            self._bindings.append(binding)
            rejoin = self._state in (ChannelState.JOINED, ChannelState.JOINING)
        sub = self._subscription(
            f"postgres_changes {key[0]} {schema}.{table or '*'}",
            binding.subscriptions,
            buffer,
            overflow,
        )
        if rejoin:
            self._postgres_ready = Waiter()
            self._rejoin_now()
        return sub

    def presence_events(
        self, *, buffer: int = DEFAULT_BUFFER, overflow: str = "error"
    ) -> Subscription[PresenceEvent]:
        """Subscribe to presence ``join``, ``leave`` and ``sync`` events.

        Enables presence for the channel; on a channel already joined without presence this
        rejoins so that the server sends the full presence state.
        """
        sub = self._subscription("presence", self._presence_subs, buffer, overflow)
        self._enable_presence()
        return sub

    def presence_state(self) -> PresenceMap:
        """Return a copy of the presence state: ``{key: [meta, ...]}``.

        Metas carry ``presence_ref`` (the server's ``phx_ref``).
        """
        return self._presence.snapshot()

    def system_events(
        self, *, buffer: int = DEFAULT_BUFFER, overflow: str = "error"
    ) -> Subscription[SystemMessage]:
        """Subscribe to the server's ``system`` messages for this channel."""
        return self._subscription("system", self._system_subs, buffer, overflow)

    def channel_events(
        self, *, buffer: int = DEFAULT_BUFFER, overflow: str = "error"
    ) -> Subscription[ChannelEvent]:
        """Subscribe to :class:`ChannelJoined` and :class:`ChannelJoinFailed` events.

        A :class:`ChannelJoined` with ``rejoin=True`` is the signal that events may have been
        missed while the channel was not joined: the place to fetch and catch up.
        """
        return self._subscription("channel events", self._channel_event_subs, buffer, overflow)

    async def wait_postgres_ready(self) -> None:
        """Wait until the server confirms that postgres_changes are streaming.

        The join reply comes before the server has subscribed to the database; a write made in
        between would be missed. The server's ``system`` message "Subscribed to PostgreSQL"
        marks the point after which no change is missed. The wait is bounded by the client
        timeout.

        Raises:
            PostgresSubscriptionError: when the server reports an error instead.
            PushTimeout: when no confirmation arrives in time.
        """
        if not self._bindings:
            raise RealtimeError(f"channel {self.topic!r} has no postgres_changes subscription")
        with trio.move_on_after(self._host.timeout):
            await self._postgres_ready.wait()
            return
        raise PushTimeout(
            f"no 'Subscribed to PostgreSQL' for {self.topic!r} within {self._host.timeout} s"
        )

    # -- join and leave --------------------------------------------------------------------------

    async def __aenter__(self) -> Channel:
        await self.join()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        with trio.CancelScope(shield=True):
            await self.leave()

    def _config(self) -> JSONObject:
        return channel_config(
            broadcast_self=self._broadcast_self,
            broadcast_ack=self._broadcast_ack,
            presence_key=self._presence_key,
            presence_enabled=self._presence_enabled,
            private=self._private,
        )

    async def join(self) -> None:
        """Join the channel and wait for the server's reply (bounded by the client timeout).

        Returns at once if already joined. While the connection is down it waits for the
        reconnect, within the same timeout. Cancelling it stops the join (and, if the server
        joined meanwhile, leaves), unless another task is waiting for the same join.

        Raises:
            JoinError: the server refused, with its reason. Not retried.
            PushTimeout: no reply in time; the channel is left closed.
            RealtimeError: the channel is leaving.
        """
        if self._state is ChannelState.JOINED:
            await trio.lowlevel.checkpoint()
            return
        if self._state is ChannelState.LEAVING:
            raise RealtimeError(f"cannot join {self.topic!r} while it is leaving")
        self._host.register_channel(self)
        self._closed_error = None
        self._want_joined = True
        if self._join_outcome is None or self._join_outcome.done:
            self._join_outcome = Waiter()
        outcome = self._join_outcome
        self._user_joins += 1
        try:
            self.start_join_loop()
            with trio.move_on_after(self._host.timeout):
                await outcome.wait()
                return
        except trio.Cancelled:
            # The caller gave up on this join: unless another task still waits for it, stop
            # joining, so that a cancelled join does not end up joined behind the caller's back.
            if self._user_joins == 1 and not outcome.done:
                self._abandon_join()
            raise
        finally:
            self._user_joins -= 1
        self._abandon_join()
        raise PushTimeout(f"no reply to the join of {self.topic!r} within {self._host.timeout} s")

    def start_join_loop(self) -> None:
        """Start the join loop in the current connection, if wanted and not running."""
        connection = self._host.connection
        if not self._want_joined or self._join_scope is not None or connection is None:
            return
        if connection.lost is not None:
            return
        scope = trio.CancelScope()
        self._join_scope = scope
        connection.nursery.start_soon(self._join_loop, connection, scope)

    def _rejoin_now(self) -> None:
        """Send a new join on the open connection (new bindings or presence)."""
        if self._join_scope is not None:
            self._join_scope.cancel()
            self._join_scope = None
        if self._state is ChannelState.JOINED:
            self._set_state(ChannelState.JOINING)
        self.start_join_loop()

    async def _join_loop(self, connection: Connection, scope: trio.CancelScope) -> None:
        try:
            with scope:
                attempt = 0
                while self._want_joined:
                    try:
                        await self._join_once(connection)
                        return
                    except JoinError as exc:
                        if self._user_joins and not self._ever_joined:
                            self._stop(exc)
                            self._fail_join(exc)
                            return
                        reason = exc.reason
                        if is_permanent_join_error(reason):
                            logger.warning("rejoin of %s refused for good: %s", self.topic, reason)
                            self._emit_channel_event(
                                ChannelJoinFailed(self.topic, reason, attempt + 1, None)
                            )
                            self._fail_join(exc)
                            self._finish(ChannelClosed(self.topic, reason, by_server=True))
                            return
                    except PushTimeout as exc:
                        reason = str(exc)
                    except ConnectionClosed:
                        return  # the next connection starts a new loop
                    attempt += 1
                    delay = self._host.rejoin_delay(attempt)
                    logger.warning(
                        "join of %s failed (%s); attempt %d, retrying in %.1f s",
                        self.topic,
                        reason,
                        attempt,
                        delay,
                    )
                    self._emit_channel_event(ChannelJoinFailed(self.topic, reason, attempt, delay))
                    if self._state is ChannelState.JOINING:
                        self._set_state(ChannelState.ERRORED)
                    await trio.sleep(delay)
        finally:
            if self._join_scope is scope:
                self._join_scope = None

    async def _join_once(self, connection: Connection) -> None:
        token = await self._host.token_for_join()
        if self._state is not ChannelState.JOINING:
            self._set_state(ChannelState.JOINING)
        ref = self._host.next_ref()
        self._join_ref = ref
        frame = join_frame(ref, self.topic, self._config(), [b.spec for b in self._bindings], token)
        waiter = connection.expect_reply(ref)
        data, binary = self._host.encode(frame)
        await connection.send(data, binary)
        timeout = self._host.timeout
        reply: Frame | None = None
        with trio.move_on_after(timeout):
            reply = await waiter.wait()
        if reply is None:
            connection.forget_reply(ref)
            raise PushTimeout(f"no reply to the join of {self.topic!r} within {timeout} s")
        if self._join_ref != ref or self._state is not ChannelState.JOINING:
            # Superseded while this task waited for its turn: frames read in the same batch as
            # the reply (phx_close, phx_error) or a leave have already decided the channel.
            return
        status, response = _reply_parts(reply)
        if status != "ok":
            raise JoinError(self.topic, _reason(response))
        self._check_bindings(response)
        rejoin = self._ever_joined
        self._ever_joined = True
        self._set_state(ChannelState.JOINED)
        logger.debug("joined %s (join_ref %s)", self.topic, ref)
        self._emit_channel_event(ChannelJoined(self.topic, ref, rejoin))
        if self._join_outcome is not None:
            self._join_outcome.set(None)

    def _check_bindings(self, response: JSONValue) -> None:
        server = response.get("postgres_changes") if isinstance(response, dict) else None
        server_list = server if isinstance(server, list) else []
        if len(server_list) != len(self._bindings):
            if self._bindings or server_list:
                raise JoinError(
                    self.topic, "mismatch between server and client bindings for postgres changes"
                )
            return
        for binding, entry in zip(self._bindings, server_list, strict=True):
            entry_id = entry.get("id") if isinstance(entry, dict) else None
            if not isinstance(entry, dict) or not isinstance(entry_id, int):
                raise JoinError(
                    self.topic, "mismatch between server and client bindings for postgres changes"
                )
            if _binding_key(entry) != _binding_key(binding.spec):
                raise JoinError(
                    self.topic, "mismatch between server and client bindings for postgres changes"
                )
            binding.server_id = entry_id

    def _fail_join(self, error: BaseException) -> None:
        if self._join_outcome is not None:
            self._join_outcome.fail(error)

    def _abandon_join(self) -> None:
        """The user's join timed out: stop trying, and tell the server in case it joined us."""
        self._want_joined = False
        if self._join_scope is not None:
            self._join_scope.cancel()
            self._join_scope = None
        self._send_leave_quietly()
        self._stop(None)

    def _stop(self, error: RealtimeError | None) -> None:
        """Go back to CLOSED without ending subscriptions, so a later join can reuse them."""
        self._want_joined = False
        self._set_state(ChannelState.CLOSED)
        self._closed_error = error

    async def leave(self) -> None:
        """Leave the channel: send ``phx_leave`` and wait (bounded) for the reply.

        Subscriptions end cleanly (their iterators stop) once their buffered items are read,
        and the channel is removed from the client. A no-op for a closed channel.
        """
        self._want_joined = False
        if self._join_scope is not None:
            self._join_scope.cancel()
            self._join_scope = None
        if self._state is ChannelState.CLOSED:
            self._host.unregister_channel(self)
            await trio.lowlevel.checkpoint()
            return
        connection = self._host.connection
        try:
            if (
                self._state is ChannelState.JOINED
                and connection is not None
                and connection.lost is None
                and self._join_ref is not None
            ):
                self._set_state(ChannelState.LEAVING)
                ref = self._host.next_ref()
                waiter = connection.expect_reply(ref)
                frame = leave_frame(ref, self._join_ref, self.topic)
                data, binary = self._host.encode(frame)
                queued = False
                try:
                    with trio.move_on_after(self._host.timeout):
                        await connection.send(data, binary)
                        queued = True
                        await waiter.wait()
                except ConnectionClosed:
                    pass
                finally:
                    connection.forget_reply(ref)
                    if not queued and connection.lost is None:
                        # Cancelled (or timed out) before the leave was queued: still tell the
                        # server, without waiting, so that it does not keep the channel.
                        connection.nursery.start_soon(_send_quietly, connection, data, binary)
            else:
                # A join may be in flight: tell the server, without waiting, in case it joins us.
                self._send_leave_quietly()
                await trio.lowlevel.checkpoint()
        finally:
            # Even when cancelled: the user asked to leave, so the channel does not stay LEAVING
            # (where it could neither join again nor be left) waiting for a reply (CL-05).
            self._finish(None)

    def _send_leave_quietly(self) -> None:
        connection = self._host.connection
        if (
            self._state is ChannelState.JOINING
            and connection is not None
            and connection.lost is None
            and self._join_ref is not None
        ):
            frame = leave_frame(self._host.next_ref(), self._join_ref, self.topic)
            data, binary = self._host.encode(frame)
            connection.nursery.start_soon(_send_quietly, connection, data, binary)

    def _finish(self, error: ChannelClosed | None) -> None:
        """Close the channel: end subscriptions (cleanly, or with ``error``), fail pushes."""
        self._want_joined = False
        self._ever_joined = False
        if self._join_scope is not None:
            self._join_scope.cancel()
            self._join_scope = None
        self._set_state(ChannelState.CLOSED)
        self._state_lot.unpark_all()
        self._closed_error = error or ChannelClosed(
            self.topic, "the channel was left", by_server=False
        )
        self._pending_close_reason = None
        for sub in self._all_subscriptions():
            sub.end(error)
        self._broadcast_by_event.clear()
        self._broadcast_all.clear()
        self._presence_subs.clear()
        self._system_subs.clear()
        self._channel_event_subs.clear()
        for binding in self._bindings:
            binding.subscriptions.clear()
        self._bindings.clear()
        self._presence.clear()
        self._postgres_ready.fail(self._closed_error)
        self._postgres_ready = Waiter()
        self._host.unregister_channel(self)

    def _all_subscriptions(self) -> list[Subscription[Any]]:
        subs: list[Subscription[Any]] = [*self._broadcast_all, *self._presence_subs]
        for registry in self._broadcast_by_event.values():
            subs.extend(registry)
        for binding in self._bindings:
            subs.extend(binding.subscriptions)
        subs.extend(self._system_subs)
        subs.extend(self._channel_event_subs)
        return subs

    # -- connection lifecycle (called by the client) ---------------------------------------

    def connection_lost(self) -> None:
        """The connection dropped: a joined channel now waits for the rejoin."""
        self._join_scope = None
        if self._state in (ChannelState.JOINED, ChannelState.JOINING):
            self._set_state(ChannelState.ERRORED)
        elif self._state is ChannelState.LEAVING:
            self._finish(None)

    def close_quietly(self) -> None:
        """The client is closing: end subscriptions cleanly without sending anything."""
        if self._state is not ChannelState.CLOSED or self._all_subscriptions():
            self._finish(None)

    # -- pushes ---------------------------------------------------------------------------------

    async def send_broadcast(self, event: str, payload: Payload) -> None:
        """Send a broadcast of user event ``event``.

        With ``broadcast_ack`` set, waits for the server's acknowledgement. Without it, returns
        once the frame is written to the connection. ``payload`` is any JSON value, or ``bytes``
        under vsn 2.0.0 (sent as a binary broadcast). While the channel is not joined, the push
        waits for the join, bounded by the client timeout.

        Raises:
            PushTimeout: not sent, or not acknowledged, within the timeout.
            PushError: the server answered with an error (for example a payload too large).
            ConnectionClosed: written but the connection dropped before the acknowledgement;
                the server may or may not have received it.
            ChannelClosed: the channel was left or closed by the server.
            ProtocolError: the payload cannot be encoded (for example ``bytes`` under vsn
                1.0.0).
        """
        if not isinstance(event, str) or not event:
            raise ValueError("event must be a non-empty string")

        def build(ref: str, join_ref: str) -> Frame:
            return broadcast_frame(ref, join_ref, self.topic, event, payload)

        await self._push(build, ack=self._broadcast_ack, what=f"broadcast {event!r}")

    async def http_send(
        self, event: str, payload: Mapping[str, JSONValue] | bytes | bytearray | memoryview
    ) -> None:
        """Send one broadcast of ``event`` to this channel's topic over HTTP, without joining.

        ``POST /api/broadcast/<topic>/events/<event>`` (realtime-js ``httpSend``): a mapping is
        sent as JSON, bytes as ``application/octet-stream`` (V2 subscribers receive bytes; V1
        subscribers receive nothing for a binary message, as on the server). A private channel
        sends with ``?private=true``: the token needs broadcast write permission. It does not
        need the socket, and does not wait for, or cause, a join.

        Raises:
            ValueError: for an empty event.
            TypeError: for a payload that is neither a mapping nor bytes.
            RestUnauthorized: 401 or 403 (for example a private topic the token may not write).
            RestPayloadTooLarge, RestRateLimited, RestServerError, RestError: the server's
                other refusals, with its words (see :meth:`RealtimeClient.http_broadcast`).
            PushTimeout: no answer within the client ``timeout``.
            RealtimeConnectionError: the server could not be reached.
        """
        await self._host.rest.send_single(self.topic, event, payload, private=self._private)

    async def track(self, state: Mapping[str, JSONValue]) -> None:
        """Track this client's presence with ``state`` and wait for the server's reply.

        Enables presence for the channel (rejoining first if it was joined without presence,
        so that the full state arrives).

        Raises:
            The same as :meth:`send_broadcast`.
        """
        if not isinstance(state, Mapping):
            raise TypeError("presence state must be a mapping")
        snapshot = dict(state)
        self._enable_presence()

        def build(ref: str, join_ref: str) -> Frame:
            return presence_track_frame(ref, join_ref, self.topic, snapshot)

        await self._push(build, ack=True, what="presence track")

    async def untrack(self) -> None:
        """Stop tracking this client's presence and wait for the server's reply.

        Raises:
            The same as :meth:`send_broadcast`.
        """

        def build(ref: str, join_ref: str) -> Frame:
            return presence_untrack_frame(ref, join_ref, self.topic)

        await self._push(build, ack=True, what="presence untrack")

    def _enable_presence(self) -> None:
        if self._presence_enabled:
            return
        self._presence_enabled = True
        if self._state in (ChannelState.JOINED, ChannelState.JOINING):
            self._rejoin_now()

    async def _push(self, build: Callable[[str, str], Frame], *, ack: bool, what: str) -> JSONValue:
        timeout = self._host.timeout
        ticket = _Ticket()
        waiting = False
        try:
            with trio.move_on_after(timeout):
                while True:
                    if ticket.dropped:
                        raise PushError(
                            f"{what} on {self.topic!r} dropped: more than {MAX_WAITING_PUSHES} "
                            "pushes were waiting for the channel to join"
                        )
                    if self._closed_error is not None and not self._want_joined:
                        raise _fresh(self._closed_error)
                    connection = self._host.connection
                    join_ref = self._join_ref
                    if (
                        self._state is ChannelState.JOINED
                        and connection is not None
                        and connection.lost is None
                        and join_ref is not None
                    ):
                        if waiting:
                            self._waiting_pushes.remove(ticket)
                            waiting = False
                        result = await self._push_once(
                            connection, build, join_ref, ack=ack, what=what
                        )
                        if result is not _NOT_WRITTEN:
                            return result
                        continue
                    if not waiting:
                        waiting = True
                        self._waiting_pushes.append(ticket)
                        if len(self._waiting_pushes) > MAX_WAITING_PUSHES:
                            oldest = self._waiting_pushes.popleft()
                            oldest.dropped = True
                            self._state_lot.unpark_all()
                            if oldest is ticket:
                                waiting = False
                                continue
                    await self._state_lot.park()
        finally:
            if waiting:
                with contextlib.suppress(ValueError):
                    self._waiting_pushes.remove(ticket)
        hint = ""
        if not self._want_joined and what.startswith("broadcast"):
            hint = (
                ": the channel is not joined (join it first, or send without joining with "
                "channel.http_send())"
            )
        raise PushTimeout(f"{what} on {self.topic!r} not completed within {timeout} s{hint}")

    async def _push_once(
        self,
        connection: Connection,
        build: Callable[[str, str], Frame],
        join_ref: str,
        *,
        ack: bool,
        what: str,
    ) -> JSONValue:
        ref = self._host.next_ref()
        data, binary = self._host.encode(build(ref, join_ref))
        reply_waiter = connection.expect_reply(ref) if ack else None
        written: Waiter[None] = Waiter()
        try:
            try:
                await connection.send(data, binary, written)
                await written.wait()
            except MaybeWritten as exc:
                # Lost mid-write: sending it again could deliver it twice, and a frame the
                # server drops the connection for would make every reconnect fail in turn.
                raise ConnectionClosed(exc.code, exc.reason) from None
            except ConnectionClosed:
                return _NOT_WRITTEN  # type: ignore[no-any-return]
            if reply_waiter is None:
                return None
            reply = await reply_waiter.wait()
        finally:
            if reply_waiter is not None:
                connection.forget_reply(ref)
        status, response = _reply_parts(reply)
        if status == "ok":
            return response
        raise PushError(f"server refused {what} on {self.topic!r}: {_reason(response)}", response)

    # -- incoming frames (called by the reader; synchronous) ------------------------------------

    def on_frame(self, frame: Frame) -> None:
        """Route one server frame for this topic."""
        event = frame.event
        if event == "broadcast":
            self._on_broadcast(frame.payload)
        elif event == "presence_diff":
            self._on_presence(frame, diff=True)
        elif event == "postgres_changes":
            self._on_postgres(frame.payload)
        elif event == "presence_state":
            self._on_presence(frame, diff=False)
        elif event == "system":
            self._on_system(frame)
        elif event == "phx_close":
            self._on_close(frame)
        elif event == "phx_error":
            self._on_error(frame)
        else:
            logger.debug("ignoring event %r on %s", event, self.topic)

    def _is_stale(self, frame: Frame) -> bool:
        marker = frame.join_ref if frame.join_ref is not None else frame.ref
        return marker is not None and marker != self._join_ref

    def _on_broadcast(self, payload: Payload) -> None:
        if type(payload) is not dict:
            logger.debug("ignoring broadcast without an object payload on %s", self.topic)
            return
        event = payload.get("event")
        subs = self._broadcast_by_event.get(event) if type(event) is str else None
        all_subs = self._broadcast_all
        if not subs and not all_subs:
            return
        # Built in one step, like make_frame: this is the reader's hot path.
        item: Broadcast = _new_object(Broadcast)
        _set_attribute(
            item,
            "__dict__",
            {
                "event": event,
                "payload": payload.get("payload"),
                "topic": self.topic,
                "meta": payload.get("meta"),
            },
        )
        if subs:
            for sub in subs:
                sub.put(item)
        for sub in all_subs:
            sub.put(item)

    def _on_presence(self, frame: Frame, *, diff: bool) -> None:
        if self._state is ChannelState.CLOSED:
            return
        if frame.join_ref is not None and frame.join_ref != self._join_ref:
            return
        try:
            if diff:
                events = self._presence.sync_diff(frame.payload, self._join_ref)
            else:
                events = self._presence.sync_state(frame.payload, self._join_ref)
        except RealtimeError as exc:
            logger.warning("ignoring malformed %s on %s: %s", frame.event, self.topic, exc)
            return
        for presence_event in events:
            for sub in self._presence_subs:
                sub.put(presence_event)

    def _on_postgres(self, payload: Payload) -> None:
        change = parse_postgres_change(payload)
        if change is None:
            logger.debug("ignoring malformed postgres_changes on %s", self.topic)
            return
        ids = change.ids
        for binding in self._bindings:
            if binding.server_id is not None and binding.server_id in ids:
                wanted = binding.spec.get("event")
                if wanted not in ("*", change.event_type.upper()):
                    continue
                for sub in binding.subscriptions:
                    sub.put(change)

    def _on_system(self, frame: Frame) -> None:
        if frame.join_ref is not None and frame.join_ref != self._join_ref:
            return
        payload = frame.payload
        if not isinstance(payload, dict):
            logger.debug("ignoring malformed system message on %s", self.topic)
            return
        message = payload.get("message")
        status = payload.get("status")
        extension = payload.get("extension")
        channel = payload.get("channel")
        item = SystemMessage(
            extension=extension if isinstance(extension, str) else "",
            status=status if isinstance(status, str) else "",
            message=message if isinstance(message, str) else str(message),
            channel=channel if isinstance(channel, str) else None,
            payload=payload,
        )
        if item.extension == "postgres_changes":
            if item.ok:
                self._postgres_ready.set(None)
            else:
                logger.warning("postgres_changes on %s failed: %s", self.topic, item.message)
                self._postgres_ready.fail(PostgresSubscriptionError(self.topic, item.message))
        elif item.status == "error":
            self._pending_close_reason = item.message
            logger.warning("server error on %s: %s", self.topic, item.message)
        for sub in self._system_subs:
            sub.put(item)

    def _on_close(self, frame: Frame) -> None:
        if self._is_stale(frame) or self._state is ChannelState.CLOSED:
            logger.debug("ignoring stale phx_close on %s", self.topic)
            return
        if self._state is ChannelState.LEAVING:
            return
        reason = self._pending_close_reason or "the server closed the channel"
        logger.info("%s closed by the server: %s", self.topic, reason)
        error = ChannelClosed(self.topic, reason, by_server=True)
        self._fail_join(error)
        self._finish(error)

    def _on_error(self, frame: Frame) -> None:
        if self._is_stale(frame) or self._state in (ChannelState.CLOSED, ChannelState.LEAVING):
            logger.debug("ignoring stale phx_error on %s", self.topic)
            return
        logger.warning("%s crashed on the server (phx_error); rejoining", self.topic)
        if self._join_scope is not None:
            self._join_scope.cancel()
            self._join_scope = None
        if self._state is not ChannelState.ERRORED:
            self._set_state(ChannelState.ERRORED)
        connection = self._host.connection
        if connection is not None and self._want_joined:
            scope = trio.CancelScope()
            self._join_scope = scope
            connection.nursery.start_soon(self._rejoin_after_error, connection, scope)

    async def _rejoin_after_error(self, connection: Connection, scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep(self._host.rejoin_delay(1))
        if self._join_scope is scope and not scope.cancelled_caught:
            self._join_scope = None
            self.start_join_loop()

    def _emit_channel_event(self, event: ChannelEvent) -> None:
        for sub in self._channel_event_subs:
            sub.put(event)

    # -- auth -------------------------------------------------------------------------------------

    async def send_access_token(self, token: str) -> None:
        """Send ``access_token`` if joined; the server never replies."""
        connection = self._host.connection
        if self._state is not ChannelState.JOINED or connection is None or self._join_ref is None:
            await trio.lowlevel.checkpoint()
            return
        frame = access_token_frame(self._host.next_ref(), self._join_ref, self.topic, token)
        data, binary = self._host.encode(frame)
        with contextlib.suppress(ConnectionClosed):
            await connection.send(data, binary)


_NOT_WRITTEN: Final[Any] = object()


class _Ticket:
    """A push waiting for the channel to join; compared by identity."""

    __slots__ = ("dropped",)

    def __init__(self) -> None:
        self.dropped = False


def _fresh(error: RealtimeError) -> RealtimeError:
    """A new exception like ``error``, so that each waiting task raises its own object."""
    if isinstance(error, ChannelClosed):
        return ChannelClosed(error.topic, error.reason, by_server=error.by_server)
    if isinstance(error, JoinError):
        return JoinError(error.topic, error.reason)
    return RealtimeError(str(error))


_new_object = object.__new__
_set_attribute = object.__setattr__


def _reply_parts(reply: Frame) -> tuple[str, JSONValue]:
    payload = reply.payload
    if isinstance(payload, dict):
        status = payload.get("status")
        return (status if isinstance(status, str) else ""), payload.get("response")
    return "", None


def _reason(response: JSONValue) -> str:
    if isinstance(response, dict):
        reason = response.get("reason")
        if isinstance(reason, str):
            return reason
    if isinstance(response, str):
        return response
    return repr(response)


async def _send_quietly(connection: Connection, data: bytes, binary: bool) -> None:
    with contextlib.suppress(ConnectionClosed):
        await connection.send(data, binary)
