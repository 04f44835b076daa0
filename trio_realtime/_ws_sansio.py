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

The module is longer than the project's usual 500 lines because it is one transport: the client
and server handshakes, the frame splitter and the one-pass framing of the write path share the
connection object's buffers and its close handling.
"""

from __future__ import annotations

import logging
import os
import ssl
import struct
from collections.abc import Awaitable, Callable, Sequence
from socket import AF_INET, AF_INET6, AddressFamily, inet_pton

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
from websockets.uri import parse_uri

try:  # websockets' C helper, as websockets itself uses it; the pure Python one otherwise
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets ships wheels with the C extension
    from websockets.utils import apply_mask

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

# One read's worth of small broadcasts (about 150) fits well inside a subscription's default
# buffer of 4,096 items, even when the consumer gets no turn between two reads.
# SPEED: small enough that what one read delivers (two objects per broadcast, its item and its
# payload, alive until the consumer takes them) stays under the garbage collector's
# young-generation threshold of 700 allocations, so a consumer that keeps up takes the items
# before a collection can promote them. With 64 KiB reads (about 600 broadcasts) a flood of
# 30,000 ran 76 young, 7 middle and one full collection (9 ms of 84) where 16 KiB reads ran
# none but the setup's, and ``async for`` went from 337k to 367k msg/s (medians of 5,
# benchmarks/throughput.py on a 2-core Xeon); the extra reads cost less than that.
RECEIVE_SIZE = 16 * 1024
_MAX_RESPONSE_HEAD = 64 * 1024
USER_AGENT = "trio_realtime/0.1.0"

_TEXT = Opcode.TEXT
_BINARY = Opcode.BINARY
_CONT = Opcode.CONT

_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)

MASK_KEYS_BYTES = 4096
"""Masking keys are taken from ``os.urandom`` this many bytes (1,024 keys) at a time."""

_HEAD_16 = struct.Struct("!BBH").pack
_HEAD_64 = struct.Struct("!BBQ").pack


class _MaskKeys:
    """Masking keys from ``os.urandom``, 1,024 at a time, shared by every client connection.

    One pool per process rather than per connection: a connection's own 4 KiB of keys was
    an eighth of what an idle connection costs (``benchmarks/connections.py``). Each key is
    handed out once, so each is as unpredictable as RFC 6455 section 5.3 asks.
    """

    __slots__ = ("_keys", "_position")

    def __init__(self) -> None:
        self._keys = b""
        self._position = MASK_KEYS_BYTES

    def take(self) -> bytes:
        """The next unused key."""
        position = self._position
        if position >= MASK_KEYS_BYTES:
            self._keys = os.urandom(MASK_KEYS_BYTES)
            position = 0
        self._position = position + 4
        return self._keys[position : position + 4]


_MASK_KEYS = _MaskKeys()


class _ClientFramer:
    """Frames client data messages (masked, unfragmented, no extensions) in one pass.

    What websockets' ``send_text``/``send_binary`` then ``data_to_send`` do for such a frame,
    at a third of the cost: the frame object, its checks and a ``BytesIO`` per message, and an
    ``os.urandom`` call per masking key, were most of a small push's transport cost (see
    ``benchmarks/sends.py``). Keys come from the process's pool (:class:`_MaskKeys`).
    """

    __slots__ = ("_keys",)

    def __init__(self, keys: _MaskKeys | None = None) -> None:
        self._keys = _MASK_KEYS if keys is None else keys

    def frames(self, messages: Sequence[OutgoingMessage]) -> bytes:
        """The wire bytes of ``messages``, one final frame each."""
        parts: list[bytes] = []
        append = parts.append
        take = self._keys.take
        for data, binary in messages:
            first = 0x82 if binary else 0x81
            size = len(data)
            if size < 126:
                append(bytes((first, 0x80 | size)))
            elif size < 65536:
                append(_HEAD_16(first, 0xFE, size))
            else:
                append(_HEAD_64(first, 0xFF, size))
            key = take()
            append(key)
            append(apply_mask(data, key))
        return b"".join(parts)


_FRAMER = _ClientFramer()


class SansIOWebSocket(Transport):
    """A WebSocket connection: a trio stream plus a websockets sans-I/O protocol object.

    Args:
        stream: The connected (and, for ``wss``, TLS-wrapped) stream, after the handshake.
        protocol: The protocol object, in state OPEN.
        events: Events the protocol produced during the handshake read, after the handshake
            itself (frames that arrived in the same chunk as the HTTP response).
        pending: Bytes read after the handshake that the protocol has not seen (frames that
            arrived in the same chunk as the HTTP response).
        split_frames: Take simple data frames off the stream directly (client side only); see
            :meth:`_split`.
        max_message_size: The incoming size cap the protocol enforces (for :meth:`_split`).
        close_timeout: How long :meth:`aclose` waits for the peer's close frame.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        protocol: Protocol,
        *,
        events: Sequence[object] = (),
        pending: bytes = b"",
        split_frames: bool = False,
        max_message_size: int | None = None,
        close_timeout: float = 2.0,
    ) -> None:
        self._stream = stream
        self._protocol = protocol
        self._events: Sequence[object] = events
        # Made by the first write that has to wait (see _lock): most connections' writes
        # never do, and a lock with its parking lot is about 340 bytes.
        self._send_lock: trio.StrictFIFOLock | None = None
        self._close_timeout = close_timeout
        # Lists made when needed (a fragmented message, a frame cut short by a read): an
        # empty list is an object the garbage collector scans for the connection's life.
        self._fragments: list[bytes] | None = None
        self._fragment_binary = False
        self._released = False
        # A frame cut short by the read, as the reads' chunks (joined once, when complete).
        self._chunks: list[bytes] | None = [bytes(pending)] if pending else None
        self._buffered = len(pending)
        self._needed = 0  # bytes the chunks must hold before the splitter can go on
        self._split_frames = split_frames
        self._unsplit = split_frames and bool(pending)
        self._max_size = max_message_size if max_message_size is not None else 2**63
        self._fragmenting = False  # the protocol has seen the start of a fragmented message
        # A client without extensions frames its data messages itself (see _ClientFramer);
        # control frames (pong, close) still come from the protocol.
        self._framer = (
            _FRAMER if isinstance(protocol, ClientProtocol) and not protocol.extensions else None
        )
        # A client on a plain TCP socket may write without waiting (send_nowait).
        self._socket = (
            stream.socket
            if self._framer is not None
            and isinstance(stream, trio.SocketStream)
            and os.name == "posix"
            else None
        )

    def _lock(self) -> trio.StrictFIFOLock:
        lock = self._send_lock
        if lock is None:
            lock = self._send_lock = trio.StrictFIFOLock()
        return lock

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
        async with self._lock():
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
        async with self._lock():
            if protocol.state is not State.OPEN or self._released:
                raise self._close_error()
            framer = self._framer
            if framer is not None:
                pending = protocol.data_to_send()  # a pong the reader has not flushed yet
                data = framer.frames(messages)
                if pending:
                    data = b"".join([*pending, data])
            else:
                for data, binary in messages:
                    if binary:
                        protocol.send_binary(data)
                    else:
                        protocol.send_text(data)
                data = b"".join(protocol.data_to_send())
            try:
                await self._stream.send_all(data)
            except _STREAM_ERRORS:
                raise ConnectionClosed(CLOSE_ABNORMAL, "connection lost while sending") from None

    def can_send_nowait(self) -> bool:
        return (
            self._socket is not None
            and (self._send_lock is None or not self._send_lock.locked())
            and self._protocol.state is State.OPEN
            and not self._released
        )

    def send_nowait(self, messages: Sequence[OutgoingMessage]) -> bytes | None:
        """Write to the socket at once, without the lock's or trio's checkpoints.

        The socket is non-blocking (trio made it so), so a plain ``os.write`` either takes
        the frames (all of them, or a first part) or fails with ``BlockingIOError``. When part
        is left, the send lock is taken here, before anything can run, and :meth:`send_rest`
        releases it.
        """
        socket = self._socket
        if socket is None or not self.can_send_nowait():
            return None
        fd = socket.fileno()
        if fd < 0:
            return None
        assert self._framer is not None
        pending = self._protocol.data_to_send()  # a pong the reader has not flushed yet
        data = self._framer.frames(messages)
        if pending:
            data = b"".join([*pending, data])
        try:
            sent = os.write(fd, data)
        except BlockingIOError:
            sent = 0
        except OSError:
            raise ConnectionClosed(CLOSE_ABNORMAL, "connection lost while sending") from None
        if sent == len(data):
            return b""
        self._lock().acquire_nowait()
        return data[sent:]

    async def send_rest(self, data: bytes) -> None:
        try:
            await self._stream.send_all(data)
        except _STREAM_ERRORS:
            raise ConnectionClosed(CLOSE_ABNORMAL, "connection lost while sending") from None
        finally:
            self._lock().release()

    def _take_messages(self) -> list[Message]:
        messages: list[Message] = []
        append = messages.append
        protocol = self._protocol
        for event in self._events:
            if protocol.state is not State.OPEN:
                break  # invalid UTF-8 failed the connection: nothing after it is delivered
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
            elif opcode is _CONT and self._fragments is not None:
                # (websockets fails the connection on a continuation with nothing to continue)
                self._fragments.append(bytes(event.data))
                if event.fin:
                    data = b"".join(self._fragments)
                    self._fragments = None
                    if self._fragment_binary:
                        append(data)
                    else:
                        self._append_text(messages, data)
        self._events = ()
        return messages

    def _append_text(self, messages: list[Message], data: bytes | bytearray | memoryview) -> None:
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
        if self._unsplit:
            # Frames that arrived with the handshake response: split them before waiting.
            self._unsplit = False
            messages = self._split(b"")
            await self._flush()
            if messages:
                await trio.lowlevel.checkpoint()
                return messages
        while True:
            if self._released or protocol.state is State.CLOSED:
                await trio.lowlevel.checkpoint()
                raise self._close_error()
            try:
                data = await self._receive_some()
            except _STREAM_ERRORS:
                data = b""
            messages = self._receive_data(data)
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

    async def _receive_some(self) -> bytes | bytearray:
        """One read from the stream; on a plain TCP socket, straight from its descriptor.

        SPEED and memory: ``SocketStream.receive_some`` goes through a conflict detector and
        trio's socket wrapper, whose frames a reader waiting for data keeps suspended (about
        1.5 KiB per idle connection) and which cost a few microseconds per read. This reads
        as they do, with the same checkpoints: a schedule point after a read that did not
        wait, and trio's own wait for the socket to become readable.
        """
        socket = self._socket
        if socket is None:
            return await self._stream.receive_some(RECEIVE_SIZE)
        await trio.lowlevel.checkpoint_if_cancelled()
        fd = socket.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the socket was closed")
        try:
            data = os.read(fd, RECEIVE_SIZE)
        except BlockingIOError:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return data
        while True:
            await trio.lowlevel.wait_readable(socket)
            try:
                return os.read(fd, RECEIVE_SIZE)
            except BlockingIOError:  # pragma: no cover - readable, then not: read again
                continue

    def _receive_data(self, data: bytes | bytearray) -> list[Message]:
        """Take one read's bytes (``b""`` for end of stream); return the messages they end.

        No I/O: what the protocol wants to send in reaction waits in ``data_to_send()``.
        Once the connection fails (or closes), nothing more is delivered.
        """
        protocol = self._protocol
        if data and self._split_frames and protocol.state is State.OPEN:
            return self._split(data)
        if self._chunks:
            protocol.receive_data(b"".join(self._chunks))
            self._chunks = None
            self._buffered = 0
        if data:
            protocol.receive_data(data)
        else:
            protocol.receive_eof()
        self._events = protocol.events_received()
        return self._take_messages() if self._events else []

    def _split(self, data: bytes | bytearray) -> list[Message]:
        """Take the messages out of ``data``, parsing simple frames here and the rest in websockets.

        websockets parses frames one generator step at a time, which costs about 3 µs per small
        frame, as much as everything else the reader does. The frames a Realtime server sends
        almost all have the simplest form: final, unmasked, no reserved bits, text or binary,
        within the size cap. Those are cut out here directly. Every other frame is handed to
        the protocol object, so that websockets alone decides what is valid:

        * a masked or oversize frame fails on its header: the protocol gets the rest of the
          data and fails the connection (1002, 1009) at once;
        * any other frame (ping, close, fragments, reserved bits, reserved opcodes, control
          frames too long) is handed over whole, once all of it has arrived, so the protocol
          only ever sees complete frames and stays at a frame boundary; it answers pings, runs
          the closing handshake and fails the connection (1002) exactly as without this path.
          A frame the splitter passed on is never parsed here, whatever the read boundaries.

        Should the protocol ever be left inside a frame it was given part of, the splitter
        stops for good and the protocol parses everything after (slower, never wrong).

        A frame cut short by the read waits in ``self._chunks`` with the length it needs
        (``self._needed``), so a large message costs one join, not one copy per read: a
        message arriving in many small reads stays linear in its size.
        """
        protocol = self._protocol
        chunks = self._chunks
        if chunks:
            chunks.append(bytes(data))
            self._buffered += len(data)
            if self._buffered < self._needed:
                return []
            buf = b"".join(chunks)
            self._chunks = None
            self._buffered = 0
        else:
            buf = bytes(data)
        messages: list[Message] = []
        append = messages.append
        limit = self._max_size
        size = len(buf)
        pos = 0
        needed = 0
        while True:
            if size - pos < 2:
                needed = 2
                break
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    needed = 4
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                start = pos + 4
            elif length == 127:
                if size - pos < 10:
                    needed = 10
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            end = start + length
            if b0 in (0x81, 0x82) and b1 < 0x80 and length <= limit and not self._fragmenting:
                if end > size:
                    needed = end - pos
                    break
                if b0 == 0x82:
                    append(buf[start:end])
                else:
                    try:
                        append(buf[start:end].decode())
                    except UnicodeDecodeError:
                        protocol.fail(CLOSE_INVALID_DATA, "invalid UTF-8 in a text message")
                        pos = size
                        break
                pos = end
                continue
            if b1 >= 0x80 or length > limit:
                # websockets fails the connection on this frame's header: give it the rest.
                protocol.receive_data(buf[pos:])
                pos = size
                if protocol.state is State.OPEN:  # pragma: no cover - websockets fails above
                    self._split_frames = False
            else:
                if end > size:
                    needed = end - pos
                    break
                opcode = b0 & 0x0F
                if not b0 & 0x70:
                    if opcode in (1, 2):
                        self._fragmenting = not b0 & 0x80
                    elif opcode == 0 and b0 & 0x80:
                        self._fragmenting = False
                protocol.receive_data(buf[pos:end])
                pos = end
            self._events = protocol.events_received()
            if self._events:
                messages.extend(self._take_messages())
            if protocol.state is not State.OPEN:
                if pos < size:
                    protocol.receive_data(buf[pos:])
                    pos = size
                break
        if pos < size:
            rest = buf[pos:]
            self._chunks = [rest]
            self._buffered = len(rest)
            self._needed = needed
        return messages

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
    Our own DEBUG logging shows frames with the apikey and tokens redacted
    instead.
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


