"""Backpressure, bad input and secrets (BP-*, BI-*, SE-01), against the local server."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from _realtime import connect, drain, settle
from conftest import APIKEY, SECRET_MARKER, TOKEN

from trio_realtime import (
    Connected,
    Disconnected,
    JoinError,
    RealtimeConnectionError,
    Subscription,
    SubscriptionOverflow,
    backoff,
    open_realtime,
)
from trio_realtime._subscription import Feed, open_subscription
from trio_realtime.protocol import access_token_frame, join_frame
from trio_realtime.testing import serve_realtime


@pytest.mark.parametrize("vsn", ["1.0.0", "2.0.0"])
async def test_bp01_error_policy_raises_after_buffered_items(
    vsn: str, autojump_clock: trio.testing.MockClock
) -> None:
    """BP-01: default overflow: buffered items first, then SubscriptionOverflow with the count."""
    async with serve_realtime() as server, connect(server, vsn=vsn) as client:
        channel = client.channel("room")
        messages = channel.broadcasts(buffer=3)
        await channel.join()
        for n in range(5):
            await server.broadcast("room", "msg", {"n": n})
        await settle()
        assert [(await messages.receive()).payload for _ in range(3)] == [
            {"n": 0},
            {"n": 1},
            {"n": 2},
        ]
        with pytest.raises(SubscriptionOverflow) as info:
            await messages.receive()
        assert info.value.dropped == 2
        await server.broadcast("room", "msg", {"n": 5})
        assert (await messages.receive()).payload == {"n": 5}
        assert messages.statistics().dropped == 2


async def test_bp01_drop_oldest_and_drop_newest(autojump_clock: trio.testing.MockClock) -> None:
    """BP-01: drop_oldest keeps the latest items, drop_newest the earliest."""
    async with serve_realtime() as server, connect(server) as client:
        channel = client.channel("room")
        oldest = channel.broadcasts(buffer=2, overflow="drop_oldest")
        newest = channel.broadcasts(buffer=2, overflow="drop_newest")
        await channel.join()
        for n in range(5):
            await server.broadcast("room", "msg", {"n": n})
        await settle()
        assert [b.payload for b in drain(oldest)] == [{"n": 3}, {"n": 4}]
        assert [b.payload for b in drain(newest)] == [{"n": 0}, {"n": 1}]
        assert oldest.statistics().dropped == 3
        assert newest.statistics().dropped == 3
        assert client.statistics().dropped_items == 6


def test_bp01_bad_subscription_options_are_refused() -> None:
    """BP-01: a buffer below 1 or an unknown policy is a clear error."""
    with pytest.raises(ValueError, match="buffer"):
        open_subscription("x", buffer=0)
    with pytest.raises(ValueError, match="overflow"):
        open_subscription("x", overflow="block")


async def test_bp02_memory_bounded_while_consumer_stalls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """BP-02: a flood meeting a consumer that never reads stays within the buffer."""
    async with serve_realtime() as server, connect(server) as client:
        channel = client.channel("room")
        stalled = channel.broadcasts(buffer=100, overflow="drop_oldest")
        await channel.join()
        for _ in range(20):
            for n in range(500):
                server.broadcast_nowait("room", "msg", {"n": n})
            await server.wait_flushed()
            await settle()
            assert stalled.statistics().buffered <= 100
        stats = stalled.statistics()
        assert stats.buffered == 100
        assert stats.delivered == 10_000
        assert stats.dropped == 9_900


async def test_bp03_oversize_message_closes_and_reconnects(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """BP-03: a message over the cap closes the connection (1009) and the client reconnects."""
    async with (
        serve_realtime() as server,
        connect(server, max_message_size=10_000, reconnect=backoff(jitter=0)) as client,
    ):
        events = client.connection_events()
        channel = client.channel("room")
        await channel.join()
        big = '{"event":"broadcast","payload":{"event":"big","payload":"' + "x" * 20_000 + '"}'
        await server.send_raw(big + ',"ref":null,"topic":"realtime:room"}')
        event = await events.receive()
        assert isinstance(event, Disconnected)
        assert event.code == 1009
        assert "too big" in event.reason
        while not isinstance(await events.receive(), Connected):
            pass
        await server.wait_until_joined("room")


@pytest.mark.parametrize("vsn", ["1.0.0", "2.0.0"])
async def test_bi01_bad_frames_are_skipped_and_the_connection_survives(
    vsn: str, autojump_clock: trio.testing.MockClock
) -> None:
    """BI-01: malformed text, binary junk, wrong shapes, unknown events and topics are skipped."""
    async with serve_realtime() as server, connect(server, vsn=vsn) as client:
        channel = client.channel("room")
        messages = channel.broadcasts()
        await channel.join()
        junk: list[str | bytes] = [
            "not json",
            b"\x09\x00\xff junk",
            "[1, 2]",
            '{"topic": 5}',
            "42",
            '{"event":"mystery","payload":{},"ref":null,"topic":"realtime:room"}',
            '{"event":"broadcast","payload":{},"ref":null,"topic":"realtime:nowhere"}',
            '{"event":"broadcast","payload":"oops","ref":null,"topic":"realtime:room"}',
            '{"event":"presence_diff","payload":[],"ref":null,"topic":"realtime:room"}',
            '{"event":"postgres_changes","payload":{"ids":"x"},"ref":null,"topic":"realtime:room"}',
            '{"event":"system","payload":null,"ref":null,"topic":"realtime:room"}',
        ]
        for raw in junk:
            await server.send_raw(raw)
        await server.broadcast("room", "msg", {"still": "alive"})
        assert (await messages.receive()).payload == {"still": "alive"}
        stats = client.statistics()
        assert stats.malformed_frames >= 3
        assert stats.connects == 1


async def test_bi02_user_error_in_one_consumer_does_not_affect_others(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """BI-02: an exception raised while iterating one subscription leaves the rest working."""
    async with serve_realtime() as server, connect(server) as client:
        channel = client.channel("room")
        fragile = channel.broadcasts()
        sturdy = channel.broadcasts()
        await channel.join()

        async def consume_and_fail() -> None:
            async for _ in fragile:
                raise ZeroDivisionError("user bug")

        await server.broadcast("room", "msg", {"n": 1})
        with pytest.raises(ZeroDivisionError):
            await consume_and_fail()
        await server.broadcast("room", "msg", {"n": 2})
        assert [(await sturdy.receive()).payload for _ in range(2)] == [{"n": 1}, {"n": 2}]
        assert (await fragile.receive()).payload == {"n": 2}


async def test_se01_no_secret_in_reprs_or_errors(autojump_clock: trio.testing.MockClock) -> None:
    """SE-01: apikey and tokens are absent from reprs and exception messages."""
    async with serve_realtime() as server:
        async with connect(server, access_token=TOKEN) as client:
            channel = client.channel("room")
            await channel.join()
            texts = [repr(client), repr(channel), client.url, repr(client.statistics())]
            texts.append(repr(join_frame("1", "room", {}, [], access_token=TOKEN)))
            texts.append(repr(access_token_frame("2", "1", "room", TOKEN)))
            await client.set_auth(f"{TOKEN}-2")
            server.reject_joins(
                "refused", f"InvalidJWTToken: bad {SECRET_MARKER}".replace(SECRET_MARKER, "token")
            )
            with pytest.raises(JoinError) as join_info:
                await client.channel("refused").join()
            texts.append(str(join_info.value))
        for text in texts:
            assert SECRET_MARKER not in text, text
    async with serve_realtime(apikey="other") as server:
        with pytest.raises(RealtimeConnectionError) as info:
            async with connect(server):
                pass  # pragma: no cover
        assert SECRET_MARKER not in str(info.value)
        assert SECRET_MARKER not in repr(info.value)
    with pytest.raises(ValueError, match="URL") as bad_url:
        async with open_realtime(f"ftp://host/?apikey={APIKEY}", apikey=APIKEY):
            pass  # pragma: no cover
    assert SECRET_MARKER not in str(bad_url.value)


def _filled(buffer: int, count: int) -> tuple[Feed[int], Subscription[int]]:
    """A subscription of ``buffer`` items whose feed has put 0, 1, ... ``count - 1``."""
    feed: Feed[int]
    subscription: Subscription[int]
    feed, subscription = open_subscription("x", buffer=buffer)
    for n in range(count):
        feed.put(n)
    return feed, subscription


async def test_bp01_async_for_takes_buffered_items_then_raises_the_overflow() -> None:
    """BP-01 through ``async for`` (whose fast path takes buffered items without a call to
    receive): every buffered item first, then SubscriptionOverflow with the count dropped;
    after it, the items that came since, and the end stops the loop."""
    feed, subscription = _filled(buffer=3, count=5)
    got: list[int] = []
    with pytest.raises(SubscriptionOverflow) as overflow:
        async for item in subscription:
            got.append(item)
    assert got == [0, 1, 2]
    assert overflow.value.dropped == 2
    feed.put(5)
    feed.end(None)
    assert [item async for item in subscription] == [5]


async def test_bp01_async_for_is_a_cancellation_point_that_loses_nothing() -> None:
    """``async for`` over buffered items is still a cancellation point per item, and a
    cancelled iteration leaves the item it did not return in the buffer."""
    _feed, subscription = _filled(buffer=8, count=3)
    got: list[int] = []
    with trio.CancelScope() as scope:
        async for item in subscription:
            got.append(item)
            scope.cancel()
    assert got == [0]
    assert subscription.receive_nowait() == 1
