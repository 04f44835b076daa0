"""A transport built on trio-websocket (``transport="trio-websocket"``).

trio-websocket runs its own reader task, which needs a nursery that lives as long as the
connection and which raises a rejected handshake from inside that task. So the factory starts
one task in the runtime's connection nursery: it opens an inner nursery, connects, reports the
connection with ``task_status.started``, and maps every failure before that point to a
library exception, which ``nursery.start`` hands to the caller.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence

import orjson
import trio
import trio_websocket

from ._exceptions import ConnectionClosed, RealtimeConnectionError
from ._transport import (
    CLOSE_ABNORMAL,
    CLOSE_NORMAL,
    Message,
    OutgoingMessage,
    Transport,
    TransportOptions,
)
from ._url import Endpoint, redact

_QUEUE_SIZE = 1024


def _closed(exc: trio_websocket.ConnectionClosed) -> ConnectionClosed:
    reason = exc.reason
    if reason is None:
        return ConnectionClosed(CLOSE_ABNORMAL, "")
    return ConnectionClosed(reason.code, reason.reason or "")


class TrioWebSocketTransport(Transport):
    """A :class:`Transport` over a ``trio_websocket.WebSocketConnection``."""

    def __init__(self, connection: trio_websocket.WebSocketConnection) -> None:
        self._ws = connection
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
        await self._ws.aclose(code, reason or None)

    async def abort(self) -> None:
        self._aborted = True
        # trio-websocket has no public abort; closing its stream drops the TCP connection
        # without a close frame, and its reader task then ends the connection as 1006.
        await trio.aclose_forcefully(self._ws._stream)


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


def _map_failure(endpoint: Endpoint, exc: BaseException) -> BaseException:
    where = f"{endpoint.host}:{endpoint.port}"
    if isinstance(exc, trio_websocket.ConnectionRejected):
        return _refusal(endpoint, exc)
    if isinstance(exc, trio.BrokenResourceError) and isinstance(exc.__cause__, ssl.SSLError):
        cause = exc.__cause__
        text = str(getattr(cause, "verify_message", "") or cause)
        return RealtimeConnectionError(f"TLS handshake with {where} failed: {text}")
    if isinstance(exc, OSError | trio.BrokenResourceError | trio_websocket.HandshakeError):
        text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return RealtimeConnectionError(f"cannot connect to {where}: {text}")
    if isinstance(exc, trio_websocket.ConnectionClosed):
        return RealtimeConnectionError(f"connection to {where} closed during the handshake")
    return exc


async def connect_trio_websocket(
    endpoint: Endpoint, options: TransportOptions, nursery: trio.Nursery
) -> TrioWebSocketTransport:
    """Open a trio-websocket connection; the ``"trio-websocket"`` transport factory.

    Raises:
        RealtimeConnectionError: for a refused connection, a TLS failure or an HTTP error at the
            upgrade.
    """
    transport: TrioWebSocketTransport = await nursery.start(_run_connection, endpoint, options)
    return transport


async def _run_connection(
    endpoint: Endpoint,
    options: TransportOptions,
    *,
    task_status: trio.TaskStatus[TrioWebSocketTransport] = trio.TASK_STATUS_IGNORED,
) -> None:
    use_ssl: bool | ssl.SSLContext = False
    if endpoint.secure:
        use_ssl = options.ssl_context or ssl.create_default_context()
    started = False
    try:
        async with trio.open_nursery() as inner:
            connection = await trio_websocket.connect_websocket(
                inner,
                endpoint.host,
                endpoint.port,
                endpoint.resource,
                use_ssl=use_ssl,
                message_queue_size=_QUEUE_SIZE,
                max_message_size=options.max_message_size,
                extra_headers=[(b"User-Agent", b"trio_realtime/0.1.0")],
            )
            task_status.started(TrioWebSocketTransport(connection))
            started = True
    except BaseExceptionGroup as group:
        if started:
            raise
        for exc in _leaves(group):
            mapped = _map_failure(endpoint, exc)
            if mapped is not exc:
                raise mapped from None
        raise
    except (OSError, trio.BrokenResourceError, trio_websocket.HandshakeError) as exc:
        if started:
            raise
        raise _map_failure(endpoint, exc) from None


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    leaves: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            leaves.extend(_leaves(exc))
        else:
            leaves.append(exc)
    return leaves
