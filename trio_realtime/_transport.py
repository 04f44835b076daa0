"""The transport interface the runtime talks to, and an in-memory transport pair.

A transport is one WebSocket connection seen as whole messages: a text message is ``str``, a
binary message is ``bytes``. Receiving hands back every message that is already available, so
the reader pays one checkpoint per batch rather than per message.

Implementations:

* ``_ws_sansio.SansIOWebSocket``: the websockets package's sans-I/O protocol driven over a trio
  stream (the default; fastest);
* ``_ws_trio_websocket.TrioWebSocketTransport``: trio-websocket;
* :class:`MemoryTransport`: two in-process ends joined by bounded memory channels, for tests.
  The local server in ``trio_realtime.testing`` accepts the other end.
"""

from __future__ import annotations

import abc
import contextlib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import trio

from ._exceptions import ConnectionClosed

if TYPE_CHECKING:
    from ._url import Endpoint

Message = str | bytes
OutgoingMessage = tuple[bytes, bool]
"""An encoded message and whether it is binary (``False`` means UTF-8 text)."""

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_ABNORMAL = 1006
CLOSE_INVALID_DATA = 1007
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_SERVICE_RESTART = 1012

DEFAULT_MAX_MESSAGE_SIZE = 8 * 1024 * 1024
"""Incoming message cap: the server's own frame limit is 5,000,000 bytes (PROTOCOL.md 1.4)."""


