"""LS-02: fault injection of the local server, for vsn 1.0.0 and 2.0.0.

Timing tests run under trio's MockClock (``autojump_clock``) and assert exact virtual times.
"""

from __future__ import annotations

import pytest
import trio
from server_support import VSNS, connect, connect_socket, reply_status

from trio_realtime import ConnectionClosed
from trio_realtime.protocol import Frame, broadcast_frame, join_frame
from trio_realtime.testing import serve_realtime

pytestmark = pytest.mark.parametrize("vsn", VSNS)

V2 = "2.0.0"


async def test_ls02_drop_connections(vsn: str, nursery: trio.Nursery) -> None:
    """LS-02: drop_connections drops without a close frame (1006); connection= picks one."""
    async with serve_realtime() as server:
        first = await connect(server, vsn, nursery)
        second = await connect(server, vsn, nursery)
        await first.join("room1")
        await second.join("room1")
        target = server.connections[0]
        assert await server.drop_connections(connection=target) == 1
        with pytest.raises(ConnectionClosed) as caught:
            await first.receive()
        assert caught.value.code == 1006
        assert target.closed
        assert target.close_code == 1006
        assert [c.id for c in server.connections] == [2]
        assert server.statistics().channels_joined == 1
        assert reply_status(await second.heartbeat()) == ("ok", {})

        assert await server.drop_connections() == 1
        with pytest.raises(ConnectionClosed):
            await second.receive()
        assert server.statistics().connections_open == 0


async def test_ls02_drop_a_real_socket(vsn: str, nursery: trio.Nursery) -> None:
    """LS-02: over TCP the client sees the connection vanish with no close frame (1006)."""
    async with serve_realtime() as server:
        client = await connect_socket(server, vsn, nursery)
        await client.join("room1")
        await server.drop_connections()
        with pytest.raises(ConnectionClosed) as caught:
            await client.receive()
        assert caught.value.code == 1006


