"""LS-01: many connections and channels, and the bounded send buffer under a slow reader.

Send buffer policy: each connection queues at most ``send_buffer`` frames for its writer; when a
frame arrives at a full buffer the client is dropped (no close frame, 1006 on the client side),
which is how the real server treats a transport whose heap passes 50 MB. The server's memory per
connection therefore stays bounded however hard a topic is flooded.
"""

from __future__ import annotations

import time

import pytest
import trio
from server_support import VSNS, RawClient, connect, connect_socket, obj, reply_status

from trio_realtime import ConnectionClosed
from trio_realtime.protocol import JSONValue, join_frame
from trio_realtime.testing import serve_realtime

CONNECTIONS = 100
CHANNELS_PER_CONNECTION = 10


async def test_ls01_100_connections_1000_channels_over_tcp(nursery: trio.Nursery) -> None:
    """LS-01: 100 loopback connections (both vsn) join 1,000 channels; fan-out reaches all."""
    topics = [f"room-{index}" for index in range(CHANNELS_PER_CONNECTION)]
    clients: list[RawClient] = []
    started = time.perf_counter()
    with trio.fail_after(60):
        async with serve_realtime() as server:

            async def open_one(index: int) -> None:
                client = await connect_socket(server, VSNS[index % 2], nursery)
                for topic in topics:
                    await client.send(join_frame(client.next_ref(), topic, {}))
                for _ in topics:
                    assert reply_status(await client.receive())[0] == "ok"
                clients.append(client)

            async with trio.open_nursery() as openers:
                for index in range(CONNECTIONS):
                    openers.start_soon(open_one, index)
            joined = time.perf_counter()
            statistics = server.statistics()
            assert statistics.connections_open == CONNECTIONS
            assert statistics.channels_joined == CONNECTIONS * CHANNELS_PER_CONNECTION
            assert statistics.joins == CONNECTIONS * CHANNELS_PER_CONNECTION

            deliveries = 0
            for topic in topics:
                deliveries += await server.broadcast(topic, "tick", {"topic": topic})
            assert deliveries == CONNECTIONS * CHANNELS_PER_CONNECTION

            async def drain(client: RawClient) -> None:
                seen = {(await client.receive()).topic for _ in topics}
                assert seen == {f"realtime:{topic}" for topic in topics}

            async with trio.open_nursery() as drainers:
                for client in clients:
                    drainers.start_soon(drain, client)
            delivered = time.perf_counter()
            connections = server.connections
            for client in clients:
                await client.aclose()
            for connection in connections:
                await connection.wait_finished()
                assert connection.close_code == 1000
            assert server.statistics().channels_joined == 0
    print(
        f"\n{CONNECTIONS} connections, {CONNECTIONS * CHANNELS_PER_CONNECTION} channels: "
        f"connected and joined in {joined - started:.3f} s; "
        f"1,000-delivery fan-out received in {delivered - joined:.3f} s"
    )


async def test_ls01_slow_reader_is_dropped_and_memory_stays_bounded(
    nursery: trio.Nursery,
) -> None:
    """LS-01 (BP-02): a reader that stops reading is dropped once send_buffer frames pile up."""
    send_buffer = 100
    async with serve_realtime(send_buffer=send_buffer) as server:
        slow = await connect(server, "2.0.0", nursery)
        await slow.join("flood")
        fast = await connect(server, "1.0.0", nursery)
        await fast.join("flood")
        slow_connection, fast_connection = server.connections

        async def keep_reading(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
            with trio.CancelScope() as scope:
                task_status.started(scope)
                while True:
                    await fast.receive()

        reader = await nursery.start(keep_reading)
        high_water = 0
        sent = 0
        while not slow_connection.closed:
            await server.broadcast("flood", "msg", {"n": sent})
            sent += 1
            high_water = max(high_water, slow_connection.pending_frames)
            assert sent < 10_000, "the slow reader was never dropped"
        reader.cancel()
        # The memory pair holds 1,024 messages like a socket buffer; then the server's own
        # buffer fills, and the next frame drops the connection.
        assert high_water <= send_buffer
        assert slow_connection.pending_frames == 0  # its buffer was released at once
        await slow_connection.wait_finished()
        statistics = server.statistics()
        assert statistics.dropped_slow_connections == 1
        assert statistics.connections_open == 1
        assert not fast_connection.closed

        received = 0
        with pytest.raises(ConnectionClosed) as caught:
            while True:
                frame = await slow.receive()
                received += frame.event == "broadcast"
        assert caught.value.code == 1006
        assert 0 < received < sent


async def test_ls01_slow_tcp_reader_is_dropped(nursery: trio.Nursery) -> None:
    """LS-01 (BP-02): over TCP the kernel buffers fill first, then the send buffer; then a drop."""
    async with serve_realtime(send_buffer=50) as server:
        slow = await connect_socket(server, "1.0.0", nursery)
        await slow.join("flood")
        (connection,) = server.connections
        payload: JSONValue = {"pad": "x" * 1000}
        with trio.fail_after(30):
            while not connection.closed:
                await server.broadcast("flood", "msg", payload)
                assert connection.pending_frames <= 50
        assert server.statistics().dropped_slow_connections == 1
        with pytest.raises(ConnectionClosed):
            while True:
                await slow.receive()


async def test_ls01_paced_flood_keeps_a_reader_that_keeps_up(nursery: trio.Nursery) -> None:
    """LS-01: a flood paced with wait_flushed never overflows a small send buffer."""
    total = 5000
    async with serve_realtime(send_buffer=64) as server:
        client = await connect(server, "2.0.0", nursery)
        await client.join("flood")
        received: list[int] = []

        async def read() -> None:
            while len(received) < total:
                frame = await client.receive()
                received.append(obj(obj(frame.payload)["payload"])["n"])

        async with trio.open_nursery() as readers:
            readers.start_soon(read)
            for n in range(total):
                if n % 32 == 0:
                    await server.wait_flushed(max_pending=32)
                server.broadcast_nowait("flood", "msg", {"n": n}, binary=True)
        assert received == list(range(total))
        assert server.statistics().dropped_slow_connections == 0
