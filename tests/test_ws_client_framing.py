"""The default transport frames a client's data messages itself: what a server reads of them.

``SansIOWebSocket`` on the client side writes text and binary messages without going through
websockets' per-frame objects (``_ClientFramer``). A websockets ``ServerProtocol`` reads those
bytes here: every length class (7-bit, 16-bit, 64-bit), both opcodes, masked, in order; a pong
the reader queued goes out before the next messages; and each frame's masking key is the next
four bytes of ``os.urandom`` output, fetched 1,024 keys at a time, never reused.
"""

from __future__ import annotations

import os

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
