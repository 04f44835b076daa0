"""A WebSocket transport that drives the websockets package's sans-I/O protocol over trio.

Theory of operation
-------------------
``websockets.client.ClientProtocol`` (and ``ServerProtocol``) turn bytes into frames and frames
into bytes without doing any I/O. :class:`SansIOWebSocket` owns a trio stream and such a
protocol object. The task that receives reads a chunk from the stream, feeds it to the protocol
and hands back every complete message in that chunk at once, so a flood of small frames costs
one ``receive_some`` and one checkpoint per chunk rather than per message. Anything the protocol
wants to send in reaction (a pong, a close reply) is flushed right away under the send lock,
which the sending task holds while it writes.

This is the default transport; it is measured against trio-websocket in ``benchmarks/``. The
local server in ``trio_realtime.testing`` uses the same class with ``ServerProtocol``.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence

import orjson
import trio
from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.frames import Frame as WSFrame
from websockets.frames import Opcode
from websockets.http11 import Request, Response
from websockets.protocol import SEND_EOF, Protocol, State
from websockets.server import ServerProtocol
from websockets.typing import BytesLike
from websockets.uri import parse_uri

from ._exceptions import ConnectionClosed, RealtimeConnectionError
from ._transport import (
    CLOSE_ABNORMAL,
    CLOSE_INVALID_DATA,
    CLOSE_NORMAL,
    Message,
    OutgoingMessage,
    Transport,
    TransportOptions,
)
from ._url import Endpoint, redact

logger = logging.getLogger("trio_realtime.transport")

RECEIVE_SIZE = 256 * 1024
USER_AGENT = "trio_realtime/0.1.0"

_TEXT = Opcode.TEXT
_BINARY = Opcode.BINARY
_CONT = Opcode.CONT

_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class SansIOWebSocket(Transport):
    """A WebSocket connection: a trio stream plus a websockets sans-I/O protocol object.

    Args:
        stream: The connected (and, for ``wss``, TLS-wrapped) stream, after the handshake.
        protocol: The protocol object, in state OPEN.
        events: Events the protocol produced during the handshake read, after the handshake
            itself (frames that arrived in the same chunk as the HTTP response).
        close_timeout: How long :meth:`aclose` waits for the peer's close frame.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        protocol: Protocol,
        *,
        events: Sequence[object] = (),
        close_timeout: float = 2.0,
    ) -> None:
        self._stream = stream
        self._protocol = protocol
        self._events: Sequence[object] = events
        self._send_lock = trio.StrictFIFOLock()
        self._close_timeout = close_timeout
        self._fragments: list[bytes] = []
        self._fragment_binary = False
        self._released = False

    @property
    def closed(self) -> bool:
        return self._released or self._protocol.state is not State.OPEN

    def _close_error(self) -> ConnectionClosed:
        protocol = self._protocol
        if protocol.close_rcvd is not None:
            return ConnectionClosed(protocol.close_rcvd.code, protocol.close_rcvd.reason)
        if protocol.close_sent is not None:
            return ConnectionClosed(protocol.close_sent.code, protocol.close_sent.reason)
        return ConnectionClosed(CLOSE_ABNORMAL, "")

    async def _flush(self) -> None:
        chunks = self._protocol.data_to_send()
        if not chunks:
            return
        data = b"".join(chunks)
        async with self._send_lock:
            if data:
                await self._stream.send_all(data)
            if chunks[-1] == SEND_EOF:
                # The protocol asks to half-close: a server does after the closing handshake,
                # and the client waits for that EOF before it releases the connection.
                await self._send_eof()

    async def _send_eof(self) -> None:
        stream = self._stream
        if isinstance(stream, trio.abc.HalfCloseableStream):
            await stream.send_eof()
        else:
            await self._release()

    async def send_messages(self, messages: Sequence[OutgoingMessage]) -> None:
        protocol = self._protocol
        async with self._send_lock:
            if protocol.state is not State.OPEN or self._released:
                raise self._close_error()
            for data, binary in messages:
                if binary:
                    protocol.send_binary(data)
                else:
                    protocol.send_text(data)
            try:
                await self._stream.send_all(b"".join(protocol.data_to_send()))
            except _STREAM_ERRORS:
                raise ConnectionClosed(CLOSE_ABNORMAL, "connection lost while sending") from None

    def _take_messages(self) -> list[Message]:
        messages: list[Message] = []
        append = messages.append
        for event in self._events:
            if type(event) is not WSFrame:
                continue
            opcode = event.opcode
            if opcode is _TEXT or opcode is _BINARY:
                if event.fin:
                    if opcode is _BINARY:
                        append(bytes(event.data))
                    else:
                        self._append_text(messages, event.data)
                else:
                    self._fragments = [bytes(event.data)]
                    self._fragment_binary = opcode is _BINARY
            elif opcode is _CONT:
                self._fragments.append(bytes(event.data))
                if event.fin:
                    data = b"".join(self._fragments)
                    self._fragments = []
                    if self._fragment_binary:
                        append(data)
                    else:
                        self._append_text(messages, data)
        self._events = []
        return messages

    def _append_text(self, messages: list[Message], data: BytesLike) -> None:
        try:
            messages.append(str(data, "utf-8"))
        except UnicodeDecodeError:
            if self._protocol.state is State.OPEN:
                self._protocol.fail(CLOSE_INVALID_DATA, "invalid UTF-8 in a text message")

    async def receive_messages(self) -> list[Message]:
        protocol = self._protocol
        if self._events:
            messages = self._take_messages()
            if messages:
                await trio.lowlevel.checkpoint()
                return messages
        while True:
            if self._released or protocol.state is State.CLOSED:
                await trio.lowlevel.checkpoint()
                raise self._close_error()
            try:
                data = await self._stream.receive_some(RECEIVE_SIZE)
            except _STREAM_ERRORS:
                data = b""
            if data:
                protocol.receive_data(data)
            else:
                protocol.receive_eof()
            self._events = protocol.events_received()
            messages = self._take_messages() if self._events else []
            if protocol.state is not State.OPEN:
                await self._finish_close()
            else:
                try:
                    await self._flush()
                except _STREAM_ERRORS:
                    protocol.receive_eof()
            if messages:
                return messages
            if protocol.state is not State.OPEN:
                raise self._close_error()

    async def _finish_close(self) -> None:
        """The peer closed (or the protocol failed): reply, wait for EOF briefly, release."""
        protocol = self._protocol
        with trio.move_on_after(self._close_timeout):
            try:
                await self._flush()
                while protocol.state is not State.CLOSED:
                    data = await self._stream.receive_some(RECEIVE_SIZE)
                    if data:
                        protocol.receive_data(data)
                    else:
                        protocol.receive_eof()
                    protocol.events_received()
                    await self._flush()
            except _STREAM_ERRORS:
                protocol.receive_eof()
        await self._release()

    async def _release(self) -> None:
        if not self._released:
            self._released = True
            await trio.aclose_forcefully(self._stream)

    async def aclose(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        protocol = self._protocol
        if self._released:
            await trio.lowlevel.checkpoint()
            return
        try:
            if protocol.state is State.OPEN:
                protocol.send_close(code, reason)
            await self._finish_close()
        except _STREAM_ERRORS:
            pass
        finally:
            await self._release()

    async def abort(self) -> None:
        await self._release()


def _quiet(protocol: Protocol) -> None:
    """Turn off websockets' own DEBUG logging for ``protocol``.

    With the ``websockets`` logger at DEBUG, the protocol logs the request line (whose query
    holds the apikey) and a preview of every frame (``access_token`` frames hold the token).
    Our own DEBUG logging shows frames with secrets redacted instead (SE-01).
    """
    protocol.debug = False


# ---------------------------------------------------------------------------------------------
# Client handshake.


def _refusal(endpoint: Endpoint, status: int, body: bytes) -> RealtimeConnectionError:
    server_message: str | None = None
    try:
        decoded = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        decoded = None
    if isinstance(decoded, dict):
        for key in ("error", "message"):
            value = decoded.get(key)
            if isinstance(value, str):
                server_message = value
                break
    detail = f": {server_message}" if server_message else ""
    message = f"server refused the WebSocket upgrade at {endpoint.redacted} with HTTP {status}"
    return RealtimeConnectionError(
        redact(message + detail, *endpoint.secrets),
        status_code=status,
        server_message=server_message,
    )


async def open_tcp_or_tls(endpoint: Endpoint, options: TransportOptions) -> trio.abc.Stream:
    """Open the TCP connection, wrapped in TLS for ``wss``; map failures to library errors.

    Raises:
        RealtimeConnectionError: when the host cannot be reached or TLS fails (an untrusted
            certificate among them).
    """
    where = f"{endpoint.host}:{endpoint.port}"
    try:
        tcp = await trio.open_tcp_stream(endpoint.host, endpoint.port)
    except OSError as exc:
        text = exc.strerror or str(exc) or type(exc).__name__
        raise RealtimeConnectionError(f"cannot connect to {where}: {text}") from None
    if not endpoint.secure:
        return tcp
    context = options.ssl_context or ssl.create_default_context()
    tls = trio.SSLStream(tcp, context, server_hostname=endpoint.host, https_compatible=True)
    try:
        await tls.do_handshake()
    except trio.BrokenResourceError as exc:
        await trio.aclose_forcefully(tcp)
        cause = exc.__cause__
        text = str(getattr(cause, "verify_message", "") or cause or exc)
        raise RealtimeConnectionError(f"TLS handshake with {where} failed: {text}") from None
    except BaseException:
        await trio.aclose_forcefully(tcp)
        raise
    return tls


async def connect_sansio(
    endpoint: Endpoint, options: TransportOptions, nursery: trio.Nursery
) -> SansIOWebSocket:
    """Open a :class:`SansIOWebSocket` to ``endpoint``; the default transport factory.

    Raises:
        RealtimeConnectionError: for a refused connection, a TLS failure or an HTTP error at the
            upgrade (with the status and the server's ``error`` text).
    """
    stream = await open_tcp_or_tls(endpoint, options)
    try:
        protocol = ClientProtocol(parse_uri(endpoint.url), max_size=options.max_message_size)
        _quiet(protocol)
        request = protocol.connect()
        if "User-Agent" in request.headers:  # websockets' sans-I/O connect() may not set one
            del request.headers["User-Agent"]
        request.headers["User-Agent"] = USER_AGENT
        protocol.send_request(request)
        await stream.send_all(b"".join(protocol.data_to_send()))
        events: list[object] = []
        while not events:
            try:
                data = await stream.receive_some(RECEIVE_SIZE)
            except _STREAM_ERRORS:
                data = b""
            if data:
                protocol.receive_data(data)
            else:
                protocol.receive_eof()
            events = list(protocol.events_received())
            if not data and not events:
                raise RealtimeConnectionError(
                    f"connection to {endpoint.redacted} closed during the WebSocket handshake"
                )
        response = events[0]
        if protocol.handshake_exc is not None or protocol.state is not State.OPEN:
            exc = protocol.handshake_exc
            if isinstance(exc, InvalidStatus):
                raise _refusal(endpoint, exc.response.status_code, bytes(exc.response.body or b""))
            if isinstance(response, Response) and response.status_code != 101:
                raise _refusal(endpoint, response.status_code, bytes(response.body or b""))
            raise RealtimeConnectionError(
                f"WebSocket handshake with {endpoint.redacted} failed: {exc}"
            )
        return SansIOWebSocket(
            stream, protocol, events=events[1:], close_timeout=options.close_timeout
        )
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


# ---------------------------------------------------------------------------------------------
# Server handshake (used by the local server).

HandshakeDecision = Callable[[Request], Awaitable[tuple[int, bytes] | None]]
"""Given the upgrade request, return ``None`` to accept, or ``(status, JSON body)`` to refuse."""


async def server_handshake(
    stream: trio.abc.Stream,
    decide: HandshakeDecision,
    *,
    max_message_size: int,
    close_timeout: float = 2.0,
) -> tuple[SansIOWebSocket, Request] | None:
    """Perform the server side of the upgrade on ``stream``.

    Returns:
        The open connection and the request, or ``None`` when the request was refused or was
        not a valid upgrade (the HTTP response has been sent and the stream closed then).
    """
    protocol = ServerProtocol(max_size=max_message_size)
    _quiet(protocol)
    request: Request | None = None
    try:
        while request is None:
            data = await stream.receive_some(RECEIVE_SIZE)
            if not data:
                await trio.aclose_forcefully(stream)
                return None
            protocol.receive_data(data)
            for event in protocol.events_received():
                if isinstance(event, Request):
                    request = event
        refusal = await decide(request)
        if refusal is None:
            response = protocol.accept(request)
        else:
            status, body = refusal
            rejected = protocol.reject(status, "")
            headers = Headers(
                [
                    (name, value)
                    for name, value in rejected.headers.raw_items()
                    if name.lower() not in ("content-type", "content-length")
                ]
            )
            headers["Content-Type"] = "application/json; charset=utf-8"
            headers["Content-Length"] = str(len(body))
            response = Response(rejected.status_code, rejected.reason_phrase, headers, body)
        protocol.send_response(response)
        await stream.send_all(b"".join(protocol.data_to_send()))
    except _STREAM_ERRORS:
        await trio.aclose_forcefully(stream)
        return None
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    if protocol.state is not State.OPEN:
        await trio.aclose_forcefully(stream)
        return None
    events = protocol.events_received()
    return SansIOWebSocket(stream, protocol, events=events, close_timeout=close_timeout), request
