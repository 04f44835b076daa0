"""Channels: the trio side of one channel (tasks, waiting, policies) over the session core.

Theory of operation
-------------------
The channel's protocol state (its :class:`ChannelState`, join_ref, bindings, presence and
postgres readiness) lives in the session core (``_session.ChannelSession``); every frame is
built there and every received frame is interpreted there. This module only waits, times,
retries and routes the session's events to subscriptions.

A channel remembers what the user wants (joined or not) apart from what it is. While the user
wants it joined and a connection is open, a *join loop* task runs in that connection's nursery:
it sends ``phx_join``, waits for the reply and, for a background rejoin, retries transient
refusals with the rejoin policy's delays. A connection loss cancels the loop; the next
connection starts a new one. So every channel rejoins after every reconnect, with a fresh
join_ref, and its subscriptions simply keep receiving.

* A refusal while the user awaits :meth:`Channel.join` raises :class:`JoinError` and is not
  retried. During a background rejoin, a permanent refusal (authorisation, bad token, private
  only, too many channels...) closes the channel: its subscriptions raise
  :class:`ChannelClosed` with the server's reason. Transient ones are retried, each failure
  visible as a :class:`ChannelJoinFailed` event and a warning, until the rejoin policy gives up
  (returns ``None``), which closes the channel too.
* Rejoins (not first joins) are paced by the client's ``rejoin_rate`` (``_pacing``), so that
  a reconnect does not send every channel's join in the same instant. A refusal or close for
  one of the server's rate limits raises :class:`RateLimited` (a :class:`JoinError` and a
  :class:`ChannelClosed`), logged and published as a ``RateLimitReached`` event.
* ``phx_error`` makes the channel rejoin after the policy's first delay; ``system`` error +
  ``phx_close`` ends it with :class:`ChannelClosed`, and a push waiting for its reply then
  raises :class:`ChannelClosed` at once.
* A push (broadcast, track, untrack) made while the channel is joining or rejoining waits,
  bounded by the client timeout and by a buffer of :data:`MAX_WAITING_PUSHES`: beyond it the
  oldest waiting push fails. One made on a channel that was never joined, or was left, raises
  :class:`ChannelStateError` at once. A push that was written
  but not acknowledged when the connection dropped raises :class:`ConnectionClosed` rather than
  being sent twice.

Every method the reader calls (``_on_event`` and what it calls) is synchronous and never blocks.

The module is longer than the project's usual 500 lines because :class:`Channel` is the whole
public face of a channel (subscriptions, join and leave, pushes, REST sending), each method
with the documentation users read; the protocol logic behind it lives in the session core.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NoReturn, TypeVar, overload

import trio

from ._checks import check_json, check_text, copy_json_object
from ._connection import (
    Connection,
    MaybeWritten,
    NotWritten,
    ReplyTimeout,
    Waiter,
    WriteTimeout,
)
from ._events import (
    Broadcast,
    ChannelEvent,
    ChannelJoined,
    ChannelJoinFailed,
    DecodedBroadcast,
    SystemMessage,
    broadcast_decoder,
)
from ._exceptions import (
    ChannelClosed,
    ChannelStateError,
    ConnectionClosed,
    JoinError,
    PostgresSubscriptionError,
    ProtocolError,
    PushError,
    PushTimeout,
    RateLimited,
    RealtimeError,
    TokenError,
    closed_by_server,
    fresh,
    join_refused,
    rate_limit_of,
)
from ._frames import Frame, JSONValue, Payload, postgres_binding
from ._postgres import PostgresChange
from ._presence import PresenceEvent, PresenceMap
from ._replay import ReplayTracker
from ._runtime import Runtime
from ._session import (
    BindingKey,
    ChannelClosedByServer,
    ChannelErrored,
    ChannelOptions,
    ChannelSession,
    ChannelState,
    JoinAccepted,
    JoinRefused,
    PostgresChangeReceived,
    PostgresFailed,
    PresenceChanged,
    ReplyReceived,
    SessionEvent,
    SystemReceived,
)
from ._subscription import (
    DEFAULT_BUFFER,
    Feed,
    Overflow,
    Subscription,
    open_converting_subscription,
    open_subscription,
    purge_abandoned,
)

__all__ = ["MAX_WAITING_PUSHES", "Channel", "ChannelState", "ChannelStatistics"]

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
    # Not the server's: a join too large to send stays so, whatever the retry.
    "the join cannot be sent",
)


def is_permanent_join_error(reason: str) -> bool:
    """Whether a join refusal cannot be fixed by retrying."""
    return reason.startswith(PERMANENT_JOIN_ERRORS)


@dataclass(frozen=True, slots=True)
class ChannelStatistics:
    """Figures of a channel, from :meth:`Channel.statistics`.

    Attributes:
        state: The channel's state.
        join_ref: The current (or last) join's ref.
        subscriptions: Subscriptions registered on the channel.
        dropped_items: Items their overflow policies dropped, over those still registered.
        waiting_pushes: Pushes waiting for the channel to join.
        pushes_in_flight: Pushes sent and waiting for their reply.
    """

    state: ChannelState
    join_ref: str | None
    subscriptions: int
    dropped_items: int
    waiting_pushes: int
    pushes_in_flight: int


class Channel:
    """One Realtime channel on a shared connection; create it with ``client.channel(topic)``.

    Use ``async with channel:`` to join (raising :class:`JoinError` with the server's reason if
    refused) and to leave on exit, or call :meth:`join` and :meth:`leave`.
    """

    def __init__(
        self,
        runtime: Runtime,
        topic: str,
        options: ChannelOptions,
        *,
        replay: ReplayTracker | None = None,
    ) -> None:
        self._runtime = runtime
        self._replay = replay
        self.topic = topic
        self._options = options
        self._core: ChannelSession = runtime.session.add_channel(topic, options)
        self._want_joined = False
        self._join_outcome: Waiter[None] | None = None
        self._user_joins = 0
        self._awaiting_token = False  # the join loop waits for the token callable
        self._join_scope: trio.CancelScope | None = None
        self._state_lot: trio.lowlevel.ParkingLot | None = None  # made when a task first waits
        # At most MAX_WAITING_PUSHES; made by the first push that waits for the join.
        self._waiting_pushes: list[_Ticket] | None = None
        self._in_flight: dict[str, Waiter[ReplyReceived]] = {}
        self._closed_error: RealtimeError | None = None
        # Feeds of the subscriptions, by kind. A list is made by the first subscription of
        # its kind: most channels have one or two kinds, and an empty list is an object the
        # garbage collector scans for as long as the channel lives (empty dicts are not).
        self._broadcast_by_event: dict[str, list[Feed[Broadcast]]] = {}
        self._broadcast_all: list[Feed[Broadcast]] | None = None
        self._postgres: dict[BindingKey, list[Feed[PostgresChange]]] = {}
        self._presence_feeds: list[Feed[PresenceEvent]] | None = None
        self._system_feeds: list[Feed[SystemMessage]] | None = None
        self._channel_event_feeds: list[Feed[ChannelEvent]] | None = None
        # Unregistrations of subscriptions garbage-collected without close(), queued by their
        # finalizers (any thread, any moment) and run before the next delivery: the
        # runtime's queue, shared by the client and its channels.
        self._abandoned = runtime.abandoned

    def __repr__(self) -> str:
        return f"<Channel {self.topic!r} {self._core.state.value}>"

    # -- public state -----------------------------------------------------------------------------

    @property
    def state(self) -> ChannelState:
        """The channel's current state."""
        return self._core.state

    @property
    def join_ref(self) -> str | None:
        """The ref of the current (or pending) join."""
        return self._core.join_ref

    @property
    def joined(self) -> bool:
        """Whether the channel is joined right now."""
        return self._core.state is ChannelState.JOINED

    @property
    def options(self) -> ChannelOptions:
        """The options the channel was created with."""
        return self._options

    @property
    def replay(self) -> ReplayTracker | None:
        """The channel's replay settings and what it has seen (``None`` without replay)."""
        return self._replay

    def statistics(self) -> ChannelStatistics:
        """Return the channel's figures."""
        feeds = self._feeds()
        return ChannelStatistics(
            state=self._core.state,
            join_ref=self._core.join_ref,
            subscriptions=len(feeds),
            dropped_items=sum(feed.dropped for feed in feeds),
            waiting_pushes=len(self._waiting_pushes or ()),
            pushes_in_flight=len(self._in_flight),
        )

    # -- subscriptions --------------------------------------------------------------------------

    def _subscription(
        self, kind: str, registry: list[Feed[T]], buffer: int, overflow: str
    ) -> Subscription[T]:
        if self._abandoned:
            purge_abandoned(self._abandoned)
        feed, sub = open_subscription(
            f"{kind} on {self.topic}",
            buffer=buffer,
            overflow=overflow,
            on_close=self._unregister_from(registry),
            abandoned=self._abandoned,
        )
        registry.append(feed)
        return sub

    @staticmethod
    def _unregister_from(registry: list[Feed[T]]) -> Callable[[Feed[T]], None]:
        def unregister(feed: Feed[T]) -> None:
            if feed in registry:
                registry.remove(feed)

        return unregister

    @overload
    def broadcasts(
        self,
        event: str | None = None,
        *,
        buffer: int = DEFAULT_BUFFER,
        overflow: Overflow = "error",
        decode: None = None,
    ) -> Subscription[Broadcast]: ...

    @overload
    def broadcasts(
        self,
        event: str | None = None,
        *,
        buffer: int = DEFAULT_BUFFER,
        overflow: Overflow = "error",
        decode: Callable[[JSONValue], T],
    ) -> Subscription[DecodedBroadcast[T]]: ...

    def broadcasts(
        self,
        event: str | None = None,
        *,
        buffer: int = DEFAULT_BUFFER,
        overflow: Overflow = "error",
        decode: Callable[[JSONValue], T] | None = None,
    ) -> Subscription[Broadcast] | Subscription[DecodedBroadcast[T]]:
        """Subscribe to broadcasts of user event ``event``, or of every event for ``None``.

        Registered at once, so nothing sent after this call is missed.

        With ``decode``, a function from the JSON payload to your type (a dataclass builder, a
        pydantic ``Model.model_validate``, a TypedDict checker), the subscription yields
        :class:`DecodedBroadcast` items whose ``payload`` is what it returned. It runs in the
        task that receives, when it receives. A payload it refuses (it raises), or a binary
        one, makes that one receive raise :class:`DecodeError`; the next goes on.

        Raises:
            TypeError: for an event that is neither a string nor ``None``, or a ``decode``
                that is not callable.
            ValueError: for an empty event, or one that cannot be sent (a lone surrogate), or
                a bad ``buffer`` or ``overflow``.
        """
        if event is not None and not isinstance(event, str):
            raise TypeError(f"event must be a string or None, not {type(event).__name__}")
        if decode is not None and not callable(decode):
            raise TypeError(
                f"decode must be a function of the payload, not {type(decode).__name__}"
            )
        if event is None:
            if self._broadcast_all is None:
                self._broadcast_all = []
            kind, registry = "broadcasts", self._broadcast_all
        else:
            check_text(event, "event")
            kind, registry = f"broadcast {event!r}", self._broadcast_by_event.setdefault(event, [])
        if decode is None:
            return self._subscription(kind, registry, buffer, overflow)
        if self._abandoned:
            purge_abandoned(self._abandoned)
        feed, sub = open_converting_subscription(
            f"{kind} on {self.topic}",
            broadcast_decoder(decode),
            buffer=buffer,
            overflow=overflow,
            on_close=self._unregister_from(registry),
            abandoned=self._abandoned,
        )
        registry.append(feed)
        return sub

    def postgres_changes(
        self,
        event: str = "*",
        *,
        schema: str = "public",
        table: str | None = None,
        filter: str | None = None,
        select: Sequence[str] | None = None,
        buffer: int = DEFAULT_BUFFER,
        overflow: Overflow = "error",
    ) -> Subscription[PostgresChange]:
        """Subscribe to row changes; the binding travels in the join.

        Declare it before joining. Declared on a joined channel, it makes the channel rejoin
        with the new binding (a short gap, signalled by a :class:`ChannelJoined` event).

        ``select`` lists the columns to receive (the server always adds the primary key):
        ``new``, ``old`` and ``columns`` then carry only those, which keeps wide rows under the
        server's payload limit.

        Raises:
            ValueError: for an unknown event, a filter without a table, an empty
                ``select`` or one without a table, or an empty schema, table, filter or
                column name, or one that cannot be sent (a lone surrogate): all are checked
                here, so that a rejoin in the background never carries them.
            TypeError: for an event, schema, table or filter that is not a string, or a
                ``select`` that is not a list of strings.
        """
        check_text(event, "event")
        check_text(schema, "schema")
        if table is not None:
            check_text(table, "table")
        if filter is not None:
            check_text(filter, "filter")
        spec = postgres_binding(event, schema=schema, table=table, filter=filter)
        if select is not None:
            spec["select"] = _select_list(select, table)
        self._ensure_registered()
        key, rejoin = self._runtime.session.add_binding(self.topic, spec)
        registry = self._postgres.setdefault(key, [])
        sub = self._subscription(
            f"postgres_changes {key[0]} {schema}.{table or '*'}", registry, buffer, overflow
        )
        if rejoin:
            self._rejoin_now()
        return sub

    def presence_events(
        self, *, buffer: int = DEFAULT_BUFFER, overflow: Overflow = "error"
    ) -> Subscription[PresenceEvent]:
        """Subscribe to presence ``join``, ``leave`` and ``sync`` events.

        Enables presence for the channel; on a channel already joined without presence this
        rejoins so that the server sends the full presence state.
        """
        if self._presence_feeds is None:
            self._presence_feeds = []
        sub = self._subscription("presence", self._presence_feeds, buffer, overflow)
        self._enable_presence()
        return sub

    def presence_state(self) -> PresenceMap:
        """Return a copy of the presence state: ``{key: [meta, ...]}``.

        Metas carry ``presence_ref`` (the server's ``phx_ref``).
        """
        return self._core.presence.snapshot()

    def system_events(
        self, *, buffer: int = DEFAULT_BUFFER, overflow: Overflow = "error"
    ) -> Subscription[SystemMessage]:
        """Subscribe to the server's ``system`` messages for this channel."""
        if self._system_feeds is None:
            self._system_feeds = []
        return self._subscription("system", self._system_feeds, buffer, overflow)

    def channel_events(
        self, *, buffer: int = DEFAULT_BUFFER, overflow: Overflow = "error"
    ) -> Subscription[ChannelEvent]:
        """Subscribe to :class:`ChannelJoined` and :class:`ChannelJoinFailed` events.

        A :class:`ChannelJoined` with ``rejoin=True`` is the signal that events may have been
        missed while the channel was not joined: the place to fetch and catch up.
        """
        if self._channel_event_feeds is None:
            self._channel_event_feeds = []
        return self._subscription("channel events", self._channel_event_feeds, buffer, overflow)

    async def wait_postgres_ready(self) -> None:
        """Wait until the server confirms that postgres_changes stream for the current join.

        The join reply comes before the server has subscribed to the database; a write made in
        between would be missed. The server's ``system`` message "Subscribed to PostgreSQL"
        marks the point after which no change is missed. Each join (a rejoin after a reconnect
        too) waits for its own confirmation. The wait is bounded by the client timeout.

        The server reports two kinds of error, told apart as it does: a final one (a
        filter or parameters it cannot parse, a subscription its database refuses) raises at
        once; any other (for example ``{:error, "Too many database timeouts"}``) the server
        retries after 5 to 10 s, so the wait goes on for its "Subscribed to PostgreSQL".

        Raises:
            PostgresSubscriptionError: when the server reports a final error.
            PushTimeout: when no confirmation arrives in time (naming the last error the
                server was retrying, if any).
            RealtimeError: when the channel has no postgres_changes subscription.
        """
        if not self._core.bindings:
            raise RealtimeError(f"channel {self.topic!r} has no postgres_changes subscription")
        timeout = self._runtime.settings.timeout
        with trio.move_on_after(timeout):
            while True:
                core = self._core
                if core.postgres == "ready" and core.state is ChannelState.JOINED:
                    await trio.lowlevel.checkpoint()
                    return
                if core.postgres == "failed":
                    await trio.lowlevel.checkpoint()
                    raise PostgresSubscriptionError(self.topic, core.postgres_error or "")
                if self._closed_error is not None and not self._want_joined:
                    await trio.lowlevel.checkpoint()
                    raise fresh(self._closed_error) from self._closed_error
                await self._state_parking().park()
        text = f"no 'Subscribed to PostgreSQL' for {self.topic!r} within {timeout} s"
        retried = self._core.postgres_error if self._core.postgres == "waiting" else None
        if retried is not None:
            text += f"; the server is retrying after: {retried}"
        raise PushTimeout(text)

    # -- join and leave --------------------------------------------------------------------------

    async def __aenter__(self) -> Channel:
        await self.join()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        with trio.CancelScope(shield=True):
            await self.leave()

    def _ensure_registered(self) -> None:
        """Make this channel its topic's channel again (after a leave or a server close)."""
        runtime = self._runtime
        current = runtime.channels.get(self.topic)
        if current is self:
            return
        if current is not None:
            raise RealtimeError(
                f"another channel object for {self.topic!r} exists; use client.channel()"
            )
        runtime.channels[self.topic] = self
        # A channel the server closed keeps its tracked presence for the next join.
        self._core = runtime.session.add_channel(
            self.topic, self._options, tracked=self._core.tracked
        )

    def _unregister(self) -> None:
        runtime = self._runtime
        if runtime.channels.get(self.topic) is self:
            del runtime.channels[self.topic]
            runtime.session.remove_channel(self.topic)

    def _state_parking(self) -> trio.lowlevel.ParkingLot:
        """Where tasks wait for the channel's state to change."""
        if self._state_lot is None:
            self._state_lot = trio.lowlevel.ParkingLot()
        return self._state_lot

    def _changed(self) -> None:
        """Wake every task that waits for the channel's state to change."""
        if self._state_lot is not None:
            self._state_lot.unpark_all()

    async def join(self) -> None:
        """Join the channel and wait for the server's reply (bounded by the client timeout).

        Returns at once if already joined. While the connection is down it waits for the
        reconnect, within the same timeout. Cancelling it stops the join (and, if the server
        joined meanwhile, leaves), unless another task is waiting for the same join.

        Raises:
            JoinError: the server refused, with its reason. Not retried.
            TokenError: the ``access_token`` callable timed out, raised or returned no
                string, and no usable token was cached. Not retried.
            PushTimeout: no reply in time; the channel is left closed.
            ChannelClosed: the server closed the channel while it was joining.
            ChannelStateError: the channel is leaving.
        """
        if self._core.state is ChannelState.JOINED:
            await trio.lowlevel.checkpoint()
            return
        if self._core.state is ChannelState.LEAVING:
            raise ChannelStateError(self.topic, "leaving", "join", "wait for the leave to end")
        self._ensure_registered()
        self._closed_error = None
        self._want_joined = True
        if self._join_outcome is None or self._join_outcome.done:
            self._join_outcome = Waiter()
        outcome = self._join_outcome
        self._user_joins += 1
        timeout = self._runtime.settings.timeout
        try:
            self._start_join_loop()
            with trio.move_on_after(timeout):
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
        token_pending = self._awaiting_token
        self._abandon_join()
        if token_pending:
            raise TokenError(
                f"the join of {self.topic!r} timed out after {timeout} s: the access token "
                "callable timed out (it had not returned)",
                timed_out=True,
            )
        raise PushTimeout(f"no reply to the join of {self.topic!r} within {timeout} s")

    def _start_join_loop(self) -> None:
        """Start the join loop in the current connection, if wanted and not running."""
        connection = self._runtime.open_connection
        if not self._want_joined or self._join_scope is not None or connection is None:
            return
        scope = trio.CancelScope()
        self._join_scope = scope
        connection.nursery.start_soon(self._join_loop, connection, scope)

    def _cancel_join_loop(self) -> None:
        if self._join_scope is not None:
            self._join_scope.cancel()
            self._join_scope = None

    def _rejoin_now(self) -> None:
        """Send a new join on the open connection (new bindings or presence)."""
        self._cancel_join_loop()
        self._runtime.session.rejoin(self.topic)
        self._changed()
        self._start_join_loop()

    async def _join_loop(self, connection: Connection, scope: trio.CancelScope) -> None:
        try:
            with scope:
                attempt = 0
                while self._want_joined:
                    try:
                        await self._join_once(connection)
                        return
                    except JoinError as exc:
                        if self._user_joins and not self._core.ever_joined:
                            self._stop(exc)
                            self._fail_join(exc)
                            return
                        reason = exc.reason
                        if is_permanent_join_error(reason):
                            logger.warning("rejoin of %s refused for good: %s", self.topic, reason)
                            self._give_up(reason, attempt + 1)
                            return
                    except TokenError as exc:
                        if self._user_joins:
                            # join() waits: it raises the token callable's failure.
                            self._stop(exc)
                            self._fail_join(exc)
                            return
                        reason = str(exc)
                    except PushTimeout as exc:
                        reason = str(exc)
                    except ConnectionClosed:
                        return  # the next connection starts a new loop
                    attempt += 1
                    delay = self._runtime.rejoin_delay(attempt)
                    if delay is None:
                        logger.warning(
                            "rejoin of %s failed %d times (%s); giving up",
                            self.topic,
                            attempt,
                            reason,
                        )
                        self._give_up(f"rejoin gave up after {attempt} attempts: {reason}", attempt)
                        return
                    logger.warning(
                        "join of %s failed (%s); attempt %d, retrying in %.1f s",
                        self.topic,
                        reason,
                        attempt,
                        delay,
                    )
                    self._emit_channel_event(ChannelJoinFailed(self.topic, reason, attempt, delay))
                    self._runtime.session.join_failed(self.topic)
                    self._changed()
                    await trio.sleep(delay)
        finally:
            if self._join_scope is scope:
                self._join_scope = None

    def _give_up(self, reason: str, attempt: int) -> None:
        self._emit_channel_event(ChannelJoinFailed(self.topic, reason, attempt, None))
        error = closed_by_server(self.topic, reason)
        self._fail_join(error)
        self._finish(error)

    async def _join_once(self, connection: Connection) -> None:
        runtime = self._runtime
        if self._core.ever_joined:
            # A rejoin (after a reconnect or a phx_error): paced, so that many channels do not
            # all rejoin in the same instant. A first join is the user's, and goes now.
            await runtime.pace_rejoin(connection)
        # Only a callable can keep a join waiting for its token; without one the token is at hand.
        self._awaiting_token = runtime.tokens.source is not None
        try:
            token = await runtime.token_for_join()
        finally:
            self._awaiting_token = False
        session = runtime.session
        if self._replay is not None:
            self._core.replay = self._replay.join_replay(rejoin=self._core.ever_joined)
        frame = session.join(self.topic, token)
        self._changed()
        ref = frame.ref
        assert ref is not None
        waiter = connection.expect_reply(ref)
        reply: ReplyReceived | None = None
        try:
            try:
                data, binary = runtime.encode(frame)
            except ProtocolError as exc:
                # A join the server would close the connection for (too big, or
                # unencodable): not sent, ever.
                raise JoinError(self.topic, f"the join cannot be sent: {exc}") from None
            await connection.send(data, binary)
            timeout = runtime.settings.timeout
            with trio.move_on_after(timeout):
                reply = await waiter.wait()
            if reply is None:
                raise PushTimeout(f"no reply to the join of {self.topic!r} within {timeout} s")
        finally:
            # However the wait ends, nothing stays registered for it.
            connection.forget_reply(ref)
            session.forget(ref)
        result = session.join_replied(reply)
        if isinstance(result, JoinRefused):
            raise join_refused(self.topic, result.reason)
        if not isinstance(result, JoinAccepted):
            # Superseded while this task waited for its turn: frames read in the same batch as
            # the reply (phx_close, phx_error) or a leave have already decided the channel.
            return
        if self._replay is not None:
            self._replay.joined()
        newest = runtime.token
        if newest is not None:
            # set_auth() (or a refresh) ran while the join was in flight: the join carried the
            # old token, so the channel gets the newest one now; the session core sends
            # nothing when it is the join's own.
            update = session.access_token(self.topic, newest)
            if update is not None:
                data, binary = runtime.encode(update)
                await connection.send(data, binary)
        if result.track is not None:
            # The server forgot this client's presence with the old join: track it again.
            connection.nursery.start_soon(self._track_again, connection, result.track)
        self._changed()
        logger.debug("joined %s (join_ref %s)", self.topic, ref)
        self._emit_channel_event(ChannelJoined(self.topic, ref, result.rejoin))
        if self._join_outcome is not None:
            self._join_outcome.set(None)

    async def _track_again(self, connection: Connection, frame: Frame) -> None:
        """Send the re-track of a rejoin and log a refusal or a missing reply.

        The server forgets presence with the join it belonged to, so every rejoin tracks again.
        """
        ref = frame.ref
        assert ref is not None
        runtime = self._runtime
        waiter = connection.expect_reply(ref)
        reply: ReplyReceived | None = None
        try:
            data, binary = runtime.encode(frame)
            with trio.move_on_after(runtime.settings.timeout):
                await connection.send(data, binary)
                reply = await waiter.wait()
        except (ConnectionClosed, ProtocolError) as exc:
            logger.warning("presence of %s not tracked again: %s", self.topic, exc)
            return
        finally:
            connection.forget_reply(ref)
            runtime.session.forget(ref)
        if reply is None:
            logger.warning("presence of %s tracked again, but no reply came", self.topic)
        elif not reply.ok:
            logger.warning(
                "server refused to track presence of %s again: %s", self.topic, reply.reason
            )

    def _fail_join(self, error: BaseException) -> None:
        if self._join_outcome is not None:
            self._join_outcome.fail(error)

    def _abandon_join(self) -> None:
        """The user's join timed out or was cancelled: stop, and tell the server in case."""
        self._want_joined = False
        self._cancel_join_loop()
        frame = None
        if self._runtime.channels.get(self.topic) is self:
            frame = self._runtime.session.leave(self.topic)
        if frame is not None:
            self._send_quietly(frame)
        self._stop(None)

    def _stop(self, error: RealtimeError | None) -> None:
        """Go back to CLOSED without ending subscriptions, so a later join can reuse them."""
        self._want_joined = False
        if self._runtime.channels.get(self.topic) is self:
            self._runtime.session.close(self.topic)
        self._closed_error = error
        self._changed()

    async def leave(self) -> None:
        """Leave the channel: send ``phx_leave`` and wait (bounded) for the reply.

        Subscriptions end cleanly (their iterators stop) once their buffered items are read,
        and the channel is removed from the client. A no-op for a closed channel.
        """
        self._want_joined = False
        self._cancel_join_loop()
        if self._core.state is ChannelState.CLOSED:
            self._finish(None)
            await trio.lowlevel.checkpoint()
            return
        runtime = self._runtime
        connection = runtime.open_connection
        try:
            if connection is None:
                await trio.lowlevel.checkpoint()
                return
            was_joined = self._core.state is ChannelState.JOINED
            frame = runtime.session.leave(self.topic)
            if frame is None:
                await trio.lowlevel.checkpoint()
                return
            if not was_joined:
                # A join may be in flight: tell the server, without waiting, in case it joins us.
                self._send_quietly(frame)
                await trio.lowlevel.checkpoint()
                return
            await self._leave_and_wait(connection, frame)
        finally:
            # Even when cancelled: the user asked to leave, so the channel does not stay LEAVING
            # (where it could neither join again nor be left) waiting for a reply.
            self._finish(None)

    async def _leave_and_wait(self, connection: Connection, frame: Frame) -> None:
        ref = frame.ref
        assert ref is not None
        waiter = connection.expect_reply(ref)
        data, binary = self._runtime.encode(frame)
        queued = False
        try:
            with trio.move_on_after(self._runtime.settings.timeout):
                await connection.send(data, binary)
                queued = True
                await waiter.wait()
        except ConnectionClosed:
            pass
        finally:
            connection.forget_reply(ref)
            self._runtime.session.forget(ref)
            if not queued and connection.lost is None:
                # Cancelled (or timed out) before the leave was queued: still tell the server,
                # without waiting, so that it does not keep the channel.
                connection.nursery.start_soon(_send_quietly, connection, data, binary)

    def _send_quietly(self, frame: Frame) -> None:
        connection = self._runtime.open_connection
        if connection is None:
            return
        try:
            data, binary = self._runtime.encode(frame)
        except ProtocolError:
            return
        connection.nursery.start_soon(_send_quietly, connection, data, binary)

    def _finish(self, error: ChannelClosed | None) -> None:
        """Close the channel: end subscriptions (cleanly, or with ``error``), fail pushes."""
        self._want_joined = False
        self._cancel_join_loop()
        closed = error or ChannelClosed(self.topic, "the channel was left", by_server=False)
        self._closed_error = closed
        if self._runtime.channels.get(self.topic) is self:
            # Left by the user: nothing is tracked any more. Closed by the server: a new join
            # tracks the presence again.
            self._runtime.session.close(self.topic, forget=True, keep_tracked=error is not None)
        for waiter in self._in_flight.values():
            waiter.fail(closed)
        for feed in self._feeds():
            feed.end(error)
        self._broadcast_by_event.clear()
        self._broadcast_all = self._presence_feeds = None
        self._system_feeds = self._channel_event_feeds = None
        self._postgres.clear()
        self._changed()
        self._unregister()

    def _feeds(self) -> list[Feed[Any]]:
        if self._abandoned:
            purge_abandoned(self._abandoned)
        feeds: list[Feed[Any]] = [*(self._broadcast_all or ()), *(self._presence_feeds or ())]
        for registry in self._broadcast_by_event.values():
            feeds.extend(registry)
        for postgres in self._postgres.values():
            feeds.extend(postgres)
        feeds.extend(self._system_feeds or ())
        feeds.extend(self._channel_event_feeds or ())
        return feeds

    # -- driven by the client ---------------------------------------------------------------------

    def _connection_opened(self) -> None:
        self._start_join_loop()

    def _connection_lost(self, leave_cut_short: bool) -> None:
        """The connection dropped (the session has moved the state already)."""
        self._join_scope = None
        if leave_cut_short:
            self._finish(None)
        else:
            self._changed()

    def _close_quietly(self) -> None:
        """The client is closing: end subscriptions cleanly without sending anything."""
        if self._core.state is not ChannelState.CLOSED or self._feeds():
            self._finish(None)

    # -- pushes ---------------------------------------------------------------------------------

    async def send_broadcast(self, event: str, payload: Payload) -> None:
        """Send a broadcast of user event ``event``.

        With ``broadcast_ack`` set, waits for the server's acknowledgement. Without it, returns
        once the frame is written to the connection's socket (handed to the kernel; nothing
        of it waits in a buffer of the client's): every push is written, then acknowledged if
        asked, or raises. When nothing else is being written, the calling task writes the
        frame itself, at once if the socket takes it (no other task involved); otherwise it
        is queued, and waits for the connection's writer task (which exists while frames are
        queued) to write it. An acknowledged push made while others wait for their replies is
        queued, and the pushes queued meanwhile go in one write: the writer's, or that of the
        push that makes the queue hold half of the awaited replies (so the server has one half
        while the client makes the other); it waits for its reply, and one that was still
        queued when the connection dropped is sent again on the next one. Always a
        cancellation point; a push written at once yields to other tasks once in 16 pushes (a
        full schedule point costs as much as the push), and whenever it waits. A write under
        way is not cut short by cancelling the caller (half a frame would break the connection);
        the timeout does cut it, and then the connection is dropped and reconnected, since the
        server may have part of the frame; a push cut by a lost connection raises
        :class:`ConnectionClosed` at once. ``payload`` is any JSON value, or ``bytes`` under
        vsn 2.0.0 (sent as a binary broadcast). While the channel is joining, or rejoining
        after a reconnect, the push waits for the join, bounded by the client timeout.

        Raises:
            ChannelStateError: the channel is not joined and not joining (:meth:`join` was
                never called, or it was left): at once, nothing is sent. Join first, or use
                :meth:`http_send` to send without joining.
            PushTimeout: not sent, or not acknowledged, within the timeout.
            PushError: the server answered with an error (for example a payload too large).
            ConnectionClosed: written but the connection dropped before the acknowledgement;
                the server may or may not have received it.
            ChannelClosed: the channel was left while the push waited, or closed by the server.
            ProtocolError: the payload cannot be encoded (for example ``bytes`` under vsn
                1.0.0), or is over the server's frame size limit; nothing was sent.
            ValueError: for an empty event, or text that cannot be sent (a lone surrogate) in
                the event or the payload; raised at once, even while the push would wait for
                the join.
            TypeError: for an event that is not a string, or a payload JSON cannot hold (a
                set, a key that is not a string...).
        """
        check_text(event, "event")
        runtime = self._runtime
        session = runtime.session
        ack = self._options.broadcast_ack
        started = trio.current_time()
        connection = runtime.open_connection
        # SPEED: a joined channel and a connection that takes the frame now: the push is
        # made here, encoded from its parts (no frame, no closure), with no cancel scope.
        # Unacknowledged, the frame is written here and now with no waiter; acknowledged,
        # the reply waiter's deadline is kept by the connection (see Connection.expect_reply),
        # the connection's push is the cancellation point (a cancelled push forgets its
        # ref), and the push waits for its reply here: a waiting push is resumed and
        # suspended through every coroutine it waits in, and the three levels of _push,
        # _push_once and Waiter.wait were about a tenth of its CPU (64 acked senders: 17.6
        # -> 15.8 µs per push). Anything else goes to _push. benchmarks/sends.py measures both.
        if (
            connection is not None
            and self._want_joined
            and self._core.state is ChannelState.JOINED
            and (connection.has_room if ack else connection.writable_now)
        ):
            timeout = runtime.settings.timeout
            topic = self.topic
            try:
                if not ack:
                    await trio.lowlevel.checkpoint_if_cancelled()
                    ref, join_ref = session.broadcast_refs(topic, ack=False)
                    data, binary = self._encode_broadcast(ref, join_ref, event, payload)
                    await connection.push(data, binary, write_within=timeout)
                    return
                ref, join_ref = session.broadcast_refs(topic, ack=True)
                data, binary = self._encode_broadcast(ref, join_ref, event, payload)
                waiter = connection.expect_reply(ref, timed=True, since=started)
                in_flight = self._in_flight
                in_flight[ref] = waiter
                try:
                    try:
                        await connection.push_acked(data, binary, waiter, write_within=timeout)
                    except MaybeWritten as exc:
                        raise ConnectionClosed(exc.code, exc.reason) from None
                    except ConnectionClosed as exc:
                        raise NotWritten(exc.code, exc.reason) from None  # tried again below
                    if waiter.done:
                        await trio.lowlevel.checkpoint()
                    else:
                        task = trio.lowlevel.current_task()
                        await trio.lowlevel.wait_task_rescheduled(waiter.hold(task))
                    reply = waiter.result()
                finally:
                    # _forget_ack, written out (one call less per push)
                    connection.forget_reply(ref)
                    session.forget(ref)
                    del in_flight[ref]
                if not reply.ok:
                    self._refused(reply, f"broadcast {event!r}")
                return
            except (WriteTimeout, ReplyTimeout):
                raise PushTimeout(
                    f"broadcast {event!r} on {self.topic!r} not completed within {timeout} s"
                ) from None
            except MaybeWritten as exc:
                raise ConnectionClosed(exc.code, exc.reason) from None
            except ConnectionClosed as exc:
                if ack and not isinstance(exc, NotWritten):
                    raise
                # not written: wait for the next connection in _push

        def build() -> Frame:
            return session.broadcast(self.topic, event, payload, ack=ack)

        def check() -> None:
            _check_payload(payload)

        await self._push(build, ack=ack, what=f"broadcast {event!r}", check=check, started=started)

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
            ValueError: for an empty event, or text that cannot be sent (a lone surrogate) in
                the event or the payload.
            TypeError: for a payload that is neither a mapping nor bytes, or holds a value JSON
                cannot hold.
            RestUnauthorized: 401 or 403 (for example a private topic the token may not write).
            RestPayloadTooLarge, RestRateLimited, RestServerError, RestError: the server's
                other refusals, with its words (see :meth:`RealtimeClient.http_broadcast`).
            PushTimeout: no answer within the client ``timeout``.
            RealtimeConnectionError: the server could not be reached.
            TokenError: the ``access_token`` callable failed and no usable token is cached.
        """
        await self._runtime.rest.send_single(
            self.topic, event, payload, private=self._options.private
        )

    async def track(self, state: Mapping[str, JSONValue]) -> None:
        """Track this client's presence with ``state`` and wait for the server's reply.

        Enables presence for the channel (rejoining first if it was joined without presence,
        so that the full state arrives).

        The state stays tracked until :meth:`untrack` or :meth:`leave`: the server forgets
        presence when the connection drops or the channel is rejoined, so the channel tracks
        the last state again after every rejoin (after a reconnect, a ``phx_error``, or a
        server close followed by :meth:`join`), and other clients see this one come back.
        A refusal of that re-track is logged as a warning.

        The state is checked and copied at the call: changing ``state`` afterwards changes
        nothing, and the re-track after a rejoin sends exactly what was given here.

        Raises:
            TypeError: for a state that is not a mapping, or holds a value JSON cannot hold.
            ValueError: for text that cannot be sent (a lone surrogate) in the state.
            ChannelStateError, PushTimeout, PushError, ConnectionClosed, ChannelClosed: as
                for :meth:`send_broadcast`.
        """
        snapshot = copy_json_object(state, "presence state")
        self._enable_presence()
        session = self._runtime.session

        def build() -> Frame:
            return session.track(self.topic, snapshot)

        await self._push(build, ack=True, what="presence track")

    async def untrack(self) -> None:
        """Stop tracking this client's presence and wait for the server's reply.

        Raises:
            The same as :meth:`send_broadcast`.
        """
        session = self._runtime.session

        def build() -> Frame:
            return session.untrack(self.topic)

        await self._push(build, ack=True, what="presence untrack")

    def _enable_presence(self) -> None:
        self._ensure_registered()
        if self._runtime.session.enable_presence(self.topic):
            self._rejoin_now()

    def _check_joining(self, what: str) -> None:
        """Refuse a push on a channel nobody asked to join: it would wait in vain.

        A push waits only while the channel is joined, joining or rejoining. One made
        on a channel that :meth:`join` was never called on, or that was left (or whose join was
        abandoned), fails at once. A channel the server closed, or whose join it refused,
        raises that error instead (in :meth:`_push`).

        Raises:
            ChannelStateError: the channel is not joined and is not joining.
        """
        if self._want_joined:
            return
        closed = self._closed_error
        if closed is None or (isinstance(closed, ChannelClosed) and not closed.by_server):
            raise ChannelStateError(
                self.topic,
                "not joined",
                what,
                "join() it first (or use `async with channel:`), or send a broadcast without "
                "joining with channel.http_send()",
            )

    async def _push(
        self,
        build: Callable[[], Frame],
        *,
        ack: bool,
        what: str,
        check: Callable[[], None] | None = None,
        started: float | None = None,
    ) -> None:
        """Send a push once the channel is joined, waiting for the join while it is joining,
        bounded by the client timeout from ``started`` (now by default); ``check`` raises for
        a payload that cannot be sent. It runs before the push waits for the join, or when
        encoding fails: never on the path of a push sent at once, which encodes the payload
        anyway. (:meth:`send_broadcast` makes a push it can send at once itself.)"""
        self._check_joining(what)
        timeout = self._runtime.settings.timeout
        deadline = (trio.current_time() if started is None else started) + timeout
        ticket = _Ticket()
        waiting = False
        queue: list[_Ticket] | None = None  # the channel's, once this push waits in it
        try:
            with trio.move_on_at(deadline):
                while True:
                    if ticket.dropped:
                        raise PushError(
                            f"{what} on {self.topic!r} dropped: more than {MAX_WAITING_PUSHES} "
                            "pushes were waiting for the channel to join"
                        )
                    if self._closed_error is not None and not self._want_joined:
                        raise fresh(self._closed_error) from self._closed_error
                    connection = self._runtime.open_connection
                    if self._core.state is ChannelState.JOINED and connection is not None:
                        if waiting:
                            assert queue is not None
                            queue.remove(ticket)
                            waiting = False
                        if await self._push_once(
                            connection, build, ack=ack, what=what, check=check
                        ):
                            return
                        continue
                    if not waiting:
                        if check is not None:
                            check()
                        waiting = True
                        queue = self._waiting_pushes
                        if queue is None:  # the first push of the channel to wait
                            queue = self._waiting_pushes = []
                        queue.append(ticket)
                        if len(queue) > MAX_WAITING_PUSHES:
                            oldest = queue.pop(0)
                            oldest.dropped = True
                            self._changed()
                            if oldest is ticket:
                                waiting = False
                                continue
                    await self._state_parking().park()
        finally:
            if waiting and queue is not None:
                with contextlib.suppress(ValueError):
                    queue.remove(ticket)
        if not self._want_joined and self._core.state is ChannelState.CLOSED:
            raise PushTimeout(
                f"{what} on {self.topic!r} not sent within {timeout} s: the channel was not "
                "joined (join it first, or send without joining with channel.http_send())"
            )
        raise PushTimeout(f"{what} on {self.topic!r} not completed within {timeout} s")

    async def _push_once(
        self,
        connection: Connection,
        build: Callable[[], Frame],
        *,
        ack: bool,
        what: str,
        check: Callable[[], None] | None = None,
    ) -> bool:
        """Send one push and wait for its ack; ``False`` when it was not written (retry)."""
        if not ack:
            data, binary = self._encode(build(), check)
            try:
                await connection.push(data, binary)
            except MaybeWritten as exc:
                # Lost mid-write: sending it again could deliver it twice, and a frame the
                # server drops the connection for would make every reconnect fail in turn.
                raise ConnectionClosed(exc.code, exc.reason) from None
            except ConnectionClosed:
                return False
            return True
        ref, data, binary, waiter = self._expect_ack(connection, build(), check, None)
        try:
            try:
                await connection.push_acked(data, binary, waiter)
            except MaybeWritten as exc:
                raise ConnectionClosed(exc.code, exc.reason) from None  # as above
            except ConnectionClosed:
                return False
            try:
                reply = await waiter.wait()
            except NotWritten:
                return False  # queued, never written: wait for the next connection
            except MaybeWritten as exc:
                raise ConnectionClosed(exc.code, exc.reason) from None
        finally:
            self._forget_ack(connection, ref)
        if not reply.ok:
            self._refused(reply, what)
        return True

    def _expect_ack(
        self,
        connection: Connection,
        frame: Frame,
        check: Callable[[], None] | None,
        since: float | None,
    ) -> tuple[str, bytes, bool, Waiter[ReplyReceived]]:
        """Encode an acknowledged push just built, and wait for its reply from now on.

        ``since`` (when the push began): the reply waiter fails with ``ReplyTimeout`` at the
        connection's reply timeout from then (the caller has no cancel scope of its own).
        The caller must :meth:`_forget_ack` the ref, however the push ends."""
        ref = frame.ref
        assert ref is not None
        data, binary = self._encode(frame, check)
        waiter = connection.expect_reply(ref, timed=since is not None, since=since)
        self._in_flight[ref] = waiter
        return ref, data, binary, waiter

    def _forget_ack(self, connection: Connection, ref: str) -> None:
        connection.forget_reply(ref)
        self._runtime.session.forget(ref)
        del self._in_flight[ref]

    def _encode_broadcast(
        self, ref: str, join_ref: str, event: str, payload: Payload
    ) -> tuple[bytes, bool]:
        """Encode a broadcast push from its parts; on failure, forget its ref and raise the
        error that names what cannot be sent."""
        try:
            return self._runtime.encode_broadcast(ref, join_ref, self.topic, event, payload)
        except ProtocolError:
            self._runtime.session.forget(ref)
            _check_payload(payload)
            raise

    def _refused(self, reply: ReplyReceived, what: str) -> NoReturn:
        raise PushError(f"server refused {what} on {self.topic!r}: {reply.reason}", reply.response)

    def _encode(self, frame: Frame, check: Callable[[], None] | None = None) -> tuple[bytes, bool]:
        try:
            return self._runtime.encode(frame)
        except ProtocolError:
            assert frame.ref is not None
            self._runtime.session.forget(frame.ref)
            if check is not None:
                check()  # a payload that cannot be sent: say so, naming it
            raise

    # -- incoming events (called by the reader; synchronous) ------------------------------------

    def _on_broadcast(self, item: Broadcast) -> None:
        if self._abandoned:
            purge_abandoned(self._abandoned)
        replay = self._replay
        if replay is not None and not replay.accept(item.meta):
            logger.debug("dropping a replayed message already delivered on %s", self.topic)
            return
        feeds = self._broadcast_by_event.get(item.event)
        if feeds:
            for feed in feeds:
                feed.put(item)
        feeds = self._broadcast_all
        if feeds:
            for feed in feeds:
                feed.put(item)

    def _on_event(self, event: SessionEvent) -> None:
        """Act on one event the session produced for this channel's topic."""
        if self._abandoned:
            purge_abandoned(self._abandoned)
        if isinstance(event, Broadcast):
            self._on_broadcast(event)
        elif isinstance(event, PresenceChanged):
            for presence_feed in self._presence_feeds or ():
                presence_feed.put(event.event)
        elif isinstance(event, PostgresChangeReceived):
            for key in event.bindings:
                for postgres_feed in self._postgres.get(key, ()):
                    postgres_feed.put(event.change)
        elif isinstance(event, SystemReceived):
            message = event.message
            if (
                message.status == "error"
                and message.extension != "postgres_changes"
                and rate_limit_of(message.message) is None  # logged when the channel closes
            ):
                logger.warning("server error on %s: %s", self.topic, message.message)
            for system_feed in self._system_feeds or ():
                system_feed.put(message)
        elif isinstance(event, PostgresFailed):
            if event.final:
                logger.warning("postgres_changes on %s failed: %s", self.topic, event.message)
            else:
                logger.warning(
                    "postgres_changes on %s not subscribed yet (the server retries): %s",
                    self.topic,
                    event.message,
                )
            self._changed()
        elif isinstance(event, ChannelClosedByServer):
            logger.info("%s closed by the server: %s", self.topic, event.reason)
            error = closed_by_server(self.topic, event.reason)
            if isinstance(error, RateLimited):
                self._runtime.rate_limited(self.topic, error.reason, error.limit)
            self._fail_join(error)
            self._finish(error)
        elif isinstance(event, ChannelErrored):
            self._on_errored()
        else:
            self._changed()

    def _on_errored(self) -> None:
        logger.warning("%s crashed on the server (phx_error); rejoining", self.topic)
        self._cancel_join_loop()
        self._changed()
        connection = self._runtime.open_connection
        if connection is not None and self._want_joined:
            delay = self._runtime.rejoin_delay(1)
            if delay is None:
                self._give_up("the server crashed the channel and the rejoin policy gave up", 1)
                return
            scope = trio.CancelScope()
            self._join_scope = scope
            connection.nursery.start_soon(self._rejoin_after_error, scope, delay)

    async def _rejoin_after_error(self, scope: trio.CancelScope, delay: float) -> None:
        with scope:
            await trio.sleep(delay)
        if self._join_scope is scope and not scope.cancelled_caught:
            self._join_scope = None
            self._start_join_loop()

    def _emit_channel_event(self, event: ChannelEvent) -> None:
        if self._abandoned:
            purge_abandoned(self._abandoned)
        for feed in self._channel_event_feeds or ():
            feed.put(event)


class _Ticket:
    """A push waiting for the channel to join; compared by identity."""

    __slots__ = ("dropped",)

    def __init__(self) -> None:
        self.dropped = False


def _select_list(select: object, table: str | None) -> list[JSONValue]:
    """Check ``postgres_changes(select=...)``: a non-empty sequence of column names."""
    if isinstance(select, str) or not isinstance(select, Sequence):
        raise TypeError('select must be a list of column names, e.g. select=["id", "body"]')
    columns = list(select)
    if not columns or not all(isinstance(c, str) and c for c in columns):
        raise ValueError("select must list at least one column name, each a non-empty string")
    for column in columns:
        check_text(column, "a select column name")
    if table is None:
        raise ValueError("select needs a table: the server refuses it on wildcard subscriptions")
    return list(dict.fromkeys(columns))


async def _send_quietly(connection: Connection, data: bytes, binary: bool) -> None:
    with contextlib.suppress(ConnectionClosed):
        await connection.send(data, binary)


def _check_payload(payload: Payload) -> None:
    """Raise for a broadcast payload that is not JSON: bytes are the serializer's business
    (binary under 2.0.0, ProtocolError under 1.0.0)."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        check_json(payload, "payload")
