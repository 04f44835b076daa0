"""Channels, broadcast, presence, postgres_changes and auth (CH-*, BC-*, PR-*, PG-*, AU-*).

All against the in-process local server over the in-memory transport, in virtual time.
"""

from __future__ import annotations

import base64
import functools
import time

import orjson
import pytest
import trio
import trio.testing
from _realtime import connect, drain, settle
from conftest import TOKEN

from trio_realtime import (
    Broadcast,
    ChannelClosed,
    ChannelJoined,
    ChannelJoinFailed,
    ChannelState,
    ChannelStateError,
    JoinError,
    PostgresSubscriptionError,
    ProtocolError,
    PushError,
    PushTimeout,
    backoff,
)
from trio_realtime.testing import serve_realtime

VSNS = ["1.0.0", "2.0.0"]


def _join_payloads(frames: list[object]) -> list[dict[str, object]]:
    payloads = []
    for frame in frames:
        event = getattr(frame, "event", None)
        if event == "phx_join":
            payload = frame.payload  # type: ignore[attr-defined]
            assert isinstance(payload, dict)
            payloads.append(payload)
    return payloads


def _jwt(exp: float) -> str:
    def part(value: object) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256'})}.{part({'exp': exp, 'role': 'SECRET'})}.c2ln"


# -- channels --------------------------------------------------------------------------------


async def test_ch01_topic_prefix_and_same_object(autojump_clock: trio.testing.MockClock) -> None:
    """CH-01: the topic gets realtime:, the same topic gives the same object."""
    async with serve_realtime() as server, connect(server) as client:
        channel = client.channel("room:lobby")
        assert channel.topic == "realtime:room:lobby"
        assert client.channel("realtime:room:lobby") is channel
        with pytest.raises(ValueError, match="other options"):
            client.channel("room:lobby", broadcast_self=True)


@pytest.mark.parametrize("vsn", VSNS)
async def test_ch02_join_payload_has_full_config(
    vsn: str, autojump_clock: trio.testing.MockClock
) -> None:
    """CH-02/AU-01: the join carries the full config plus the access token."""
    async with serve_realtime() as server, connect(server, vsn=vsn, access_token=TOKEN) as client:
        channel = client.channel(
            "room", broadcast_self=True, broadcast_ack=True, presence_key="alice", private=True
        )
        _changes = channel.postgres_changes("INSERT", table="messages", filter="room_id=eq.5")
        await channel.join()
        payload = _join_payloads(list(server.connections[0].received_frames))[0]
        assert payload == {
            "config": {
                "broadcast": {"ack": True, "self": True},
                "presence": {"key": "alice", "enabled": False},
                "postgres_changes": [
                    {
                        "event": "INSERT",
                        "schema": "public",
                        "table": "messages",
                        "filter": "room_id=eq.5",
                    }
                ],
                "private": True,
            },
            "access_token": TOKEN,
        }


async def test_ch03_join_refused_raises_join_error(autojump_clock: trio.testing.MockClock) -> None:
    """CH-03: an error reply raises JoinError with the server's reason; no retry."""
    async with serve_realtime() as server, connect(server) as client:
        reason = "Unauthorized: You do not have permissions to read from this Channel topic: x"
        server.reject_joins("x", reason, delay=5.0)
        channel = client.channel("x")
        start = trio.current_time()
        with pytest.raises(JoinError) as info:
            async with channel:
                pass  # pragma: no cover
        assert info.value.reason == reason
        assert trio.current_time() - start == pytest.approx(5.0)
        assert channel.state is ChannelState.CLOSED
        await trio.sleep(60)
        assert server.statistics().joins_refused == 1


async def test_ch03_join_without_reply_times_out(autojump_clock: trio.testing.MockClock) -> None:
    """CH-03: no reply within the timeout raises PushTimeout at exactly the timeout."""
    async with serve_realtime() as server, connect(server, timeout=3.0) as client:
        server.reply_delay = 60.0
        channel = client.channel("slow")
        start = trio.current_time()
        with pytest.raises(PushTimeout):
            await channel.join()
        assert trio.current_time() - start == pytest.approx(3.0)
        assert channel.state is ChannelState.CLOSED


