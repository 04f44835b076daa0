"""``connect()``: the blocking client, one trio run in one worker thread per connection."""

from __future__ import annotations

import inspect
import ssl
import threading
import weakref
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from types import TracebackType
from typing import cast

import httpx
import trio

from .. import (
    BroadcastMessage,
    ClientStatistics,
    ConnectionEvent,
    ReconnectPolicy,
    TokenSource,
    TransportFactory,
    backoff,
    open_realtime,
)
from .. import Channel as AsyncChannel
from .. import RealtimeClient as AsyncClient
from .._client import DEFAULT_REJOIN_RATE
from .._subscription import DEFAULT_BUFFER, Overflow
from .._transport import DEFAULT_MAX_MESSAGE_SIZE
from .._url import DEFAULT_VSN
from ._channel import Channel
from ._portal import Portal, check_timeout
from ._subscription import Subscription

BlockingTokenSource = Callable[[], str | None]
"""A plain function returning the access token; it runs in a worker thread of the client."""


def _is_async_callable(fn: object) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


def token_source(
    access_token: str | TokenSource | BlockingTokenSource | None,
) -> str | TokenSource | None:
    """Adapt ``access_token`` for ``open_realtime``: strings and async callables pass through;
    a plain function runs in a worker thread (``trio.to_thread``), so that a slow one (an HTTP
    request for a fresh token) never stalls the client's thread.

    Raises:
        TypeError: for something that is neither a string, ``None`` nor a callable.
    """
    if access_token is None or isinstance(access_token, str):
        return access_token
    if not callable(access_token):
        raise TypeError("access_token must be a string, a callable or None")
    if _is_async_callable(access_token):
        return access_token  # type: ignore[return-value]
    blocking = cast(BlockingTokenSource, access_token)

    async def from_thread() -> str | None:
        token: object = await trio.to_thread.run_sync(blocking, abandon_on_cancel=True)
        if token is None or isinstance(token, str):
            return token
        if inspect.iscoroutine(token):
            token.close()
            raise TypeError("the access_token function returned a coroutine; pass an async def")
        raise TypeError(f"the access_token function returned {type(token).__name__}, not str")

    return from_thread


