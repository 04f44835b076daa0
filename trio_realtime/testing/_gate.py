"""Accepting the server's connections (TCP, TLS, REST or WebSocket, and in memory) and keeping
the registry of open ones.

A :class:`Gate` serves both ways a connection arrives: :meth:`Gate.handle_stream` takes each TCP
stream from ``trio.serve_listeners`` (wrapped in ``trio.SSLStream`` with an ``ssl_context``),
hands a REST request to ``serve_http`` and otherwise performs the HTTP upgrade with the shared
``server_handshake``; :meth:`Gate.memory_transport` runs the same upgrade checks on an in-memory
endpoint and serves the server end of a ``memory_transport_pair``. Each accepted connection is
registered before its 101 response goes out and runs in the server's nursery until it closes.
"""

from __future__ import annotations

import logging
import ssl
from collections import OrderedDict

import orjson
import trio
from websockets.http11 import Request

from .._exceptions import RealtimeConnectionError
from .._transport import Transport, TransportOptions, memory_transport_pair
from .._url import Endpoint, redact_url
from .._ws_sansio import _refusal, server_handshake
from ._rest import RestEndpoints, is_rest_request, prefixed, serve_http
from ._server_connection import ServerConnection
from ._state import Hub, ServerConfig
from ._upgrade import Refusal, Upgrade, check_upgrade

logger = logging.getLogger("trio_realtime.testing")

HANDSHAKE_TIMEOUT = 10.0
"""Seconds a TCP client has to complete the HTTP upgrade."""

CLOSED_HISTORY = 1000
"""Closed connections whose receive counters ``statistics()`` still reports."""


class Gate:
    """Accepts connections for one server and keeps the registry of open ones.

    Attributes:
        host: The address the server listens on.
        port: The TCP port the server listens on.
        ssl_context: The server-side TLS context, or ``None``.
        rest: The REST endpoints that TCP requests other than ``GET`` go to.
        connections: Connection id -> connection, for the connections not yet finished.
        closed_frames: Connection id -> frames received, for the most recently closed ones.
        accepted: Connections accepted so far (the last connection id).
        refused: Upgrade requests refused with an HTTP error.
        stopped: Set when the server stops; later memory connections are refused.
    """

    def __init__(
        self,
        config: ServerConfig,
        hub: Hub,
        rest: RestEndpoints,
        nursery: trio.Nursery,
        *,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._config = config
        self._hub = hub
        self._nursery = nursery
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.rest = rest
        self.connections: dict[int, ServerConnection] = {}
        self.closed_frames: OrderedDict[int, int] = OrderedDict()
        self.accepted = 0
        self.refused = 0
        self.stopped = False

    def _limit_upgrade(self, result: Upgrade | Refusal) -> Upgrade | Refusal:
        """After the token checks, the tenant's rate limits (``rate_limits``): HTTP 429."""
        limiter = self._hub.limiter
        if limiter is None or isinstance(result, Refusal):
            return result
        message = limiter.connect_refusal(trio.current_time())
        if message is None:
            return result
        return Refusal(429, orjson.dumps({"error": message}), delayed=True)

    async def _refuse(self, refusal: Refusal, resource: str) -> None:
        self.refused += 1
        logger.info("refusing %s with HTTP %d", redact_url(resource), refusal.status)
        if refusal.delayed and self._config.connect_error_delay > 0:
            await trio.sleep(self._config.connect_error_delay)

    async def memory_transport(
        self, endpoint: Endpoint, options: TransportOptions, nursery: trio.Nursery
    ) -> Transport:
        """What :meth:`RealtimeServer.memory_transport` does (see there).

        Raises:
            RealtimeConnectionError: for a refused upgrade, or a server that has stopped.
        """
        del nursery  # the server's own nursery runs the connection
        self._refuse_if_stopped()
        result = self._limit_upgrade(
            check_upgrade(endpoint.resource, None, self._config.apikey, self._config.jwt_secret)
        )
        if isinstance(result, Refusal):
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
        if force or self.stopped or self._nursery.cancel_scope.cancel_called:
            where = f"{self.host}:{self.port}"
            raise RealtimeConnectionError(
                f"cannot connect to {where}: Connection refused (the local server has stopped)"
            )

    async def handle_stream(self, tcp: trio.SocketStream) -> None:
        """Serve one TCP stream: a REST request, or a WebSocket upgrade and its connection."""
        accepted: list[ServerConnection] = []
        stream: trio.abc.Stream = tcp
        if self.ssl_context is not None:
            # The TLS handshake runs on the first read, inside server_handshake and its timeout;
            # a client that refuses the certificate is then just a failed upgrade.
            stream = trio.SSLStream(tcp, self.ssl_context, server_side=True, https_compatible=True)

        async def decide(request: Request) -> tuple[int, bytes] | None:
            result = self._limit_upgrade(
                check_upgrade(
                    request.path,
                    request.headers.get("x-api-key"),
                    self._config.apikey,
                    self._config.jwt_secret,
                )
            )
            if isinstance(result, Refusal):
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
            await serve_http(stream, head, self.rest)
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

    def _register(self, upgrade: Upgrade) -> ServerConnection:
        self.accepted += 1
        connection = ServerConnection(
            self._hub, connection_id=self.accepted, vsn=upgrade.vsn, token=upgrade.token
        )
        self.connections[connection.id] = connection
        self._hub.notify()
        logger.info("connection %d accepted (vsn %s)", connection.id, upgrade.vsn)
        return connection

    def _unregister(self, connection: ServerConnection) -> None:
        del self.connections[connection.id]
        self.closed_frames[connection.id] = connection.frames_received
        if len(self.closed_frames) > CLOSED_HISTORY:
            self.closed_frames.popitem(last=False)
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
