"""``open_realtime()``: the connection, its reader, writer and heartbeat tasks, and reconnects.

Theory of operation
-------------------
``open_realtime`` owns one nursery. In it, :meth:`RealtimeClient._run` loops for the life of the
client: open a transport, run a connection, and when the connection is lost, wait for the
reconnect policy's delay and open the next one. Each connection has its own nursery with three
tasks:

* the **reader** takes every message the transport has, parses it and routes it synchronously:
  replies to their waiters, frames to their channel, which puts items into bounded
  subscriptions. It never awaits a consumer, so a consumer that stops reading cannot delay
  heartbeats or any other subscription;
* the **writer** is the only task that writes to the transport; everyone else queues encoded
  frames for it (``_connection.Connection``);
* the **heartbeat** sends a heartbeat every interval and declares the connection dead when the
  previous one is still unanswered at the next tick.

When a connection ends, the client fails what was tied to it (reply waiters, unwritten frames),
marks joined channels as waiting to rejoin, publishes ``Disconnected`` and ``Reconnecting``
events, and after the delay reconnects; every channel that the user still wants joined then
rejoins with a fresh join_ref. The body of ``open_realtime`` runs only after the first
connection is open, and an error there is raised from ``open_realtime`` itself.

On exit, joined channels are left and the socket is closed with code 1000, shielded and within
``close_timeout``; then the nursery is cancelled, so no task outlives the ``async with``. Once
connected, the background tasks are shielded from the caller's cancel scopes, so that a
cancelled body still gets this graceful exit; only the exit itself cancels them.
"""

from __future__ import annotations

import logging
import math
import random
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

import httpx
import trio

from ._auth import token_expired
from ._channel import Channel, ChannelState
from ._connection import Connection
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
    RealtimeError,
    leaf_exceptions,
)
from ._frames import Frame, heartbeat_frame, next_ref, realtime_topic, ref_counter
from ._rest import BroadcastMessage, RestSender
from ._serializer import check_vsn, encode_wire, parse_frame
from ._subscription import DEFAULT_BUFFER, Subscription
from ._transport import (
    CLOSE_ABNORMAL,
    CLOSE_NORMAL,
    DEFAULT_MAX_MESSAGE_SIZE,
    TransportFactory,
    TransportOptions,
)
from ._url import DEFAULT_VSN, Endpoint, redact, url_options, websocket_url
from ._ws_sansio import connect_sansio
from ._ws_trio_websocket import connect_trio_websocket

logger = logging.getLogger("trio_realtime.client")

TokenSource = Callable[[], Awaitable[str | None]]
ReconnectPolicy = Callable[[int], float | None]
"""Maps the attempt number (from 1) to seconds to wait, or ``None`` to give up."""

DEFAULT_DELAYS: Final = (1.0, 2.0, 5.0, 10.0)
# Refusals at the HTTP upgrade that no reconnect can fix.
_FATAL_STATUSES: Final = frozenset({400, 401, 403, 404})


def backoff(
    delays: tuple[float, ...] = DEFAULT_DELAYS,
    *,
    jitter: float = 0.1,
    max_attempts: int | None = None,
    rng: random.Random | None = None,
) -> ReconnectPolicy:
    """Return a reconnect policy: ``delays[attempt - 1]``, then the last delay forever.

    Args:
        delays: The schedule; the default is 1, 2, 5 then 10 seconds, as realtime-js uses.
        jitter: Each delay is shortened by a random fraction up to this much, so that many
            clients do not reconnect in step. 0 gives exact delays.
        max_attempts: Give up after this many attempts (``None``: never give up).
        rng: The random source (for reproducible tests).
    """
    if not delays or any(d < 0 for d in delays):
        raise ValueError("delays must be non-empty and non-negative")
    if not 0 <= jitter < 1:
        raise ValueError("jitter must be in [0, 1)")
    source = rng or random.Random()

    def policy(attempt: int) -> float | None:
        if max_attempts is not None and attempt > max_attempts:
            return None
        base = delays[min(max(attempt, 1), len(delays)) - 1]
        return base * (1 - jitter * source.random()) if jitter else base

    return policy