class RealtimeClient:
    """A connection to Supabase Realtime for blocking code; obtain it from :func:`connect`.

    It runs the async :class:`trio_realtime.RealtimeClient` in its own thread: reconnects,
    heartbeats and rejoins happen there, whatever the calling threads do. Use it as a context
    manager (``with connect(...) as client:``) or call :meth:`close`. Every method may be
    called from any thread.
    """

    def __init__(self, portal: Portal[AsyncClient], client: AsyncClient) -> None:
        self._portal = portal
        self._client = client
        # Sync faces of async channels, created and read in the trio thread only.
        self._channels: weakref.WeakKeyDictionary[AsyncChannel, Channel] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        state = "closed" if self._portal.closing else repr(self._client)
        return f"<sync RealtimeClient {state}>"

    @property
    def client(self) -> AsyncClient:
        """The async client behind this one (use it only in the client's trio thread)."""
        return self._client

    @property
    def url(self) -> str:
        """The WebSocket endpoint, with the apikey redacted."""
        return self._client.url

    @property
    def vsn(self) -> str:
        """The serializer version in use."""
        return self._client.vsn

    @property
    def timeout(self) -> float:
        """Seconds the client waits for join and push replies."""
        return self._client.timeout

    @property
    def connected(self) -> bool:
        """Whether a connection is open right now."""
        return not self._portal.closing and self._client.connected

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called or the client ended."""
        return self._portal.closing

    # -- channels -------------------------------------------------------------------------------

    def _face(self, channel: AsyncChannel) -> Channel:
        face = self._channels.get(channel)
        if face is None:
            face = Channel(self._portal, channel)
            self._channels[channel] = face
        return face

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
        """Return the channel for ``topic`` (``realtime:`` is prefixed); the same topic gives
        back the same channel object while it is registered.

        The options are those of the async ``client.channel()``; ``replay_since``,
        ``replay_limit`` and ``replay_on_rejoin`` ask a private channel's server to replay
        stored broadcasts on joining.

        Raises:
            ValueError: when the channel exists with other options, or for replay options on
                a public channel or out of range.
            TypeError: for an option of the wrong type.
        """
        client = self._client

        def get() -> Channel:
            return self._face(
                client.channel(
                    topic,
                    broadcast_self=broadcast_self,
                    broadcast_ack=broadcast_ack,
                    presence_key=presence_key,
                    presence_enabled=presence_enabled,
                    private=private,
                    replay_since=replay_since,
                    replay_limit=replay_limit,
                    replay_on_rejoin=replay_on_rejoin,
                )
            )

        return self._portal.run_sync(get)

    @property
    def channels(self) -> list[Channel]:
        """The registered channels."""

        def get() -> list[Channel]:
            return [self._face(channel) for channel in self._client.channels]

        return self._portal.run_sync(get, after_close=list)

    # -- observing ------------------------------------------------------------------------------

    def connection_events(
        self, *, buffer: int = DEFAULT_BUFFER, overflow: Overflow = "error"
    ) -> Subscription[ConnectionEvent]:
        """Subscribe to :class:`~trio_realtime.Connected`, :class:`~trio_realtime.Disconnected`,
        :class:`~trio_realtime.Reconnecting` and :class:`~trio_realtime.HeartbeatEvent`
        events, in the order they happen."""
        portal = self._portal
        client = self._client

        def create() -> Subscription[ConnectionEvent]:
            return Subscription(portal, client.connection_events(buffer=buffer, overflow=overflow))

        return portal.run_sync(create)

    def statistics(self) -> ClientStatistics:
        """Return the client's figures (the last ones once it is closed)."""
        return self._portal.run_sync(self._client.statistics, after_close=self._client.statistics)

    def wait_connected(self, *, timeout: float | None = None) -> None:
        """Wait until a connection is open (returns at once when it is).

        Raises:
            SyncTimeout: ``timeout`` elapsed first.
            ConnectionClosed: the client is closed.
        """
        checked = check_timeout(timeout)
        self._portal.run(self._client.wait_connected, timeout=checked, what="wait_connected")

    # -- sending --------------------------------------------------------------------------------

    def set_auth(self, token: str | None, *, timeout: float | None = None) -> None:
        """Use ``token`` from now on: sent as ``access_token`` to every joined channel, and in
        every later join (see the async ``set_auth``).

        Raises:
            TypeError: for a token that is not a string or ``None``.
            SyncTimeout: ``timeout`` elapsed first.
        """
        checked = check_timeout(timeout)
        self._portal.run(self._client.set_auth, token, timeout=checked, what="set_auth")

    def http_broadcast(
        self, messages: Iterable[BroadcastMessage], *, timeout: float | None = None
    ) -> int:
        """Send ``messages`` in one request to the REST batch endpoint (see the async
        ``http_broadcast``); no socket or join is needed.

        ``messages`` is read in the calling thread, then sent from the client's thread.

        Returns:
            How many messages were sent (the server answered 202).

        Raises:
            ValueError: for an empty batch, or one over the server's limit.
            TypeError: for an item that is not a :class:`~trio_realtime.BroadcastMessage`.
            RestUnauthorized, RestPayloadTooLarge, RestRateLimited, RestServerError, RestError:
                the server's refusals, with its words.
            PushTimeout: no answer within the client timeout.
            RealtimeConnectionError: the server could not be reached.
            SyncTimeout: ``timeout`` elapsed first.
        """
        checked = check_timeout(timeout)
        batch = list(messages)
        return self._portal.run(
            self._client.http_broadcast, batch, timeout=checked, what="http_broadcast"
        )

    # -- closing --------------------------------------------------------------------------------

    def close(self) -> None:
        """Leave the joined channels, close the WebSocket with code 1000 and end the client's
        thread; returns once the thread has ended. Idempotent.

        Calls still waiting in other threads end as they would in the async API when the
        client closes (subscriptions end, pushes fail); later calls raise
        :class:`~trio_realtime.ConnectionClosed`.

        Raises:
            RealtimeError: the failure that ended the client in the background (for example
                :class:`~trio_realtime.ConnectionClosed` when the reconnect policy gave up),
                the first time the client is closed after it.
            RuntimeError: when called from the client's own thread.
        """
        failure = self._portal.close()
        if failure is not None:
            raise failure

    def __enter__(self) -> RealtimeClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        failure = self._portal.close()
        if failure is not None and exc is None:
            raise failure


