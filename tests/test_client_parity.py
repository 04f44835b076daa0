"""The client against the real server's behaviour: presence after rejoins, tokens (RS-*).

All against the in-process local server over the in-memory transport, in virtual time.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from _realtime import connect, settle

from trio_realtime import Channel, ChannelClosed, PresenceEvent, Subscription, backoff
from trio_realtime.testing import RealtimeServer, serve_realtime


async def _wait_presence(events: Subscription[PresenceEvent], kind: str, key: str) -> float:
    """Skip presence events until a ``kind`` of ``key``; return the virtual time it came."""
    while True:
        event = await events.receive()
        if event.event == kind and event.key == key:
            return trio.current_time()


def _tracks(server: RealtimeServer) -> list[object]:
    """The presence track payloads that alice's current connection received."""
    frames = server.connections[-1].received_frames
    return [f.payload for f in frames if f.event == "presence"]


async def test_rs01_own_presence_is_tracked_again_after_every_rejoin(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RS-01: the tracked state is re-sent after a reconnect, a phx_error and a server close
    followed by join(), until untrack(); the other client sees the user come back each time."""
    async with (
        serve_realtime() as server,
        connect(server) as bob_client,
        connect(server, reconnect=backoff(jitter=0), rejoin=backoff(jitter=0)) as alice_client,
    ):
        bob = bob_client.channel("room", presence_key="bob")
        seen = bob.presence_events()
        await bob.join()
        alice: Channel = alice_client.channel("room", presence_key="alice")
        await alice.join()
        await alice.track({"status": "online"})
        await _wait_presence(seen, "join", "alice")

        # A reconnect: the server forgets alice with her connection, and she comes back.
        start = trio.current_time()
        await server.drop_connections(connection=server.connections[-1])
        assert await _wait_presence(seen, "leave", "alice") == start
        assert await _wait_presence(seen, "join", "alice") - start == pytest.approx(1.0)
        assert bob.presence_state()["alice"][0]["status"] == "online"
        assert _tracks(server) == [
            {"type": "presence", "event": "track", "payload": {"status": "online"}}
        ]

        # A newer state replaces the remembered one; a phx_error rejoins after 1 s and re-tracks.
        await alice.track({"status": "away"})
        await settle()
        start = trio.current_time()
        await server.push_error("room", connection=server.connections[-1])
        assert await _wait_presence(seen, "leave", "alice") == start
        assert await _wait_presence(seen, "join", "alice") - start == pytest.approx(1.0)
        assert bob.presence_state()["alice"][0]["status"] == "away"

        # The server closes the channel: it ends; join() again brings the presence back.
        await server.push_close("room", connection=server.connections[-1])
        await _wait_presence(seen, "leave", "alice")
        assert "alice" not in bob.presence_state()
        start = trio.current_time()
        await alice.join()
        assert await _wait_presence(seen, "join", "alice") == start
        assert bob.presence_state()["alice"][0]["status"] == "away"
        assert sorted(server.presence_state("room")) == ["alice"]

        # After untrack() nothing is tracked again.
        await alice.untrack()
        await _wait_presence(seen, "leave", "alice")
        await server.drop_connections(connection=server.connections[-1])
        await server.wait_until_joined("room", count=2)
        await trio.sleep(5.0)
        assert bob.presence_state() == {}
        assert _tracks(server) == []


async def test_rs01_leave_forgets_the_tracked_state(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RS-01: a channel left by the user and joined again does not track anything."""
    async with serve_realtime() as server, connect(server) as client:
        channel = client.channel("room", presence_key="alice")
        await channel.join()
        await channel.track({"status": "online"})
        await channel.leave()
        channel = client.channel("room", presence_key="alice")
        await channel.join()
        await settle()
        assert server.presence_state("room") == {}


async def test_rs01_token_expiry_close_then_join_tracks_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RS-01: after a system error + phx_close (ChannelClosed raised), join() tracks again."""
    async with serve_realtime() as server, connect(server) as client:
        channel = client.channel("room", presence_key="alice")
        messages = channel.broadcasts()
        await channel.join()
        await channel.track({"status": "online"})
        await server.system_close("room", "Token has expired 3 seconds ago")
        with pytest.raises(ChannelClosed):
            await messages.receive()
        assert server.presence_state("room") == {}
        await channel.join()
        await settle()
        assert list(server.presence_state("room")) == ["alice"]


async def test_rs02_set_auth_reaches_a_channel_whose_join_is_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RS-02: set_auth() while the join waits for its reply: the channel gets the new token
    right after the reply."""
    async with serve_realtime() as server, connect(server, access_token="old") as client:
        server.reply_delay = 2.0
        channel = client.channel("room")
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(channel.join)
            await trio.sleep(1.0)
            await client.set_auth("new")
        assert trio.current_time() - start == pytest.approx(2.0)
        await settle()
        frames = server.connections[0].received_frames
        joins = [f.payload for f in frames if f.event == "phx_join"]
        assert [p["access_token"] for p in joins if isinstance(p, dict)] == ["old"]
        sent = [f.payload for f in frames if f.event == "access_token"]
        assert sent == [{"access_token": "new"}]
        later = client.channel("later")
        await later.join()
        frames = server.connections[0].received_frames
        joins = [f.payload for f in frames if f.event == "phx_join"]
        assert len(joins) == 2
        assert isinstance(joins[-1], dict)
        assert joins[-1]["access_token"] == "new"