@dataclass(frozen=True, slots=True)
class ClientStatistics:
    """Figures of a client, from :meth:`RealtimeClient.statistics`.

    Attributes:
        connected: Whether a connection is open.
        connects: Connections opened, the first included.
        reconnects: Connections opened after a loss.
        frames_received: Messages received, over all connections.
        frames_sent: Frames written, over all connections.
        malformed_frames: Messages that did not parse and were skipped.
        unroutable_frames: Frames for a topic with no channel, or with an unknown event.
        channels: Channels registered with the client.
        joined_channels: Channels joined now.
        heartbeat_latency: The last heartbeat round trip in seconds, if any.
        dropped_items: Items dropped by subscription overflow policies, over all subscriptions
            that are still registered.
    """

    connected: bool
    connects: int
    reconnects: int
    frames_received: int
    frames_sent: int
    malformed_frames: int
    unroutable_frames: int
    channels: int
    joined_channels: int
    heartbeat_latency: float | None
    dropped_items: int


def _transport_factory(transport: str | TransportFactory) -> TransportFactory:
    if transport == "websockets":
        return connect_sansio
    if transport == "trio-websocket":
        return connect_trio_websocket
    if callable(transport):
        return transport
    raise ValueError(
        f"transport must be 'websockets', 'trio-websocket' or a factory, not {transport!r}"
    )


