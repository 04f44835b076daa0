"""The connection loop: open, serve (reader, writer and heartbeat), lose, wait, reconnect.

Theory of operation
-------------------
:meth:`Driver.run` loops for the life of the client: open a transport, run a connection, and
when the connection is lost, wait for the reconnect policy's delay and open the next one. Each
connection has its own nursery, and one task serves it for as long as it is idle:

* the **reader**, which is the driver's own task (in the nursery's body), takes every message
  the transport has, parses it, hands each frame to the session core and routes the events that
  come back synchronously: replies to their waiters, channel events to their channel, which puts
  items into bounded subscriptions. It never awaits a consumer, so a consumer that stops reading
  cannot delay heartbeats or any other subscription;
* a **writer** exists only while frames are queued (``_connection.Connection``; a push finding
  nothing queued writes its frame itself, and the first frame queued behind it starts the
  writer, which ends when the queue is empty);
* the **heartbeat** is a callback of the trio run's one timer (``_timers``), shared by every
  connection in the process: every interval it asks :meth:`Driver._heartbeat` for a heartbeat,
  which declares the connection dead when the previous one is still outstanding, and writes it
  without waiting (at once, or at the head of the queue). A heartbeat costs no task and no
  cancel scope of its own.

With an access token callable, a third task (``_token_source.keep_fresh``) asks it again after
every heartbeat and ahead of the token's ``exp``, and pushes a changed token to the channels.

When a connection ends, the driver fails what was tied to it (reply waiters, unwritten frames,
frames being written), tells the session (joined channels become ERRORED), publishes
``Disconnected`` and ``Reconnecting`` events, and after the delay reconnects; every channel that
the user still wants joined then rejoins with a fresh join_ref.

The reconnect attempt count starts again only after a connection stayed up for
:data:`HEALTHY_AFTER` seconds, so a server that accepts and drops at once is retried with a
growing delay rather than at the shortest one forever. A connection during which the
server applied a rate limit (a join refused with ``ClientJoinRateLimitReached``, after which
the server closes with 1001, or any other rate-limit refusal or close), or that the server
closed with 1001, never counts as healthy: the delay keeps growing across such closes.
A refusal with HTTP 400, 401, 403 or 404 is final; one with 429 (the server's connection rate
limits) is retried with the growing delay and published as a ``RateLimitReached`` event.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from typing import Final

import trio

from ._connection import Connection, Waiter
from ._events import (
    Connected,
    ConnectionEvent,
    Disconnected,
    HeartbeatEvent,
    Reconnecting,
)
from ._exceptions import (
    ConnectionClosed,
    ProtocolError,
    RealtimeConnectionError,
    rate_limit_of,
)
from ._frames import make_frame
from ._runtime import ReconnectPolicy, Runtime
from ._serializer import parse_incoming
from ._session import HeartbeatReplied, ReplyReceived, SessionEvent
from ._subscription import Feed
from ._token_source import keep_fresh
from ._transport import (
    CLOSE_ABNORMAL,
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    Message,
    Transport,
    TransportFactory,
    TransportOptions,
)
from ._url import Endpoint
from ._ws_sansio import connect_sansio

logger = logging.getLogger("trio_realtime.client")

FATAL_STATUSES: Final = frozenset({400, 401, 403, 404})
"""Refusals at the HTTP upgrade that no reconnect can fix."""

HEALTHY_AFTER: Final = 10.0
"""Seconds a connection must stay up before the reconnect backoff starts again from 1."""


class Driver:
    """Runs the connections of one client; see the module docstring."""

    def __init__(
        self,
        runtime: Runtime,
        endpoint: Endpoint,
        *,
        factory: TransportFactory,
        transport_options: TransportOptions,
        heartbeat_interval: float | None,
        reconnect: ReconnectPolicy | None,
        connect_timeout: float,
        close_timeout: float,
        outgoing_buffer: int,
    ) -> None:
        self._runtime = runtime
        self._endpoint = endpoint
        self._factory = factory
        self._transport_options = transport_options
        self._heartbeat_interval = heartbeat_interval
        self._reconnect = reconnect
        self._connect_timeout = connect_timeout
        self._close_timeout = close_timeout
        self._outgoing_buffer = outgoing_buffer
        self.connected: Waiter[None] = Waiter()
        # Made by the first connection_events() subscription: most clients have none.
        self.event_feeds: list[Feed[ConnectionEvent]] | None = None
        runtime.emit = self.emit
        self.closing = False
        self.run_done: Waiter[None] = Waiter()
        # Set when the first connection is open, or when run() ended before that, with the
        # error that ended it in start_error (see run).
        self.opened: Waiter[None] = Waiter()
        self.start_error: Exception | None = None
        # Shielded once the first connection is open (open_realtime); only the exit cancels it.
        self.run_scope = trio.CancelScope()
        self._opened_at = 0.0
        # Statistics.
        self.connects = 0
        self.frames_received = 0
        self.frames_sent_closed = 0
        self.malformed = 0
        self.heartbeat_latency: float | None = None

    def emit(self, event: ConnectionEvent) -> None:
        """Publish a connection event to every subscription."""
        feeds = self.event_feeds
        if feeds:
            for feed in feeds:
                feed.put(event)

    # -- the connection loop -----------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve and reconnect until cancelled or given up.

        :attr:`opened` is set once the first connection is open. An error before that (the
        first connection failed) is not raised here but kept in :attr:`start_error` for the
        task that waits for ``opened`` to raise, as ``nursery.start`` would; this spares
        every client the temporary nursery ``nursery.start`` costs.
        """
        try:
            with self.run_scope:
                await self._connect_forever()
        except Exception as exc:
            if self.opened.done:
                raise
            self.start_error = exc
        finally:
            self.run_done.set(None)
            self.opened.set(None)

    async def _connect_forever(self) -> None:
        attempt = 0
        first = True
        # The default transport needs no nursery of its own (see _run_connection); its
        # connections are served from this frame, one coroutine fewer per idle connection.
        direct = self._factory is connect_sansio
        while True:
            lost: ConnectionClosed | None = None
            try:
                if direct:
                    lost = await self._open_and_serve(None, first)
                else:
                    lost = await self._run_connection(first)
            except RealtimeConnectionError as exc:
                if first or exc.status_code in FATAL_STATUSES:
                    raise
                logger.warning("reconnect to %s failed: %s", self._endpoint.redacted, exc)
                self._note_refusal(exc)
            else:
                if self.closing:
                    return
                first = False
                if self._healthy(lost):
                    attempt = 0
            if lost is not None:
                logger.warning(
                    "connection to %s lost (code %s%s)",
                    self._endpoint.redacted,
                    lost.code,
                    f": {lost.reason}" if lost.reason else "",
                )
            attempt += 1
            delay = self._reconnect(attempt) if self._reconnect is not None else None
            if lost is not None:
                self.emit(Disconnected(lost.code, lost.reason, delay is not None))
            if delay is None:
                code = lost.code if lost is not None else CLOSE_ABNORMAL
                reason = lost.reason if lost is not None else "reconnect failed"
                raise ConnectionClosed(code, reason or "reconnecting is disabled or gave up")
            self.emit(Reconnecting(attempt, delay))
            logger.info("reconnecting in %.2f s (attempt %d)", delay, attempt)
            await trio.sleep(delay)

    def _healthy(self, lost: ConnectionClosed | None) -> bool:
        """Whether the connection that just ended restarts the backoff (see the module doc)."""
        if trio.current_time() - self._opened_at < HEALTHY_AFTER:
            return False
        if lost is not None and lost.code == CLOSE_GOING_AWAY:
            return False
        limited_at = self._runtime.rate_limited_at
        return limited_at is None or limited_at < self._opened_at

    def _note_refusal(self, exc: RealtimeConnectionError) -> None:
        """Publish an HTTP 429 refusal of a reconnect as the rate limit it is."""
        if exc.status_code != 429:
            return
        reason = exc.server_message or str(exc)
        self._runtime.rate_limited(None, reason, rate_limit_of(reason) or "joins")

    async def _run_connection(self, first: bool) -> ConnectionClosed | None:
        """Open one connection of a transport factory other than the default one and serve
        it until it ends; return why it ended.

        Two nurseries: the outer one holds whatever the transport runs for itself (trio-websocket
        has its own reader task), the inner one our writer and the join loops, with this task
        as the reader in its body.
        Losing the connection cancels only the inner one, so the transport can still perform
        its closing handshake before the outer one is cancelled. The default transport runs no
        task of its own, so it gets no outer nursery (a nursery and its cancel scope less per
        connection): :meth:`_connect_forever` calls :meth:`_open_and_serve` for it directly.
        """
        connect_error: RealtimeConnectionError | None = None
        lost: ConnectionClosed | None = None
        async with trio.open_nursery() as transport_nursery:
            try:
                lost = await self._open_and_serve(transport_nursery, first)
            except RealtimeConnectionError as exc:
                # Raised outside the nursery, so that it is not wrapped in a group.
                connect_error = exc
            finally:
                transport_nursery.cancel_scope.cancel()
        if connect_error is not None:
            raise connect_error
        return lost

    async def _open_and_serve(
        self,
        transport_nursery: trio.Nursery | None,
        first: bool,
    ) -> ConnectionClosed | None:
        if self._runtime.token_source is not None and not first:
            await self._runtime.refresh_token()
        transport: Transport
        with trio.move_on_after(self._connect_timeout) as connect_scope:
            if transport_nursery is None:
                transport = await connect_sansio(self._endpoint, self._transport_options)
            else:
                transport = await self._factory(
                    self._endpoint, self._transport_options, transport_nursery
                )
        if connect_scope.cancelled_caught:
            raise RealtimeConnectionError(
                f"no connection to {self._endpoint.redacted} within {self._connect_timeout} s"
            )
        del connect_scope  # this frame lasts as long as the connection
        connection: Connection | None = None
        try:
            async with trio.open_nursery() as nursery:
                connection = Connection(
                    transport,
                    nursery,
                    outgoing_buffer=self._outgoing_buffer,
                    reply_timeout=self._runtime.settings.timeout,
                )
                self._serve(connection, first)
                # The reader is this task itself, in the nursery's body: a connection costs
                # one task fewer. Its loss cancels the nursery, body and all.
                await self._reader(connection)
        finally:
            if connection is not None:
                await self._connection_ended(connection)
            else:
                with trio.CancelScope(shield=True):
                    await transport.abort()
        return connection.lost

    def _serve(self, connection: Connection, first: bool) -> None:
        """Start the connection's tasks and tell everyone that it is open."""
        runtime = self._runtime
        runtime.connection = connection
        self.connects += 1
        self._opened_at = trio.current_time()
        if self._heartbeat_interval:
            connection.start_heartbeat(
                partial(self._heartbeat, connection), self._heartbeat_interval
            )
        if runtime.token_source is not None:
            # Refreshes the token while channels are joined.
            connection.nursery.start_soon(keep_fresh, runtime)
        logger.info("connected to %s", self._endpoint.redacted)
        self.emit(Connected(self._endpoint.redacted, reconnect=not first))
        self.connected.set(None)
        if first:
            self.opened.set(None)
        for channel in list(runtime.channels.values()):
            channel._connection_opened()

    async def _connection_ended(self, connection: Connection) -> None:
        runtime = self._runtime
        runtime.connection = None
        self.connected = Waiter()
        connection.lose(CLOSE_ABNORMAL, "")  # no-op if already lost, as it is normally
        lost = connection.lost
        assert lost is not None
        self.frames_sent_closed += connection.frames_sent
        connection.fail_pending()
        cut_short = runtime.session.connection_lost()
        for channel in list(runtime.channels.values()):
            channel._connection_lost(channel.topic in cut_short)
        with trio.CancelScope(shield=True):
            if self.closing and lost.code == CLOSE_NORMAL:
                with trio.move_on_after(self._close_timeout):
                    await connection.transport.aclose(CLOSE_NORMAL, "")
            await connection.transport.abort()

    # -- the connection's tasks --------------------------------------------------------------------

    async def _reader(self, connection: Connection) -> None:
        transport = connection.transport
        try:
            while True:
                messages = await transport.receive_messages()
                self.frames_received += len(messages)
                # Looked up per read, not kept in a local: a bound method the waiting frame
                # held would be one more object per idle connection.
                self._handle(connection, messages)
                # Nothing of the last message stays referenced while the reader waits (its
                # frame, payload and events, for the life of an idle connection).
                del messages
        except ConnectionClosed as exc:
            reason = exc.reason
            if exc.code == 1009 and not reason:
                reason = "message too big"
            connection.lose(exc.code, reason)

    def _handle(self, connection: Connection, messages: list[Message]) -> None:
        """Parse one read's messages and hand each to the session core; route what comes back."""
        runtime = self._runtime
        vsn = runtime.settings.vsn
        session = runtime.session
        receive_broadcast = session.receive_broadcast_parts
        channels = runtime.channels
        debug = logger.isEnabledFor(logging.DEBUG)
        for data in messages:
            try:
                parsed = parse_incoming(data, vsn)
            except ProtocolError as exc:
                self.malformed += 1
                logger.warning("skipping malformed frame (%s): %.120r", exc, data)
                continue
            if isinstance(parsed, tuple):
                # SPEED: a text broadcast, with no frame object (see parse_incoming).
                topic, payload = parsed[0], parsed[1]
                if debug:
                    logger.debug("< %r", make_frame(topic, "broadcast", *parsed[1:]))
            else:
                if debug:
                    logger.debug("< %r", parsed)
                topic = parsed.topic
                if parsed.event != "broadcast":
                    try:
                        events = session.receive(parsed)
                        if events:
                            self._route(connection, topic, events)
                    except Exception:
                        # The reader's safety net: a bug in routing never ends the connection.
                        logger.exception("error while handling a frame on %s", topic)
                    continue
                payload = parsed.payload  # a binary broadcast (vsn 2.0.0)
            # The flood case: one item and no event tuple (see Session.receive).
            try:
                item = receive_broadcast(topic, payload)
                if item is not None:
                    channels[item.topic]._on_broadcast(item)
            except Exception:
                logger.exception("error while handling a frame on %s", topic)

    def _route(self, connection: Connection, topic: str, events: Sequence[SessionEvent]) -> None:
        for event in events:
            if isinstance(event, ReplyReceived):
                if event.kind == "join" and not event.ok:
                    # Noted here, in frame order: a join refused for the join rate is followed
                    # at once by the server's close, which may cancel the waiting join loop.
                    limit = rate_limit_of(event.reason)
                    if limit is not None:
                        self._runtime.rate_limited(topic, event.reason, limit)
                waiter = connection.replies.pop(event.ref, None)
                if waiter is not None:
                    waiter.set(event)
                continue
            if isinstance(event, HeartbeatReplied):
                self._on_heartbeat_reply(event)
                continue
            channel = self._runtime.channels.get(topic)
            if channel is not None:
                channel._on_event(event)

    def _heartbeat(self, connection: Connection) -> tuple[bytes, bool] | None:
        """One heartbeat tick, called every interval (by the run's timer): the frame to write.

        ``None`` (after dropping the connection) when the previous heartbeat is still
        unanswered. The tick must not wait; work that waits, started from here, goes into a
        task of its own in ``connection.nursery``.
        """
        session = self._runtime.session
        if session.heartbeat_outstanding is not None:
            logger.warning(
                "no heartbeat reply within %.1f s; the connection is dead", self._heartbeat_interval
            )
            connection.lose(CLOSE_ABNORMAL, "heartbeat timeout")
            return None
        frame = self._runtime.encode(session.heartbeat(trio.current_time()))
        self._runtime.tokens.heartbeat()  # the token callable is asked again
        return frame

    def _on_heartbeat_reply(self, event: HeartbeatReplied) -> None:
        latency = trio.current_time() - event.sent_at
        if event.status == "ok":
            self.heartbeat_latency = latency
            self.emit(HeartbeatEvent("ok", latency))
        else:
            logger.warning("heartbeat reply with status %r", event.status)
            self.emit(HeartbeatEvent("error", latency))

    # -- shutdown ----------------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Leave joined channels and close with 1000; shielded and bounded by close_timeout.

        The close frame is sent by the connection's own teardown (``_connection_ended``), after
        its reader has stopped, so that nothing else reads the socket meanwhile.
        """
        self.closing = True
        runtime = self._runtime
        with trio.CancelScope(shield=True):
            connection = runtime.open_connection
            if connection is not None:
                joined = [c for c in runtime.channels.values() if c.joined]
                with trio.move_on_after(self._close_timeout):
                    async with trio.open_nursery() as nursery:
                        for channel in joined:
                            nursery.start_soon(channel.leave)
                connection.lose(CLOSE_NORMAL, "client closed")
                with trio.move_on_after(self._close_timeout * 2):
                    await self.run_done.wait()
