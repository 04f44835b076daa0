"""Sending on a channel that is not joined (RS-10), async and blocking.

A push on a channel nobody asked to join fails at once; one made while the channel joins or
rejoins still waits for the join (CH-08, in ``test_client_channels.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
from _realtime import connect
from sync_support import WAIT, ServerThread, time_limit

from trio_realtime import ChannelClosed, ChannelStateError, backoff
from trio_realtime.sync import connect as connect_sync
from trio_realtime.testing import serve_realtime


def _check_message(error: ChannelStateError, topic: str, operation: str) -> None:
    text = str(error)
    assert text == (
        f"channel {topic!r} is not joined: {operation} is not allowed; join() it first (or use "
        "`async with channel:`), or send a broadcast without joining with channel.http_send()"
    )
    assert (error.topic, error.state, error.operation) == (topic, "not joined", operation)


async def test_rs10_push_on_a_channel_never_joined_fails_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RS-10: broadcast, track and untrack on a channel join() was never called on raise
    ChannelStateError at once, saying that join() comes first and http_send() needs no join;
    nothing reaches the server."""
    async with serve_realtime() as server, connect(server) as client:
        channel = client.channel("room", broadcast_ack=True)
        start = trio.current_time()
        calls: list[tuple[Callable[[], Awaitable[None]], str]] = [
            (functools.partial(channel.send_broadcast, "msg", {"n": 1}), "broadcast 'msg'"),
            (functools.partial(channel.track, {"status": "online"}), "presence track"),
            (channel.untrack, "presence untrack"),
        ]
        for call, operation in calls:
            with pytest.raises(ChannelStateError) as caught:
                await call()
            _check_message(caught.value, "realtime:room", operation)
        assert trio.current_time() == start
        assert [f.topic for f in server.connections[0].received_frames] == []
        # Joining afterwards works, and the push goes out.
        await channel.join()
        await channel.send_broadcast("msg", {"n": 2})
        events = [f.event for f in server.connections[0].received_frames]
        assert events == ["phx_join", "broadcast"]


async def test_rs10_push_after_leave_fails_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RS-10: after leave() a push fails at once the same way; a channel the server closed
    still raises ChannelClosed with the server's reason."""
    async with serve_realtime() as server, connect(server) as client:
        channel = client.channel("room")
        await channel.join()
        await channel.leave()
        start = trio.current_time()
        with pytest.raises(ChannelStateError) as caught:
            await channel.send_broadcast("msg", {})
        _check_message(caught.value, "realtime:room", "broadcast 'msg'")
        assert trio.current_time() == start

        closed = client.channel("closed")
        await closed.join()
        await server.system_close("closed", "Too many messages per second")
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(ChannelClosed, match="Too many messages per second"):
            await closed.send_broadcast("msg", {})
        assert trio.current_time() == start


async def test_rs10_a_push_while_the_join_is_in_flight_still_waits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RS-10 with CH-08: a push made after join() was called, while its reply is on its way,
    waits for the join and goes out after it."""
    async with serve_realtime() as server, connect(server, reconnect=backoff(jitter=0)) as client:
        server.reply_delay = 2.0
        channel = client.channel("room")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(channel.join)
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            await channel.send_broadcast("msg", {"n": 1})
            assert trio.current_time() - start == pytest.approx(2.0)
        events = [f.event for f in server.connections[0].received_frames]
        assert events == ["phx_join", "broadcast"]


def test_rs10_blocking_push_on_a_channel_never_joined_fails_at_once() -> None:
    """RS-10: the blocking interface raises the same ChannelStateError at once, before and
    after a join and leave."""
    with (
        time_limit(),
        ServerThread() as server,
        connect_sync(server.url, apikey="anon", timeout=WAIT) as client,
    ):
        channel = client.channel("room")
        with pytest.raises(ChannelStateError) as caught:
            channel.send_broadcast("msg", {"n": 1}, timeout=WAIT)
        _check_message(caught.value, "realtime:room", "broadcast 'msg'")
        with pytest.raises(ChannelStateError) as caught:
            channel.track({"status": "online"}, timeout=WAIT)
        _check_message(caught.value, "realtime:room", "presence track")
        with channel:
            channel.send_broadcast("msg", {"n": 2}, timeout=WAIT)
        with pytest.raises(ChannelStateError) as caught:
            channel.send_broadcast("msg", {"n": 3}, timeout=WAIT)
        _check_message(caught.value, "realtime:room", "broadcast 'msg'")
