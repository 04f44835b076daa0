"""``serve_realtime``: check the options, open the database and the listeners, run the server.

:func:`serve_realtime` builds the server's configuration and shared state (a ``Hub``), opens
the database when ``database_url`` is given, then binds the TCP listeners and runs the server in
one nursery that owns everything it runs, yielding the :class:`RealtimeServer`.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING

import trio

from ._gate import Gate
from ._jwt import token_check_for
from ._limits import RateLimits
from ._rest import DEFAULT_EVENTS_PER_SECOND, ChannelAuthorization, RestEndpoints
from ._server import RealtimeServer
from ._state import Hub, ServerConfig, TokenCheck

if TYPE_CHECKING:
    from ._database import Database

logger = logging.getLogger("trio_realtime.testing")

DEFAULT_SEND_BUFFER = 10_000
"""Frames a connection's send buffer holds before the client is dropped as too slow."""


def _trio_wall_clock() -> Callable[[], float]:
    """The Unix time now, advanced from now on by trio's clock (virtual under MockClock)."""
    origin_wall, origin_trio = time.time(), trio.current_time()

    def wall_clock() -> float:
        return origin_wall + (trio.current_time() - origin_trio)

    return wall_clock


@asynccontextmanager
async def serve_realtime(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    apikey: str | None = None,
    token_check: TokenCheck | None = None,
    join_error_delay: float = 0.0,
    connect_error_delay: float = 0.0,
    max_channels_per_client: int = 100,
    max_message_size: int = 5_000_000,
    send_buffer: int = DEFAULT_SEND_BUFFER,
    idle_timeout: float | None = 60.0,
    record_frames: int = 1000,
    ssl_context: ssl.SSLContext | None = None,
    database_url: str | None = None,
    jwt_secret: str | None = None,
    database_tables: Sequence[str] = (),
    poll_interval: float = 0.1,
    authorize: ChannelAuthorization | None = None,
    max_events_per_second: int = DEFAULT_EVENTS_PER_SECOND,
    wall_clock: Callable[[], float] | None = None,
    rate_limits: RateLimits | None = None,
) -> AsyncIterator[RealtimeServer]:
    """Run a local Realtime server for the duration of the ``async with`` block.

    Args:
        host: The address to listen on (loopback by default).
        port: The TCP port; ``0`` picks a free one (see :attr:`RealtimeServer.port`).
        apikey: When set, an upgrade must carry this key (``apikey`` parameter or
            ``x-api-key`` header), else it is refused with HTTP 401 as the real server does.
        token_check: Validates channel tokens: returns ``None`` for a valid token, else an
            error message such as ``"Token has expired 3 seconds ago"``. It is applied to the
            token a join runs with (``user_token``, else ``access_token``, else the socket's
            apikey; ``sb_`` keys mean the socket's apikey), refusing the join with
            ``"InvalidJWTToken: <message>"``, and to ``access_token`` events, closing the
            channel with a ``system`` error carrying the message.
        join_error_delay: Seconds a refused join waits before its error reply (the real
            server's ``CHANNEL_ERROR_BACKOFF_MS`` is 5 s); the connection is blocked meanwhile.
        connect_error_delay: Seconds before a 401 upgrade refusal (the real server waits 2 s).
        max_channels_per_client: Joins beyond this many channels on one connection are refused
            with ``"ChannelRateLimitReached: Too many channels"``.
        max_message_size: The largest frame accepted from a client; a bigger one closes the
            connection with 1009.
        send_buffer: Frames queued per connection before that client is dropped as too slow.
        idle_timeout: Seconds without data from a client before the server closes the
            connection with 1000, as the real server does after 60 s; ``None`` disables it.
        record_frames: How many recent frames each connection keeps in ``received_frames``.
        ssl_context: A server-side TLS context (``ssl.Purpose.CLIENT_AUTH``, with a certificate
            chain loaded): connections over TCP then speak TLS, and :attr:`RealtimeServer.url`
            is ``https://``, so clients use ``wss``. The in-memory transport is unaffected.
        database_url: A PostgreSQL URL (``wal_level = logical``, wal2json installed, a user
            that may create replication slots). postgres_changes then come from the
            database's real writes to the tables of the ``supabase_realtime`` publication,
            each checked against the table's row level security under the subscriber's JWT
            claims; :meth:`RealtimeServer.emit_postgres_change` still works. Needs
            ``pip install 'trio-realtime[postgres]'``.
        jwt_secret: Verify tokens (the socket's apikey at connect, each channel's token at
            join and on ``access_token``) as HS256/384/512 JWTs signed with this secret, with
            the server's error strings; replaces ``token_check``.
        database_tables: Tables (``schema.table`` or ``table``) that must be in the
            publication; one that is not stops the server before it serves.
        poll_interval: Seconds between reads of the replication slot when it is idle.
        authorize: Private-channel access, in place of the RLS policies on
            ``realtime.messages``: called as ``authorize(sub_topic, token, action)`` with
            ``action`` ``"read"`` for a private join (refused with ``"Unauthorized: You do not
            have permissions to read from this Channel topic: <topic>"``) and ``"write"`` for a
            private broadcast (over the socket: dropped without an ack; REST single: 403; REST
            batch: skipped). ``None`` allows everything.
        max_events_per_second: The rate limit of the REST endpoints: messages accepted in the
            last second; past it they answer 429 with the server's messages and
            ``x-rate-limit`` headers.
        wall_clock: Returns the Unix time that tokens' ``exp`` is compared with. By default
            the wall clock when the server starts, advanced by trio's clock, so that under
            trio's ``MockClock`` tokens expire in virtual time. Any channel token that is a
            JWT with ``exp`` (verified or not) expires as on the real server: a join with it
            after ``exp`` is refused with ``"InvalidJWTToken: Token has expired N seconds
            ago"``, and a joined channel is checked every ``min(5 min, exp - now)`` and at
            ``exp`` gets ``system`` "Token has expired 0 seconds ago" and ``phx_close``; an
            ``access_token`` push replaces the token and its timer.
        rate_limits: The server's rate limits on joins, connected users, events and presence
            (:class:`RateLimits`; ``RateLimits.supabase()`` for the hosted defaults), with its
            error strings and close codes. ``None`` (the default) applies none of them.

    Raises:
        OSError: if the port cannot be bound.
        ValueError: for a non-positive ``send_buffer`` or a negative delay.
        DatabaseSetupError: when the database cannot serve postgres_changes (wal_level,
            wal2json, slot permission, a table not in the publication), before serving.
    """
    if send_buffer < 1 or max_message_size < 1:
        raise ValueError("send_buffer and max_message_size must be positive")
    if record_frames < 0:
        raise ValueError("record_frames must not be negative")
    if join_error_delay < 0 or connect_error_delay < 0:
        raise ValueError("delays must not be negative")
    if max_events_per_second < 1:
        raise ValueError("max_events_per_second must be positive")
    if wall_clock is None:
        wall_clock = _trio_wall_clock()
    if jwt_secret is not None:
        if not jwt_secret:
            raise ValueError("jwt_secret must not be empty")
        token_check = token_check_for(jwt_secret, wall_clock)
    config = ServerConfig(
        apikey=apikey,
        jwt_secret=jwt_secret,
        token_check=token_check,
        join_error_delay=join_error_delay,
        connect_error_delay=connect_error_delay,
        max_channels_per_client=max_channels_per_client,
        max_message_size=max_message_size,
        send_buffer=send_buffer,
        idle_timeout=idle_timeout,
        record_frames=record_frames,
        authorize=authorize,
        max_events_per_second=max_events_per_second,
        wall_clock=wall_clock,
        rate_limits=rate_limits,
    )
    async with AsyncExitStack() as stack:
        database: Database | None = None
        if database_url is not None:
            try:
                # psycopg is an optional dependency: imported only for a database.
                from ._database import open_database  # noqa: PLC0415
            except ImportError as exc:
                raise ImportError(
                    "a database-backed server needs psycopg 3: "
                    "pip install 'trio-realtime[postgres]'"
                ) from exc
            database = await stack.enter_async_context(
                open_database(
                    database_url,
                    hub := Hub(config),
                    tables=database_tables,
                    poll_interval=poll_interval,
                )
            )
            hub.database = database
        else:
            hub = Hub(config)
        async with _serve(host, port, config, hub, database, ssl_context=ssl_context) as server:
            yield server