@pytest.mark.parametrize("vsn", VSNS)
async def test_ch04_ch13_leave_waits_for_reply_and_ends_subscriptions_cleanly(
    vsn: str, autojump_clock: trio.testing.MockClock
) -> None:
    """CH-04/CH-13: leave sends phx_leave, waits for its reply; iterators just stop."""
    async with serve_realtime() as server, connect(server, vsn=vsn) as client:
        channel = client.channel("room")
        messages = channel.broadcasts()
        await channel.join()
        await server.broadcast("room", "msg", {"n": 1})
        server.reply_delay = 2.0
        start = trio.current_time()
        await channel.leave()
        assert trio.current_time() - start == pytest.approx(2.0)
        assert channel.state is ChannelState.CLOSED
        received = [item.payload async for item in messages]
        assert received == [{"n": 1}]
        events = [f.event for f in server.connections[0].received_frames]
        assert events[-1] == "phx_leave"
        # A push on the left channel fails at once (RS-10).
        with pytest.raises(ChannelStateError, match="is not joined"):
            await channel.send_broadcast("msg", {})


@pytest.mark.parametrize("vsn", VSNS)
async def test_ch05_phx_error_rejoins_and_subscriptions_continue(
    vsn: str, autojump_clock: trio.testing.MockClock
) -> None:
    """CH-05: phx_error makes the channel rejoin with backoff; subscriptions continue."""
    async with (
        serve_realtime() as server,
        connect(server, vsn=vsn, rejoin=backoff(jitter=0)) as client,
    ):
        channel = client.channel("room")
        messages = channel.broadcasts("msg")
        joins = channel.channel_events()
        await channel.join()
        first = channel.join_ref
        start = trio.current_time()
        await server.push_error("room")
        await server.wait_until_joined("room")
        await settle()
        assert channel.joined
        assert channel.join_ref != first
        assert trio.current_time() - start == pytest.approx(1.0)
        assert [type(e) for e in drain(joins)] == [ChannelJoined, ChannelJoined]
        await server.broadcast("room", "msg", {"after": True})
        assert (await messages.receive()).payload == {"after": True}


@pytest.mark.parametrize("vsn", VSNS)
async def test_ch06_system_error_then_close_ends_subscriptions(
    vsn: str, autojump_clock: trio.testing.MockClock
) -> None:
    """CH-06: system error + phx_close: subscriptions raise ChannelClosed with the message."""
    async with serve_realtime() as server, connect(server, vsn=vsn) as client:
        channel = client.channel("room")
        messages = channel.broadcasts()
        await channel.join()
        await server.broadcast("room", "msg", {"n": 1})
        await server.system_close("room", "Token has expired 3 seconds ago")
        assert (await messages.receive()).payload == {"n": 1}
        with pytest.raises(ChannelClosed) as info:
            await messages.receive()
        assert info.value.reason == "Token has expired 3 seconds ago"
        assert info.value.by_server
        assert channel.state is ChannelState.CLOSED
        assert client.channels == []


@pytest.mark.parametrize("vsn", VSNS)
async def test_ch07_stale_close_and_error_are_ignored(
    vsn: str, autojump_clock: trio.testing.MockClock
) -> None:
    """CH-07: phx_close / phx_error / replies with another join_ref are dropped."""
    async with serve_realtime() as server, connect(server, vsn=vsn) as client:
        channel = client.channel("room")
        await channel.join()
        topic = channel.topic
        if vsn == "1.0.0":
            close = f'{{"event":"phx_close","payload":{{}},"ref":"999","topic":"{topic}"}}'
            error = (
                f'{{"event":"phx_error","payload":{{"reason":"channel_crash"}},'
                f'"ref":"999","topic":"{topic}"}}'
            )
            reply = (
                f'{{"event":"phx_reply","payload":{{"response":{{}},"status":"ok"}},'
                f'"ref":"998","topic":"{topic}"}}'
            )
        else:
            close = f'["999","999","{topic}","phx_close",{{}}]'
            error = f'["999","999","{topic}","phx_error",{{"reason":"channel_crash"}}]'
            reply = f'["999","998","{topic}","phx_reply",{{"response":{{}},"status":"ok"}}]'
        for raw in (close, error, reply):
            await server.send_raw(raw)
        await settle()
        assert channel.joined
        assert channel.join_ref != "999"


