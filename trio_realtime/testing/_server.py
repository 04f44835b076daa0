"""The running local server's handle: addresses, counters, waits, server messages and faults.

Theory of operation
-------------------
:func:`~trio_realtime.testing.serve_realtime` (``_serve``) opens TCP listeners, then one nursery
that owns everything the server runs, and yields a :class:`RealtimeServer`. Connections arrive
two ways and are served the same, by the server's ``Gate`` (``_gate``):

* over TCP: ``trio.serve_listeners`` hands each stream to the gate, which wraps it in
  ``trio.SSLStream`` when the server has an ``ssl_context`` (``wss``), performs the HTTP upgrade
  with the shared ``server_handshake`` (websockets' sans-I/O ``ServerProtocol``) and gets a
  ``SansIOWebSocket``;
* in memory: :meth:`RealtimeServer.memory_transport` is a ``TransportFactory``. It runs the same
  upgrade checks on the endpoint's path and query, then serves the server end of a
  ``memory_transport_pair`` and returns the client end. Tests under trio's ``MockClock`` use it.

Either way the upgrade is checked exactly as the real server checks it (``_upgrade``: path, then
``vsn``, then the apikey), and each accepted connection becomes a
``ServerConnection``: a reader task, a writer task and a bounded send buffer (see
``_server_connection`` for the buffer policy: a client that lets ``send_buffer`` frames pile up is
dropped). State shared by connections (rooms, presence, postgres bindings, counters and the fault
knobs) lives in one ``Hub`` (``_state``); frames are built and parsed only by the shared
serializer (``trio_realtime._serializer``).

Fault injection acts on that state directly: a method call queues frames or control items in the
affected connections' send buffers, so a fault keeps its place in line with everything already
sent, and the connection's single writer stays the only task writing to it.

The module is longer than the project's usual 500 lines because it is the public
:class:`RealtimeServer`, whose fault-injection methods are most of it; each is a few lines
acting on the shared state.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import trio

from .._frames import BROADCAST, JSONValue, Payload, realtime_topic, sub_topic
from .._serializer import VSN_1
from .._transport import Transport, TransportOptions
from .._url import Endpoint
from ._gate import Gate
from ._postgres_changes import build_change
from ._postgres_subscribe import DATABASE_TIMEOUTS, add_failures
from ._replay import StoredMessage, realtime_send
from ._rest import MemoryHTTPTransport
from ._server_connection import ServerConnection
from ._state import Hub, ServerConfig

if TYPE_CHECKING:
    from ._database import Database


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


class RealtimeServer:
    """A running local Realtime server; create it with :func:`serve_realtime`.

    Fault-injection methods take ``connection=`` to act on one connection instead of all.
    """

    def __init__(
        self, config: ServerConfig, hub: Hub, gate: Gate, *, database: Database | None = None
    ) -> None:
        self._database = database
        self._config = config
        self._hub = hub
        self._gate = gate
        self._rest = gate.rest
        self._http_transport = MemoryHTTPTransport(gate.rest)

    def __repr__(self) -> str:
        return f"<RealtimeServer {self.url} connections={len(self._gate.connections)}>"

    @property
    def database(self) -> Database | None:
        """The database postgres_changes come from (``database_url=``), else ``None``."""
        return self._database

    # -- addresses ------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return self._gate.host

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        return self._gate.port

    @property
    def url(self) -> str:
        """The project URL, ``http://host:port`` (``https://`` with TLS); clients map it to
        ``/realtime/v1/websocket``."""
        host = f"[{self._gate.host}]" if ":" in self._gate.host else self._gate.host
        scheme = "https" if self._gate.ssl_context is not None else "http"
        return f"{scheme}://{host}:{self._gate.port}"

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
        return [
            connection for connection in self._gate.connections.values() if not connection.closed
        ]

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
        by_connection = dict(self._gate.closed_frames)
        for connection in self._gate.connections.values():
            by_connection[connection.id] = connection.frames_received
        return ServerStatistics(
            connections_accepted=self._gate.accepted,
            connections_open=len(self.connections),
            connections_refused=self._gate.refused,
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
        for a bytes payload, which has no JSON form.

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
        filter is evaluated against ``old_record``.

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
        return await self._gate.memory_transport(endpoint, options, nursery)
