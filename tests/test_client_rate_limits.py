"""The client against the server's rate limits (RS-06), with the local server's RateLimits.

Time is virtual (MockClock with autojump). The server's per-second limits are rolling averages
over 5 s ticks from the server's start, so a limit becomes triggered only at 5 s, 10 s...
(``tests/test_server_limits.py``); each test puts its joins or events before a tick.
"""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing
from _realtime import connect, settle

from trio_realtime import (
    ChannelClosed,
    ChannelEvent,
    ChannelJoined,
    Connected,
    ConnectionEvent,
    Disconnected,
    JoinError,
    RateLimited,
    RateLimitReached,
    RealtimeClient,
    Reconnecting,
    Subscription,
    backoff,
    open_realtime,
)
from trio_realtime._cli_output import describe
from trio_realtime.testing import RateLimits, serve_realtime

TOO_MANY_JOINS = "ClientJoinRateLimitReached: Too many joins per second"


def _timeline(events: list[tuple[float, ConnectionEvent]]) -> list[tuple[float, str]]:
    """The connection events as ``(time, what)``, heartbeats left out."""
    lines: list[tuple[float, str]] = []
    for at, event in events:
        if isinstance(event, Reconnecting):
            lines.append((at, f"reconnecting {event.attempt} in {event.delay}"))
        elif isinstance(event, Disconnected):
            lines.append((at, f"disconnected {event.code}"))
        elif isinstance(event, Connected):
            lines.append((at, "connected"))
        elif isinstance(event, RateLimitReached):
            lines.append((at, f"rate limit {event.limit} on {event.topic}: {event.reason}"))
    return lines


async def _record(client: RealtimeClient, into: list[tuple[float, ConnectionEvent]]) -> None:
    async with client.connection_events() as events:
        async for event in events:
            into.append((trio.current_time(), event))


