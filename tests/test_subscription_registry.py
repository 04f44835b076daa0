"""HD-07: a subscription dropped without ``close()`` does not stay registered.

The channel keeps only the producer's end; a subscription the user no longer references is
garbage-collected and unregisters itself before the next delivery, silently (pytest runs with
warnings as errors, so any warning would fail these tests).
"""

from __future__ import annotations

import gc
import threading
from typing import Any

import pytest
import trio
import trio.testing
from _realtime import connect, drain, settle
from sync_support import WAIT, ServerThread, time_limit

from trio_realtime import Broadcast, Channel, Disconnected, RealtimeClient, Subscription
from trio_realtime import sync as blocking
from trio_realtime._subscription import _Stream
from trio_realtime.testing import serve_realtime

ABANDONED = 1000
FLOOD = 50


@pytest.fixture
def puts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the items put into any subscription's buffer (live or not)."""
    counter = [0]
    put = _Stream._put

    def counting(self: _Stream[Any], item: Any) -> None:
        counter[0] += 1
        put(self, item)

    monkeypatch.setattr(_Stream, "_put", counting)
    return counter


def abandon(channel: Channel, count: int) -> None:
    """Create ``count`` subscriptions of every kind, keep none of them, and collect."""
    for index in range(count):
        kind = index % 5
        if kind == 0:
            channel.broadcasts()
        elif kind == 1:
            channel.broadcasts("flood")
        elif kind == 2:
            channel.system_events()
        elif kind == 3:
            channel.channel_events()
        else:
            # Kept alive by a reference cycle: only the cyclic collector frees it.
            cycle: list[Any] = [channel.broadcasts()]
            cycle.append(cycle)
            del cycle
    gc.collect()


def abandon_connection_events(client: RealtimeClient, count: int) -> None:
    for _ in range(count):
        client.connection_events()
    gc.collect()


def abandon_sync(channel: blocking.Channel, count: int) -> None:
    for _ in range(count):
        channel.broadcasts()
    gc.collect()


async def test_hd07_abandoned_subscriptions_are_unregistered(
    autojump_clock: trio.testing.MockClock, puts: list[int]
) -> None:
    """HD-07: 1,000 subscriptions dropped without close() leave the registry once collected;
    a flood afterwards is put into the live subscriptions only, none of it into the abandoned
    ones."""
    async with serve_realtime() as server, connect(server) as client:
        channel = client.channel("room")
        live = [channel.broadcasts(), channel.broadcasts("flood")]
        await channel.join()
        abandon(channel, ABANDONED)
        assert channel.statistics().subscriptions == len(live)
        puts[0] = 0
        for n in range(FLOOD):
            await server.broadcast("room", "flood", {"n": n})
        await settle()
        assert puts[0] == FLOOD * len(live)
        for sub in live:
            assert [item.payload for item in drain(sub)] == [{"n": n} for n in range(FLOOD)]
        assert client.statistics().channels == 1


async def test_hd07_collection_during_delivery_skips_no_live_subscription(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """HD-07: subscriptions collected while the reader loops over the feeds (the garbage
    collector can run at any allocation) are unregistered after the loop, not during it: no
    live subscription further down the list misses an item."""
    async with serve_realtime() as server, connect(server) as client:
        channel = client.channel("room")
        doomed: list[Subscription[Broadcast]] = [channel.broadcasts() for _ in range(10)]
        live = [channel.broadcasts() for _ in range(3)]
        await channel.join()
        (first,) = [f for f in channel._broadcast_all or () if f.stream is live[0]._stream]
        put = first.put

        def put_and_collect(item: Broadcast) -> None:
            put(item)
            if doomed:
                doomed.clear()  # collected here, in the middle of the reader's loop
                gc.collect()

        first.put = put_and_collect
        for n in range(5):
            server.broadcast_nowait("room", "e", {"n": n})
        await settle()
        assert not doomed
        for sub in live:
            assert [item.payload for item in drain(sub)] == [{"n": n} for n in range(5)]
        assert channel.statistics().subscriptions == len(live)


async def test_hd07_closed_or_ended_subscriptions_do_not_warn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """HD-07: a closed subscription, or one its channel ended (left), is collected without
    any further effect."""
    async with serve_realtime() as server, connect(server) as client:
        channel = client.channel("room")
        closed = channel.broadcasts()
        ended = channel.presence_events()
        await channel.join()
        closed.close()
        await channel.leave()
        assert ended.ended
        del closed, ended
        gc.collect()
        assert channel.statistics().subscriptions == 0


async def test_hd07_abandoned_connection_events_are_unregistered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """HD-07: the client's connection-event subscriptions follow the same policy."""
    async with serve_realtime() as server, connect(server) as client:
        kept = client.connection_events()
        abandon_connection_events(client, 100)
        client.statistics()  # a safe point: the queued unregistrations run
        assert len(client._driver.event_feeds or ()) == 1
        await server.drop_connections()
        assert isinstance(await kept.receive(), Disconnected)
        kept.close()


async def test_hd07_one_queue_for_the_client_and_its_channels(
    autojump_clock: trio.testing.MockClock, puts: list[int]
) -> None:
    """HD-07: the client and its channels share one queue of unregistrations; whichever
    delivers first runs them all, each removing its feed from its own channel, and a flood on
    the other channel afterwards reaches only its live subscription."""
    async with serve_realtime() as server, connect(server) as client:
        quiet, busy = client.channel("quiet"), client.channel("busy")
        kept_quiet, kept_busy = quiet.broadcasts(), busy.broadcasts()
        await quiet.join()
        await busy.join()
        abandon(quiet, 50)
        abandon_connection_events(client, 10)
        await server.broadcast("busy", "e", {"n": 0})  # busy delivers first: its safe point
        await settle()
        assert client._runtime.abandoned == []
        assert (quiet.statistics().subscriptions, busy.statistics().subscriptions) == (1, 1)
        assert not client._driver.event_feeds
        puts[0] = 0
        for n in range(FLOOD):
            await server.broadcast("quiet", "flood", {"n": n})
        await settle()
        assert puts[0] == FLOOD
        assert [item.payload for item in drain(kept_quiet)] == [{"n": n} for n in range(FLOOD)]
        assert [item.payload for item in drain(kept_busy)] == [{"n": 0}]


def test_hd07_sync_subscription_dropped_in_another_thread() -> None:
    """HD-07: a blocking-interface subscription dropped in the caller's thread is collected
    there; its unregistration is queued for the client's trio thread, which runs it before
    delivering the next message."""
    with time_limit(), ServerThread() as server:
        with blocking.connect(server.url, apikey="anon-key") as client:
            channel = client.channel("room")
            live = channel.broadcasts()
            assert threading.current_thread() is threading.main_thread()
            abandon_sync(channel, 50)
            with channel:
                server.broadcast("room", "e", {"n": 1})
                assert live.receive(timeout=WAIT).payload == {"n": 1}
                assert channel.statistics().subscriptions == 1
            live.close()
