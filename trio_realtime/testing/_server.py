"""A local server that behaves like Supabase Realtime on the wire, with fault injection.

Theory of operation
-------------------
:func:`serve_realtime` opens TCP listeners, then one nursery that owns everything the server
runs, and yields a :class:`RealtimeServer`. Connections arrive two ways and are served the same:

* over TCP: ``trio.serve_listeners`` hands each stream to :meth:`RealtimeServer._handle_stream`,
  which wraps it in ``trio.SSLStream`` when the server has an ``ssl_context`` (``wss``), performs
  the HTTP upgrade with the shared ``server_handshake`` (websockets' sans-I/O
  ``ServerProtocol``) and gets a ``SansIOWebSocket``;
* in memory: :meth:`RealtimeServer.memory_transport` is a ``TransportFactory``. It runs the same
  upgrade checks on the endpoint's path and query, then serves the server end of a
  ``memory_transport_pair`` and returns the client end. Tests under trio's ``MockClock`` use it.

Either way the upgrade is checked exactly as the real server checks it (path, then ``vsn``, then
the apikey; PROTOCOL.md section 1), and each accepted connection becomes a
``ServerConnection``: a reader task, a writer task and a bounded send buffer (see
``_server_connection`` for the buffer policy: a client that lets ``send_buffer`` frames pile up is
dropped). State shared by connections (rooms, presence, postgres bindings, counters and the fault
knobs) lives in one ``Hub`` (``_state``); frames are built and parsed only by the shared
serializer (``trio_realtime._serializer``).

Fault injection acts on that state directly: a method call queues frames or control items in the
affected connections' send buffers, so a fault keeps its place in line with everything already
sent, and the connection's single writer stays the only task writing to it.
"""

from __future__ import annotations

import copy
import logging
import re
import secrets
import ssl
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson
import trio
from websockets.http11 import Request

from .._exceptions import RealtimeConnectionError
from .._frames import BROADCAST, JSONValue, Payload, realtime_topic, sub_topic
from .._serializer import VSN_1, VSN_2
from .._transport import Transport, TransportOptions, memory_transport_pair
from .._url import Endpoint, redact_url
from .._ws_sansio import _refusal, server_handshake
from ._jwt import TokenError, token_check_for, verify_token
from ._limits import RateLimits
from ._postgres_changes import build_change
from ._postgres_subscribe import DATABASE_TIMEOUTS, add_failures
from ._replay import StoredMessage, realtime_send
from ._rest import (
    DEFAULT_EVENTS_PER_SECOND,
    ChannelAuthorization,
    MemoryHTTPTransport,
    RestEndpoints,
    is_rest_request,
    prefixed,
    serve_http,
)
from ._server_connection import ServerConnection
from ._state import Hub, ServerConfig, TokenCheck

if TYPE_CHECKING:
    from ._database import Database

logger = logging.getLogger("trio_realtime.testing")

DEFAULT_SEND_BUFFER = 10_000
"""Frames a connection's send buffer holds before the client is dropped as too slow."""

HANDSHAKE_TIMEOUT = 10.0
"""Seconds a TCP client has to complete the HTTP upgrade."""

CLOSED_HISTORY = 1000
"""Closed connections whose receive counters ``statistics()`` still reports."""

WEBSOCKET_PATHS = frozenset({"/socket/websocket", "/realtime/v1/websocket"})
_SEMVER = re.compile(r"(\d+)\.(\d+)\.(\d+)(?:\+[0-9A-Za-z.-]+)?")
_NOT_FOUND = orjson.dumps({"errors": {"detail": "Not Found"}})


