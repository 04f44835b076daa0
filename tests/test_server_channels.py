"""LS-01: the local server's Phoenix and channel behaviour, for vsn 1.0.0 and 2.0.0.

Every test drives the server with raw frames (PROTOCOL.md sections 2 to 4 and 8).
"""

from __future__ import annotations

import orjson
import pytest
import trio
from server_support import APIKEY, TOKEN, VSNS, config, connect, obj, reply_status

from trio_realtime import ConnectionClosed
from trio_realtime.protocol import (
    Frame,
    JSONObject,
    access_token_frame,
    broadcast_frame,
    join_frame,
    leave_frame,
    postgres_binding,
)
from trio_realtime.testing import serve_realtime

pytestmark = pytest.mark.parametrize("vsn", VSNS)

V2 = "2.0.0"


def _expected_join_ref(vsn: str, join_ref: str | None) -> str | None:
    """V1 server frames never carry a join_ref."""
    return join_ref if vsn == V2 else None


async def test_ls01_heartbeat_reply(vsn: str, nursery: trio.Nursery) -> None:
    """LS-01: a heartbeat on topic phoenix gets ok {} with its ref and no join_ref."""
    async with serve_realtime() as server:
        client = await connect(server, vsn, nursery)
        await client.send(Frame("phoenix", "heartbeat", {}, "7"))
        raw = await client.receive_raw()
        if vsn == V2:
            assert orjson.loads(raw) == [
                None,
                "7",
                "phoenix",
                "phx_reply",
                {"response": {}, "status": "ok"},
            ]
        else:
            assert orjson.loads(raw) == {
                "event": "phx_reply",
                "payload": {"response": {}, "status": "ok"},
                "ref": "7",
                "topic": "phoenix",
            }


async def test_ls01_join_reply_has_postgres_changes_ids(vsn: str, nursery: trio.Nursery) -> None:
    """LS-01: the join reply always has postgres_changes; identical bindings, identical ids."""
    binding = postgres_binding("INSERT", schema="public", table="messages")
    other = postgres_binding("DELETE", schema="public", table="messages")
    async with serve_realtime() as server:
        first = await connect(server, vsn, nursery)
        plain = await first.join("room1")
        assert reply_status(plain) == ("ok", {"postgres_changes": []})
        assert plain.join_ref == _expected_join_ref(vsn, plain.ref)

        with_bindings = await first.join("room2", bindings=[binding, other])
        status, response = reply_status(with_bindings)
        assert status == "ok"
        entries = [obj(entry) for entry in obj(response)["postgres_changes"]]
        assert [{k: v for k, v in e.items() if k != "id"} for e in entries] == [binding, other]
        ids = [e["id"] for e in entries]
        assert all(isinstance(i, int) and i >= 0 for i in ids)
        assert ids[0] != ids[1]

        second = await connect(server, vsn, nursery)
        again = await second.join("elsewhere", bindings=[dict(reversed(binding.items()))])
        assert reply_status(again)[1] == {"postgres_changes": [{"id": ids[0], **binding}]}


async def test_ls01_v1_frames_have_exactly_four_keys(vsn: str, nursery: trio.Nursery) -> None:
    """LS-01: V1 server frames carry event, payload, ref, topic; V2 frames are 5-arrays."""
    async with serve_realtime() as server:
        client = await connect(server, vsn, nursery)
        await client.send(join_frame("1", "room1", config(presence_enabled=True)))
        for _ in range(2):  # the reply, then presence_state
            decoded = orjson.loads(await client.receive_raw())
            if vsn == V2:
                assert isinstance(decoded, list)
                assert len(decoded) == 5
            else:
                assert sorted(decoded) == ["event", "payload", "ref", "topic"]


