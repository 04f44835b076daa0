"""HD-04: user input that cannot be sent is refused at the call that received it.

A lone surrogate (``"\\ud800"``, which UTF-8 cannot encode), a value of the wrong type or an
empty name, in any argument that ends up in a frame, raises ``ValueError`` or ``TypeError``
naming the argument, before anything is sent or queued; and no background task (the join loop
of a rejoin, the re-track after a reconnect, the writer) ever meets such a value.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
from _realtime import connect, connect_socket, expected_presence, settle
from conftest import TOKEN

from trio_realtime import (
    BroadcastMessage,
    Channel,
    ChannelClosed,
    ChannelJoinFailed,
    ChannelState,
    RealtimeClient,
    backoff,
)
from trio_realtime.testing import RealtimeServer, serve_realtime

BAD = "x\ud800"
"""Text with a lone surrogate: a Python ``str`` that UTF-8 (and so orjson) cannot encode."""

Call = Callable[[RealtimeClient, Channel], object]

BAD_CALLS: list[tuple[str, Call, type[Exception], str]] = [
    ("broadcasts BAD", lambda c, ch: ch.broadcasts(BAD), ValueError, "event"),
    ("broadcasts ''", lambda c, ch: ch.broadcasts(""), ValueError, "event"),
    ("broadcasts 5", lambda c, ch: ch.broadcasts(5), TypeError, "event"),  # type: ignore[arg-type]
    ("send_broadcast BAD", lambda c, ch: ch.send_broadcast(BAD, {}), ValueError, "event"),
    ("send_broadcast ''", lambda c, ch: ch.send_broadcast("", {}), ValueError, "event"),
    ("send_broadcast 5", lambda c, ch: ch.send_broadcast(5, {}), TypeError, "event"),  # type: ignore[arg-type]
    ("payload BAD", lambda c, ch: ch.send_broadcast("e", {"a": [BAD]}), ValueError, "payload"),
    ("payload key BAD", lambda c, ch: ch.send_broadcast("e", {BAD: 1}), ValueError, "payload"),
    ("payload set", lambda c, ch: ch.send_broadcast("e", {"a": {1}}), TypeError, "payload"),  # type: ignore[dict-item]
    ("payload int key", lambda c, ch: ch.send_broadcast("e", {1: 2}), TypeError, "payload"),  # type: ignore[dict-item]
    ("payload 2**70", lambda c, ch: ch.send_broadcast("e", {"a": 2**70}), ValueError, "payload"),
    ("track BAD", lambda c, ch: ch.track({"a": BAD}), ValueError, "state"),
    ("track key BAD", lambda c, ch: ch.track({BAD: 1}), ValueError, "state"),
    ("track set", lambda c, ch: ch.track({"a": {1}}), TypeError, "state"),  # type: ignore[dict-item]
    ("track int key", lambda c, ch: ch.track({1: "a"}), TypeError, "state"),  # type: ignore[dict-item]
    ("track list", lambda c, ch: ch.track([1]), TypeError, "state"),  # type: ignore[arg-type]
    ("pg event 5", lambda c, ch: ch.postgres_changes(5), TypeError, "event"),  # type: ignore[arg-type]
    ("pg schema BAD", lambda c, ch: ch.postgres_changes(schema=BAD), ValueError, "schema"),
    ("pg schema ''", lambda c, ch: ch.postgres_changes(schema=""), ValueError, "schema"),
    ("pg schema 5", lambda c, ch: ch.postgres_changes(schema=5), TypeError, "schema"),  # type: ignore[arg-type]
    ("pg table BAD", lambda c, ch: ch.postgres_changes(table=BAD), ValueError, "table"),
    ("pg table ''", lambda c, ch: ch.postgres_changes(table=""), ValueError, "table"),
    ("pg table 5", lambda c, ch: ch.postgres_changes(table=5), TypeError, "table"),  # type: ignore[arg-type]
    (
        "pg filter BAD",
        lambda c, ch: ch.postgres_changes(table="t", filter="id=eq." + BAD),
        ValueError,
        "filter",
    ),
    ("pg filter ''", lambda c, ch: ch.postgres_changes(table="t", filter=""), ValueError, "filter"),
    ("pg filter 5", lambda c, ch: ch.postgres_changes(table="t", filter=5), TypeError, "filter"),  # type: ignore[arg-type]
    (
        "pg select BAD",
        lambda c, ch: ch.postgres_changes(table="t", select=["id", BAD]),
        ValueError,
        "select",
    ),
    ("http_send BAD", lambda c, ch: ch.http_send(BAD, {}), ValueError, "event"),
    ("http_send payload", lambda c, ch: ch.http_send("e", {"a": BAD}), ValueError, "payload"),
    ("http_send set", lambda c, ch: ch.http_send("e", {"a": {1}}), TypeError, "payload"),  # type: ignore[dict-item]
    (
        "message topic",
        lambda c, ch: BroadcastMessage(BAD, "e", {}),
        ValueError,
        "topic",
    ),
    (
        "message event",
        lambda c, ch: BroadcastMessage("room", BAD, {}),
        ValueError,
        "event",
    ),
    (
        "message payload",
        lambda c, ch: BroadcastMessage("room", "e", {"a": BAD}),
        ValueError,
        "payload",
    ),
    (
        "message id",
        lambda c, ch: BroadcastMessage("room", "e", {}, id=BAD),
        ValueError,
        "id",
    ),
]


async def call(function: Call, client: RealtimeClient, channel: Channel) -> None:
    result = function(client, channel)
    if isinstance(result, Awaitable):
        await result


def frames_on(server: RealtimeServer, topic: str) -> list[str]:
    return [f.event for c in server.connections for f in c.received_frames if f.topic == topic]


@pytest.mark.parametrize(
    ("function", "error", "argument"),
    [pytest.param(f, e, a, id=label) for label, f, e, a in BAD_CALLS],
)
async def test_hd04_bad_input_is_refused_at_the_call(
    autojump_clock: trio.testing.MockClock, function: Call, error: type[Exception], argument: str
) -> None:
    """HD-04: each bad argument raises ValueError or TypeError naming it, at once; nothing is
    sent for it, no rejoin follows, and the channel goes on working."""
    async with serve_realtime() as server, connect(server) as client:
        channel = client.channel("room", broadcast_self=True, broadcast_ack=True)
        messages = channel.broadcasts()
        await channel.join()
        before = frames_on(server, channel.topic)
        with pytest.raises(error, match=argument):
            await call(function, client, channel)
        assert trio.current_time() == 0.0
        await trio.sleep(30.0)  # any background rejoin would have happened by now
        assert frames_on(server, channel.topic) == before
        assert channel.state is ChannelState.JOINED
        assert client.statistics().connects == 1
        await channel.send_broadcast("after", {"ok": True})
        assert (await messages.receive()).event == "after"


async def test_hd04_a_waiting_push_is_refused_before_it_waits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """HD-04: a push made while the channel joins is checked before it waits for the join:
    the error comes at once, not when the join's reply arrives."""
    async with serve_realtime() as server, connect(server) as client:
        channel = client.channel("room")
        server.reply_delay = 5.0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(channel.join)
            await settle()
            with pytest.raises(ValueError, match="payload"):
                await channel.send_broadcast("e", {"a": BAD})
            assert trio.current_time() == 0.0
            with pytest.raises(TypeError, match="state"):
                await channel.track({"a": {1}})  # type: ignore[dict-item]
            assert trio.current_time() == 0.0
        assert channel.joined