@dataclass(frozen=True, slots=True)
class ServerStatistics:
    """A snapshot of the server's counters; see :meth:`RealtimeServer.statistics`.

    Attributes:
        connections_accepted: WebSocket connections accepted since the server started.
        connections_open: Connections open now.
        connections_refused: Upgrade requests refused with an HTTP error.
        channels_joined: Channels joined now, over all connections.
        joins: Joins accepted since the start.
        joins_refused: Joins refused (error reply) since the start.
        frames_received: Well-formed frames received, over all connections.
        frames_received_by_connection: Connection id -> well-formed frames received, for open
            connections and the most recently closed ones.
        frames_received_by_topic: Topic -> well-formed frames received on it.
        frames_sent: Frames handed to transports.
        malformed_frames: Frames that could not be parsed (logged and ignored).
        dropped_slow_connections: Connections dropped because their send buffer overflowed.
    """

    connections_accepted: int
    connections_open: int
    connections_refused: int
    channels_joined: int
    joins: int
    joins_refused: int
    frames_received: int
    frames_received_by_connection: Mapping[int, int]
    frames_received_by_topic: Mapping[str, int]
    frames_sent: int
    malformed_frames: int
    dropped_slow_connections: int


@dataclass(frozen=True, slots=True)
class _Upgrade:
    vsn: str
    token: str | None


@dataclass(frozen=True, slots=True)
class _Refusal:
    status: int
    body: bytes
    delayed: bool


def _negotiate_vsn(value: str | None) -> str | None:
    """Return the serializer for ``vsn`` as Phoenix picks it (``~> 1.0.0``/``~> 2.0.0``)."""
    if value is None:
        return VSN_1
    match = _SEMVER.fullmatch(value)
    if match is None:
        return None
    version = (match.group(1), match.group(2))
    if version == ("1", "0"):
        return VSN_1
    if version == ("2", "0"):
        return VSN_2
    return None


def _unauthorized(message: str) -> _Refusal:
    return _Refusal(401, orjson.dumps({"error": message}), delayed=True)


def check_upgrade(
    resource: str,
    header_apikey: str | None,
    required_apikey: str | None,
    jwt_secret: str | None = None,
) -> _Upgrade | _Refusal:
    """Decide an upgrade request as the real server does (PROTOCOL.md sections 1.1 to 1.5).

    Args:
        resource: The request target, path plus query.
        header_apikey: The ``x-api-key`` header, which wins over the ``apikey`` parameter.
        required_apikey: The key the server requires, or ``None`` to accept any.
        jwt_secret: When set, the key must be a JWT signed with it, with ``role`` and ``exp``.
    """
    parts = urlsplit(resource)
    if parts.path.rstrip("/") not in WEBSOCKET_PATHS:
        return _Refusal(404, _NOT_FOUND, delayed=False)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    vsn = _negotiate_vsn(query.get("vsn"))
    if vsn is None:
        return _Refusal(403, b"", delayed=False)
    token = header_apikey if header_apikey is not None else query.get("apikey")
    if required_apikey is not None:
        if not token:
            return _unauthorized("API key is missing")
        if not secrets.compare_digest(token.encode(), required_apikey.encode()):
            if token.count(".") != 2:
                return _unauthorized("The token provided is not a valid JWT")
            return _unauthorized("Failed to validate JWT signature")
    if jwt_secret is not None:
        if not token:
            return _unauthorized("API key is missing")
        try:
            verify_token(token, jwt_secret)
        except TokenError as exc:
            return _unauthorized(exc.connect_message)
    return _Upgrade(vsn, token or None)