async def test_ls01_join_outside_realtime_is_unmatched(vsn: str, nursery: trio.Nursery) -> None:
    """LS-01: only realtime:* topics have channels; others get 'unmatched topic'."""
    async with serve_realtime() as server:
        client = await connect(server, vsn, nursery)
        await client.send(Frame("room:lobby", "phx_join", {"config": {}}, "3", "3"))
        reply = await client.receive()
        assert reply_status(reply) == ("error", {"reason": "unmatched topic"})
        assert (reply.topic, reply.ref, reply.join_ref) == ("room:lobby", "3", None)


async def test_ls01_topic_name_required(vsn: str, nursery: trio.Nursery) -> None:
    """LS-01: joining the bare prefix 'realtime:' is refused with TopicNameRequired."""
    async with serve_realtime() as server:
        client = await connect(server, vsn, nursery)
        await client.send(Frame("realtime:", "phx_join", {"config": {}}, "3", "3"))
        reply = await client.receive()
        assert reply_status(reply) == (
            "error",
            {"reason": "TopicNameRequired: You must provide a topic name"},
        )


async def test_ls01_push_to_unjoined_topic(vsn: str, nursery: trio.Nursery) -> None:
    """LS-01: a non-join push to an unjoined topic gets 'unmatched topic'; a leave gets ok."""
    async with serve_realtime() as server:
        client = await connect(server, vsn, nursery)
        await client.send(broadcast_frame("4", "9", "nowhere", "msg", {"n": 1}))
        reply = await client.receive()
        assert reply_status(reply) == ("error", {"reason": "unmatched topic"})
        assert (reply.topic, reply.ref, reply.join_ref) == ("realtime:nowhere", "4", None)

        await client.send(leave_frame("5", "9", "nowhere"))
        reply = await client.receive()
        assert reply_status(reply) == ("ok", {})
        assert (reply.ref, reply.join_ref) == ("5", _expected_join_ref(vsn, "9"))


async def test_ls01_leave_replies_then_closes(vsn: str, nursery: trio.Nursery) -> None:
    """LS-01: phx_leave -> ok {} with the channel's join_ref, then phx_close {} (ref=join_ref)."""
    async with serve_realtime() as server:
        client = await connect(server, vsn, nursery)
        joined = await client.join("room1")
        join_ref = joined.ref
        await client.send(leave_frame("50", join_ref, "room1"))
        reply = await client.receive()
        assert reply_status(reply) == ("ok", {})
        assert (reply.ref, reply.join_ref) == ("50", _expected_join_ref(vsn, join_ref))
        close = await client.receive()
        assert (close.event, close.payload, close.ref) == ("phx_close", {}, join_ref)
        assert close.join_ref == _expected_join_ref(vsn, join_ref)
        assert server.connections[0].joined_topics == []

        await client.send(broadcast_frame("51", join_ref, "room1", "msg", {}))
        assert reply_status(await client.receive()) == ("error", {"reason": "unmatched topic"})


