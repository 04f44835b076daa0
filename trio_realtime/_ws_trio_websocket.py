"""A transport built on trio-websocket (``transport="trio-websocket"``).

trio-websocket runs its own reader task, which needs a nursery that lives as long as the
connection and which raises a rejected handshake from inside that task. So the factory opens
the TCP (and TLS) stream itself, with the same helper as the default transport, then starts one
task in the transport nursery it is given: that task opens an inner nursery, wraps the stream
with trio-websocket's public ``wrap_client_stream`` (which runs the handshake and starts the
reader there), reports the connection with ``task_status.started``, and maps every failure
before that point to a library exception, which ``nursery.start`` hands to the caller. Owning
the stream means it is closed whatever the handshake does, and :meth:`abort` can drop it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import orjson
import trio
import trio_websocket

from ._exceptions import ConnectionClosed, RealtimeConnectionError, leaf_exceptions
from ._transport import (
    CLOSE_ABNORMAL,
    CLOSE_NORMAL,
    Message,
    OutgoingMessage,
    Transport,
    TransportOptions,
)
from ._url import Endpoint, redact
from ._ws_sansio import USER_AGENT, open_tcp_or_tls

_QUEUE_SIZE = 1024


def _closed(exc: trio_websocket.ConnectionClosed) -> ConnectionClosed:
    reason = exc.reason
    if reason is None:
        return ConnectionClosed(CLOSE_ABNORMAL, "")
    return ConnectionClosed(reason.code, reason.reason or "")


class TrioWebSocketTransport(Transport):
    """A :class:`Transport` over a ``trio_websocket.WebSocketConnection``.

    Args:
        connection: The open connection.
        stream: The stream it runs on (which this module opened).
        close_timeout: How long :meth:`aclose` waits for the peer's close frame before it
            drops the connection.
    """

    def __init__(
        self,
        connection: trio_websocket.WebSocketConnection,
        stream: trio.abc.Stream,
        *,
        close_timeout: float = 2.0,
    ) -> None:
        self._ws = connection
        self._stream = stream
        self._close_timeout = close_timeout
        self._aborted = False

    @property
    def closed(self) -> bool:
        return self._aborted or self._ws.closed is not None

    async def send_messages(self, messages: Sequence[OutgoingMessage]) -> None:
        try:
            for data, binary in messages:
                await self._ws.send_message(bytes(data) if binary else bytes(data).decode())
        except trio_websocket.ConnectionClosed as exc:
            raise _closed(exc) from None

    async def receive_messages(self) -> list[Message]:
        try:
            return [await self._ws.get_message()]
        except trio_websocket.ConnectionClosed as exc:
            raise _closed(exc) from None

    async def aclose(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        with trio.move_on_after(self._close_timeout):
            await self._ws.aclose(code, reason or None)
            return
        await self.abort()

    async def abort(self) -> None:
        self._aborted = True
        # Dropping the stream ends the connection without a close frame; trio-websocket's
        # reader then sees the stream closed and ends the connection as 1006.
        await trio.aclose_forcefully(self._stream)


def _refusal(endpoint: Endpoint, exc: trio_websocket.ConnectionRejected) -> RealtimeConnectionError:
    server_message: str | None = None
    try:
        decoded = orjson.loads(exc.body) if exc.body else None
    except orjson.JSONDecodeError:
        decoded = None
    if isinstance(decoded, dict):
        value = decoded.get("error", decoded.get("message"))
        if isinstance(value, str):
            server_message = value
    detail = f": {server_message}" if server_message else ""
    message = (
        f"server refused the WebSocket upgrade at {endpoint.redacted} "
        f"with HTTP {exc.status_code}{detail}"
    )
    return RealtimeConnectionError(
        redact(message, *endpoint.secrets),
        status_code=exc.status_code,
        server_message=server_message,
    )


async def connect_trio_websocket(
    endpoint: Endpoint, options: TransportOptions, nursery: trio.Nursery
) -> TrioWebSocketTransport:
    """Open a trio-websocket connection; the ``"trio-websocket"`` transport factory.

    Raises:
        RealtimeConnectionError: for a refused connection, a TLS failure or an HTTP error at the
            upgrade.
    """
    stream = await open_tcp_or_tls(endpoint, options)
    try:
        transport: TrioWebSocketTransport = await nursery.start(
            run_trio_websocket, stream, endpoint, options
        )
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return transport


async def run_trio_websocket(
    stream: trio.abc.Stream,
    endpoint: Endpoint,
    options: TransportOptions,
    *,
    task_status: trio.TaskStatus[TrioWebSocketTransport] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the WebSocket handshake on ``stream``, then the connection's reader, in one task.

    Raises:
        RealtimeConnectionError: for an HTTP error at the upgrade, or any other handshake
            failure (before ``task_status.started``).
    """
    port = endpoint.port
    host_header = endpoint.host if port in (80, 443) else f"{endpoint.host}:{port}"
    started = False
    try:
        async with trio.open_nursery() as inner:
            connection = await trio_websocket.wrap_client_stream(
                inner,
                # Annotated as a socket or TLS stream; it only needs a trio stream.
                cast(trio.SocketStream, stream),
                host_header,
                endpoint.resource,
                extra_headers=[(b"User-Agent", USER_AGENT.encode())],
                message_queue_size=_QUEUE_SIZE,
                max_message_size=options.max_message_size,
            )
            task_status.started(
                TrioWebSocketTransport(connection, stream, close_timeout=options.close_timeout)
            )
            started = True
    except BaseExceptionGroup as group:
        if started:
            raise
        for exc in leaf_exceptions(group):
            if isinstance(exc, trio_websocket.ConnectionRejected):
                raise _refusal(endpoint, exc) from None
            if isinstance(exc, trio_websocket.HandshakeError | trio_websocket.ConnectionClosed):
                raise RealtimeConnectionError(
                    f"WebSocket handshake with {endpoint.redacted} failed"
                ) from None
        raise