async def test_ls02_stop_answering_heartbeats(
    vsn: str, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """LS-02: answer_heartbeats=False plays a half-open server; per connection too."""
    async with serve_realtime() as server:
        client = await connect(server, vsn, nursery)
        other = await connect(server, vsn, nursery)
        server.answer_heartbeats = False
        await client.send(Frame("phoenix", "heartbeat", {}, "1"))
        await client.assert_silent(30)
        server.connections[1].answer_heartbeats = True
        assert reply_status(await other.heartbeat()) == ("ok", {})
        server.answer_heartbeats = True
        assert reply_status(await client.heartbeat()) == ("ok", {})


async def test_ls02_reply_delay_exact_virtual_times(
    vsn: str, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """LS-02: reply_delay holds every phx_reply back by exactly that long (trio time)."""
    async with serve_realtime() as server:
        client = await connect(server, vsn, nursery)
        server.reply_delay = 2.5
        start = trio.current_time()
        await client.send(Frame("phoenix", "heartbeat", {}, "1"))
        await client.send(join_frame("2", "room1", {}))
        assert (await client.receive()).ref == "1"
        assert trio.current_time() - start == 2.5
        assert (await client.receive()).ref == "2"
        assert trio.current_time() - start == 2.5  # both were received at once

        server.connections[0].reply_delay = 0.0  # per-connection override
        start = trio.current_time()
        await client.heartbeat()
        assert trio.current_time() == start

        server.connections[0].reply_delay = None
        server.reply_delay = 1.0
        await client.heartbeat()
        assert trio.current_time() - start == 1.0


async def test_ls02_send_raw_malformed(vsn: str, nursery: trio.Nursery) -> None:
    """LS-02: send_raw delivers text and binary frames exactly as given, malformed or not."""
    async with serve_realtime() as server:
        client = await connect(server, vsn, nursery)
        assert await server.send_raw("{not json") == 1
        assert await client.receive_raw() == "{not json"
        await server.send_raw(b"\x07junk")
        assert await client.receive_raw() == b"\x07junk"
        assert reply_status(await client.heartbeat()) == ("ok", {})


async def test_ls02_push_error(vsn: str, nursery: trio.Nursery) -> None:
    """LS-02: push_error sends phx_error channel_crash (ref=join_ref); the channel is gone."""
    async with serve_realtime() as server:
        client = await connect(server, vsn, nursery)
        joined = await client.join("room1")
        assert await server.push_error("room1") == 1
        error = await client.receive()
        assert (error.event, error.payload, error.ref) == (
            "phx_error",
            {"reason": "channel_crash"},
            joined.ref,
        )
        assert error.join_ref == (joined.ref if vsn == V2 else None)
        assert server.connections[0].joined_topics == []
        await client.send(broadcast_frame("9", joined.ref, "room1", "m", {}))
        assert reply_status(await client.receive()) == ("error", {"reason": "unmatched topic"})
        assert reply_status(await client.join("room1"))[0] == "ok"


async def test_ls02_push_close(vsn: str, nursery: trio.Nursery) -> None:
    """LS-02: push_close sends phx_close {} and forgets the channel."""
    async with serve_realtime() as server:
        client = await connect(server, vsn, nursery)
        joined = await client.join("room1")
        assert await server.push_close("realtime:room1") == 1
        close = await client.receive()
        assert (close.event, close.payload, close.ref) == ("phx_close", {}, joined.ref)
        assert await server.push_close("room1") == 0


async def test_ls02_system_close(vsn: str, nursery: trio.Nursery) -> None:
    """LS-02: system_close sends the system error with the message, then phx_close."""
    async with serve_realtime() as server:
        client = await connect(server, vsn, nursery)
        joined = await client.join("room1")
        message = "Token has expired 3 seconds ago"
        assert await server.system_close("room1", message) == 1
        system = await client.receive()
        assert (system.event, system.ref) == ("system", None)
        assert system.join_ref == (joined.ref if vsn == V2 else None)
        assert system.payload == {
            "channel": "room1",
            "extension": "system",
            "message": message,
            "status": "error",
        }
        assert (await client.receive()).event == "phx_close"
        assert server.statistics().channels_joined == 0


async def test_ls02_reject_joins_with_delay(
    vsn: str, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """LS-02: reject_joins answers with the reason after the delay; allow_joins undoes it."""
    async with serve_realtime(join_error_delay=5.0) as server:
        client = await connect(server, vsn, nursery)
        reason = "Unauthorized: You do not have permissions to read from this Channel topic: room1"
        server.reject_joins("room1", reason, delay=1.5)
        start = trio.current_time()
        assert reply_status(await client.join("room1")) == ("error", {"reason": reason})
        assert trio.current_time() - start == 1.5
        assert reply_status(await client.join("room2"))[0] == "ok"
        server.allow_joins("room1")
        assert reply_status(await client.join("room1"))[0] == "ok"
        assert server.statistics().joins_refused == 1


async def test_ls02_request_disconnect(vsn: str, nursery: trio.Nursery) -> None:
    """LS-02: 'Server requested disconnect' (fan-out, no channel key) per channel, then 1012."""
    async with serve_realtime() as server:
        client = await connect(server, vsn, nursery)
        await client.join("room1")
        await client.join("room2")
        assert await server.request_disconnect() == 1
        for topic in ("realtime:room1", "realtime:room2"):
            system = await client.receive()
            assert (system.topic, system.event, system.ref, system.join_ref) == (
                topic,
                "system",
                None,
                None,
            )
            assert system.payload == {
                "extension": "system",
                "message": "Server requested disconnect",
                "status": "ok",
            }
        with pytest.raises(ConnectionClosed) as caught:
            await client.receive()
        assert caught.value.code == 1012


async def test_ls02_request_disconnect_over_a_socket(vsn: str, nursery: trio.Nursery) -> None:
    """LS-02: over TCP the close frame carries 1012 after the system frame."""
    async with serve_realtime() as server:
        client = await connect_socket(server, vsn, nursery)
        await client.join("room1")
        (connection,) = server.connections
        await server.request_disconnect()
        assert (await client.receive()).event == "system"
        with pytest.raises(ConnectionClosed) as caught:
            await client.receive()
        assert caught.value.code == 1012
        await connection.wait_finished()
        assert connection.close_code == 1012


async def test_ls02_close_connections(vsn: str, nursery: trio.Nursery) -> None:
    """LS-02: close_connections closes with the given code and reason, after queued frames."""
    async with serve_realtime() as server:
        client = await connect(server, vsn, nursery)
        await client.join("room1")
        await server.broadcast("room1", "last", {})
        assert await server.close_connections(1001, "going away") == 1
        assert (await client.receive()).event == "broadcast"
        with pytest.raises(ConnectionClosed) as caught:
            await client.receive()
        assert (caught.value.code, caught.value.reason) == (1001, "going away")
