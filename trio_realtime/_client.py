"""``open_realtime()`` and :class:`RealtimeClient`: the public face of the trio runtime.

Theory of operation
-------------------
``open_realtime`` validates every option, then owns one nursery. In it the driver
(``_driver.Driver``) loops for the life of the client: connect, serve, reconnect. The body of
``open_realtime`` runs only after the first connection is open, and an error there is raised
from ``open_realtime`` itself.

Under the client, floor by floor: the session core (``_session``, pure) holds the protocol
state; the runtime (``_runtime``) shares it, the open connection and the token with the
channels (``_channel``), which wait, time and retry; the driver moves bytes.

On exit, joined channels are left and the socket is closed with code 1000, shielded and within
``close_timeout``; then the nursery is cancelled, whatever happened in the graceful part, so no
task outlives the ``async with``. Once connected, the background tasks are shielded
from the caller's cancel scopes, so that a cancelled body still gets this graceful exit; only
the exit itself cancels them.

Longer than the project's usual 500 lines: ``open_realtime`` and ``client.channel()`` check
every option here, where they are documented, so that nothing bad reaches a background task.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import ssl
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import httpx
import trio

from ._channel import Channel
from ._driver import Driver
from ._events import ConnectionEvent
from ._exceptions import ConnectionClosed, RealtimeError, leaf_exceptions
from ._frames import realtime_topic
from ._replay import ReplayTracker, check_replay
from ._rest import BroadcastMessage, RestSender
from ._runtime import MAX_FRAME_SIZE, ReconnectPolicy, Runtime, Settings, TokenSource
from ._serializer import Vsn, check_vsn
from ._session import ChannelOptions
from ._subscription import (
    DEFAULT_BUFFER,
    Feed,
    Overflow,
    Subscription,
    open_subscription,
    purge_abandoned,
)
from ._transport import DEFAULT_MAX_MESSAGE_SIZE, TransportFactory, TransportOptions
from ._url import DEFAULT_VSN, Endpoint, redact, url_options, websocket_url
from ._ws_sansio import connect_sansio
from ._ws_trio_websocket import connect_trio_websocket

__all__ = [
    "ClientStatistics",
    "RealtimeClient",
    "ReconnectPolicy",
    "TokenSource",
    "backoff",
    "open_realtime",
]

logger = logging.getLogger("trio_realtime.client")

DEFAULT_DELAYS: Final = (1.0, 2.0, 5.0, 10.0)
MIN_HEARTBEAT_INTERVAL: Final = 0.1
MIN_MESSAGE_SIZE: Final = 1024
DEFAULT_REJOIN_RATE: Final = 20.0
"""Rejoins per second after a reconnect: 100 channels (the server's default maximum per
connection) rejoin within 4 s, well under its default of 100 joins per second per tenant."""
DEFAULT_TOKEN_SPACING: Final = 25.0
"""Seconds between two refreshes for a token's ``exp`` when heartbeats are disabled."""


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

    Raises:
        ValueError: for an empty schedule, a delay that is negative or not finite, a jitter
            outside ``[0, 1)``, or ``max_attempts`` below 1.
    """
    if not delays or any(not _finite(d) or d < 0 for d in delays):
        raise ValueError("delays must be non-empty, finite and non-negative")
    if not _finite(jitter) or not 0 <= jitter < 1:
        raise ValueError("jitter must be in [0, 1)")
    if max_attempts is not None and (not _is_int(max_attempts) or max_attempts < 1):
        raise ValueError(f"max_attempts must be a positive int or None, not {max_attempts!r}")
    source = rng or random.Random()

    def policy(attempt: int) -> float | None:
        if max_attempts is not None and attempt > max_attempts:
            return None
        base = delays[min(max(attempt, 1), len(delays)) - 1]
        return base * (1 - jitter * source.random()) if jitter else base

    return policy


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_seconds(name: str, value: object, *, minimum: float = 0.0) -> float:
    """Validate a duration option: a finite number above ``minimum``."""
    if not _finite(value) or value <= minimum:  # type: ignore[operator]
        raise ValueError(
            f"{name} must be a finite number of seconds above {minimum}, not {value!r}"
        )
    return float(value)  # type: ignore[arg-type]


def _check_count(name: str, value: object, *, minimum: int) -> int:
    if not _is_int(value) or value < minimum:  # type: ignore[operator]
        raise ValueError(f"{name} must be an int of at least {minimum}, not {value!r}")
    return value  # type: ignore[return-value]


def _check_policy(name: str, value: object, *, optional: bool) -> None:
    if value is None and optional:
        return
    if not callable(value):
        raise TypeError(f"{name} must be a callable policy (see backoff()), not {value!r}")


def check_token(token: object, what: str) -> str | None:
    """Validate an access token: a string the server can take, or ``None``.

    A bad token is refused by the call that received it, never by a background task.

    Raises:
        TypeError: for anything but a string or ``None``.
        ValueError: for a token that is not valid UTF-8 text or is too large to send.
    """
    if token is None:
        return None
    if not isinstance(token, str):
        raise TypeError(f"{what} must be a string or None, not {type(token).__name__}")
    try:
        size = len(token.encode())
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid text (it has a lone surrogate)") from None
    if size > MAX_FRAME_SIZE // 2:
        raise ValueError(
            f"{what} is {size} bytes: a join carrying it would be over the server's frame limit"
        )
    return token


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
        unroutable_frames: Frames for a topic with no channel, with an unknown event, or with a
            payload of the wrong shape.
        stale_frames: Frames dropped as stale (another join_ref, a reply nobody waits for).
        channels: Channels registered with the client.
        joined_channels: Channels joined now.
        heartbeat_latency: The last heartbeat round trip in seconds, if any.
        dropped_items: Items dropped by subscription overflow policies, over all subscriptions
            that are still registered.
        pending_replies: Replies (joins, leaves, acked pushes) waited for now.
    """

    connected: bool
    connects: int
    reconnects: int
    frames_received: int
    frames_sent: int
    malformed_frames: int
    unroutable_frames: int
    stale_frames: int
    channels: int
    joined_channels: int
    heartbeat_latency: float | None
    dropped_items: int
    pending_replies: int


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

    def __init__(self, runtime: Runtime, driver: Driver, endpoint: Endpoint) -> None:
        self._runtime = runtime
        self._driver = driver
        self._endpoint = endpoint
        self._closed = False
        # Connection-event subscriptions garbage-collected without close() queue their
        # unregistration in the runtime's queue, shared with the channels.
        self._abandoned = runtime.abandoned

    def __repr__(self) -> str:
        state = "connected" if self.connected else "disconnected"
        channels = len(self._runtime.channels)
        return f"<RealtimeClient {self._endpoint.redacted} {state} channels={channels}>"

    @property
    def timeout(self) -> float:
        """Seconds to wait for join, leave and acknowledged push replies."""
        return self._runtime.settings.timeout

    @property
    def vsn(self) -> str:
        """The serializer version in use, ``"1.0.0"`` or ``"2.0.0"``."""
        return self._runtime.settings.vsn

    @property
    def url(self) -> str:
        """The WebSocket endpoint, with the apikey redacted."""
        return self._endpoint.redacted

    @property
    def connected(self) -> bool:
        """Whether a connection is open right now."""
        return self._runtime.connection is not None

    def channel(
        self,
        topic: str,
        *,
        broadcast_self: bool = False,
        broadcast_ack: bool = False,
        presence_key: str = "",
        presence_enabled: bool = False,
        private: bool = False,
        replay_since: datetime | int | None = None,
        replay_limit: int | None = None,
        replay_on_rejoin: bool = False,
    ) -> Channel:
        """Return the channel for ``topic`` (``realtime:`` is prefixed when missing).

        The same topic gives back the same channel object while it is registered (until it is
        left or closed by the server).

        Args:
            topic: The topic, with or without ``realtime:``.
            broadcast_self: Receive this client's own broadcasts.
            broadcast_ack: Wait for the server's acknowledgement of each broadcast.
            presence_key: The key this client's presence is tracked under.
            presence_enabled: Ask for presence at join (subscribing or tracking enables it).
            private: Join the private channel (checked against the RLS policies).
            replay_since: Private channels only: on joining, the server replays the stored
                broadcasts inserted since then (a timezone-aware datetime, or Unix ms),
                delivered through ``broadcasts()`` with ``meta = {"id": ..., "replayed":
                True}``.
            replay_limit: At most this many replayed messages, 1 to 25 (the newest ones; the
                server's default is 25).
            replay_on_rejoin: Private channels only: every rejoin asks for the messages
                stored since the last one seen (catch-up after a gap); replayed copies of
                messages already delivered are dropped.

        Raises:
            ValueError: for an empty topic, when the topic's channel exists with other
                options, or for replay options on a public channel, a ``replay_limit``
                outside 1..25, or a naive datetime. Nothing has been sent then.
            TypeError: for an option of the wrong type.
            RealtimeError: after the client has closed.
        """
        if self._closed:
            raise RealtimeError("the client is closed")
        since_ms, limit = check_replay(
            private=private, since=replay_since, limit=replay_limit, on_rejoin=replay_on_rejoin
        )
        replay_options = (since_ms, limit, replay_on_rejoin)
        full = realtime_topic(topic)
        try:
            full.encode()
        except UnicodeEncodeError:
            raise ValueError("topic is not valid text (it has a lone surrogate)") from None
        flags = {
            "broadcast_self": broadcast_self,
            "broadcast_ack": broadcast_ack,
            "presence_enabled": presence_enabled,
            "private": private,
        }
        for name, value in flags.items():
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, not {value!r}")
        if not isinstance(presence_key, str):
            raise TypeError(f"presence_key must be a string, not {presence_key!r}")
        try:
            presence_key.encode()
        except UnicodeEncodeError:
            raise ValueError("presence_key is not valid text (it has a lone surrogate)") from None
        options = ChannelOptions(
            broadcast_self=broadcast_self,
            broadcast_ack=broadcast_ack,
            presence_key=presence_key,
            presence_enabled=presence_enabled,
            private=private,
        )
        channels = self._runtime.channels
        existing = channels.get(full)
        if existing is not None:
            existing_replay = existing.replay.options() if existing.replay else (None, None, False)
            if existing.options != options or existing_replay != replay_options:
                raise ValueError(f"channel {full!r} already exists with other options")
            return existing
        replay = (
            ReplayTracker(since_ms, limit, on_rejoin=replay_on_rejoin)
            if replay_options != (None, None, False)
            else None
        )
        channel = Channel(self._runtime, full, options, replay=replay)
        channels[full] = channel
        return channel

    @property
    def channels(self) -> list[Channel]:
        """The registered channels."""
        return list(self._runtime.channels.values())

    def connection_events(
        self, *, buffer: int = DEFAULT_BUFFER, overflow: Overflow = "error"
    ) -> Subscription[ConnectionEvent]:
        """Subscribe to :class:`Connected`, :class:`Disconnected`, :class:`Reconnecting` and
        :class:`HeartbeatEvent` events, in the order they happen."""
        registry = self._driver.event_feeds
        if registry is None:
            registry = self._driver.event_feeds = []

        def unregister(feed: Feed[ConnectionEvent]) -> None:
            if feed in registry:
                registry.remove(feed)

        purge_abandoned(self._abandoned)
        feed, sub = open_subscription(
            "connection events",
            buffer=buffer,
            overflow=overflow,
            on_close=unregister,
            abandoned=self._abandoned,
        )
        if self._closed:
            feed.end(None)
        else:
            registry.append(feed)
        return sub

    async def set_auth(self, token: str | None) -> None:
        """Use ``token`` from now on: sent as ``access_token`` to every joined channel, and in
        every later join. The server does not reply to it. A channel whose join is in flight
        (sent with the old token) gets it right after the join's reply.

        A token callable given to ``open_realtime`` is still asked on reconnect, after every
        heartbeat and ahead of the token's expiry: its answer replaces this token.

        Raises:
            TypeError: for a token that is not a string or ``None``.
            ValueError: for a token that is not valid text or too large to send.
        """
        checked = check_token(token, "token")
        runtime = self._runtime
        runtime.token = checked
        if checked is not None:
            for topic in list(runtime.channels):
                frame = runtime.session.access_token(topic, checked)
                connection = runtime.open_connection
                if frame is not None and connection is not None:
                    data, binary = runtime.encode(frame)
                    with contextlib.suppress(ConnectionClosed):
                        await connection.send(data, binary)
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
            TokenError: the ``access_token`` callable failed and no usable token is cached.
        """
        return await self._runtime.rest.send_batch(messages)

    async def wait_connected(self) -> None:
        """Wait until a connection is open (returns at once when it is)."""
        await self._driver.connected.wait()

    def statistics(self) -> ClientStatistics:
        """Return the client's figures."""
        runtime = self._runtime
        driver = self._driver
        purge_abandoned(self._abandoned)
        connection = runtime.connection
        frames_sent = driver.frames_sent_closed + (connection.frames_sent if connection else 0)
        dropped = sum(feed.dropped for feed in driver.event_feeds or ())
        channels = list(runtime.channels.values())
        for channel in channels:
            dropped += channel.statistics().dropped_items
        return ClientStatistics(
            connected=connection is not None,
            connects=driver.connects,
            reconnects=max(driver.connects - 1, 0),
            frames_received=driver.frames_received,
            frames_sent=frames_sent,
            malformed_frames=driver.malformed,
            unroutable_frames=runtime.session.unroutable_frames,
            stale_frames=runtime.session.stale_frames,
            channels=len(channels),
            joined_channels=sum(1 for c in channels if c.joined),
            heartbeat_latency=driver.heartbeat_latency,
            dropped_items=dropped,
            pending_replies=max(
                runtime.session.pending_replies, len(connection.replies) if connection else 0
            ),
        )

    def _close(self) -> None:
        """After the connection loop: end every channel and subscription cleanly."""
        for channel in list(self._runtime.channels.values()):
            channel._close_quietly()
        self._closed = True
        for feed in self._driver.event_feeds or ():
            feed.end(None)


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
    vsn: Vsn | None = DEFAULT_VSN,
    heartbeat_interval: float | None = 25.0,
    timeout: float = 10.0,  # noqa: ASYNC109 - a protocol reply limit, not a deadline
    reconnect: ReconnectPolicy | None = backoff(),  # noqa: B008 - the policy is stateless
    rejoin: ReconnectPolicy = backoff(),  # noqa: B008
    rejoin_rate: float | None = DEFAULT_REJOIN_RATE,
    transport: str | TransportFactory = "websockets",
    ssl_context: ssl.SSLContext | None = None,
    log_level: str | None = None,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    close_timeout: float = 5.0,
    connect_timeout: float = 10.0,
    outgoing_buffer: int = 1024,
    http_transport: httpx.AsyncBaseTransport | None = None,
    token_timeout: float = 5.0,
) -> AsyncIterator[RealtimeClient]:
    """Connect to Supabase Realtime; the body runs once the connection is open.

    Args:
        url: The project URL (``https://<ref>.supabase.co``), a socket URL
            (``ws://host:4000/socket``) or a full ``.../websocket`` URL. Its ``apikey``,
            ``vsn`` and ``log_level`` query parameters are used when the keywords are not
            given; a keyword that contradicts them is a ``ValueError``.
        apikey: The project's API key (anon or service key). Required, here or in the URL.
        access_token: A user JWT, or an async callable returning one. A callable is awaited
            before the first join, before every reconnect, by a join when the cached token
            has expired, and while a channel is joined after every heartbeat and 30 s before
            the cached token's ``exp``; a token that changed is sent to every joined channel.
            One call at a time serves the whole client. If it fails or times out, it is logged
            and the cached token is used; with none usable a join raises
            :class:`TokenError`.
        vsn: The serializer, ``"1.0.0"`` (JSON objects) or ``"2.0.0"`` (arrays and binary).
            Left out (or ``None``, for wrappers that pass their own option through), it is
            the URL's ``vsn``, else ``"1.0.0"``; given, it must agree with the URL's. Typed
            as the :data:`Vsn` literal, so that a type checker rejects ``vsn="3.0"``; untyped
            callers get the ``ValueError``.
        heartbeat_interval: Seconds between heartbeats (at least 0.1); a heartbeat unanswered
            at the next tick means the connection is dead. ``None`` disables heartbeats.
        timeout: Seconds to wait for join, leave and acknowledged push replies.
        reconnect: Attempt number → seconds before reconnecting, or ``None`` to give up; pass
            ``None`` to disable reconnecting. Default: :func:`backoff` (1, 2, 5, 10 s...).
        rejoin: The same kind of policy for rejoining a channel after a server error or a
            refused background rejoin; ``None`` from it gives up and closes the channel.
        rejoin_rate: Rejoins per second after a reconnect or a server error: the first
            ``rejoin_rate`` channels rejoin at once, the others one every ``1 / rejoin_rate``
            seconds, so that many channels do not hit the server's joins-per-second limit
            together. First joins (:meth:`Channel.join`) are never delayed. ``None`` sends
            every rejoin at once.
        transport: ``"websockets"`` (the default, fastest), ``"trio-websocket"``, or a
            transport factory (for example ``server.memory_transport`` of the local server).
        ssl_context: The TLS context for ``wss``; by default certificates are verified.
        log_level: Sent to the server as ``log_level`` (its own logging only).
        max_message_size: The largest incoming message accepted (at least 1024 bytes); a
            larger one closes the connection (code 1009), which is then reconnected.
        close_timeout: Bound on the graceful part of closing (leaves and close handshake); the
            transport's wait for the server's close frame uses it too.
        connect_timeout: Bound on opening a connection (TCP, TLS and the HTTP upgrade); past
            it the attempt fails like a refused connection.
        outgoing_buffer: Frames queued for the writer before senders wait.
        http_transport: The httpx transport for REST broadcasts (``http_send``,
            ``http_broadcast``); by default httpx's own, over TCP with ``ssl_context``. The
            local server offers ``server.http_transport`` to stay in memory.
        token_timeout: Bound in seconds on one call of the ``access_token`` callable; past it
            the call counts as failed (:class:`TokenError`, ``timed_out=True``).

    Raises:
        ValueError: for a missing apikey, an unsupported vsn, a bad URL, a keyword that
            contradicts the URL's query, or an option out of range (NaN, zero, negative, of
            the wrong type), naming the option.
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
    checked_vsn = check_vsn("1.0.0" if options.vsn is None else options.vsn)
    # Every option is checked here, before anything runs: a bad one fails this call.
    _check_seconds("timeout", timeout)
    if heartbeat_interval is not None and (
        not _finite(heartbeat_interval) or heartbeat_interval < MIN_HEARTBEAT_INTERVAL
    ):
        raise ValueError(
            f"heartbeat_interval must be a finite number of seconds of at least "
            f"{MIN_HEARTBEAT_INTERVAL}, or None to disable heartbeats, not "
            f"{heartbeat_interval!r}"
        )
    _check_seconds("close_timeout", close_timeout)
    _check_seconds("connect_timeout", connect_timeout)
    _check_seconds("token_timeout", token_timeout)
    _check_count("max_message_size", max_message_size, minimum=MIN_MESSAGE_SIZE)
    _check_count("outgoing_buffer", outgoing_buffer, minimum=1)
    _check_policy("reconnect", reconnect, optional=True)
    _check_policy("rejoin", rejoin, optional=False)
    if rejoin_rate is not None and (not _finite(rejoin_rate) or rejoin_rate <= 0):
        raise ValueError(
            f"rejoin_rate must be a finite number of rejoins per second above 0, or None to "
            f"rejoin every channel at once, not {rejoin_rate!r}"
        )
    if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
        raise TypeError(f"ssl_context must be an ssl.SSLContext or None, not {ssl_context!r}")
    if not callable(access_token):
        check_token(access_token, "access_token")
    factory = _transport_factory(transport)
    try:
        endpoint = websocket_url(url, apikey=apikey, vsn=checked_vsn, log_level=log_level)
    except ValueError as exc:
        raise ValueError(redact(str(exc), apikey)) from None
    if http_transport is not None and not isinstance(http_transport, httpx.AsyncBaseTransport):
        raise TypeError(
            f"http_transport must be an httpx.AsyncBaseTransport or None, not {http_transport!r}"
        )
    runtime = Runtime(
        Settings(checked_vsn, timeout, rejoin, rejoin_rate=rejoin_rate),
        access_token=access_token,
        token_timeout=token_timeout,
        token_spacing=heartbeat_interval or DEFAULT_TOKEN_SPACING,
    )
    runtime.rest = RestSender(
        endpoint,
        apikey=apikey,
        token=runtime.token_for_join,
        ssl_context=ssl_context,
        timeout=timeout,
        connect_timeout=connect_timeout,
        transport=http_transport,
    )
    driver = Driver(
        runtime,
        endpoint,
        factory=factory,
        transport_options=TransportOptions(
            ssl_context=ssl_context,
            max_message_size=max_message_size,
            close_timeout=close_timeout,
        ),
        heartbeat_interval=heartbeat_interval,
        reconnect=reconnect,
        connect_timeout=connect_timeout,
        close_timeout=close_timeout,
        outgoing_buffer=outgoing_buffer,
    )
    client = RealtimeClient(runtime, driver, endpoint)
    # The body's exception is caught inside the nursery and re-raised outside it, so that it
    # comes out unwrapped; only background failures go through the ExceptionGroup below.
    user_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            try:
                nursery.start_soon(driver.run)
                await driver.opened.wait()
                if driver.start_error is not None:
                    raise driver.start_error
                # Connected: from now on a cancellation of the caller's scopes reaches only the
                # body, whose exit then leaves the channels and closes with 1000 while the
                # reader and writer still run; only the exit stops them. Unless the
                # caller is cancelled already: shielding tasks that have seen the cancellation
                # would break trio's rule that a cancellation, once effective, stays so.
                if trio.current_effective_deadline() != -math.inf:
                    driver.run_scope.shield = True
                try:
                    yield client
                except BaseException as exc:
                    user_error = exc
            finally:
                try:
                    await driver.shutdown()
                finally:
                    # Whatever the graceful part did, every task ends now: none outlives the block.
                    driver.run_scope.cancel()
                    nursery.cancel_scope.cancel()
                    client._close()
                    with trio.CancelScope(shield=True), trio.move_on_after(close_timeout):
                        await runtime.rest.aclose()
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
