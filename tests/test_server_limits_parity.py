"""RS-15: the local server's track size limit and its counters' idle shutdown, as the server's.

``presence_handler.ex`` ``track/2`` refuses a payload whose Erlang external term size is over
the tenant's limit with ``Track message size exceeded``; ``rate_counter.ex`` stops a counter
whose list has stayed empty at its five-minute idle check, and the next use starts a new one.
Both change what a client sees, so the client side (RS-06) is tested here too. Virtual time.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from _realtime import connect

from trio_realtime import ChannelClosed, RateLimited
from trio_realtime.testing import RateLimits, serve_realtime
from trio_realtime.testing._limits import (
    IDLE_SHUTDOWN,
    MAX_PAYLOAD_SIZE,
    RateCounter,
    term_size,
    track_too_large,
)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ({}, 6),  # :erlang.external_size(%{})
        ("abc", 9),
        ("é", 8),  # bytes, not characters
        (1, 3),
        (256, 6),
        (-1, 6),
        (2**31, 8),
        (1.5, 10),
        (None, 6),
        (True, 7),
        (False, 8),
        ([], 2),
        ([1, 2, 3], 7),  # a list of bytes is a STRING_EXT
        ([1, "a"], 15),
        ({"a": [300]}, 1 + 5 + 6 + (5 + 5 + 1)),  # map, key, list of one INTEGER_EXT
    ],
)
def test_rs15_term_size_is_erlangs_external_size(value: object, size: int) -> None:
    """RS-15: term_size is what :erlang.external_size/1 gives for the decoded JSON term."""
    assert term_size(value) == size


def test_rs15_track_size_limit_boundary() -> None:
    """RS-15: 3,000,500 bytes are allowed, one more is not."""
    overhead = term_size({"blob": ""})
    assert not track_too_large({"blob": "x" * (MAX_PAYLOAD_SIZE - overhead)})
    assert track_too_large({"blob": "x" * (MAX_PAYLOAD_SIZE - overhead + 1)})


async def test_rs15_a_track_over_the_size_limit_closes_the_channel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RS-15: a track over the limit gets system "Track message size exceeded" and phx_close,
    so track() raises ChannelClosed (not a rate limit); one at the limit is tracked."""
    overhead = term_size({"blob": ""})
    async with serve_realtime() as server, connect(server) as client:
        channel = client.channel("room", presence_key="me")
        await channel.join()
        await channel.track({"blob": "x" * (MAX_PAYLOAD_SIZE - overhead)})
        assert list(server.presence_state("room")) == ["me"]
        with pytest.raises(ChannelClosed) as caught:
            await channel.track({"blob": "y" * (MAX_PAYLOAD_SIZE - overhead + 1)})
        assert not isinstance(caught.value, RateLimited)
        assert caught.value.reason == "Track message size exceeded"
        assert caught.value.by_server


def test_rs15_an_idle_counter_stops_and_starts_again() -> None:
    """RS-15: at the idle check (every 5 min from its start) a counter with an empty list
    stops; its next use starts a new one, whose list is short again."""
    counter = RateCounter(1.0, now=0.0)
    assert counter.running
    assert not counter.is_triggered(IDLE_SHUTDOWN - 1)
    counter.advance(IDLE_SHUTDOWN - 1)
    assert counter.running
    counter.add(IDLE_SHUTDOWN + 101.0, 10)  # stopped at 300 s; started again at 401 s
    assert counter.is_triggered(IDLE_SHUTDOWN + 106.0)  # (10 + 0) / 2 / 5
    busy = RateCounter(1.0, now=0.0)
    busy.add(290.0, 1)
    busy.add(IDLE_SHUTDOWN + 101.0, 10)  # not idle at 300 s: the list holds the 1
    assert not busy.is_triggered(IDLE_SHUTDOWN + 106.0)  # 10 / 12 / 5
    lazy = RateCounter(1.0, now=None)
    assert not lazy.running
    lazy.add(7.0, 10)  # started at its first use: ticks at 12 s, 17 s...
    assert not lazy.is_triggered(11.9)
    assert lazy.is_triggered(12.0)


@pytest.mark.parametrize(("quiet_until", "refused"), [(201.0, False), (401.0, True)])
async def test_rs15_rs06_a_burst_after_five_quiet_minutes_hits_the_join_limit(
    quiet_until: float, refused: bool, autojump_clock: trio.testing.MockClock
) -> None:
    """RS-15/RS-06: 10 joins at 201 s are averaged over a full minute (no limit); the same
    joins at 401 s, after the counter stopped idle at 300 s, over a new short list: the limit
    triggers at 406 s and a join then raises RateLimited."""
    limits = RateLimits(max_joins_per_second=1)
    async with serve_realtime(rate_limits=limits) as server, connect(server) as client:
        await trio.sleep_until(quiet_until)
        for index in range(10):
            await client.channel(f"room{index}").join()
        await trio.sleep_until(quiet_until + 5.0)
        late = client.channel("late")
        if refused:
            with pytest.raises(RateLimited) as caught:
                await late.join()
            assert caught.value.limit == "joins"
            assert trio.current_time() == quiet_until + 5.0
        else:
            await late.join()
            assert late.joined
