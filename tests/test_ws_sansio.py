"""The default transport's frame splitting, against a hand-written WebSocket peer.

The peer answers the upgrade and then writes exact bytes in exact chunks, so every path of
``SansIOWebSocket._split`` is exercised: simple frames cut anywhere, 16- and 64-bit lengths,
frames in the same read as the HTTP response, fragments, pings and closes between simple
frames, invalid UTF-8, masked and oversize frames. Real loopback sockets, no sleeps.
"""

from __future__ import annotations

import struct
import tracemalloc
from collections.abc import Awaitable, Callable, Sequence

import pytest
import trio
import trio.testing
from websockets.client import ClientProtocol
from websockets.protocol import State
from websockets.uri import parse_uri
from websockets.utils import accept_key

from trio_realtime import ConnectionClosed
from trio_realtime._transport import Message, TransportOptions
from trio_realtime._url import websocket_url
from trio_realtime._ws_sansio import SansIOWebSocket, connect_sansio

GUARD = 10.0


def frame(payload: bytes, opcode: int = 1, *, fin: bool = True, mask: bool = False) -> bytes:
    """One server frame (unmasked unless asked)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    size = len(payload)
    mask_bit = 0x80 if mask else 0
    if size < 126:
        head += bytes([mask_bit | size])
    elif size < 2**16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", size)
    if mask:
        key = b"\x01\x02\x03\x04"
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        head += key
    return head + payload


Script = Callable[[trio.SocketStream, bytes], Awaitable[None]]


async def _serve_once(script: Script, task_status: trio.TaskStatus[int]) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    task_status.started(port)
    stream = await listeners[0].accept()
    await listeners[0].aclose()
    request = b""
    while b"\r\n\r\n" not in request:
        request += await stream.receive_some(4096)
    key = next(
        line.split(b":", 1)[1].strip()
        for line in request.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key")
    )
    response = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key(key.decode()).encode() + b"\r\n\r\n"
    )
    await script(stream, response)
    await stream.aclose()


async def _collect(script: Script, *, max_size: int = 1 << 20) -> tuple[list[Message], int]:
    """Connect to a peer running ``script``; return every message and the close code."""
    messages: list[Message] = []
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(_serve_once, script)
            endpoint = websocket_url(f"ws://127.0.0.1:{port}/socket", apikey="k", vsn="1.0.0")
            transport = await connect_sansio(
                endpoint, TransportOptions(max_message_size=max_size, close_timeout=1.0), nursery
            )
            assert isinstance(transport, SansIOWebSocket)
            try:
                while True:
                    messages.extend(await transport.receive_messages())
            except ConnectionClosed as exc:
                code = exc.code
            await transport.aclose()
    return messages, code


def chunked(data: bytes, sizes: Sequence[int]) -> list[bytes]:
    chunks = []
    pos = 0
    for size in sizes:
        chunks.append(data[pos : pos + size])
        pos += size
    chunks.append(data[pos:])
    return [chunk for chunk in chunks if chunk]


def sender(*chunks: bytes, with_response: bool = False) -> Script:
    async def script(stream: trio.SocketStream, response: bytes) -> None:
        parts = list(chunks)
        if with_response:
            parts[0] = response + parts[0]
        else:
            await stream.send_all(response)
        for part in parts:
            await stream.send_all(part)
            # Let the client read each chunk on its own.
            await trio.testing.wait_all_tasks_blocked()

    return script


CLOSE_1000 = frame(struct.pack("!H", 1000), opcode=8)
TEXTS = [b'{"n":1}', b"x" * 200, b"y" * 70_000]


async def test_simple_frames_cut_at_every_byte() -> None:
    """Text frames with 7-, 16- and 64-bit lengths arrive whole whatever the read boundaries."""
    stream = b"".join(frame(t) for t in TEXTS) + frame(b"\x00\xff", opcode=2) + CLOSE_1000
    messages, code = await _collect(sender(*chunked(stream, [1] * 40 + [3, 5, 7, 1000])))
    assert messages == [t.decode() for t in TEXTS] + [b"\x00\xff"]
    assert code == 1000


async def test_frames_in_the_same_read_as_the_handshake() -> None:
    """Frames that follow the 101 response in one TCP segment are not lost."""
    data = frame(b"first") + frame(b"second") + CLOSE_1000
    messages, code = await _collect(sender(data, with_response=True))
    assert messages == ["first", "second"]
    assert code == 1000


async def test_fragments_pings_and_close_keep_order() -> None:
    """Fragmented messages and control frames go through websockets, in order."""
    data = (
        frame(b"a")
        + frame(b"frag-", fin=False)
        + frame(b"ping", opcode=9)
        + frame(b"ment", opcode=0, fin=False)
        + frame(b"ed", opcode=0)
        + frame(b"b")
        + frame(b"\x01", opcode=2, fin=False)
        + frame(b"\x02", opcode=0)
        + frame(b"c")
        + CLOSE_1000
        + frame(b"after close")
    )
    messages, code = await _collect(sender(*chunked(data, [3, 9, 2, 30])))
    assert messages == ["a", "frag-mented", "b", b"\x01\x02", "c"]
    assert code == 1000


async def test_ping_is_answered() -> None:
    """A ping among simple frames gets its pong."""
    pong: list[bytes] = []

    async def script(stream: trio.SocketStream, response: bytes) -> None:
        await stream.send_all(response + frame(b"x") + frame(b"hello", opcode=9) + frame(b"y"))
        received = b""
        while len(received) < 11:
            received += await stream.receive_some(100)
        pong.append(received)
        await stream.send_all(CLOSE_1000)

    messages, code = await _collect(script)
    assert messages == ["x", "y"]
    assert pong[0][0] == 0x8A  # FIN + pong
    assert code == 1000


async def test_invalid_utf8_fails_with_1007() -> None:
    """Invalid UTF-8 in a text frame closes the connection with 1007."""
    messages, code = await _collect(sender(frame(b"ok") + frame(b"\xff\xfe")))
    assert messages == ["ok"]
    assert code == 1007


@pytest.mark.parametrize("extra", [b"", b"trailing bytes"])
async def test_oversize_frame_fails_with_1009(extra: bytes) -> None:
    """A frame over the size cap closes with 1009, whether or not it is complete."""
    messages, code = await _collect(
        sender(frame(b"ok") + frame(b"z" * 5000)[:100] + extra), max_size=1000
    )
    assert messages == ["ok"]
    assert code == 1009


async def test_masked_server_frame_is_a_protocol_error() -> None:
    """A masked frame from a server is a protocol error (1002), as websockets decides."""
    messages, code = await _collect(sender(frame(b"ok") + frame(b"masked", mask=True)))
    assert messages == ["ok"]
    assert code == 1002


async def test_eof_mid_frame_is_abnormal() -> None:
    """The connection dropping in the middle of a frame ends with 1006."""
    messages, code = await _collect(sender(frame(b"ok") + frame(b"cut short")[:5]))
    assert messages == ["ok"]
    assert code == 1006


# -- HD-02: protocol violations at any read boundary ----------------------------------------------

SMUGGLED = frame(b"smuggled")


def reserved(payload: bytes, bits: int = 0x40, opcode: int = 1) -> bytes:
    """A final frame with reserved bits ``bits`` set (no extension was negotiated)."""
    data = bytearray(frame(payload, opcode))
    data[0] |= bits
    return bytes(data)


@pytest.mark.parametrize("bits", [0x40, 0x20, 0x10])
async def test_hd02_reserved_bits_split_across_reads_fail_with_1002(bits: int) -> None:
    """HD-02: a frame with a reserved bit set, cut inside its payload, fails the connection
    with 1002, and a frame hidden in its payload is never delivered."""
    bad = reserved(b"pad!" + SMUGGLED + b"tail", bits)
    cut = 2 + len(b"pad!")  # the second read starts with the hidden frame
    messages, code = await _collect(
        sender(frame(b"ok") + bad[:cut], bad[cut:] + frame(b"after") + CLOSE_1000)
    )
    assert messages == ["ok"]
    assert code == 1002


@pytest.mark.parametrize(
    "bad",
    [
        reserved(b"x" * 300 + SMUGGLED, 0x40),  # 16-bit length
        reserved(b"\x00" * 70_000 + SMUGGLED, 0x20, opcode=2),  # 64-bit length, binary
        frame(b"pad!" + SMUGGLED, opcode=3),  # reserved data opcode
        frame(b"pad!" + SMUGGLED, opcode=0xB),  # reserved control opcode
        frame(b"p" * 130 + SMUGGLED, opcode=9),  # a ping over 125 bytes
        frame(b"pad!" + SMUGGLED, opcode=9, fin=False),  # a fragmented ping
        frame(b"pad!" + SMUGGLED, opcode=0),  # a continuation with nothing to continue
    ],
    ids=["rsv1-16bit", "rsv2-64bit", "opcode-3", "opcode-11", "long-ping", "ping-no-fin", "cont"],
)
@pytest.mark.parametrize("cut", [1, 2, 3, 6, 11])
async def test_hd02_any_violation_at_any_read_boundary_fails_with_1002(
    bad: bytes, cut: int
) -> None:
    """HD-02: bad opcodes, oversize control frames and stray continuations fail with 1002
    wherever the reads cut them, and nothing inside them or after them is delivered."""
    data = frame(b"ok") + bad + frame(b"after") + CLOSE_1000
    start = len(frame(b"ok"))
    messages, code = await _collect(sender(data[: start + cut], data[start + cut :]))
    assert messages == ["ok"]
    assert code == 1002


# -- HD-10: reassembly is linear ------------------------------------------------------------------


def _open_client(max_size: int) -> SansIOWebSocket:
    protocol = ClientProtocol(parse_uri("ws://h/"), state=State.OPEN, max_size=max_size)
    protocol.debug = False
    stream, _ = trio.testing.memory_stream_pair()
    return SansIOWebSocket(stream, protocol, split_frames=True, max_message_size=max_size)


@pytest.mark.parametrize("read_size", [1460, 16 * 1024])
def test_hd10_reassembling_a_large_message_allocates_linearly(read_size: int) -> None:
    """HD-10: a 2 MiB message arriving in small reads costs allocations proportional to its
    size, not to its size times the number of reads (the partial frame is not copied again at
    every read). Measured in bytes allocated per read (tracemalloc's peak), not in time."""
    payload = b"x" * (2 * 1024 * 1024)
    data = frame(payload, opcode=2) + frame(b"next")
    reads = [data[pos : pos + read_size] for pos in range(0, len(data), read_size)]
    transport = _open_client(8 * 1024 * 1024)
    messages: list[Message] = []
    allocated = 0
    started = tracemalloc.is_tracing()
    if not started:
        tracemalloc.start()
    try:
        for chunk in reads:
            before, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            messages.extend(transport._receive_data(chunk))
            _, peak = tracemalloc.get_traced_memory()
            allocated += peak - before
    finally:
        if not started:
            tracemalloc.stop()
    assert messages == [payload, "next"]
    # The reads themselves, one join and the message: about three times the size. Copying
    # the partial frame at every read would cost len(reads) / 2 times the size (hundreds).
    assert allocated < 4 * len(data), allocated / len(data)
