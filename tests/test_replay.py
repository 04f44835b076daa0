"""Broadcast replay on private channels (RP-01..03): the join option, delivery, catch-up, and
the local server's store.

Clients run on the local server's in-memory transport under the autojump clock. Stored
messages carry wall-clock ``inserted_at`` times, as in the database, so the tests give them
explicit times where it matters.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import trio
from _realtime import connect, drain, settle
from server_support import config, obj, reply_status
from server_support import connect as raw_connect

from trio_realtime import Broadcast, ChannelJoined, open_realtime
from trio_realtime._replay import CATCH_UP_MARGIN, SEEN_IDS, ReplayTracker
from trio_realtime.testing import RealtimeServer, serve_realtime
from trio_realtime.testing._replay import MAX_PER_TOPIC, MAX_TOPICS

VSNS = ("1.0.0", "2.0.0")
NOW = datetime.now(UTC)


def _join_payloads(server: RealtimeServer) -> list[dict[str, object]]:
    return [
        obj(frame.payload)
        for connection in server.connections
        for frame in connection.received_frames
        if frame.event == "phx_join"
    ]


# -- RP-01 --------------------------------------------------------------------------------------


async def test_rp01_replay_goes_into_the_join_config(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RP-01: ``replay_since`` (datetime or epoch ms) and ``replay_limit`` become
    ``config.broadcast.replay`` ``{"since": ms, "limit": n}``."""
    since = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    async with serve_realtime() as server, connect(server) as client:
        await client.channel("room:a", private=True, replay_since=since, replay_limit=5).join()
        await client.channel("room:b", private=True, replay_since=1_700_000_000_123).join()
        await client.channel("room:c", private=True).join()
        payloads = _join_payloads(server)
    broadcasts = [obj(obj(p["config"])["broadcast"]) for p in payloads]
    assert broadcasts[0]["replay"] == {"since": 1767323045678, "limit": 5}
    assert broadcasts[1]["replay"] == {"since": 1_700_000_000_123}
    assert "replay" not in broadcasts[2]


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"replay_since": 0}, ValueError, "private"),
        ({"replay_on_rejoin": True}, ValueError, "private"),
        ({"private": True, "replay_since": 0, "replay_limit": 26}, ValueError, "1 and 25"),
        ({"private": True, "replay_since": 0, "replay_limit": 0}, ValueError, "1 and 25"),
        ({"private": True, "replay_limit": 5}, ValueError, "needs replay_since"),
        ({"private": True, "replay_since": datetime(2026, 1, 1)}, ValueError, "aware"),
        ({"private": True, "replay_since": "yesterday"}, TypeError, "datetime"),
        ({"private": True, "replay_since": True}, TypeError, "datetime"),
        ({"private": True, "replay_since": -1}, ValueError, "1970"),
        ({"private": True, "replay_since": 0, "replay_limit": 2.5}, TypeError, "int"),
    ],
)
async def test_rp01_bad_replay_options_fail_before_anything_is_sent(
    options: dict[str, object],
    error: type[Exception],
    match: str,
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RP-01: replay on a public channel (as realtime-js refuses it) and invalid values raise at
    ``client.channel()``; no join goes out."""
    async with serve_realtime() as server, connect(server) as client:
        with pytest.raises(error, match=match):
            client.channel("room:x", **options)  # type: ignore[arg-type]
        await settle()
        assert _join_payloads(server) == []
        assert client.channels == []


async def test_rp01_same_topic_with_other_replay_options_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RP-01: ``client.channel`` gives back the same channel only for the same replay options."""
    async with serve_realtime() as server, connect(server) as client:
        channel = client.channel("room:x", private=True, replay_since=5)
        assert client.channel("room:x", private=True, replay_since=5) is channel
        with pytest.raises(ValueError, match="other options"):
            client.channel("room:x", private=True, replay_since=6)
        with pytest.raises(ValueError, match="other options"):
            client.channel("room:x", private=True)


# -- RP-02 --------------------------------------------------------------------------------------


@pytest.mark.parametrize("vsn", VSNS)
async def test_rp02_replayed_messages_arrive_with_meta(
    vsn: str, autojump_clock: trio.testing.MockClock
) -> None:
    """RP-02: stored messages come through ``broadcasts()`` with ``meta.replayed`` and
    ``meta.id``, oldest first, then live ones with ``meta.id`` only (binary: V2 only)."""
    async with serve_realtime() as server:
        first = await server.realtime_send(
            "room:r", "chat", {"n": 1}, inserted_at=NOW - timedelta(minutes=5)
        )
        second = await server.realtime_send(
            "room:r", "blob", b"\x01\x02", inserted_at=NOW - timedelta(minutes=4)
        )
        await server.realtime_send("room:r", "chat", {"n": 0}, inserted_at=NOW - timedelta(hours=2))
        async with connect(server, vsn=vsn) as client:
            channel = client.channel("room:r", private=True, replay_since=NOW - timedelta(hours=1))
            messages = channel.broadcasts()
            await channel.join()
            await settle()
            replayed = drain(messages)
            live_id = await server.realtime_send("room:r", "chat", {"n": 3})
            await settle()
            live = drain(messages)
    expected = [Broadcast("chat", {"n": 1}, "realtime:room:r", {"id": first, "replayed": True})]
    if vsn == "2.0.0":
        expected.append(
            Broadcast("blob", b"\x01\x02", "realtime:room:r", {"id": second, "replayed": True})
        )
    assert replayed == expected
    assert live == [Broadcast("chat", {"n": 3}, "realtime:room:r", {"id": live_id})]


async def test_rp02_rejoin_after_a_gap_replays_from_the_last_message_seen(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RP-02: with ``replay_on_rejoin``, the rejoin after a dropped connection asks for what was
    stored since the last message seen; the replayed copy of that one is dropped."""
    async with serve_realtime() as server:
        async with connect(
            server, reconnect=lambda attempt: 1.0, heartbeat_interval=None
        ) as client:
            channel = client.channel("room:gap", private=True, replay_on_rejoin=True)
            messages = channel.broadcasts()
            joins = channel.channel_events()
            await channel.join()
            before = await server.realtime_send("room:gap", "chat", {"n": 1})
            assert (await messages.receive()).payload == {"n": 1}
            await server.drop_connections()
            missed = [await server.realtime_send("room:gap", "chat", {"n": n}) for n in (2, 3)]
            while True:
                event = await joins.receive()
                if isinstance(event, ChannelJoined) and event.rejoin:
                    break
            await settle()
            caught_up = drain(messages)
            assert channel.replay is not None
            assert channel.replay.duplicates_dropped == 1
            rejoin = _join_payloads(server)[-1]
    assert [(m.payload, m.meta) for m in caught_up] == [
        ({"n": 2}, {"id": missed[0], "replayed": True}),
        ({"n": 3}, {"id": missed[1], "replayed": True}),
    ]
    assert before not in {obj(m.meta)["id"] for m in caught_up}
    replay = obj(obj(obj(rejoin["config"])["broadcast"])["replay"])
    assert set(replay) == {"since"}
    since = replay["since"]
    assert isinstance(since, int)
    assert abs(since / 1000 - (datetime.now(UTC).timestamp() - CATCH_UP_MARGIN)) < 60


def test_rp02_tracker_catch_up_since_and_duplicates() -> None:
    """RP-02: the first join replays from ``replay_since``; a rejoin from the last message seen
    (less the margin), never earlier than ``replay_since``; replayed duplicates are dropped."""
    now = [1_000_000.0]
    tracker = ReplayTracker(999_000_000, 10, on_rejoin=True, clock=lambda: now[0])
    assert tracker.join_replay(rejoin=False) == {"since": 999_000_000, "limit": 10}
    tracker.joined()
    assert tracker.join_replay(rejoin=True) == {
        "since": int((1_000_000.0 - CATCH_UP_MARGIN) * 1000),
        "limit": 10,
    }
    now[0] = 1_000_100.0
    assert tracker.accept({"id": "a"})
    assert tracker.accept({"id": "a"})  # a live copy is delivered
    assert not tracker.accept({"id": "a", "replayed": True})
    assert tracker.accept({"id": "b", "replayed": True})
    assert tracker.accept(None)
    assert tracker.duplicates_dropped == 1
    assert tracker.join_replay(rejoin=True) == {
        "since": int((1_000_100.0 - CATCH_UP_MARGIN) * 1000),
        "limit": 10,
    }
    plain = ReplayTracker(5, None, on_rejoin=False, clock=lambda: now[0])
    assert plain.join_replay(rejoin=True) == {"since": 5}
    for n in range(SEEN_IDS + 1):
        tracker.accept({"id": f"x{n}"})
    assert tracker.accept({"id": "x0", "replayed": True})  # forgotten: bounded memory


# -- RP-03 --------------------------------------------------------------------------------------


@pytest.mark.parametrize("vsn", VSNS)
async def test_rp03_server_replays_within_the_limits(
    vsn: str, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """RP-03: the newest ``limit`` (clamped to 1..25) private messages at or after ``since``,
    oldest first, pushed by the channel after the reply; nothing older than 72 hours."""
    async with serve_realtime() as server:
        await server.realtime_send("t", "old", {}, inserted_at=NOW - timedelta(hours=73))
        await server.realtime_send("t", "public", {}, private=False)
        ids = [
            await server.realtime_send(
                "t", "e", {"n": n}, inserted_at=NOW - timedelta(seconds=60 - n)
            )
            for n in range(30)
        ]
        for limit, expected in ((3, ids[-3:]), (0, ids[-1:]), (100, ids[-25:]), (None, ids[-25:])):
            raw = await raw_connect(server, vsn, nursery)
            replay: dict[str, object] = {"since": int((NOW - timedelta(days=4)).timestamp() * 1000)}
            if limit is not None:
                replay["limit"] = limit
            join_config = config(private=True)
            obj(join_config["broadcast"])["replay"] = replay
            reply = await raw.join("realtime:t", config=join_config)
            assert reply_status(reply)[0] == "ok"
            got = []
            for _ in expected:
                frame = await raw.receive()
                assert frame.event == "broadcast"
                assert frame.join_ref == (reply.ref if vsn == "2.0.0" else None)
                got.append(obj(obj(frame.payload)["meta"])["id"])
            assert got == expected
            await raw.assert_silent()


async def test_rp03_since_filters_and_v1_skips_binary(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """RP-03: ``since`` excludes older messages; binary messages replay to V2 as kind 4 with
    the replay metadata, and are skipped for V1."""
    async with serve_realtime() as server:
        await server.realtime_send("b", "e", {"n": 0}, inserted_at=NOW - timedelta(minutes=10))
        binary = await server.realtime_send(
            "b", "bin", b"\xff", inserted_at=NOW - timedelta(minutes=2)
        )
        text = await server.realtime_send(
            "b", "e", {"n": 1}, inserted_at=NOW - timedelta(minutes=1)
        )
        since = int((NOW - timedelta(minutes=5)).timestamp() * 1000)
        join_config = config(private=True)
        obj(join_config["broadcast"])["replay"] = {"since": since, "limit": 10}
        v1 = await raw_connect(server, "1.0.0", nursery)
        await v1.join("realtime:b", config=join_config)
        frame = await v1.receive()
        assert obj(frame.payload) == {
            "type": "broadcast",
            "event": "e",
            "payload": {"n": 1},
            "meta": {"id": text, "replayed": True},
        }
        await v1.assert_silent()
        v2 = await raw_connect(server, "2.0.0", nursery)
        await v2.join("realtime:b", config=join_config)
        data = await v2.receive_raw()
        assert isinstance(data, bytes)
        assert data[0] == 4
        assert f'"id":"{binary}"'.encode() in data
        assert b'"replayed":true' in data
        assert obj((await v2.receive()).payload)["payload"] == {"n": 1}


async def test_rp03_live_copy_of_a_replayed_message_is_not_sent_again(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """RP-03: a message replayed at join is not delivered again live (its id is remembered)."""
    async with serve_realtime() as server:
        stored = await server.realtime_send("d", "e", {"n": 1})
        join_config = config(private=True)
        obj(join_config["broadcast"])["replay"] = {"since": 0}
        raw = await raw_connect(server, "1.0.0", nursery)
        await raw.join("realtime:d", config=join_config)
        assert obj((await raw.receive()).payload)["meta"] == {"id": stored, "replayed": True}
        await server.realtime_send("d", "e", {"n": 1}, id=stored)  # the same row, live
        await raw.assert_silent()
        other = await server.realtime_send("d", "e", {"n": 2})
        assert obj((await raw.receive()).payload)["meta"] == {"id": other}


async def test_rp03_public_replay_refused_and_store_bounded(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """RP-03: replay on a public join is refused with the server's reason; the store keeps at
    most MAX_PER_TOPIC messages per topic and MAX_TOPICS topics."""
    async with serve_realtime() as server:
        join_config = config()
        obj(join_config["broadcast"])["replay"] = {"since": 0}
        raw = await raw_connect(server, "1.0.0", nursery)
        reply = await raw.join("realtime:pub", config=join_config)
        assert reply_status(reply) == (
            "error",
            {"reason": "UnableToReplayMessages: Replay is not allowed for public channels"},
        )
        for n in range(MAX_PER_TOPIC + 5):
            await server.realtime_send("full", "e", {"n": n})
        kept = server.stored_messages("full")
        assert len(kept) == MAX_PER_TOPIC
        assert kept[0].payload == {"n": 5}
        for n in range(MAX_TOPICS):
            await server.realtime_send(f"topic-{n}", "e", {})
        assert server.stored_messages("full") == []  # the least recently written topic went
        assert len(server.stored_messages("topic-0")) == 1


async def test_rp02_replay_over_the_socket_transport() -> None:
    """RP-02: the same over loopback TCP with the default transport."""
    with trio.fail_after(30):
        async with serve_realtime() as server:
            stored = await server.realtime_send("room:tcp", "e", {"n": 1})
            async with open_realtime(server.url, apikey="anything") as client:
                channel = client.channel("room:tcp", private=True, replay_since=0)
                messages = channel.broadcasts()
                async with channel:
                    message = await messages.receive()
    assert message.meta == {"id": stored, "replayed": True}


async def test_rp03_replay_since_out_of_range(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """RP-03: a ``since`` past year 9999 is refused as the server refuses it; one before year 1
    replays everything; the connection survives both."""
    async with serve_realtime() as server:
        stored = await server.realtime_send("far", "e", {"n": 1})
        raw = await raw_connect(server, "1.0.0", nursery)
        late = config(private=True)
        obj(late["broadcast"])["replay"] = {"since": 10**15}
        assert reply_status(await raw.join("realtime:far", config=late)) == (
            "error",
            {"reason": "UnableToReplayMessages: Replay params are not valid"},
        )
        early = config(private=True)
        obj(early["broadcast"])["replay"] = {"since": -(10**15)}
        assert reply_status(await raw.join("realtime:far", config=early))[0] == "ok"
        replayed = await raw.receive()
        assert obj(obj(replayed.payload)["meta"])["id"] == stored
        assert reply_status(await raw.join("realtime:x"))[0] == "ok"