async def test_ls01_leave_with_stale_join_ref_is_ignored(
    vsn: str, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """LS-01: a phx_leave for another join_ref of the topic gets no reply at all."""
    async with serve_realtime() as server:
        client = await connect(server, vsn, nursery)
        await client.join("room1")
        await client.send(leave_frame("60", "999", "room1"))
        await client.assert_silent()
        assert server.connections[0].joined_topics == ["realtime:room1"]


async def test_ls01_duplicate_join_reply_then_old_close(vsn: str, nursery: trio.Nursery) -> None:
    """LS-01: a second join of a joined topic: the new reply first, then phx_close (old ref)."""
    async with serve_realtime() as server:
        client = await connect(server, vsn, nursery)
        await client.send(join_frame("1", "room1", config()))
        await client.receive()
        await client.send(join_frame("2", "room1", config()))
        reply = await client.receive()
        assert (reply.event, reply.ref) == ("phx_reply", "2")
        assert reply_status(reply)[0] == "ok"
        close = await client.receive()
        assert (close.event, close.ref, close.join_ref) == (
            "phx_close",
            "1",
            _expected_join_ref(vsn, "1"),
        )
        assert server.statistics().channels_joined == 1


async def test_ls01_access_token_gets_no_reply(
    vsn: str, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """LS-01: access_token is accepted silently (the server never replies to it)."""
    async with serve_realtime() as server:
        client = await connect(server, vsn, nursery)
        joined = await client.join("room1")
        await client.send(access_token_frame("8", joined.ref, "room1", TOKEN))
        await client.assert_silent()
        heartbeat = await client.heartbeat()
        assert reply_status(heartbeat) == ("ok", {})


def _token_check(token: str) -> str | None:
    if token in (TOKEN, APIKEY):
        return None
    return "Token has expired 3 seconds ago"


async def test_ls01_token_check_on_join(vsn: str, nursery: trio.Nursery) -> None:
    """LS-01: token_check refuses a join with 'InvalidJWTToken: <message>'."""
    async with serve_realtime(token_check=_token_check) as server:
        client = await connect(server, vsn, nursery)
        refused = await client.join("room1", access_token="expired-SECRET-token")
        assert reply_status(refused) == (
            "error",
            {"reason": "InvalidJWTToken: Token has expired 3 seconds ago"},
        )
        assert reply_status(await client.join("room1", access_token=TOKEN))[0] == "ok"
        # Without a token of its own, the channel runs with the socket's apikey.
        assert reply_status(await client.join("room2"))[0] == "ok"
        # sb_ publishable keys mean "use the socket's token" too.
        assert reply_status(await client.join("room3", access_token="sb_publishable"))[0] == "ok"

        other = await connect(server, vsn, nursery, apikey="stale-SECRET-apikey")
        refused = await other.join("room1")
        assert reply_status(refused)[0] == "error"
        assert server.statistics().joins_refused == 2


async def test_ls01_bad_access_token_closes_the_channel(vsn: str, nursery: trio.Nursery) -> None:
    """LS-01: an invalid access_token event: system error with the message, then phx_close."""
    async with serve_realtime(token_check=_token_check) as server:
        client = await connect(server, vsn, nursery)
        joined = await client.join("room1", access_token=TOKEN)
        await client.send(access_token_frame("9", joined.ref, "room1", "expired-SECRET-token"))
        system = await client.receive()
        assert (system.event, system.ref) == ("system", None)
        assert system.join_ref == _expected_join_ref(vsn, joined.ref)
        assert system.payload == {
            "channel": "room1",
            "extension": "system",
            "message": "Token has expired 3 seconds ago",
            "status": "error",
        }
        close = await client.receive()
        assert (close.event, close.ref) == ("phx_close", joined.ref)
        assert server.connections[0].joined_topics == []


async def test_ls01_channel_limit(vsn: str, nursery: trio.Nursery) -> None:
    """LS-01: more than max_channels_per_client joins -> ChannelRateLimitReached."""
    async with serve_realtime(max_channels_per_client=2) as server:
        client = await connect(server, vsn, nursery)
        assert reply_status(await client.join("a"))[0] == "ok"
        assert reply_status(await client.join("b"))[0] == "ok"
        assert reply_status(await client.join("a"))[0] == "ok"  # a rejoin is not a new channel
        assert (await client.receive()).event == "phx_close"  # of the first join of "a"
        assert reply_status(await client.join("c")) == (
            "error",
            {"reason": "ChannelRateLimitReached: Too many channels"},
        )


async def test_ls01_join_error_delay_blocks_the_connection(
    vsn: str, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """LS-01: a refused join replies after join_error_delay, and blocks later frames meanwhile."""
    async with serve_realtime(join_error_delay=5.0, max_channels_per_client=0) as server:
        client = await connect(server, vsn, nursery)
        start = trio.current_time()
        await client.send(join_frame("1", "room1", config()))
        await client.send(Frame("phoenix", "heartbeat", {}, "2"))
        refused = await client.receive()
        assert trio.current_time() - start == 5.0
        assert reply_status(refused)[0] == "error"
        heartbeat = await client.receive()
        assert (heartbeat.ref, trio.current_time() - start) == ("2", 5.0)


async def test_ls01_replay_needs_a_private_channel(vsn: str, nursery: trio.Nursery) -> None:
    """LS-01: replay on a public channel is refused; invalid replay params are refused."""
    async with serve_realtime() as server:
        client = await connect(server, vsn, nursery)
        replay: JSONObject = {"since": 1, "limit": 5}
        public: JSONObject = {"broadcast": {"replay": replay}, "private": False}
        assert reply_status(await client.join("a", config=public)) == (
            "error",
            {"reason": "UnableToReplayMessages: Replay is not allowed for public channels"},
        )
        invalid: JSONObject = {"broadcast": {"replay": {"since": "x"}}, "private": True}
        assert reply_status(await client.join("b", config=invalid)) == (
            "error",
            {"reason": "UnableToReplayMessages: Replay params are not valid"},
        )
        private: JSONObject = {"broadcast": {"replay": replay}, "private": True}
        assert reply_status(await client.join("c", config=private))[0] == "ok"


async def test_ls01_malformed_frames_are_ignored(vsn: str, nursery: trio.Nursery) -> None:
    """LS-01: malformed frames are logged and ignored; the socket stays open."""
    async with serve_realtime() as server:
        client = await connect(server, vsn, nursery)
        for junk in ("not json", "[1, 2]", '{"topic": "x"}', "42", b"\x09\x00", b""):
            await client.send_raw(junk)
        reply = await client.heartbeat()
        assert reply_status(reply) == ("ok", {})
        statistics = server.statistics()
        # V1 decodes binary frames as JSON too, so both vsn see six malformed frames.
        assert statistics.malformed_frames == 6
        assert statistics.frames_received == 1


async def test_ls01_unknown_events_on_joined_topics_are_ignored(
    vsn: str, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """LS-01: an unknown event on a joined topic is counted and ignored, with no reply."""
    async with serve_realtime() as server:
        client = await connect(server, vsn, nursery)
        joined = await client.join("room1")
        await client.send(Frame("realtime:room1", "something", {}, "5", joined.ref))
        await client.assert_silent()
        assert server.statistics().frames_received_by_topic["realtime:room1"] == 2


async def test_ls01_postgres_system_message_follows_the_join(
    vsn: str, nursery: trio.Nursery
) -> None:
    """LS-01: after a join with bindings: reply, presence_state, then 'Subscribed to PostgreSQL'."""
    async with serve_realtime() as server:
        client = await connect(server, vsn, nursery)
        binding = postgres_binding("*", table="messages")
        joined = await client.join(
            "room1", config=config(presence_enabled=True), bindings=[binding]
        )
        state = await client.receive()
        assert (state.event, state.payload) == ("presence_state", {})
        system = await client.receive()
        assert (system.event, system.ref) == ("system", None)
        assert system.join_ref == _expected_join_ref(vsn, joined.ref)
        assert system.payload == {
            "channel": "room1",
            "extension": "postgres_changes",
            "message": "Subscribed to PostgreSQL",
            "status": "ok",
        }


async def test_ls01_idle_timeout_closes_with_1000(
    vsn: str, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """LS-01: 60 s without client data -> close 1000; any data restarts the timer."""
    async with serve_realtime() as server:
        client = await connect(server, vsn, nursery)
        (connection,) = server.connections
        start = trio.current_time()
        await trio.sleep(50)
        await client.heartbeat()
        with pytest.raises(ConnectionClosed) as caught:
            await client.receive()
        assert caught.value.code == 1000
        assert trio.current_time() - start == 110.0
        await connection.wait_finished()
        assert connection.close_code == 1000
        assert server.connections == []