async def test_ch08_pushes_wait_for_join_then_go_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """CH-08: a push made while the join is in flight waits and goes out once joined."""
    async with serve_realtime() as server, connect(server) as client:
        sender = client.channel("room", broadcast_ack=True)
        server.reply_delay = 2.0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.join)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(functools.partial(sender.send_broadcast, "msg", {"n": 1}))
            await trio.sleep(1.0)
            assert server.statistics().frames_received_by_topic.get("realtime:room", 0) == 1
        frames = [f.event for f in server.connections[0].received_frames if f.topic == sender.topic]
        assert frames == ["phx_join", "broadcast"]


async def test_ch08_waiting_pushes_are_bounded(autojump_clock: trio.testing.MockClock) -> None:
    """CH-08: beyond 100 pushes waiting for a join, the oldest raises; the rest time out when
    the join never completes."""
    async with serve_realtime() as server, connect(server, timeout=5.0) as client:
        server.reject_joins("room", "InitializingProjectConnection: Connecting", delay=60.0)
        channel = client.channel("room")
        outcomes: list[str] = []

        async def join() -> None:
            with pytest.raises(PushTimeout):
                await channel.join()

        async def push(index: int) -> None:
            try:
                await channel.send_broadcast("msg", {"i": index})
            except PushError:
                outcomes.append(f"dropped-{index}")
            except PushTimeout:
                outcomes.append("timeout")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(join)
            await trio.testing.wait_all_tasks_blocked()
            for index in range(102):
                nursery.start_soon(push, index)
                await trio.testing.wait_all_tasks_blocked()
        assert sorted(o for o in outcomes if o.startswith("dropped")) == [
            "dropped-0",
            "dropped-1",
        ]
        assert outcomes.count("timeout") == 100