@asynccontextmanager
async def _serve(
    host: str,
    port: int,
    config: ServerConfig,
    hub: Hub,
    database: Database | None,
    *,
    ssl_context: ssl.SSLContext | None,
) -> AsyncIterator[RealtimeServer]:
    listeners = await trio.open_tcp_listeners(port, host=host)
    if port == 0 and len(listeners) > 1:
        # Each address of the host (IPv4 and IPv6 "localhost") got its own random port; keep
        # one, so that the server has a single URL.
        for extra in listeners[1:]:
            await extra.aclose()
        del listeners[1:]
    bound_port: int = listeners[0].socket.getsockname()[1]
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            rest = RestEndpoints(hub, max_events_per_second=config.max_events_per_second)
            gate = Gate(
                config, hub, rest, nursery, host=host, port=bound_port, ssl_context=ssl_context
            )
            server = RealtimeServer(config, hub, gate, database=database)
            if database is not None:
                await nursery.start(database.run)
            nursery.start_soon(
                partial(
                    trio.serve_listeners, gate.handle_stream, listeners, handler_nursery=nursery
                )
            )
            logger.info("serving Realtime on %s", server.url)
            try:
                yield server
            except GeneratorExit:
                raise
            except BaseException as exc:
                # Re-raised below, outside the nursery, so the caller sees its own exception
                # rather than an ExceptionGroup.
                body_error = exc
            finally:
                gate.stopped = True
                nursery.cancel_scope.cancel()
    finally:
        for listener in listeners:
            await trio.aclose_forcefully(listener)
    if body_error is not None:
        raise body_error
