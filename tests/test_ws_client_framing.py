"""The default transport frames a client's data messages itself: what a server reads of them.

``SansIOWebSocket`` on the client side writes text and binary messages without going through
websockets' per-frame objects (``_ClientFramer``). A websockets ``ServerProtocol`` reads those
bytes here: every length class (7-bit, 16-bit, 64-bit), both opcodes, masked, in order; a pong
the reader queued goes out before the next messages; and each frame's masking key is the next
four bytes of ``os.urandom`` output, fetched 1,024 keys at a time, never reused.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from trio_realtime import ConnectionClosed
from trio_realtime._ws_sansio import MASK_KEYS_BYTES, SansIOWebSocket, _ClientFramer, _MaskKeys

GUARD = 10.0
SIZES = (0, 1, 125, 126, 127, 65535, 65536, 70_000)


def _open_pair() -> tuple[SansIOWebSocket, trio.abc.Stream, ServerProtocol]:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    client = ClientProtocol(parse_uri("ws://127.0.0.1/socket/websocket"), state=State.OPEN)
    server = ServerProtocol(state=State.OPEN, max_size=None)
    transport = SansIOWebSocket(client_stream, client, split_frames=True)
    return transport, server_stream, server


async def _read_frames(stream: trio.abc.Stream, server: ServerProtocol, count: int) -> list[Frame]:
    frames: list[Frame] = []
    while len(frames) < count:
        server.receive_data(await stream.receive_some(1 << 20))
        frames += [event for event in server.events_received() if isinstance(event, Frame)]
        assert server.state is State.OPEN, server.close_sent
    return frames


async def test_text_and_binary_messages_of_every_length_class_reach_a_server() -> None:
    with trio.fail_after(GUARD):
        transport, stream, server = _open_pair()
        messages = []
        for size in SIZES:
            messages.append((b"t" * size, False))
            messages.append((bytes(range(256)) * (size // 256) + bytes(size % 256), True))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport.send_messages, messages)
            frames = await _read_frames(stream, server, len(messages))
    assert [(frame.data, frame.opcode is Opcode.BINARY) for frame in frames] == messages
    assert all(frame.fin for frame in frames)


async def test_a_queued_pong_goes_out_before_the_next_messages() -> None:
    with trio.fail_after(GUARD):
        transport, stream, server = _open_pair()
        protocol = transport._protocol  # the reader queues pongs on the protocol
        protocol.send_pong(b"p")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport.send_messages, [(b'{"a":1}', False)])
            frames = await _read_frames(stream, server, 2)
    assert [(frame.opcode, frame.data) for frame in frames] == [
        (Opcode.PONG, b"p"),
        (Opcode.TEXT, b'{"a":1}'),
    ]


def test_each_frame_takes_the_next_four_bytes_of_urandom(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def urandom(size: int) -> bytes:
        calls.append(size)
        start = len(calls) * 7
        return bytes((start + i) % 256 for i in range(size))

    monkeypatch.setattr(os, "urandom", urandom)
    framer = _ClientFramer(_MaskKeys())  # a fresh pool: the process's is shared
    keys = []
    for _ in range(MASK_KEYS_BYTES // 4 + 3):
        wire = framer.frames([(b"x", False)])
        assert wire[:2] == b"\x81\x81"  # final text frame, masked, length 1
        keys.append(wire[2:6])
        assert wire[6] == ord("x") ^ wire[2]
    assert calls == [MASK_KEYS_BYTES, MASK_KEYS_BYTES]
    first, second = (bytes((7 * n + i) % 256 for i in range(MASK_KEYS_BYTES)) for n in (1, 2))
    expected = [first[i : i + 4] for i in range(0, MASK_KEYS_BYTES, 4)]
    expected += [second[i : i + 4] for i in range(0, 12, 4)]
    assert keys == expected


async def test_a_closed_connection_still_raises_before_framing() -> None:
    with trio.fail_after(GUARD):
        transport, _stream, _server = _open_pair()
        transport._protocol.state = State.CLOSED
        with pytest.raises(ConnectionClosed):
            await transport.send_messages([(b"late", False)])


@contextlib.asynccontextmanager
async def _socket_pair() -> AsyncIterator[
    tuple[SansIOWebSocket, trio.SocketStream, ServerProtocol]
]:
    """A client transport on one end of a socket pair, the bare other end and a server protocol."""
    client_socket, server_socket = trio.socket.socketpair()
    client = ClientProtocol(parse_uri("ws://127.0.0.1/socket/websocket"), state=State.OPEN)
    server = ServerProtocol(state=State.OPEN, max_size=None)
    client_stream, server_stream = (
        trio.SocketStream(client_socket),
        trio.SocketStream(server_socket),
    )
    async with client_stream, server_stream:
        yield SansIOWebSocket(client_stream, client, split_frames=True), server_stream, server


async def test_send_nowait_writes_a_small_message_to_the_socket_at_once() -> None:
    with trio.fail_after(GUARD):
        async with _socket_pair() as (transport, stream, server):
            assert transport.can_send_nowait()
            assert transport.send_nowait([(b'{"a":1}', False), (b"\x00b", True)]) == b""
            frames = await _read_frames(stream, server, 2)
    assert [(frame.opcode, frame.data) for frame in frames] == [
        (Opcode.TEXT, b'{"a":1}'),
        (Opcode.BINARY, b"\x00b"),
    ]


async def test_send_nowait_leaves_the_rest_and_holds_the_stream_until_send_rest() -> None:
    with trio.fail_after(GUARD):
        async with _socket_pair() as (transport, stream, server):
            big = b"x" * 8_000_000  # more than any socket buffer takes at once
            rest = transport.send_nowait([(big, False)])
            assert rest
            assert not transport.can_send_nowait()  # nothing may be written before the rest
            frames: list[Frame] = []

            async def read() -> None:
                frames.extend(await _read_frames(stream, server, 2))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(transport.send_messages, [(b"after", False)])
                await trio.testing.wait_all_tasks_blocked()  # it waits for the rest
                nursery.start_soon(read)
                await transport.send_rest(rest)  # from the task that called send_nowait
            assert transport.can_send_nowait()
    assert [frame.data for frame in frames] == [big, b"after"]


async def test_send_nowait_writes_a_queued_pong_first() -> None:
    with trio.fail_after(GUARD):
        async with _socket_pair() as (transport, stream, server):
            transport._protocol.send_pong(b"p")
            assert transport.send_nowait([(b"m", False)]) == b""
            frames = await _read_frames(stream, server, 2)
    assert [(frame.opcode, frame.data) for frame in frames] == [
        (Opcode.PONG, b"p"),
        (Opcode.TEXT, b"m"),
    ]


async def test_send_nowait_declines_without_a_socket_or_an_open_connection() -> None:
    with trio.fail_after(GUARD):
        transport, _stream, _server = _open_pair()  # a memory stream: no socket to write to
        assert not transport.can_send_nowait()
        assert transport.send_nowait([(b"m", False)]) is None
        async with _socket_pair() as (on_socket, _socket_stream, _socket_server):
            on_socket._protocol.state = State.CLOSED
            assert not on_socket.can_send_nowait()
            assert on_socket.send_nowait([(b"m", False)]) is None
            with pytest.raises(ConnectionClosed):
                await on_socket.send_messages([(b"m", False)])


async def test_send_nowait_on_a_dropped_socket_raises_connection_closed() -> None:
    with trio.fail_after(GUARD):
        async with _socket_pair() as (transport, stream, _server):
            await stream.aclose()
            with pytest.raises(ConnectionClosed):
                for _ in range(100):  # the first writes may still be taken by the kernel
                    transport.send_nowait([(b"m" * 65536, False)])