async def test_rs06_backoff_grows_across_rate_limit_closes(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """RS-06: a join refused with ClientJoinRateLimitReached raises RateLimited, the server
    closes with 1001, and the reconnect backoff is not started again by the healthy
    connection before it: the second rate-limit close waits 10 s, not 1 s."""
    limits = RateLimits(max_joins_per_second=1)
    events: list[tuple[float, ConnectionEvent]] = []
    async with (
        serve_realtime(rate_limits=limits) as server,
        connect(server, reconnect=backoff(jitter=0), rejoin=backoff(jitter=0)) as client,
        connect(server) as storm,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(_record, client, events)
        await client.channel("room").join()

        async def join_storm(prefix: str) -> None:
            for index in range(30):
                await storm.channel(f"{prefix}{index}").join()

        # 30 joins at 11 s trigger the limit at the 15 s tick, until the 30 s tick.
        await trio.sleep_until(11.0)
        await join_storm("a")
        await trio.sleep_until(16.0)
        with pytest.raises(RateLimited) as caught:
            await client.channel("late").join()
        assert isinstance(caught.value, JoinError)
        assert (caught.value.limit, caught.value.reason) == ("joins", TOO_MANY_JOINS)
        await trio.sleep_until(50.0)
        await join_storm("b")
        await trio.sleep_until(56.0)
        with pytest.raises(RateLimited):
            await client.channel("late2").join()
        await trio.sleep_until(90.0)
        nursery.cancel_scope.cancel()
    joins = "rate limit joins on None: Too many joins per second"  # the HTTP 429s
    assert _timeline(events) == [
        (16.0, f"rate limit joins on realtime:late: {TOO_MANY_JOINS}"),
        (16.0, "disconnected 1001"),
        (16.0, "reconnecting 1 in 1.0"),
        # While the limit holds, the server refuses the upgrade with 429: still backing off.
        (17.0, joins),
        (17.0, "reconnecting 2 in 2.0"),
        (19.0, joins),
        (19.0, "reconnecting 3 in 5.0"),
        (24.0, joins),
        (24.0, "reconnecting 4 in 10.0"),
        (34.0, "connected"),
        # Up for 22 s, but rate limited: the backoff goes on from attempt 4, not from 1.
        (56.0, f"rate limit joins on realtime:late2: {TOO_MANY_JOINS}"),
        (56.0, "disconnected 1001"),
        (56.0, "reconnecting 5 in 10.0"),
        (66.0, joins),
        (66.0, "reconnecting 6 in 10.0"),
        (76.0, "connected"),
    ]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"rate limit reached (joins) on realtime:late: {TOO_MANY_JOINS}" in warnings
    refused = "rate limit reached (joins) on the connection: Too many joins per second"
    assert warnings.count(refused) == 4


async def test_rs06_rejoins_after_a_reconnect_are_spread(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RS-06: after a reconnect, 45 channels rejoin 20 at once (``rejoin_rate=20``), then one
    every 0.05 s; first joins are never delayed; ``rejoin_rate=None`` rejoins all at once."""
    async with (
        serve_realtime() as server,
        connect(server, reconnect=backoff(jitter=0)) as client,
        connect(server, reconnect=backoff(jitter=0), rejoin_rate=None) as eager,
    ):
        channels = [client.channel(f"room{index}") for index in range(45)]
        eager_channels = [eager.channel(f"other{index}") for index in range(45)]
        start = trio.current_time()
        for channel in [*channels, *eager_channels]:
            await channel.join()
        assert trio.current_time() == start  # first joins: all at once
        joined: dict[str, float] = {}

        async def watch(channel_events: Subscription[ChannelEvent], topic: str) -> None:
            async for event in channel_events:
                if isinstance(event, ChannelJoined) and event.rejoin:
                    joined[topic] = trio.current_time() - start
                    return

        async with trio.open_nursery() as nursery:
            for channel in [*channels, *eager_channels]:
                nursery.start_soon(watch, channel.channel_events(), channel.topic)
            await settle()
            await server.drop_connections()
        paced = sorted(joined[channel.topic] for channel in channels)
        assert paced == pytest.approx([1.0] * 20 + [1.0 + 0.05 * k for k in range(1, 26)])
        assert {joined[channel.topic] for channel in eager_channels} == {1.0}


async def test_rs06_rate_limit_reasons_are_typed_errors_and_events(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """RS-06: ChannelRateLimitReached from join(), "Too many messages per second" from a
    subscription and "Client presence rate limit exceeded" from track() raise RateLimited
    (a JoinError or ChannelClosed too), each logged once and published as RateLimitReached."""
    limits = RateLimits(max_events_per_second=1, client_presence_max_calls=2)
    events: list[tuple[float, ConnectionEvent]] = []
    async with (
        serve_realtime(rate_limits=limits, max_channels_per_client=3) as server,
        connect(server) as client,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(_record, client, events)
        await settle()
        # The channels-per-connection limit, from join().
        for name in ("a", "b", "c"):
            await client.channel(name).join()
        with pytest.raises(RateLimited) as joined:
            await client.channel("d").join()
        assert isinstance(joined.value, JoinError)
        assert (joined.value.limit, joined.value.reason) == (
            "channels",
            "ChannelRateLimitReached: Too many channels",
        )
        for name in ("b", "c", "d"):
            await client.channel(name).leave()

        # The tenant's events per second: 10 broadcasts before the 5 s tick trigger it; the
        # next broadcast delivered closes the channel.
        room = client.channel("room", broadcast_self=True)
        messages = room.broadcasts()
        await room.join()
        for index in range(10):
            await room.send_broadcast("msg", {"n": index})
        await trio.sleep_until(5.0)
        await room.send_broadcast("msg", {"n": 10})
        with pytest.raises(RateLimited) as closed:
            async for _ in messages:
                pass
        assert isinstance(closed.value, ChannelClosed)
        assert closed.value.by_server
        assert (closed.value.limit, closed.value.reason) == (
            "messages",
            "Too many messages per second",
        )

        # Presence messages per channel: the third within 30 s closes the channel.
        lobby = client.channel("lobby")
        await lobby.join()
        await lobby.track({"n": 1})
        await lobby.track({"n": 2})
        with pytest.raises(RateLimited) as tracked:
            await lobby.track({"n": 3})
        assert tracked.value.limit == "client_presence"
        assert tracked.value.reason == "Client presence rate limit exceeded"
        await settle()
        nursery.cancel_scope.cancel()
    assert [line for line in _timeline(events) if "rate limit" in line[1]] == [
        (0.0, "rate limit channels on realtime:d: ChannelRateLimitReached: Too many channels"),
        (5.0, "rate limit messages on realtime:room: Too many messages per second"),
        (5.0, "rate limit client_presence on realtime:lobby: Client presence rate limit exceeded"),
    ]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [w for w in warnings if "Too many messages" in w] == [
        "rate limit reached (messages) on realtime:room: Too many messages per second"
    ]


@pytest.mark.parametrize("rate", [0, -1.0, float("nan"), float("inf"), "20"])
async def test_rs06_rejoin_rate_is_checked(rate: object) -> None:
    """RS-06: ``rejoin_rate`` must be a finite positive number of rejoins per second."""
    with pytest.raises(ValueError, match="rejoin_rate must be a finite number"):
        async with open_realtime("ws://127.0.0.1:9/socket", apikey="k", rejoin_rate=rate):  # type: ignore[arg-type]
            pass


def test_rs06_the_cli_shows_a_rate_limit_event() -> None:
    """RS-06: ``trio-realtime listen`` prints a RateLimitReached event as a connection line."""
    line = describe(RateLimitReached("realtime:room", TOO_MANY_JOINS, "joins"), "realtime:room")
    assert (line.kind, line.label, line.text) == (
        "connection",
        "rate limited",
        f"realtime:room: {TOO_MANY_JOINS}",
    )
    assert line.record == {
        "event": "rate_limited",
        "topic": "realtime:room",
        "limit": "joins",
        "reason": TOO_MANY_JOINS,
    }
    refused = describe(RateLimitReached(None, "Too many joins per second", "joins"), "x")
    assert refused.text == "connection: Too many joins per second"
