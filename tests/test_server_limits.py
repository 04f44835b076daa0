"""RS-15: the local server's rate limits, as the real server applies them, off by default.

Time is virtual (trio's MockClock with autojump). The per-second limits are rolling averages
over 5 s ticks that start with the server (an empty tick at 0 s), so a limit can only become
triggered at 5 s, 10 s...: each test puts its events before a tick and checks after it.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from server_support import RawClient, connect, obj, reply_status

from trio_realtime import ConnectionClosed, RealtimeConnectionError
from trio_realtime.protocol import (
    Frame,
    broadcast_frame,
    channel_config,
    presence_track_frame,
)
from trio_realtime.testing import RateLimits, serve_realtime
from trio_realtime.testing._limits import TICK, RateCounter


def _closed_by(message: str, topic: str) -> dict[str, str]:
    return {"channel": topic, "extension": "system", "message": message, "status": "error"}


async def _system_then_close(client: RawClient) -> tuple[Frame, Frame]:
    system = await client.receive_event("system")
    closed = await client.receive()
    assert closed.event == "phx_close"
    return system, closed


def test_rs15_rate_counter_is_the_servers_rolling_average() -> None:
    """RS-15: 5 s ticks, an empty first tick, 12 ticks at most, triggered from the tick where
    the average reaches the limit until one where it is below."""
    counter = RateCounter(1.0, now=100.0)
    counter.add(101.0, 9)
    assert not counter.is_triggered(104.9)
    assert counter.is_triggered(105.0) is False  # (9 + 0) / 2 / 5 = 0.9
    counter = RateCounter(1.0, now=100.0)
    counter.add(101.0, 10)
    assert counter.is_triggered(105.0)  # (10 + 0) / 2 / 5 = 1.0
    assert counter.average_at(105.0) == 1.0
    assert not counter.is_triggered(110.0)  # 10 / 3 / 5
    counter.add(111.0, 100)
    assert counter.is_triggered(115.0)
    assert counter.is_triggered(100.0 + 14 * TICK)  # the 12-tick window still holds the 100
    assert not counter.is_triggered(100.0 + 15 * TICK)  # ...and then no longer
    assert counter.average_at(1000.0) == 0.0


def test_rs15_limits_are_checked_and_have_the_servers_defaults() -> None:
    """RS-15: every limit is off unless given; ``supabase()`` is the hosted configuration."""
    assert RateLimits() == RateLimits(None, None, None, None, None, 30.0)
    assert RateLimits.supabase() == RateLimits(100, 200, 100, 1000, 5, 30.0)
    with pytest.raises(ValueError, match="max_joins_per_second must be positive"):
        RateLimits(max_joins_per_second=0)
    with pytest.raises(ValueError, match="client_presence_window"):
        RateLimits(client_presence_window=0)


async def test_rs15_join_rate_refuses_with_client_join_rate_limit_and_closes_1001(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """RS-15: 10 joins in the first tick reach 1 join/s at the 5 s tick: the next join is
    refused with ``ClientJoinRateLimitReached: Too many joins per second`` and the socket is
    closed with 1001; new connections get HTTP 429; below the limit again at 10 s, joins pass."""
    limits = RateLimits(max_joins_per_second=1)
    with trio.fail_after(60):
        async with serve_realtime(rate_limits=limits, idle_timeout=None) as server:
            client = await connect(server, "2.0.0", nursery)
            for number in range(10):
                assert reply_status(await client.join(f"room{number}"))[0] == "ok"
            await trio.sleep(5 - trio.current_time())
            reply = await client.join("one-more")
            assert reply_status(reply) == (
                "error",
                {"reason": "ClientJoinRateLimitReached: Too many joins per second"},
            )
            with pytest.raises(ConnectionClosed) as closed:
                await client.receive()
            assert closed.value.code == 1001
            with pytest.raises(RealtimeConnectionError) as refused:
                await connect(server, "2.0.0", nursery)
            assert refused.value.status_code == 429
            assert refused.value.server_message == "Too many joins per second"
            await trio.sleep(10 - trio.current_time())
            again = await connect(server, "2.0.0", nursery)
            assert reply_status(await again.join("later"))[0] == "ok"


async def test_rs15_concurrent_users(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """RS-15: past ``max_concurrent_users`` connections with joined channels, a further
    connection's join is refused with ``ConnectionRateLimitReached: Too many connected users``
    and new connections get HTTP 429; a counted connection joins more channels freely."""
    with trio.fail_after(60):
        async with serve_realtime(rate_limits=RateLimits(max_concurrent_users=1)) as server:
            first = await connect(server, "1.0.0", nursery)
            second = await connect(server, "1.0.0", nursery)
            assert reply_status(await first.join("a"))[0] == "ok"
            assert reply_status(await second.join("a")) == (
                "error",
                {"reason": "ConnectionRateLimitReached: Too many connected users"},
            )
            assert reply_status(await first.join("b"))[0] == "ok"
            with pytest.raises(RealtimeConnectionError) as refused:
                await connect(server, "1.0.0", nursery)
            assert (refused.value.status_code, refused.value.server_message) == (
                429,
                "Too many connected users",
            )
            await first.aclose()
            await trio.testing.wait_all_tasks_blocked()
            assert reply_status(await second.join("a"))[0] == "ok"


async def test_rs15_events_per_second_close_a_receiving_channel(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """RS-15: sent and delivered broadcasts count; once the average reaches
    ``max_events_per_second``, a channel that receives a broadcast gets it, then ``system``
    "Too many messages per second" and ``phx_close``; the sender's channel stays."""
    with trio.fail_after(60):
        async with serve_realtime(
            rate_limits=RateLimits(max_events_per_second=1), idle_timeout=None
        ) as server:
            sender = await connect(server, "1.0.0", nursery)
            receiver = await connect(server, "2.0.0", nursery)
            joined = await sender.join("room")
            await receiver.join("room")
            for number in range(5):  # 5 sent + 5 delivered = 10 events: 1/s at the 5 s tick
                await sender.send(broadcast_frame(None, joined.ref, "room", "n", {"n": number}))
                assert obj((await receiver.receive()).payload)["payload"] == {"n": number}
            await trio.sleep(5 - trio.current_time())
            await sender.send(broadcast_frame(None, joined.ref, "room", "n", {"n": 5}))
            assert obj((await receiver.receive()).payload)["payload"] == {"n": 5}
            system, _closed = await _system_then_close(receiver)
            assert system.payload == _closed_by("Too many messages per second", "room")
            assert server.statistics().channels_joined == 1
            await sender.assert_silent(1.0)