class RealtimeClient:
    """A connection to Supabase Realtime; obtain it from :func:`open_realtime`."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        apikey: str,
        access_token: str | TokenSource | None,
        vsn: str,
        heartbeat_interval: float | None,
        timeout: float,
        reconnect: ReconnectPolicy | None,
        rejoin: ReconnectPolicy,
        transport: TransportFactory,
        transport_options: TransportOptions,
        close_timeout: float,
        connect_timeout: float,
        outgoing_buffer: int,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._apikey = apikey
        if callable(access_token):
            self._token_source: TokenSource | None = access_token
            self._token: str | None = None
        else:
            self._token_source = None
            self._token = access_token
        self._vsn = vsn
        self._heartbeat_interval = heartbeat_interval
        self._timeout = timeout
        self._reconnect = reconnect
        self._rejoin = rejoin
        self._factory = transport
        self._transport_options = transport_options
        self._close_timeout = close_timeout
        self._connect_timeout = connect_timeout
        self._outgoing_buffer = outgoing_buffer
        self._refs = ref_counter()
        self._rest = RestSender(
            endpoint,
            apikey=apikey,
            token=self.token_for_join,
            ssl_context=transport_options.ssl_context,
            timeout=timeout,
            connect_timeout=connect_timeout,
            transport=http_transport,
        )
        self._channels: dict[str, Channel] = {}
        self._connection: Connection | None = None
        self._connected = trio.Event()
        self._connection_subs: list[Subscription[ConnectionEvent]] = []
        self._closing = False
        self._closed = False
        self._run_done = trio.Event()
        # Shielded once the first connection is open (open_realtime); only the exit cancels it.
        self._run_scope = trio.CancelScope()
        # Statistics.
        self._connects = 0
        self._frames_received = 0
        self._frames_sent_closed = 0
        self._malformed = 0
        self._unroutable = 0
        self._heartbeat_latency: float | None = None

    def __repr__(self) -> str:
        state = "connected" if self._connection is not None else "disconnected"
        return f"<RealtimeClient {self._endpoint.redacted} {state} channels={len(self._channels)}>"

    # -- ChannelHost -----------------------------------------------------------------------------

    @property
    def timeout(self) -> float:
        """Seconds to wait for join and push replies."""
        return self._timeout

    @property
    def vsn(self) -> str:
        """The serializer version in use, ``"1.0.0"`` or ``"2.0.0"``."""
        return self._vsn

    @property
    def connection(self) -> Connection | None:
        """The open connection, if any (internal)."""
        return self._connection

    @property
    def url(self) -> str:
        """The WebSocket endpoint, with the apikey redacted."""
        return self._endpoint.redacted

    @property
    def connected(self) -> bool:
        """Whether a connection is open right now."""
        return self._connection is not None

    def next_ref(self) -> str:
        """Return a fresh ref for an outgoing frame."""
        return next_ref(self._refs)

    def encode(self, frame: Frame) -> tuple[bytes, bool]:
        """Encode an outgoing frame for this connection's vsn; log it at DEBUG (redacted).

        Raises:
            ProtocolError: when the frame cannot be encoded (for example bytes under 1.0.0).
        """
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("> %r", frame)
        return encode_wire(frame, self._vsn)

    def rejoin_delay(self, attempt: int) -> float:
        """Seconds before channel rejoin attempt ``attempt``."""
        delay = self._rejoin(attempt)
        return 10.0 if delay is None else delay

    @property
    def rest(self) -> RestSender:
        """The REST broadcast sender (internal; see :meth:`http_broadcast`)."""
        return self._rest

    def register_channel(self, channel: Channel) -> None:
        """Make ``channel`` the client's channel for its topic again (after a leave)."""
        current = self._channels.get(channel.topic)
        if current is None:
            self._channels[channel.topic] = channel
        elif current is not channel:
            raise RealtimeError(
                f"another channel object for {channel.topic!r} exists; use client.channel()"
            )

    def unregister_channel(self, channel: Channel) -> None:
        """Forget ``channel`` (it was left or closed by the server)."""
        if self._channels.get(channel.topic) is channel:
            del self._channels[channel.topic]

    async def token_for_join(self) -> str | None:
        """The token for a join: refreshed first when it is missing or expired (AU-02, AU-05)."""
        if self._token_source is not None and (
            self._token is None or token_expired(self._token, time.time())
        ):
            await self._refresh_token()
        return self._token

    async def _refresh_token(self) -> None:
        assert self._token_source is not None
        try:
            token: object = await self._token_source()
        except Exception as exc:
            logger.warning(
                "access token callback failed (%s); keeping the cached token", type(exc).__name__
            )
            return
        if token is not None and not isinstance(token, str):
            logger.warning("access token callback returned %s, not a string", type(token).__name__)
            return
        self._token = token

    # -- public API -------------------------------------------------------------------------------

    def channel(
        self,
        topic: str,
        *,
        broadcast_self: bool = False,
        broadcast_ack: bool = False,
        presence_key: str = "",
        presence_enabled: bool = False,
        private: bool = False,
    ) -> Channel:
        """Return the channel for ``topic`` (``realtime:`` is prefixed when missing).

        The same topic gives back the same channel object while it is registered (until it is
        left or closed by the server).

        Raises:
            ValueError: for an empty topic, or when the topic's channel exists with other
                options.
            RealtimeError: after the client has closed.
        """
        if self._closed:
            raise RealtimeError("the client is closed")
        full = realtime_topic(topic)
        existing = self._channels.get(full)
        if existing is not None:
            if not existing.same_options(broadcast_self, broadcast_ack, presence_key, private):
                raise ValueError(f"channel {full!r} already exists with other options")
            return existing
        channel = Channel(
            self,
            full,
            broadcast_self=broadcast_self,
            broadcast_ack=broadcast_ack,
            presence_key=presence_key,
            presence_enabled=presence_enabled,
            private=private,
        )
        self._channels[full] = channel
        return channel

    @property
    def channels(self) -> list[Channel]:
        """The registered channels."""
        return list(self._channels.values())

    def connection_events(
        self, *, buffer: int = DEFAULT_BUFFER, overflow: str = "error"
    ) -> Subscription[ConnectionEvent]:
        """Subscribe to :class:`Connected`, :class:`Disconnected`, :class:`Reconnecting` and
        :class:`HeartbeatEvent` events, in the order they happen."""
        registry = self._connection_subs

        def unregister(sub: Subscription[ConnectionEvent]) -> None:
            if sub in registry:
                registry.remove(sub)

        sub: Subscription[ConnectionEvent] = Subscription(
            "connection events", buffer=buffer, overflow=overflow, on_close=unregister
        )
        if self._closed:
            sub.end()
        registry.append(sub)
        return sub

    async def set_auth(self, token: str | None) -> None:
        """Use ``token`` from now on: sent as ``access_token`` to every joined channel, and in
        every later join. The server does not reply to it.

        A token callback given to ``open_realtime`` is still used on reconnect and when the
        token expires.
        """
        if token is not None and not isinstance(token, str):
            raise TypeError("token must be a string or None")
        self._token = token
        if token is None:
            await trio.lowlevel.checkpoint()
            return
        for channel in list(self._channels.values()):
            await channel.send_access_token(token)
        await trio.lowlevel.checkpoint()

    async def http_broadcast(self, messages: Iterable[BroadcastMessage]) -> int:
        """Send ``messages`` in one request to the REST batch endpoint (``POST /api/broadcast``).

        No socket or join is needed: this works for any topic. Each message names its topic,
        and may be private (the token must have broadcast write permission there, or the
        server silently skips it) and carry an ``id``, which subscribers see as ``meta.id``.
        The apikey and the token (the client's ``access_token``, refreshed like for a join)
        go in headers.

        Returns:
            How many messages were sent (the server answered 202).

        Raises:
            ValueError: for an empty batch, or one of more than ``MAX_BATCH`` messages.
            TypeError: for an item that is not a :class:`BroadcastMessage`.
            RestUnauthorized: 401 or 403, with the server's message.
            RestPayloadTooLarge: a payload over the project's limit (413, or 422).
            RestRateLimited: 429, with the ``x-rate-limit`` figures.
            RestServerError: 5xx.
            RestError: any other error status (for example 422 for an invalid message).
            PushTimeout: no answer within the client ``timeout``.
            RealtimeConnectionError: the server could not be reached.
        """
        return await self._rest.send_batch(messages)

    async def wait_connected(self) -> None:
        """Wait until a connection is open (returns at once when it is)."""
        await self._connected.wait()

    def statistics(self) -> ClientStatistics:
        """Return the client's figures."""
        connection = self._connection
        frames_sent = self._frames_sent_closed + (connection.frames_sent if connection else 0)
        dropped = sum(sub.statistics().dropped for sub in self._connection_subs)
        for channel in self._channels.values():
            dropped += sum(sub.statistics().dropped for sub in channel._all_subscriptions())
        return ClientStatistics(
            connected=connection is not None,
            connects=self._connects,
            reconnects=max(self._connects - 1, 0),
            frames_received=self._frames_received,
            frames_sent=frames_sent,
            malformed_frames=self._malformed,
            unroutable_frames=self._unroutable,
            channels=len(self._channels),
            joined_channels=sum(1 for c in self._channels.values() if c.joined),
            heartbeat_latency=self._heartbeat_latency,
            dropped_items=dropped,
        )

    # -- events ------------------------------------------------------------------------------------

    def _emit(self, event: ConnectionEvent) -> None:
        for sub in self._connection_subs:
            sub.put(event)

    # -- the connection loop -----------------------------------------------------------------------

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with self._run_scope:
                await self._connect_forever(task_status)
        finally:
            self._run_done.set()

    async def _connect_forever(self, task_status: trio.TaskStatus[None]) -> None:
        attempt = 0
        first = True
        while True:
            lost: ConnectionClosed | None = None
            try:
                lost = await self._run_connection(first, task_status)
            except RealtimeConnectionError as exc:
                if first or exc.status_code in _FATAL_STATUSES:
                    raise
                logger.warning("reconnect to %s failed: %s", self._endpoint.redacted, exc)
            else:
                if self._closing:
                    return
                first = False
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
                self._emit(Disconnected(lost.code, lost.reason, delay is not None))
            if delay is None:
                code = lost.code if lost is not None else CLOSE_ABNORMAL
                reason = lost.reason if lost is not None else "reconnect failed"
                raise ConnectionClosed(code, reason or "reconnecting is disabled or gave up")
            self._emit(Reconnecting(attempt, delay))
            logger.info("reconnecting in %.2f s (attempt %d)", delay, attempt)
            await trio.sleep(delay)

    async def _run_connection(
        self, first: bool, task_status: trio.TaskStatus[None]
    ) -> ConnectionClosed | None:
        """Open one connection and serve it until it ends; return why it ended.

        Two nurseries: the outer one holds whatever the transport runs for itself (trio-websocket
        has its own reader task), the inner one our reader, writer, heartbeat and join loops.
        Losing the connection cancels only the inner one, so the transport can still perform
        its closing handshake before the outer one is cancelled.
        """
        connection: Connection | None = None
        connect_error: RealtimeConnectionError | None = None
        async with trio.open_nursery() as transport_nursery:
            if self._token_source is not None and not first:
                await self._refresh_token()
            try:
                with trio.move_on_after(self._connect_timeout) as connect_scope:
                    transport = await self._factory(
                        self._endpoint, self._transport_options, transport_nursery
                    )
                if connect_scope.cancelled_caught:
                    raise RealtimeConnectionError(
                        f"no connection to {self._endpoint.redacted} "
                        f"within {self._connect_timeout} s"
                    )
            except RealtimeConnectionError as exc:
                # Raised outside the nursery, so that it is not wrapped in a group.
                connect_error = exc
                transport_nursery.cancel_scope.cancel()
            else:
                try:
                    async with trio.open_nursery() as nursery:
                        connection = Connection(
                            transport, nursery, outgoing_buffer=self._outgoing_buffer
                        )
                        self._serve(connection, first, task_status)
                finally:
                    if connection is not None:
                        await self._connection_ended(connection)
                    else:
                        with trio.CancelScope(shield=True):
                            await transport.abort()
                    transport_nursery.cancel_scope.cancel()
        if connect_error is not None:
            raise connect_error
        assert connection is not None
        return connection.lost

    def _serve(
        self, connection: Connection, first: bool, task_status: trio.TaskStatus[None]
    ) -> None:
        """Start the connection's tasks and tell everyone that it is open."""
        self._connection = connection
        self._connects += 1
        nursery = connection.nursery
        nursery.start_soon(self._writer, connection)
        nursery.start_soon(self._reader, connection)
        if self._heartbeat_interval:
            nursery.start_soon(self._heartbeat, connection)
        logger.info("connected to %s", self._endpoint.redacted)
        self._emit(Connected(self._endpoint.redacted, reconnect=not first))
        self._connected.set()
        if first:
            task_status.started()
        for channel in list(self._channels.values()):
            channel.start_join_loop()

    async def _connection_ended(self, connection: Connection) -> None:
        self._connection = None
        self._connected = trio.Event()
        if connection.lost is None:
            connection.lost = ConnectionClosed(CLOSE_ABNORMAL, "")
        self._frames_sent_closed += connection.frames_sent
        connection.fail_pending()
        for channel in list(self._channels.values()):
            channel.connection_lost()
        with trio.CancelScope(shield=True):
            if self._closing and connection.lost.code == CLOSE_NORMAL:
                with trio.move_on_after(self._close_timeout):
                    await connection.transport.aclose(CLOSE_NORMAL, "")
            await connection.transport.abort()

    async def _writer(self, connection: Connection) -> None:
        await connection.run_writer()

    async def _reader(self, connection: Connection) -> None:
        transport = connection.transport
        vsn = self._vsn
        dispatch = self._dispatch
        try:
            while True:
                messages = await transport.receive_messages()
                self._frames_received += len(messages)
                debug = logger.isEnabledFor(logging.DEBUG)
                for data in messages:
                    try:
                        frame = parse_frame(data, vsn)
                    except ProtocolError as exc:
                        self._malformed += 1
                        logger.warning("skipping malformed frame (%s): %.120r", exc, data)
                        continue
                    if debug:
                        logger.debug("< %r", frame)
                    try:
                        dispatch(connection, frame)
                    except Exception:
                        logger.exception("error while handling a frame on %s", frame.topic)
        except ConnectionClosed as exc:
            reason = exc.reason
            if exc.code == 1009 and not reason:
                reason = "message too big"
            connection.lose(exc.code, reason)

    def _dispatch(self, connection: Connection, frame: Frame) -> None:
        if frame.event == "phx_reply":
            if frame.topic == "phoenix":
                self._on_heartbeat_reply(connection, frame)
                return
            ref = frame.ref
            waiter = connection.replies.pop(ref, None) if ref is not None else None
            if waiter is not None:
                waiter.set(frame)
                return
            logger.debug("ignoring a reply to an unknown ref %r on %s", ref, frame.topic)
            return
        channel = self._channels.get(frame.topic)
        if channel is None:
            self._unroutable += 1
            logger.debug("ignoring %r for unknown topic %s", frame.event, frame.topic)
            return
        channel.on_frame(frame)

    async def _heartbeat(self, connection: Connection) -> None:
        interval = self._heartbeat_interval
        assert interval
        while True:
            await trio.sleep(interval)
            if connection.pending_heartbeat is not None:
                logger.warning("no heartbeat reply within %.1f s; the connection is dead", interval)
                connection.lose(CLOSE_ABNORMAL, "heartbeat timeout")
                return
            ref = self.next_ref()
            connection.pending_heartbeat = (ref, trio.current_time())
            data, binary = self.encode(heartbeat_frame(ref))
            try:
                # A queue that stays full for a whole interval means a dead connection too.
                with trio.move_on_after(interval):
                    await connection.send(data, binary)
            except ConnectionClosed:
                return

    def _on_heartbeat_reply(self, connection: Connection, frame: Frame) -> None:
        pending = connection.pending_heartbeat
        if pending is None or pending[0] != frame.ref:
            logger.debug("ignoring a heartbeat reply for ref %r", frame.ref)
            return
        connection.pending_heartbeat = None
        latency = trio.current_time() - pending[1]
        payload = frame.payload
        status = payload.get("status") if isinstance(payload, dict) else None
        if status == "ok":
            self._heartbeat_latency = latency
            self._emit(HeartbeatEvent("ok", latency))
        else:
            logger.warning("heartbeat reply with status %r", status)
            self._emit(HeartbeatEvent("error", latency))

    # -- shutdown ----------------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        """Leave joined channels and close with 1000; shielded and bounded by close_timeout.

        The close frame is sent by the connection's own teardown (``_connection_ended``), after
        its reader has stopped, so that nothing else reads the socket meanwhile.
        """
        self._closing = True
        with trio.CancelScope(shield=True):
            connection = self._connection
            if connection is not None and connection.lost is None:
                joined = [c for c in self._channels.values() if c.state is ChannelState.JOINED]
                with trio.move_on_after(self._close_timeout):
                    async with trio.open_nursery() as nursery:
                        for channel in joined:
                            nursery.start_soon(channel.leave)
                connection.lose(CLOSE_NORMAL, "client closed")
                with trio.move_on_after(self._close_timeout * 2):
                    await self._run_done.wait()
        for channel in list(self._channels.values()):
            channel.close_quietly()
        self._closed = True
        for sub in self._connection_subs:
            sub.end()
        with trio.CancelScope(shield=True), trio.move_on_after(self._close_timeout):
            await self._rest.aclose()


def _only_cancelled(error: BaseException) -> bool:
    """Whether ``error`` is a cancellation, or a group (from a nursery in the body) of them."""
    if isinstance(error, BaseExceptionGroup):
        return all(isinstance(leaf, trio.Cancelled) for leaf in leaf_exceptions(error))
    return isinstance(error, trio.Cancelled)


@asynccontextmanager
async def open_realtime(
    url: str,
    *,
    apikey: str | None = None,
    access_token: str | TokenSource | None = None,
    vsn: str = DEFAULT_VSN,
    heartbeat_interval: float | None = 25.0,
    timeout: float = 10.0,  # noqa: ASYNC109 - a protocol reply limit, not a deadline
    reconnect: ReconnectPolicy | None = backoff(),  # noqa: B008 - the policy is stateless
    rejoin: ReconnectPolicy = backoff(),  # noqa: B008
    transport: str | TransportFactory = "websockets",
    ssl_context: ssl.SSLContext | None = None,
    log_level: str | None = None,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    close_timeout: float = 5.0,
    connect_timeout: float = 10.0,
    outgoing_buffer: int = 1024,
    http_transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[RealtimeClient]:
    """Connect to Supabase Realtime; the body runs once the connection is open.

    Args:
        url: The project URL (``https://<ref>.supabase.co``), a socket URL
            (``ws://host:4000/socket``) or a full ``.../websocket`` URL. Its ``apikey``,
            ``vsn`` and ``log_level`` query parameters are used when the keywords are not
            given; a keyword that contradicts them is a ``ValueError``.
        apikey: The project's API key (anon or service key). Required, here or in the URL.
        access_token: A user JWT, or an async callable returning one. A callable is awaited
            before the first join, on every reconnect, and whenever the cached token has
            expired; if it fails, the cached token is used.
        vsn: The serializer, ``"1.0.0"`` (JSON objects) or ``"2.0.0"`` (arrays and binary);
            by default the URL's ``vsn``, else ``"1.0.0"``.
        heartbeat_interval: Seconds between heartbeats; a heartbeat unanswered at the next tick
            means the connection is dead. ``None`` disables heartbeats.
        timeout: Seconds to wait for join, leave and acknowledged push replies.
        reconnect: Attempt number → seconds before reconnecting, or ``None`` to give up; pass
            ``None`` to disable reconnecting. Default: :func:`backoff` (1, 2, 5, 10 s...).
        rejoin: The same kind of policy for rejoining a channel after a server error.
        transport: ``"websockets"`` (the default, fastest), ``"trio-websocket"``, or a
            transport factory (for example ``server.memory_transport`` of the local server).
        ssl_context: The TLS context for ``wss``; by default certificates are verified.
        log_level: Sent to the server as ``log_level`` (its own logging only).
        max_message_size: The largest incoming message accepted; a larger one closes the
            connection (code 1009), which is then reconnected.
        close_timeout: Bound on the graceful part of closing (leaves and close handshake).
        connect_timeout: Bound on opening a connection (TCP, TLS and the HTTP upgrade); past
            it the attempt fails like a refused connection.
        outgoing_buffer: Frames queued for the writer before senders wait.
        http_transport: The httpx transport for REST broadcasts (``http_send``,
            ``http_broadcast``); by default httpx's own, over TCP with ``ssl_context``. The
            local server offers ``server.http_transport`` to stay in memory.

    Raises:
        ValueError: for a missing apikey, an unsupported vsn, a bad URL, or a keyword that
            contradicts the URL's query.
        RealtimeConnectionError: when the first connection fails (refused, TLS, or an HTTP
            error such as 401 with the server's message), when the server refuses a reconnect
            with 4xx, or when the reconnect policy gives up (as :class:`ConnectionClosed`).
        RealtimeError: for any other failure of a background task.

    Exceptions raised in the body propagate unchanged, after a clean shutdown.
    """
    # The default vsn is told apart from an explicit "1.0.0", which may contradict the URL.
    options = url_options(
        url, apikey=apikey, vsn=None if vsn is DEFAULT_VSN else vsn, log_level=log_level
    )
    apikey, log_level = options.apikey, options.log_level
    if not isinstance(apikey, str) or not apikey.strip():
        raise ValueError("open_realtime needs an apikey (the project's anon or service key)")
    checked_vsn = check_vsn(options.vsn or "1.0.0")
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    if heartbeat_interval is not None and heartbeat_interval <= 0:
        raise ValueError("heartbeat_interval must be positive, or None to disable heartbeats")
    try:
        endpoint = websocket_url(url, apikey=apikey, vsn=checked_vsn, log_level=log_level)
    except ValueError as exc:
        raise ValueError(redact(str(exc), apikey)) from None
    client = RealtimeClient(
        endpoint,
        apikey=apikey,
        access_token=access_token,
        vsn=checked_vsn,
        heartbeat_interval=heartbeat_interval,
        timeout=timeout,
        reconnect=reconnect,
        rejoin=rejoin,
        transport=_transport_factory(transport),
        transport_options=TransportOptions(
            ssl_context=ssl_context, max_message_size=max_message_size
        ),
        close_timeout=close_timeout,
        connect_timeout=connect_timeout,
        outgoing_buffer=outgoing_buffer,
        http_transport=http_transport,
    )
    # The body's exception is caught inside the nursery and re-raised outside it, so that it
    # comes out unwrapped; only background failures go through the ExceptionGroup below.
    user_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(client._run)
                # Connected: from now on a cancellation of the caller's scopes reaches only the
                # body, whose exit then leaves the channels and closes with 1000 while the
                # reader and writer still run; only the exit stops them (CL-05). Unless the
                # caller is cancelled already: shielding tasks that have seen the cancellation
                # would break trio's rule that a cancellation, once effective, stays so.
                if trio.current_effective_deadline() != -math.inf:
                    client._run_scope.shield = True
                try:
                    yield client
                except BaseException as exc:
                    user_error = exc
            finally:
                await client._shutdown()
                client._run_scope.cancel()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if user_error is not None and not _only_cancelled(user_error):
            raise user_error from None
        leaves = leaf_exceptions(group)
        failures = [leaf for leaf in leaves if not isinstance(leaf, trio.Cancelled)]
        if not failures:
            raise leaves[0] from None
        if len(failures) == 1 and isinstance(failures[0], RealtimeError | KeyboardInterrupt):
            raise failures[0] from None
        raise RealtimeError(f"background task failed: {failures[0]!r}") from group
    if user_error is not None:
        raise user_error