async def test_ch08_push_after_disconnect_goes_out_after_rejoin(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """CH-08/RC-04: a push made while disconnected waits for the rejoin, then goes out."""
    async with (
        serve_realtime() as server,
        connect(server, reconnect=backoff(jitter=0)) as client,
    ):
        channel = client.channel("room", broadcast_ack=True)
        await channel.join()
        await server.drop_connections()
        await settle()
        start = trio.current_time()
        await channel.send_broadcast("msg", {"late": True})
        assert trio.current_time() - start == pytest.approx(1.0)
        assert server.statistics().frames_received_by_topic["realtime:room"] >= 3


@pytest.mark.parametrize("vsn", VSNS)
async def test_ch09_postgres_binding_after_join_rejoins(
    vsn: str, autojump_clock: trio.testing.MockClock
) -> None:
    """CH-09: a postgres_changes subscription declared after the join triggers a rejoin."""
    async with serve_realtime() as server, connect(server, vsn=vsn) as client:
        channel = client.channel("room")
        await channel.join()
        inserts = channel.postgres_changes("INSERT", table="messages")
        await channel.wait_postgres_ready()
        payloads = _join_payloads(list(server.connections[0].received_frames))
        assert len(payloads) == 2
        config = payloads[1]["config"]
        assert isinstance(config, dict)
        assert config["postgres_changes"] == [
            {"event": "INSERT", "schema": "public", "table": "messages"}
        ]
        await server.emit_postgres_change(
            "public",
            "messages",
            "INSERT",
            record={"id": 1},
            columns=[{"name": "id", "type": "int4"}],
        )
        change = await inserts.receive()
        assert change.new == {"id": 1}


async def test_ch10_presence_enabled_when_used(autojump_clock: trio.testing.MockClock) -> None:
    """CH-10: a presence subscription enables presence in the join config."""
    async with serve_realtime() as server, connect(server) as client:
        channel = client.channel("room")
        _presence = channel.presence_events()
        await channel.join()
        payload = _join_payloads(list(server.connections[0].received_frames))[0]
        config = payload["config"]
        assert isinstance(config, dict)
        assert config["presence"] == {"key": "", "enabled": True}


async def test_ch10_track_on_channel_joined_without_presence_resyncs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """CH-10: track on a channel joined without presence rejoins, so the state arrives."""
    async with serve_realtime() as server:
        async with connect(server) as other:
            watcher = other.channel("room", presence_key="bob")
            await watcher.join()
            await watcher.track({"name": "bob"})
            async with connect(server) as client:
                channel = client.channel("room", presence_key="alice")
                await channel.join()
                await channel.track({"name": "alice"})
                await settle()
                state = channel.presence_state()
                assert sorted(state) == ["alice", "bob"]


async def test_ch11_many_channels_one_connection(autojump_clock: trio.testing.MockClock) -> None:
    """CH-11: many channels share one connection; each gets only its own messages."""
    async with serve_realtime(max_channels_per_client=1000) as server, connect(server) as client:
        channels = [client.channel(f"room{i}") for i in range(200)]
        subs = [c.broadcasts() for c in channels]
        async with trio.open_nursery() as nursery:
            for channel in channels:
                nursery.start_soon(channel.join)
        assert len(server.connections) == 1
        await server.broadcast("room137", "msg", {"n": 137})
        await settle()
        counts = [s.statistics().buffered for s in subs]
        assert counts[137] == 1
        assert sum(counts) == 1


async def test_ch12_send_only_channel_left_is_removed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """CH-12: a channel used only to send, then left, leaves nothing behind in the client."""
    async with serve_realtime() as server, connect(server) as client:
        del server
        for index in range(20):
            async with client.channel(f"send{index}") as channel:
                await channel.send_broadcast("msg", {"i": index})
        assert client.channels == []
        assert client.statistics().channels == 0


# -- broadcast -------------------------------------------------------------------------------


@pytest.mark.parametrize("vsn", VSNS)
async def test_bc01_frame_shape_per_vsn(vsn: str, autojump_clock: trio.testing.MockClock) -> None:
    """BC-01: V1 sends a JSON broadcast; V2 sends binary kind 3 (which the server decodes)."""
    async with serve_realtime() as server, connect(server, vsn=vsn) as client:
        channel = client.channel("room")
        await channel.join()
        await channel.send_broadcast("cursor", {"x": 1})
        await settle()
        frame = server.connections[0].received_frames[-1]
        assert frame.event == "broadcast"
        assert frame.payload == {"type": "broadcast", "event": "cursor", "payload": {"x": 1}}


@pytest.mark.parametrize("vsn", VSNS)
async def test_bc02_bc03_event_filter_and_self(
    vsn: str, autojump_clock: trio.testing.MockClock
) -> None:
    """BC-02/BC-03: filtering by event, None for all, several subs; self delivery."""
    async with serve_realtime() as server, connect(server, vsn=vsn) as client:
        selfish = client.channel("room", broadcast_self=True)
        cursor_a = selfish.broadcasts("cursor")
        cursor_b = selfish.broadcasts("cursor")
        everything = selfish.broadcasts()
        async with connect(server, vsn=vsn) as other:
            quiet = other.channel("room")
            quiet_all = quiet.broadcasts()
            await selfish.join()
            await quiet.join()
            await selfish.send_broadcast("cursor", {"x": 1})
            await selfish.send_broadcast("chat", {"text": "hi"})
            await settle()
            assert [b.payload for b in drain(cursor_a)] == [{"x": 1}]
            assert [b.payload for b in drain(cursor_b)] == [{"x": 1}]
            assert [b.event for b in drain(everything)] == ["cursor", "chat"]
            assert [b.event for b in drain(quiet_all)] == ["cursor", "chat"]
            await quiet.send_broadcast("chat", {"from": "other"})
            await settle()
            assert drain(quiet_all) == []
            assert [b.payload for b in drain(everything)] == [{"from": "other"}]


async def test_bc04_ack_waits_for_reply_or_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """BC-04: with ack, send waits for the reply; no reply means PushTimeout."""
    async with serve_realtime() as server, connect(server, timeout=4.0) as client:
        channel = client.channel("room", broadcast_ack=True)
        await channel.join()
        server.reply_delay = 1.5
        start = trio.current_time()
        await channel.send_broadcast("msg", {})
        assert trio.current_time() - start == pytest.approx(1.5)
        server.reply_delay = 10.0
        start = trio.current_time()
        with pytest.raises(PushTimeout):
            await channel.send_broadcast("msg", {})
        assert trio.current_time() - start == pytest.approx(4.0)


async def test_bc05_binary_payloads_as_bytes(autojump_clock: trio.testing.MockClock) -> None:
    """BC-05: binary kind-4 payloads (encoding 0) arrive as bytes under vsn 2.0.0."""
    async with serve_realtime() as server, connect(server, vsn="2.0.0") as client:
        channel = client.channel("room", broadcast_self=True)
        received = channel.broadcasts("blob")
        await channel.join()
        await channel.send_broadcast("blob", b"\x00\x01binary")
        await settle()  # written is not yet read by the server: let it echo first
        await server.broadcast("room", "blob", b"\xffserver")
        assert (await received.receive()).payload == b"\x00\x01binary"
        assert (await received.receive()).payload == b"\xffserver"


async def test_bc05_bytes_under_v1_is_a_clear_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """BC-05: bytes cannot be sent under vsn 1.0.0: ProtocolError, not a corrupt frame."""
    async with serve_realtime() as server, connect(server) as client:
        del server
        channel = client.channel("room")
        await channel.join()
        with pytest.raises(ProtocolError):
            await channel.send_broadcast("blob", b"\x00")


@pytest.mark.parametrize("vsn", VSNS)
async def test_bc06_non_object_payloads_unchanged(
    vsn: str, autojump_clock: trio.testing.MockClock
) -> None:
    """BC-06: list, string, number and null payloads are delivered unchanged."""
    async with serve_realtime() as server, connect(server, vsn=vsn) as client:
        channel = client.channel("room", broadcast_self=True)
        received = channel.broadcasts("v")
        await channel.join()
        values: list[object] = [[1, 2], "text", 3.5, None]
        for value in values:
            await channel.send_broadcast("v", value)  # type: ignore[arg-type]
        await settle()
        assert [item.payload for item in drain(received)] == values
        del server


# -- presence --------------------------------------------------------------------------------


@pytest.mark.parametrize("vsn", VSNS)
async def test_pr01_track_untrack_and_events(
    vsn: str, autojump_clock: trio.testing.MockClock
) -> None:
    """PR-01: track / untrack send frames and await replies; join, leave and sync follow."""
    async with serve_realtime() as server, connect(server, vsn=vsn) as client:
        channel = client.channel("room", presence_key="alice")
        events = channel.presence_events()
        await channel.join()
        await channel.track({"status": "online"})
        await settle()
        seen = drain(events)
        kinds = [(e.event, e.key) for e in seen]
        assert ("join", "alice") in kinds
        assert kinds[-1] == ("sync", None)
        state = channel.presence_state()
        assert list(state) == ["alice"]
        assert state["alice"][0]["status"] == "online"
        assert "presence_ref" in state["alice"][0]
        await channel.untrack()
        await settle()
        assert ("leave", "alice") in [(e.event, e.key) for e in drain(events)]
        assert channel.presence_state() == {}
        frames = [f.payload for f in server.connections[0].received_frames if f.event == "presence"]
        assert frames == [
            {"type": "presence", "event": "track", "payload": {"status": "online"}},
            {"type": "presence", "event": "untrack"},
        ]


async def test_pr07_presence_converges_after_reconnect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """PR-07: after a reconnect, presence converges to the server's state (no ghosts)."""
    async with (
        serve_realtime() as server,
        connect(server, reconnect=backoff(jitter=0)) as client,
    ):
        async with connect(server) as ghost_client:
            ghost = ghost_client.channel("room", presence_key="ghost")
            await ghost.join()
            await ghost.track({"name": "ghost"})
            channel = client.channel("room", presence_key="alice")
            _presence = channel.presence_events()
            await channel.join()
            await channel.track({"name": "alice"})
            await settle()
            assert sorted(channel.presence_state()) == ["alice", "ghost"]
            # Drop only our client's connection; the ghost leaves while we are away.
            ours = [c for c in server.connections if "realtime:room" in c.joined_topics]
            del ours
            await server.drop_connections(connection=server.connections[0])
        await server.wait_until_joined("room")
        await channel.track({"name": "alice"})
        await settle()
        assert sorted(channel.presence_state()) == ["alice"]
        assert sorted(server.presence_state("room")) == ["alice"]


# -- postgres changes -----------------------------------------------------------------------


@pytest.mark.parametrize("vsn", VSNS)
async def test_pg01_to_pg05_routing_conversion_and_readiness(
    vsn: str, autojump_clock: trio.testing.MockClock
) -> None:
    """PG-01, PG-02, PG-03, PG-05: bindings in the join, ids matched, values converted, routing."""
    async with serve_realtime() as server, connect(server, vsn=vsn) as client:
        channel = client.channel("db")
        messages = channel.postgres_changes("*", table="messages")
        users = channel.postgres_changes("INSERT", table="users")
        system = channel.system_events()
        await channel.join()
        await channel.wait_postgres_ready()
        columns = [
            {"name": "id", "type": "int4"},
            {"name": "ok", "type": "bool"},
            {"name": "data", "type": "jsonb"},
            {"name": "at", "type": "timestamp"},
            {"name": "tags", "type": "_int4"},
        ]
        record = {
            "id": "7",
            "ok": "t",
            "data": '{"a": 1}',
            "at": "2026-01-01 10:00:00",
            "tags": "{1,2}",
        }
        await server.emit_postgres_change(
            "public", "messages", "INSERT", record=record, columns=columns
        )
        await server.emit_postgres_change(
            "public", "messages", "UPDATE", record=record, old_record={"id": "7"}, columns=columns
        )
        await server.emit_postgres_change(
            "public", "messages", "DELETE", old_record={"id": "7"}, columns=columns
        )
        await server.emit_postgres_change("public", "users", "INSERT", record={"id": 1})
        await server.emit_postgres_change("public", "users", "DELETE", old_record={"id": 1})
        await settle()
        changes = drain(messages)
        assert [c.event_type for c in changes] == ["INSERT", "UPDATE", "DELETE"]
        insert, update, delete = changes
        assert insert.new == {
            "id": 7,
            "ok": True,
            "data": {"a": 1},
            "at": "2026-01-01T10:00:00",
            "tags": [1, 2],
        }
        assert insert.old == {}
        assert update.old == {"id": 7}
        assert delete.new == {}
        assert delete.old == {"id": 7}
        assert insert.schema == "public"
        assert insert.table == "messages"
        assert insert.errors is None
        user_changes = drain(users)
        assert [(c.table, c.event_type) for c in user_changes] == [("users", "INSERT")]
        assert any(m.message == "Subscribed to PostgreSQL" for m in drain(system))


async def test_pg04_errors_passed_through(autojump_clock: trio.testing.MockClock) -> None:
    """PG-04: the change's errors reach the consumer."""
    async with serve_realtime() as server, connect(server) as client:
        channel = client.channel("db")
        changes = channel.postgres_changes(table="t")
        await channel.join()
        await server.emit_postgres_change(
            "public", "t", "INSERT", record={"id": 1}, errors=["Error 401: Unauthorized"]
        )
        assert (await changes.receive()).errors == ["Error 401: Unauthorized"]


async def test_pg06_wait_until_streaming_and_filter_errors(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """PG-06: wait_postgres_ready waits for the system message; a filter error raises."""
    async with serve_realtime() as server, connect(server) as client:
        del server
        good = client.channel("good")
        _good = good.postgres_changes("INSERT", table="t", filter="id=eq.1")
        await good.join()
        await good.wait_postgres_ready()
        bad = client.channel("bad")
        _bad = bad.postgres_changes("INSERT", table="t", filter="id=wrong.1")
        await bad.join()
        with pytest.raises(PostgresSubscriptionError, match="Error parsing"):
            await bad.wait_postgres_ready()


# -- auth ------------------------------------------------------------------------------------


async def test_au02_token_callback_awaited_before_first_join(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """AU-02: no join goes out before the async token resolves."""
    seen: list[str] = []

    async def token() -> str:
        await trio.sleep(3.0)
        return TOKEN

    def check(value: str) -> str | None:
        seen.append(value)
        return None

    async with (
        serve_realtime(token_check=check) as server,
        connect(server, access_token=token) as client,
    ):
        channel = client.channel("room")
        start = trio.current_time()
        await channel.join()
        assert trio.current_time() - start == pytest.approx(3.0)
        assert seen == [TOKEN]
        payload = _join_payloads(list(server.connections[0].received_frames))[0]
        assert payload["access_token"] == TOKEN


@pytest.mark.parametrize("vsn", VSNS)
async def test_au03_set_auth_sends_access_token_everywhere(
    vsn: str, autojump_clock: trio.testing.MockClock
) -> None:
    """AU-03: set_auth sends access_token on every joined channel; later joins carry it."""
    async with serve_realtime() as server, connect(server, vsn=vsn) as client:
        rooms = [client.channel(f"room{i}") for i in range(2)]
        for room in rooms:
            await room.join()
        new_token = f"{TOKEN}-new"
        await client.set_auth(new_token)
        await settle()
        frames = server.connections[0].received_frames
        sent = [(f.topic, f.payload) for f in frames if f.event == "access_token"]
        assert sent == [(room.topic, {"access_token": new_token}) for room in rooms]
        late = client.channel("late")
        await late.join()
        assert (
            _join_payloads(list(server.connections[0].received_frames))[-1]["access_token"]
            == new_token
        )


async def test_au04_callback_failure_keeps_cached_token(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """AU-04: a failing token callback is logged; the cached token is used."""
    calls = 0

    async def token() -> str:
        nonlocal calls
        calls += 1
        await trio.lowlevel.checkpoint()
        if calls > 1:
            raise RuntimeError("auth service down")
        return TOKEN

    async with (
        serve_realtime() as server,
        connect(server, access_token=token, reconnect=backoff(jitter=0)) as client,
    ):
        channel = client.channel("room")
        await channel.join()
        await server.drop_connections()
        await server.wait_until_joined("room")
        await settle()
        assert calls == 2
        payloads = _join_payloads(list(server.connections[0].received_frames))
        assert payloads[-1]["access_token"] == TOKEN


async def test_au05_expired_jwt_asks_the_callback_again(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AU-05: a cached token whose exp has passed is not sent; the callback is asked first."""
    now = time.time()
    tokens = [_jwt(now + 100), _jwt(now + 3600)]
    handed: list[str] = []

    async def token() -> str:
        await trio.lowlevel.checkpoint()
        value = tokens[len(handed)]
        handed.append(value)
        return value

    async with (
        serve_realtime() as server,
        connect(server, access_token=token) as client,
    ):
        await client.channel("first").join()
        assert handed == tokens[:1]
        monkeypatch.setattr(time, "time", lambda: now + 200)
        await client.channel("second").join()
        assert handed == tokens
        payloads = _join_payloads(list(server.connections[0].received_frames))
        assert [p["access_token"] for p in payloads] == tokens


async def test_rejoin_refused_for_good_closes_channel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A permanent refusal on rejoin closes the channel visibly; it is not retried forever."""
    async with (
        serve_realtime() as server,
        connect(server, reconnect=backoff(jitter=0)) as client,
    ):
        channel = client.channel("room")
        messages = channel.broadcasts()
        events = channel.channel_events()
        await channel.join()
        reason = "Unauthorized: You do not have permissions to read from this Channel topic: room"
        server.reject_joins("room", reason)
        await server.drop_connections()
        with pytest.raises(ChannelClosed) as info:
            await messages.receive()
        assert info.value.reason == reason
        assert isinstance(await events.receive(), ChannelJoined)
        failed = await events.receive()
        assert isinstance(failed, ChannelJoinFailed)
        assert failed.retry_in is None
        with pytest.raises(ChannelClosed):
            await events.receive()
        await trio.sleep(120)
        assert server.statistics().joins_refused == 1


async def test_rejoin_transient_refusal_retries_visibly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A transient refusal on rejoin is retried with backoff, each failure visible."""
    async with (
        serve_realtime() as server,
        connect(server, reconnect=backoff(jitter=0), rejoin=backoff(jitter=0)) as client,
    ):
        channel = client.channel("room")
        events = channel.channel_events()
        await channel.join()
        server.reject_joins("room", "RealtimeRestarting: Realtime is restarting, please standby")
        await server.drop_connections()
        failures: list[float | None] = []
        while len(failures) < 3:
            event = await events.receive()
            if isinstance(event, ChannelJoinFailed):
                failures.append(event.retry_in)
        assert failures == [1.0, 2.0, 5.0]
        server.allow_joins("room")
        while not isinstance(await events.receive(), ChannelJoined):
            pass
        assert channel.joined


async def test_broadcast_payload_identity(autojump_clock: trio.testing.MockClock) -> None:
    """Broadcast items expose event, payload, topic and meta."""
    async with serve_realtime() as server, connect(server) as client:
        channel = client.channel("room")
        received = channel.broadcasts()
        await channel.join()
        await server.broadcast("room", "evt", {"k": "v"})
        item = await received.receive()
        assert item == Broadcast(event="evt", payload={"k": "v"}, topic="realtime:room", meta=None)


async def test_ch03_cancelled_join_does_not_join_behind_the_callers_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """CH-03/CL-05: a join cancelled while waiting for its reply stops joining; if the server
    joined meanwhile, the client leaves again, so client and server agree."""
    async with serve_realtime() as server, connect(server) as client:
        server.reply_delay = 5.0
        channel = client.channel("room")
        with trio.move_on_after(1.0):
            await channel.join()
        await trio.sleep(30.0)
        assert channel.state is ChannelState.CLOSED
        assert server.statistics().channels_joined == 0
        server.reply_delay = 0.0
        await channel.join()
        assert channel.joined