class RealtimeServer:
    """A running local Realtime server; create it with :func:`serve_realtime`.

    Fault-injection methods take ``connection=`` to act on one connection instead of all.
    """

    def __init__(
        self,
        config: ServerConfig,
        nursery: trio.Nursery,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        hub: Hub | None = None,
        database: Database | None = None,
    ) -> None:
        self._database = database
        self._config = config
        self._ssl_context = ssl_context
        self._hub = Hub(config) if hub is None else hub
        self._rest = RestEndpoints(self._hub, max_events_per_second=config.max_events_per_second)
        self._http_transport = MemoryHTTPTransport(self._rest)
        self._nursery = nursery
        self._host = host
        self._port = port
        self._connections: dict[int, ServerConnection] = {}
        self._closed_frames: OrderedDict[int, int] = OrderedDict()
        self._last_id = 0
        self._refused = 0
        self._stopped = False

    def __repr__(self) -> str:
        return f"<RealtimeServer {self.url} connections={len(self._connections)}>"

    @property
    def database(self) -> Database | None:
        """The database postgres_changes come from (``database_url=``), else ``None``."""
        return self._database

    # -- addresses ------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        return self._port

    @property
    def url(self) -> str:
        """The project URL, ``http://host:port`` (``https://`` with TLS); clients map it to
        ``/realtime/v1/websocket``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{host}:{self._port}"

    def websocket_url(
        self,
        vsn: str = VSN_1,
        apikey: str | None = None,
        *,
        log_level: str | None = None,
        path: str = "/realtime/v1/websocket",
    ) -> str:
        """Return the full ``ws://`` (``wss://`` with TLS) URL of the server.

        Args:
            vsn: The ``vsn`` query parameter.
            apikey: The ``apikey`` query parameter; defaults to the server's required apikey,
                and is left out when neither is set.
            log_level: The ``log_level`` query parameter, when given.
            path: ``/realtime/v1/websocket`` (hosted form) or ``/socket/websocket``.
        """
        key = apikey if apikey is not None else self._config.apikey
        query: list[tuple[str, str]] = []
        if key is not None:
            query.append(("apikey", key))
        query.append(("vsn", vsn))
        if log_level is not None:
            query.append(("log_level", log_level))
        base = "ws" + self.url.removeprefix("http")
        return f"{base}{path}?{urlencode(query)}"

    def wall_time(self) -> float:
        """The Unix time as the server sees it, which tokens' ``exp`` is compared with (see
        ``wall_clock`` in :func:`serve_realtime`)."""
        return self._config.wall_clock()

    # -- connections ----------------------------------------------------------------------------

    @property
    def http_transport(self) -> MemoryHTTPTransport:
        """An httpx transport to the REST endpoints, in memory (no socket, MockClock friendly).

        Pass it as ``open_realtime(..., http_transport=server.http_transport)``, or to an
        ``httpx.AsyncClient``.
        """
        return self._http_transport

    @property
    def rest_requests(self) -> int:
        """REST requests handled so far (over TCP and in memory)."""
        return self._rest.requests

    @property
    def connections(self) -> list[ServerConnection]:
        """The open connections, oldest first."""
        return [connection for connection in self._connections.values() if not connection.closed]

    @property
    def answer_heartbeats(self) -> bool:
        """Whether heartbeats are answered; set ``False`` to play a half-open server."""
        return self._hub.answer_heartbeats

    @answer_heartbeats.setter
    def answer_heartbeats(self, value: bool) -> None:
        self._hub.answer_heartbeats = value

    @property
    def reply_delay(self) -> float:
        """Seconds (trio time) every ``phx_reply`` is held back, with what is queued after it."""
        return self._hub.reply_delay

    @reply_delay.setter
    def reply_delay(self, value: float) -> None:
        if value < 0:
            raise ValueError("reply_delay must not be negative")
        self._hub.reply_delay = value

    def statistics(self) -> ServerStatistics:
        """Return a snapshot of the server's counters."""
        hub = self._hub
        by_connection = dict(self._closed_frames)
        for connection in self._connections.values():
            by_connection[connection.id] = connection.frames_received
        return ServerStatistics(
            connections_accepted=self._last_id,
            connections_open=len(self.connections),
            connections_refused=self._refused,
            channels_joined=sum(len(room) for room in hub.rooms.values()),
            joins=hub.joins,
            joins_refused=hub.joins_refused,
            frames_received=hub.frames_received,
            frames_received_by_connection=by_connection,
            frames_received_by_topic=dict(hub.frames_by_topic),
            frames_sent=hub.frames_sent,
            malformed_frames=hub.malformed_frames,
            dropped_slow_connections=hub.dropped_slow_connections,
        )

    def presence_state(self, topic: str, *, private: bool = False) -> dict[str, JSONValue]:
        """Return the ``presence_state`` payload a channel joining ``topic`` would get now."""
        room = self._hub.room(realtime_topic(topic), private)
        return copy.deepcopy(room.presence_state()) if room is not None else {}

    async def _wait_for(self, predicate: Callable[[], bool]) -> None:
        await trio.lowlevel.checkpoint()
        while not predicate():
            await self._hub.changed.park()

    async def wait_until_joined(self, topic: str, count: int = 1) -> None:
        """Wait until at least ``count`` channels are joined to ``topic`` (public or private).

        This is a checkpoint even when the condition already holds.
        """
        full = realtime_topic(topic)
        await self._wait_for(lambda: self._hub.joined_count(full) >= count)

    async def wait_until_connected(self, count: int = 1) -> None:
        """Wait until at least ``count`` connections are open."""
        await self._wait_for(lambda: len(self.connections) >= count)

    async def wait_flushed(self, *, max_pending: int = 0) -> None:
        """Wait until no open connection has more than ``max_pending`` frames waiting.

        Flood generators call this between bursts to pace themselves to their readers instead
        of overflowing the send buffers (which drops the slow connections).
        """
        for connection in self.connections:
            await connection.wait_flushed(max_pending)
        await trio.lowlevel.checkpoint()

    # -- server-originated messages -------------------------------------------------------------

    def broadcast_nowait(
        self,
        topic: str,
        event: str,
        payload: Payload,
        *,
        binary: bool = False,
        private: bool = False,
    ) -> int:
        """Like :meth:`broadcast`, without the checkpoint (for tight flood loops)."""
        room = self._hub.room(realtime_topic(topic), private)
        if room is None:
            return 0
        if binary or isinstance(payload, bytes):
            return room.fan_out_user_broadcast(
                {"event": event, "payload": payload, "type": BROADCAST}  # type: ignore[dict-item]
            )
        return room.fan_out(BROADCAST, {"event": event, "payload": payload, "type": BROADCAST})

    async def broadcast(
        self,
        topic: str,
        event: str,
        payload: Payload,
        *,
        binary: bool = False,
        private: bool = False,
    ) -> int:
        """Broadcast ``event`` to every channel joined to ``topic``, as REST broadcast does.

        V2 subscribers get binary kind 4 when ``binary`` is set or ``payload`` is bytes (raw
        encoding then), else a text ``broadcast``; V1 subscribers get the JSON form, and nothing
        for a bytes payload (PROTOCOL.md section 9.2).

        Returns:
            How many channels it was queued to.
        """
        delivered = self.broadcast_nowait(topic, event, payload, binary=binary, private=private)
        await trio.lowlevel.checkpoint()
        return delivered

    async def emit_postgres_change(
        self,
        schema: str,
        table: str,
        type: str,
        *,
        record: Mapping[str, JSONValue] | None = None,
        old_record: Mapping[str, JSONValue] | None = None,
        columns: Sequence[Mapping[str, JSONValue]] | None = None,
        commit_timestamp: str | datetime | None = None,
        errors: Sequence[str] | None = None,
        primary_key: Sequence[str] | None = None,
    ) -> int:
        """Deliver a row change to every channel with a matching postgres_changes binding.

        Bindings match by event (``*`` matches all), schema, table and filter; on DELETE the
        filter is evaluated against ``old_record`` (PROTOCOL.md section 7).

        Args:
            schema: The row's schema.
            table: The row's table.
            type: ``INSERT``, ``UPDATE`` or ``DELETE`` (any case).
            record: The new row (INSERT, UPDATE).
            old_record: The old row (UPDATE, DELETE).
            columns: ``[{"name": ..., "type": ...}]``; guessed from the values when omitted.
            commit_timestamp: A string sent as is, or a datetime; defaults to now.
            errors: The ``errors`` list, or ``None``.
            primary_key: The table's primary key columns, which a binding's ``select``
                always keeps; by default ``("id",)`` when the row has an ``id``.

        Returns:
            How many channels it was queued to.

        Raises:
            ValueError: for an unknown change type.
        """
        change = build_change(
            schema,
            table,
            type,
            record=record,
            old_record=old_record,
            columns=columns,
            commit_timestamp=commit_timestamp,
            errors=errors,
            primary_key=primary_key,
        )
        delivered = self._hub.emit_postgres_change(change)
        await trio.lowlevel.checkpoint()
        return delivered

    async def realtime_send(
        self,
        topic: str,
        event: str,
        payload: Mapping[str, JSONValue] | bytes,
        *,
        private: bool = True,
        id: str | None = None,
        inserted_at: datetime | None = None,
    ) -> str:
        """Do what ``realtime.send()`` does in the database: store a message and broadcast it.

        Subscribers get it with ``meta.id`` (V2: binary kind 4 with metadata ``{"id": ...}``;
        V1: text, nothing for bytes). Private messages are kept for replay: a private channel
        joining with ``replay_since`` gets them again, with ``meta.replayed`` (see
        ``_replay`` for the store's bounds).

        Args:
            topic: The topic, with or without ``realtime:``.
            event: The user event.
            payload: A JSON object, or bytes.
            private: Send to the private channel (``realtime.send``'s default is private).
            id: The message id (a fresh UUID by default).
            inserted_at: When it was stored (now by default); timezone-aware.

        Returns:
            The message id.
        """
        body: JSONValue | bytes = payload if isinstance(payload, bytes) else dict(payload)
        message_id, _ = realtime_send(
            self._hub,
            topic,
            event,
            body,
            private=private,
            message_id=id,
            inserted_at=inserted_at,
        )
        await trio.lowlevel.checkpoint()
        return message_id

    def stored_messages(self, topic: str) -> list[StoredMessage]:
        """The messages stored for ``topic`` (by :meth:`realtime_send`), oldest first."""
        return self._hub.messages.messages(sub_topic(realtime_topic(topic)))

    # -- fault injection ------------------------------------------------------------------------

    def _targets(self, connection: ServerConnection | None) -> list[ServerConnection]:
        if connection is None:
            return self.connections
        return [connection] if not connection.closed else []

    async def drop_connections(self, *, connection: ServerConnection | None = None) -> int:
        """Drop connections at once, with no close frame (a TCP drop; the client sees 1006).

        Returns once they are gone and their presences have left.
        """
        targets = self._targets(connection)
        for target in targets:
            target.kill()
        for target in targets:
            await target.wait_finished()
        await trio.lowlevel.checkpoint()
        return len(targets)

    async def close_connections(
        self, code: int, reason: str = "", *, connection: ServerConnection | None = None
    ) -> int:
        """Close connections with a close frame carrying ``code`` and ``reason``.

        The close frame goes out after the frames already queued for each connection.
        """
        targets = self._targets(connection)
        for target in targets:
            target.close_soon(code, reason)
        await trio.lowlevel.checkpoint()
        return len(targets)

    async def request_disconnect(self, *, connection: ServerConnection | None = None) -> int:
        """Send ``system`` "Server requested disconnect" on every joined channel, then close 1012.

        This is what the real server does when a tenant's settings change or a node drains.
        """
        targets = self._targets(connection)
        for target in targets:
            target.request_disconnect()
        await trio.lowlevel.checkpoint()
        return len(targets)

    async def send_raw(
        self, data: str | bytes, *, connection: ServerConnection | None = None
    ) -> int:
        """Send ``data`` verbatim (malformed allowed): ``str`` as text, ``bytes`` as binary."""
        targets = self._targets(connection)
        for target in targets:
            target.send_raw(data)
        await trio.lowlevel.checkpoint()
        return len(targets)

    async def push_error(self, topic: str, *, connection: ServerConnection | None = None) -> int:
        """Crash the channels on ``topic``: ``phx_error`` ``{"reason": "channel_crash"}``.

        The channels are gone server-side, as after a real crash; a client must rejoin.

        Returns:
            How many channels were affected.
        """
        full = realtime_topic(topic)
        count = 0
        for target in self._targets(connection):
            channel = target.remove_channel(full)
            if channel is not None:
                channel.push_close("phx_error", {"reason": "channel_crash"})
                count += 1
        await trio.lowlevel.checkpoint()
        return count

    async def push_close(self, topic: str, *, connection: ServerConnection | None = None) -> int:
        """Close the channels on ``topic`` from the server side with ``phx_close`` ``{}``."""
        full = realtime_topic(topic)
        count = 0
        for target in self._targets(connection):
            channel = target.remove_channel(full)
            if channel is not None:
                channel.push_close()
                count += 1
        await trio.lowlevel.checkpoint()
        return count

    async def system_close(
        self, topic: str, message: str, *, connection: ServerConnection | None = None
    ) -> int:
        """Close the channels on ``topic`` with a ``system`` error carrying ``message``.

        The client sees ``{"extension": "system", "status": "error", "message": message,
        "channel": <sub-topic>}`` then ``phx_close``, as for "Token has expired 3 seconds ago".
        """
        full = realtime_topic(topic)
        count = 0
        for target in self._targets(connection):
            channel = target.channel(full)
            if channel is not None:
                target.system_close(channel, message)
                count += 1
        await trio.lowlevel.checkpoint()
        return count

    def reject_joins(self, topic: str, reason: str, *, delay: float = 0.0) -> None:
        """Refuse every later join of ``topic``: error ``{"reason": reason}`` after ``delay`` s.

        The delay blocks the joining connection, as the real server's join back-off does.
        """
        if delay < 0:
            raise ValueError("delay must not be negative")
        self._hub.rejections[realtime_topic(topic)] = (reason, delay)

    def allow_joins(self, topic: str) -> None:
        """Undo :meth:`reject_joins` for ``topic``."""
        self._hub.rejections.pop(realtime_topic(topic), None)

    def fail_postgres_subscriptions(
        self, topic: str, count: int = 1, *, message: str = DATABASE_TIMEOUTS
    ) -> None:
        """Make the next ``count`` postgres_changes subscriptions on ``topic`` fail.

        Each failure sends ``system`` error ``message``. As on the real server, an error that
        is not a parameter error (the default, ``{:error, "Too many database timeouts"}``, is
        one) is retried 5 s later, and "Subscribed to PostgreSQL" follows the first attempt
        that succeeds; a parameter error ("Error parsing `filter` params: ...", "Unable to
        subscribe to changes with given parameters. ...") is final.

        Raises:
            ValueError: for a ``count`` below 1.
        """
        if count < 1:
            raise ValueError("count must be at least 1")
        add_failures(self._hub, realtime_topic(topic), count, message)

    # -- serving --------------------------------------------------------------------------------

    def _limit_upgrade(self, result: _Upgrade | _Refusal) -> _Upgrade | _Refusal:
        """After the token checks, the tenant's rate limits (``rate_limits``): HTTP 429."""
        limiter = self._hub.limiter
        if limiter is None or isinstance(result, _Refusal):
            return result
        message = limiter.connect_refusal(trio.current_time())
        if message is None:
            return result
        return _Refusal(429, orjson.dumps({"error": message}), delayed=True)

    async def _refuse(self, refusal: _Refusal, resource: str) -> None:
        self._refused += 1
        logger.info("refusing %s with HTTP %d", redact_url(resource), refusal.status)
        if refusal.delayed and self._config.connect_error_delay > 0:
            await trio.sleep(self._config.connect_error_delay)

    async def memory_transport(
        self, endpoint: Endpoint, options: TransportOptions, nursery: trio.Nursery
    ) -> Transport:
        """Connect in memory; a ``TransportFactory`` for the client's ``transport=`` option.

        Runs the upgrade checks on ``endpoint.resource``, then serves the server end of an
        in-memory pair like a socket and returns the client end. The incoming size cap of both
        ends is the smaller of the client's and the server's.

        Raises:
            RealtimeConnectionError: for a refused upgrade, with ``status_code`` and
                ``server_message`` as a socket client would get them; without a status when
                the server has stopped, as for a refused TCP connection.
        """
        del nursery  # the server's own nursery runs the connection
        self._refuse_if_stopped()
        result = self._limit_upgrade(
            check_upgrade(endpoint.resource, None, self._config.apikey, self._config.jwt_secret)
        )
        if isinstance(result, _Refusal):
            await self._refuse(result, endpoint.resource)
            raise _refusal(endpoint, result.status, result.body)
        self._refuse_if_stopped()
        size = min(options.max_message_size, self._config.max_message_size)
        client, server_end = memory_transport_pair(max_message_size=size)
        connection = self._register(result)
        try:
            await self._nursery.start(self._run, connection, server_end)
        except RuntimeError:  # the nursery closed meanwhile
            connection.abandon()
            self._unregister(connection)
            self._refuse_if_stopped(force=True)
        return client

    def _refuse_if_stopped(self, *, force: bool = False) -> None:
        """Fail a memory connection to a server that has stopped (or is stopping) as a TCP
        connection to a closed port fails: ``RealtimeConnectionError`` without a status.

        Raises:
            RealtimeConnectionError: when the server no longer accepts connections.
        """
        if force or self._stopped or self._nursery.cancel_scope.cancel_called:
            where = f"{self._host}:{self._port}"
            raise RealtimeConnectionError(
                f"cannot connect to {where}: Connection refused (the local server has stopped)"
            )

    async def _handle_stream(self, tcp: trio.SocketStream) -> None:
        accepted: list[ServerConnection] = []
        stream: trio.abc.Stream = tcp
        if self._ssl_context is not None:
            # The TLS handshake runs on the first read, inside server_handshake and its timeout;
            # a client that refuses the certificate is then just a failed upgrade.
            stream = trio.SSLStream(tcp, self._ssl_context, server_side=True, https_compatible=True)

        async def decide(request: Request) -> tuple[int, bytes] | None:
            result = self._limit_upgrade(
                check_upgrade(
                    request.path,
                    request.headers.get("x-api-key"),
                    self._config.apikey,
                    self._config.jwt_secret,
                )
            )
            if isinstance(result, _Refusal):
                await self._refuse(result, request.path)
                return result.status, result.body
            # Registered before the 101 response goes out, so a client that has connected can
            # rely on the server knowing it.
            accepted.append(self._register(result))
            return None

        handshake = None
        head = b""
        with trio.move_on_after(HANDSHAKE_TIMEOUT):
            try:
                head = bytes(await stream.receive_some())
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                head = b""
        if not head:
            await trio.aclose_forcefully(stream)
            return
        if is_rest_request(head):
            # A request other than GET is for the REST endpoints, which keep the connection
            # alive as long as the client uses it (serve_http has its own idle timeout).
            await serve_http(stream, head, self._rest)
            return
        with trio.move_on_after(HANDSHAKE_TIMEOUT):
            handshake = await server_handshake(
                prefixed(stream, head), decide, max_message_size=self._config.max_message_size
            )
        if handshake is not None:
            await self._run(accepted[0], handshake[0])
        elif accepted:
            accepted[0].abandon()
            self._unregister(accepted[0])

    def _register(self, upgrade: _Upgrade) -> ServerConnection:
        self._last_id += 1
        connection = ServerConnection(
            self._hub, connection_id=self._last_id, vsn=upgrade.vsn, token=upgrade.token
        )
        self._connections[connection.id] = connection
        self._hub.notify()
        logger.info("connection %d accepted (vsn %s)", connection.id, upgrade.vsn)
        return connection

    def _unregister(self, connection: ServerConnection) -> None:
        del self._connections[connection.id]
        self._closed_frames[connection.id] = connection.frames_received
        if len(self._closed_frames) > CLOSED_HISTORY:
            self._closed_frames.popitem(last=False)
        self._hub.notify()
        logger.info("connection %d closed (code %s)", connection.id, connection.close_code)

    async def _run(
        self,
        connection: ServerConnection,
        transport: Transport,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()
        try:
            await connection.run(transport)
        finally:
            self._unregister(connection)


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
            ``x-api-key`` header), else it is refused with HTTP 401 as in PROTOCOL.md 1.5.
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
            server = RealtimeServer(
                config,
                nursery,
                host,
                bound_port,
                ssl_context=ssl_context,
                hub=hub,
                database=database,
            )
            if database is not None:
                await nursery.start(database.run)
            nursery.start_soon(
                partial(
                    trio.serve_listeners, server._handle_stream, listeners, handler_nursery=nursery
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
                server._stopped = True
                nursery.cancel_scope.cancel()
    finally:
        for listener in listeners:
            await trio.aclose_forcefully(listener)
    if body_error is not None:
        raise body_error