class Transport(abc.ABC):
    """One message-oriented WebSocket connection.

    Only one task may call the receive side and one task the send side at a time; the runtime's
    reader and writer tasks are those tasks.
    """

    @abc.abstractmethod
    async def send_messages(self, messages: Sequence[OutgoingMessage]) -> None:
        """Send ``messages`` in order, as few writes as possible.

        Raises:
            ConnectionClosed: if the connection is closed.
        """

    async def send_message(self, data: bytes, binary: bool = False) -> None:
        """Send one message; see :meth:`send_messages`."""
        await self.send_messages(((data, binary),))

    def can_send_nowait(self) -> bool:
        """Whether :meth:`send_nowait` would try to write now (nothing else is writing)."""
        return False

    def send_nowait(self, messages: Sequence[OutgoingMessage]) -> bytes | None:
        """Write ``messages`` without waiting, when this transport can; no checkpoint.

        Returns ``None`` when it cannot (nothing was written; use :meth:`send_messages`).
        Otherwise it returns the bytes that the socket did not take at once: ``b""`` when
        everything was written, else the rest of the frames, which the calling task must pass
        to :meth:`send_rest` next; nothing else is written on the connection until then.

        Raises:
            ConnectionClosed: if the connection is closed or the write failed; nothing of
                ``messages`` was written.
        """
        return None

    async def send_rest(self, data: bytes) -> None:
        """Write what :meth:`send_nowait` left over; see there.

        Raises:
            ConnectionClosed: if the connection dropped meanwhile.
        """
        raise NotImplementedError("send_rest follows a send_nowait that left a rest")

    @abc.abstractmethod
    async def receive_messages(self) -> list[Message]:
        """Wait for at least one message and return every message available now.

        Raises:
            ConnectionClosed: once the connection is closed, with the close code and reason
                (1006 when it dropped without a close frame; 1009 for a message over the size
                cap).
        """

    @abc.abstractmethod
    async def aclose(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Close with a close frame, wait (bounded) for the peer's, then release the socket.

        Idempotent; never raises for a connection that is already closed.
        """

    @abc.abstractmethod
    async def abort(self) -> None:
        """Drop the connection at once, without a close frame."""

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """Whether the connection is closed (by either side)."""


@dataclass(frozen=True, slots=True)
class TransportOptions:
    """What a transport factory needs besides the endpoint.

    Attributes:
        ssl_context: The context for ``wss`` URLs; ``None`` means a default context, which
            verifies certificates.
        max_message_size: The largest incoming message accepted, in bytes.
        close_timeout: How long :meth:`Transport.aclose` waits for the peer's close frame.
    """

    ssl_context: ssl.SSLContext | None = None
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    close_timeout: float = 2.0


class TransportFactory(Protocol):
    """Opens a transport to an endpoint; the ``transport=`` option of ``open_realtime``.

    ``nursery`` lives as long as the connection; a transport may run helper tasks in it.

    Raises:
        RealtimeConnectionError: when the connection cannot be made, with the HTTP status and
            the server's ``error`` text for a refused upgrade.
    """

    async def __call__(
        self, endpoint: Endpoint, options: TransportOptions, nursery: trio.Nursery
    ) -> Transport: ...


# ---------------------------------------------------------------------------------------------
# In-memory pair.


@dataclass(frozen=True, slots=True)
class _CloseSignal:
    code: int
    reason: str


_Item = Message | _CloseSignal


def _size(message: Message) -> int:
    return len(message.encode()) if isinstance(message, str) else len(message)


class MemoryTransport(Transport):
    """One end of an in-memory connection; see :func:`memory_transport_pair`.

    Each direction is a bounded memory channel, so a receiver that stops reading eventually
    blocks the sender, as a TCP connection would.
    """

    def __init__(
        self,
        send_channel: trio.MemorySendChannel[_Item],
        receive_channel: trio.MemoryReceiveChannel[_Item],
        *,
        max_message_size: int,
    ) -> None:
        self._send = send_channel
        self._receive = receive_channel
        self._max_message_size = max_message_size
        self._close: _CloseSignal | None = None
        self.peer: MemoryTransport | None = None

    @property
    def closed(self) -> bool:
        return self._close is not None

    @property
    def close_code(self) -> int | None:
        """The close code, once closed."""
        return None if self._close is None else self._close.code

    def _closed_error(self) -> ConnectionClosed:
        assert self._close is not None
        return ConnectionClosed(self._close.code, self._close.reason)

    async def send_messages(self, messages: Sequence[OutgoingMessage]) -> None:
        if self._close is not None:
            await trio.lowlevel.checkpoint()
            raise self._closed_error()
        for data, binary in messages:
            message: Message = bytes(data) if binary else bytes(data).decode()
            try:
                await self._send.send(message)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._close = self._close or _CloseSignal(CLOSE_ABNORMAL, "")
                raise self._closed_error() from None

    async def receive_messages(self) -> list[Message]:
        if self._close is not None:
            await trio.lowlevel.checkpoint()
            raise self._closed_error()
        try:
            first = await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            self._close = _CloseSignal(CLOSE_ABNORMAL, "")
            raise self._closed_error() from None
        messages: list[Message] = []
        item: _Item = first
        while True:
            if isinstance(item, _CloseSignal):
                return self._peer_closed(item, messages)
            if len(item) > self._max_message_size // 4 and _size(item) > self._max_message_size:
                return self._too_big(messages)
            messages.append(item)
            try:
                item = self._receive.receive_nowait()
            except trio.WouldBlock:
                return messages
            except (trio.EndOfChannel, trio.ClosedResourceError):
                self._close = _CloseSignal(CLOSE_ABNORMAL, "")
                return messages

    def _peer_closed(self, signal: _CloseSignal, messages: list[Message]) -> list[Message]:
        self._close = signal
        self._send.close()
        if messages:
            return messages
        raise self._closed_error()

    def _too_big(self, messages: list[Message]) -> list[Message]:
        self._close = _CloseSignal(CLOSE_MESSAGE_TOO_BIG, "message too big")
        with contextlib.suppress(
            trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError
        ):
            self._send.send_nowait(self._close)
        self._send.close()
        if messages:
            return messages
        raise self._closed_error()

    async def aclose(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        if self._close is None:
            self._close = _CloseSignal(code, reason)
            with contextlib.suppress(
                trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError
            ):
                self._send.send_nowait(self._close)
        self._send.close()
        self._receive.close()
        await trio.lowlevel.checkpoint()

    async def abort(self) -> None:
        if self._close is None:
            self._close = _CloseSignal(CLOSE_ABNORMAL, "")
        self._send.close()
        self._receive.close()
        await trio.lowlevel.checkpoint()


def memory_transport_pair(
    *, buffer: int = 1024, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
) -> tuple[MemoryTransport, MemoryTransport]:
    """Return two connected :class:`MemoryTransport` ends: ``(client, server)``.

    Args:
        buffer: Messages each direction holds before a sender blocks.
        max_message_size: The incoming size cap of both ends.
    """
    to_server_send, to_server_receive = trio.open_memory_channel[_Item](buffer)
    to_client_send, to_client_receive = trio.open_memory_channel[_Item](buffer)
    client = MemoryTransport(to_server_send, to_client_receive, max_message_size=max_message_size)
    server = MemoryTransport(to_client_send, to_server_receive, max_message_size=max_message_size)
    client.peer = server
    server.peer = client
    return client, server