def connect(
    url: str,
    *,
    apikey: str | None = None,
    access_token: str | TokenSource | BlockingTokenSource | None = None,
    vsn: str = DEFAULT_VSN,
    heartbeat_interval: float | None = 25.0,
    timeout: float = 10.0,
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
) -> RealtimeClient:
    """Connect to Supabase Realtime from blocking code; returns once the connection is open.

    It starts one (non-daemon) thread running ``trio.run`` with
    :func:`trio_realtime.open_realtime` inside, with these same options, and returns a client
    whose methods call the async ones in that thread. Leaving ``with connect(...) as client:``
    (or :meth:`RealtimeClient.close`) closes the connection and ends the thread. A client opened
    in the main thread and never closed is closed when the main thread ends, so that it does
    not keep the interpreter alive.

    Args:
        url: The project URL, a socket URL or a full ``.../websocket`` URL; its ``apikey``,
            ``vsn`` and ``log_level`` query parameters are used when the keywords are not given.
        apikey: The project's API key. Required, here or in the URL.
        access_token: A user JWT; or a function returning one, called before the first join,
            before every reconnect, by a join when the token has expired, and while a channel
            is joined after every heartbeat and 30 s before the token's ``exp`` (one call at a
            time). A plain function runs in a worker thread; an ``async def`` function runs
            in the client's trio thread.
        vsn: ``"1.0.0"`` or ``"2.0.0"``; by default the URL's ``vsn``, else ``"1.0.0"``.
        heartbeat_interval: Seconds between heartbeats; ``None`` disables them.
        timeout: Seconds to wait for join, leave and acknowledged push replies.
        reconnect: The reconnect policy (attempt number → seconds, or ``None`` to give up);
            ``None`` disables reconnecting.
        rejoin: The policy for rejoining a channel after a server error.
        rejoin_rate: Rejoins per second after a reconnect (the first ``rejoin_rate`` at
            once); ``None`` rejoins every channel at once.
        transport: ``"websockets"`` (default), ``"trio-websocket"`` or a transport factory.
        ssl_context: The TLS context for ``wss``; by default certificates are verified.
        log_level: Sent to the server as ``log_level``.
        max_message_size: The largest incoming message accepted.
        close_timeout: Bound on the graceful part of closing.
        connect_timeout: Bound on opening a connection.
        outgoing_buffer: Frames queued for the writer before senders wait.
        http_transport: The httpx transport for REST sending (``http_send``,
            ``http_broadcast``); by default httpx's own, to the project URL.
        token_timeout: Bound in seconds on one call of the ``access_token`` function; past it
            the call counts as failed (:class:`trio_realtime.TokenError`).

    Raises:
        ValueError: for a missing apikey, an unsupported vsn, a bad URL, or a keyword that
            contradicts the URL's query.
        TypeError: for an ``access_token`` that is neither a string nor a callable.
        RealtimeConnectionError: when the first connection fails.
    """
    source = token_source(access_token)

    def opener() -> AbstractAsyncContextManager[AsyncClient]:
        return open_realtime(
            url,
            apikey=apikey,
            access_token=source,
            vsn=vsn,
            heartbeat_interval=heartbeat_interval,
            timeout=timeout,
            reconnect=reconnect,
            rejoin=rejoin,
            rejoin_rate=rejoin_rate,
            transport=transport,
            ssl_context=ssl_context,
            log_level=log_level,
            max_message_size=max_message_size,
            close_timeout=close_timeout,
            connect_timeout=connect_timeout,
            outgoing_buffer=outgoing_buffer,
            http_transport=http_transport,
            token_timeout=token_timeout,
        )

    portal: Portal[AsyncClient] = Portal(
        opener,
        name="trio_realtime.sync",
        watch_main_thread=threading.current_thread() is threading.main_thread(),
    )
    return RealtimeClient(portal, portal.open())