def _ip_family(host: str) -> AddressFamily | None:
    """The address family of ``host`` when it is an IPv4 or IPv6 address, else ``None``.

    SPEED: ``inet_pton`` is C; ``ipaddress.ip_address`` parses in Python, a few
    percent of a connect. An address with a zone (``fe80::1%eth0``) is ``None``: the name
    lookup of ``open_tcp_stream`` handles it.
    """
    for family in (AF_INET, AF_INET6):
        try:
            inet_pton(family, host)
        except OSError:
            continue
        return family
    return None


async def _open_tcp(host: str, port: int) -> trio.SocketStream:
    """``trio.open_tcp_stream``, without its name lookup and its racing of addresses for a
    host given as an IP address: one socket and one ``connect``, no task and no nursery
    (``benchmarks/connections.py`` measures the connect rate)."""
    family = _ip_family(host)
    if family is None:
        return await trio.open_tcp_stream(host, port)
    sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
    try:
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def open_tcp_or_tls(endpoint: Endpoint, options: TransportOptions) -> trio.abc.Stream:
    """Open the TCP connection, wrapped in TLS for ``wss``; map failures to library errors.

    Raises:
        RealtimeConnectionError: when the host cannot be reached or TLS fails (an untrusted
            certificate among them).
    """
    where = f"{endpoint.host}:{endpoint.port}"
    try:
        tcp = await _open_tcp(endpoint.host, endpoint.port)
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
    endpoint: Endpoint, options: TransportOptions, nursery: trio.Nursery | None = None
) -> SansIOWebSocket:
    """Open a :class:`SansIOWebSocket` to ``endpoint``; the default transport factory.

    It runs no task of its own: ``nursery`` (the factory's argument) is not used.

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
        # The protocol gets the response head only: bytes after it are frames, which the
        # transport splits itself, so the protocol must not have buffered any of them.
        events: list[object] = []
        buffered = b""
        head_fed = False
        while not events:
            try:
                data = await stream.receive_some(RECEIVE_SIZE)
            except _STREAM_ERRORS:
                data = b""
            if not data:
                if buffered:
                    protocol.receive_data(buffered)
                    buffered = b""
                protocol.receive_eof()
            elif head_fed:
                protocol.receive_data(data)
            else:
                buffered += data
                end = buffered.find(b"\r\n\r\n")
                if end < 0 and len(buffered) > _MAX_RESPONSE_HEAD:
                    raise RealtimeConnectionError(
                        f"the HTTP response from {endpoint.redacted} has an oversize head"
                    )
                if end >= 0:
                    head_fed = True
                    protocol.receive_data(buffered[: end + 4])
                    buffered = buffered[end + 4 :]
            events = list(protocol.events_received())
            if not events and head_fed and buffered:
                # A refusal with a body: the protocol reads the body itself.
                protocol.receive_data(buffered)
                buffered = b""
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
        # The protocol's parser keeps the response for the life of the connection: its
        # headers (about 1.4 KiB per connection) are not needed once the handshake is done.
        if isinstance(response, Response):
            response.headers.clear()
        return SansIOWebSocket(
            stream,
            protocol,
            events=events[1:],
            pending=buffered,
            split_frames=True,
            max_message_size=options.max_message_size,
            close_timeout=options.close_timeout,
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