async def test_hd04_bad_binding_before_the_join_is_refused_at_the_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """HD-04: a binding declared before the join is refused where it is declared, and the
    join, which would otherwise carry it, goes through."""
    async with serve_realtime() as server, connect(server) as client:
        channel = client.channel("room")
        with pytest.raises(ValueError, match="table"):
            channel.postgres_changes(table=BAD)
        await channel.join()
        assert channel.joined
        assert channel.statistics().subscriptions == 0
        (join,) = [f for f in server.connections[0].received_frames if f.event == "phx_join"]
        assert isinstance(join.payload, dict)
        assert join.payload["config"]["postgres_changes"] == []  # type: ignore[index,call-overload]


async def test_hd04_an_unsendable_rejoin_gives_up_visibly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """HD-04, HD-09: a background rejoin whose join cannot be sent (a binding that makes it
    larger than the server takes) closes the channel with the reason at the first attempt,
    instead of retrying an unsendable frame forever; the client and other channels live on."""
    async with serve_realtime() as server, connect(server, rejoin=backoff(jitter=0)) as client:
        channel = client.channel("room")
        other = client.channel("other")
        events = channel.channel_events()
        await channel.join()
        await other.join()
        changes = channel.postgres_changes(table="t", filter="id=eq." + "x" * 6_000_000)
        with pytest.raises(ChannelClosed, match="cannot be sent") as info:
            await changes.receive()
        assert trio.current_time() == 0.0
        assert "x" * 100 not in str(info.value)
        failures = []
        while True:
            try:
                event = events.receive_nowait()
            except (trio.WouldBlock, ChannelClosed):
                break
            if isinstance(event, ChannelJoinFailed):
                failures.append(event)
        assert [(f.attempt, f.retry_in) for f in failures] == [(1, None)]
        assert channel.state is ChannelState.CLOSED
        await trio.sleep(30.0)
        assert other.joined
        assert client.statistics().connects == 1


@pytest.mark.parametrize("transport", ["websockets", "trio-websocket"])
async def test_hd04_background_tasks_never_meet_bad_input(transport: str) -> None:
    """HD-04, on both transports over loopback: after a reconnect, the rejoin and the
    re-track run in the background with what the user gave earlier. The tracked state is a
    copy checked at ``track()``, so changing the caller's nested objects afterwards (to
    something unencodable) does not break the re-track; bad bindings and pushes are refused
    at the call; the client stays connected through all of it."""
    async with serve_realtime() as server:
        with trio.fail_after(20):
            async with connect_socket(server, transport, access_token=TOKEN) as client:
                channel = client.channel("room", presence_key="me", broadcast_self=True)
                messages = channel.broadcasts()
                presence = channel.presence_events()
                await channel.join()
                state: dict[str, Any] = {"tags": ["a"], "nested": {"n": 1}}
                await channel.track(state)
                state["tags"].append({1})  # a set: not JSON
                state["nested"]["bad"] = BAD
                with pytest.raises(ValueError, match="filter"):
                    channel.postgres_changes(table="t", filter=BAD)
                with pytest.raises(ValueError, match="event"):
                    await channel.send_broadcast(BAD, {})
                with pytest.raises(ValueError, match="payload"):
                    await channel.send_broadcast("e", {"a": BAD})
                await server.drop_connections()
                await server.wait_until_joined("room")
                while "me" not in expected_presence(server, "room"):
                    await presence.receive()
                (meta,) = expected_presence(server, "room")["me"]
                assert meta["tags"] == ["a"]
                assert meta["nested"] == {"n": 1}
                await channel.send_broadcast("after", {"ok": True})
                while (await messages.receive()).event != "after":
                    pass
                assert client.connected
                assert channel.joined