async def test_rs15_client_presence_calls_per_window(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """RS-15: a channel may send ``client_presence_max_calls`` presence messages per window;
    the next closes it with ``Client presence rate limit exceeded``."""
    limits = RateLimits(client_presence_max_calls=2, client_presence_window=30)
    with trio.fail_after(60):
        async with serve_realtime(rate_limits=limits, idle_timeout=None) as server:
            client = await connect(server, "1.0.0", nursery)
            joined = await client.join("room", config=channel_config(presence_key="me"))
            for state in ({"n": 1}, {"n": 2}, {"n": 3}):
                await client.send(
                    presence_track_frame(client.next_ref(), joined.ref, "room", state)
                )
                frame = await client.receive()
                if state["n"] < 3:
                    assert reply_status(frame)[0] == "ok"
                    await client.receive_event("presence_diff")
                else:
                    assert frame.payload == _closed_by(
                        "Client presence rate limit exceeded", "room"
                    )
                    assert (await client.receive()).event == "phx_close"
            # A new join has a new window.
            joined = await client.join("room", config=channel_config(presence_key="me"))
            await client.send(presence_track_frame(client.next_ref(), joined.ref, "room", {}))
            assert reply_status(await client.receive())[0] == "ok"


async def test_rs15_presence_events_per_second(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """RS-15: tracks and delivered presence diffs count; above
    ``max_presence_events_per_second`` a changed track closes the channel with
    ``Too many presence messages per second``."""
    limits = RateLimits(max_presence_events_per_second=0.1)
    with trio.fail_after(60):
        async with serve_realtime(rate_limits=limits, idle_timeout=None) as server:
            client = await connect(server, "2.0.0", nursery)
            joined = await client.join("room", config=channel_config(presence_key="me"))
            track = presence_track_frame(client.next_ref(), joined.ref, "room", {"n": 1})
            await client.send(track)  # one track + one diff delivered: 2 events
            assert reply_status(await client.receive())[0] == "ok"
            await client.receive_event("presence_diff")
            await trio.sleep(5 - trio.current_time())  # (2 + 0) / 2 / 5 = 0.2 > 0.1
            await client.send(presence_track_frame(client.next_ref(), joined.ref, "room", {"n": 1}))
            assert reply_status(await client.receive())[0] == "ok"  # unchanged: not counted
            await client.send(presence_track_frame(client.next_ref(), joined.ref, "room", {"n": 2}))
            system, _closed = await _system_then_close(client)
            assert system.payload == _closed_by("Too many presence messages per second", "room")


async def test_rs15_no_limits_by_default(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """RS-15: without ``rate_limits`` a burst of joins and broadcasts is never limited."""
    with trio.fail_after(60):
        async with serve_realtime(idle_timeout=None) as server:
            client = await connect(server, "1.0.0", nursery)
            refs = [(await client.join(f"r{number}")).ref for number in range(50)]
            for ref in refs:
                await client.send(broadcast_frame(None, ref, "r0", "e", {}))
            await trio.sleep(6)
            assert reply_status(await client.join("more"))[0] == "ok"
            assert server.statistics().channels_joined == 51
