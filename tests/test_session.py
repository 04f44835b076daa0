"""The session core on its own: exact frames in, exact events out, no trio, no clock.

Like h11's own tests, these drive :class:`trio_realtime.protocol.Session` by hand: every frame
the session builds is compared whole, every frame the "server" sends is written out, and every
event that comes back is compared whole.
"""

from __future__ import annotations

import pytest

from trio_realtime.protocol import (
    BINDING_MISMATCH,
    TRANSITIONS,
    Broadcast,
    ChannelClosedByServer,
    ChannelErrored,
    ChannelOptions,
    ChannelState,
    ChannelStateError,
    Frame,
    HeartbeatReplied,
    JoinAccepted,
    JoinRefused,
    JoinSuperseded,
    JSONObject,
    JSONValue,
    PostgresChangeReceived,
    PostgresFailed,
    PostgresReady,
    PresenceChanged,
    PresenceEvent,
    ProtocolError,
    ReplyReceived,
    Session,
    SystemMessage,
    SystemReceived,
    Trigger,
    binding_key,
    parse_postgres_change,
    postgres_binding,
    ref_counter,
)

TOPIC = "realtime:room"
CONFIG: JSONObject = {
    "broadcast": {"ack": False, "self": False},
    "presence": {"key": "", "enabled": False},
    "private": False,
    "postgres_changes": [],
}


def reply(ref: str, status: str = "ok", response: JSONValue = None, topic: str = TOPIC) -> Frame:
    return Frame(
        topic,
        "phx_reply",
        {"status": status, "response": {} if response is None else response},
        ref,
        ref,
    )


def state_of(session: Session, topic: str = TOPIC) -> ChannelState:
    """The channel's state (a call, so that type checkers do not narrow it)."""
    return session.channel(topic).state


def joined_session(**options: bool) -> tuple[Session, str]:
    session = Session()
    session.add_channel(TOPIC, ChannelOptions(**options))  # type: ignore[arg-type]
    frame = session.join(TOPIC)
    assert frame.ref is not None
    (event,) = session.receive(reply(frame.ref))
    assert isinstance(event, ReplyReceived)
    assert session.join_replied(event) == JoinAccepted(frame.ref, rejoin=False)
    return session, frame.ref


# -- joining ------------------------------------------------------------------------------------


def test_join_frame_and_accepted_reply() -> None:
    """CH-01: the join frame is exact; its reply, once settled, makes the channel JOINED."""
    session = Session()
    channel = session.add_channel(TOPIC)
    frame = session.join(TOPIC, "tok")
    assert frame == Frame(TOPIC, "phx_join", {"config": CONFIG, "access_token": "tok"}, "1", "1")
    assert state_of(session) is ChannelState.JOINING
    assert session.pending_replies == 1
    events = session.receive(reply("1"))
    assert events == (ReplyReceived(TOPIC, "1", "join", "ok", {}),)
    assert session.pending_replies == 0
    assert session.join_replied(events[0]) == JoinAccepted("1", rejoin=False)
    assert state_of(session) is ChannelState.JOINED
    assert channel.join_ref == "1"


def test_refused_join_leaves_the_state_to_the_driver() -> None:
    """CH-03: a refusal is reported with the server's reason; retrying makes it ERRORED."""
    session = Session()
    session.add_channel(TOPIC)
    session.join(TOPIC)
    (event,) = session.receive(reply("1", "error", {"reason": "Unauthorized: nope"}))
    assert isinstance(event, ReplyReceived)
    assert session.join_replied(event) == JoinRefused("Unauthorized: nope")
    assert state_of(session) is ChannelState.JOINING
    session.join_failed(TOPIC)
    assert state_of(session) is ChannelState.ERRORED
    frame = session.join(TOPIC)
    assert (frame.ref, state_of(session)) == ("2", ChannelState.JOINING)


def test_rejoin_is_reported_as_such() -> None:
    """RC-04: a join accepted after an earlier one says ``rejoin``, with the new join_ref."""
    session, _ = joined_session()
    session.connection_lost()
    assert session.channel(TOPIC).state is ChannelState.ERRORED
    frame = session.join(TOPIC)
    assert frame.ref == "2"
    (event,) = session.receive(reply("2"))
    assert session.join_replied(event) == JoinAccepted("2", rejoin=True)  # type: ignore[arg-type]


def test_reply_superseded_by_a_phx_error_of_the_same_batch() -> None:
    """CH-05: a phx_error read after the join reply decides first: the reply is superseded."""
    session = Session()
    session.add_channel(TOPIC)
    session.join(TOPIC)
    (event,) = session.receive(reply("1"))
    assert session.receive(Frame(TOPIC, "phx_error", {}, "1", "1")) == (ChannelErrored(TOPIC),)
    assert session.join_replied(event) == JoinSuperseded()  # type: ignore[arg-type]
    assert state_of(session) is ChannelState.ERRORED


def test_reply_of_a_superseded_join_is_stale() -> None:
    """A second join drops the first one's reply: it is counted as stale."""
    session = Session()
    session.add_channel(TOPIC)
    session.join(TOPIC)
    session.join(TOPIC)
    assert session.receive(reply("1")) == ()
    assert session.stale_frames == 1
    (event,) = session.receive(reply("2"))
    assert session.join_replied(event) == JoinAccepted("2", rejoin=False)  # type: ignore[arg-type]


# -- bindings -----------------------------------------------------------------------------------


def test_bindings_get_the_server_ids_and_route_changes() -> None:
    """PG-02: each binding takes the server's id; a change goes to the bindings it matches,
    and an INSERT binding does not get an UPDATE."""
    session = Session()
    session.add_channel(TOPIC)
    insert = postgres_binding("INSERT", table="t")
    every = postgres_binding("*", table="t")
    key_insert, rejoin = session.add_binding(TOPIC, insert)
    assert rejoin is False
    key_every, _ = session.add_binding(TOPIC, every)
    assert session.add_binding(TOPIC, dict(every)) == (key_every, False)
    frame = session.join(TOPIC)
    assert isinstance(frame.payload, dict)
    assert frame.payload["config"]["postgres_changes"] == [insert, every]  # type: ignore[index,call-overload]
    assert session.channel(TOPIC).postgres == "waiting"
    server: list[JSONValue] = [{**insert, "id": 11}, {**every, "id": 12}]
    (event,) = session.receive(reply("1", response={"postgres_changes": server}))
    assert isinstance(session.join_replied(event), JoinAccepted)  # type: ignore[arg-type]

    def change(kind: str, ids: list[JSONValue]) -> Frame:
        data: JSONObject = {
            "schema": "public",
            "table": "t",
            "type": kind,
            "columns": [],
            "record": {},
        }
        return Frame(TOPIC, "postgres_changes", {"ids": ids, "data": data}, None, None)

    (got,) = session.receive(change("INSERT", [11, 12]))
    assert isinstance(got, PostgresChangeReceived)
    assert got.bindings == (key_insert, key_every)
    (got,) = session.receive(change("UPDATE", [11, 12]))
    assert isinstance(got, PostgresChangeReceived)
    assert got.bindings == (key_every,)
    assert session.receive(change("INSERT", [99])) == ()


def test_a_server_binding_differing_from_the_clients_refuses_the_join() -> None:
    """CH-09: bindings the server echoes differently (another table) refuse the join."""
    session = Session()
    session.add_channel(TOPIC)
    session.add_binding(TOPIC, postgres_binding("INSERT", table="t"))
    session.join(TOPIC)
    other: JSONObject = {"event": "INSERT", "schema": "public", "table": "other", "id": 1}
    (event,) = session.receive(reply("1", response={"postgres_changes": [other]}))
    assert session.join_replied(event) == JoinRefused(BINDING_MISMATCH)  # type: ignore[arg-type]
    assert session.receive(reply("1", response={})) == ()  # the reply was consumed


def test_new_binding_on_a_joined_channel_asks_for_a_rejoin() -> None:
    """PG-03: a binding added to a joined channel must travel in a new join."""
    session, _ = joined_session()
    _, rejoin = session.add_binding(TOPIC, postgres_binding("INSERT", table="t"))
    assert rejoin is True
    assert session.enable_presence(TOPIC) is True
    assert session.enable_presence(TOPIC) is False


def test_postgres_readiness_describes_the_current_join() -> None:
    """PG-05, RS-04: "Subscribed to PostgreSQL" makes the join ready; the next join waits
    again; an error is reported."""
    session = Session()
    session.add_channel(TOPIC)
    spec = postgres_binding("INSERT", table="t")
    session.add_binding(TOPIC, spec)
    session.join(TOPIC)
    (event,) = session.receive(reply("1", response={"postgres_changes": [{**spec, "id": 1}]}))
    session.join_replied(event)  # type: ignore[arg-type]
    text = "Subscribed to PostgreSQL"
    ok: JSONObject = {
        "extension": "postgres_changes",
        "status": "ok",
        "message": text,
    }
    events = session.receive(Frame(TOPIC, "system", ok, None, "1"))
    assert events == (
        PostgresReady(TOPIC),
        SystemReceived(TOPIC, SystemMessage("postgres_changes", "ok", text, None, ok)),
    )
    assert session.channel(TOPIC).postgres == "ready"
    session.connection_lost()
    session.join(TOPIC)
    assert session.channel(TOPIC).postgres == "waiting"
    # An error the server retries leaves the join waiting; a parameter error is final.
    timeouts = '{:error, "Too many database timeouts"}'
    retried: JSONObject = {"extension": "postgres_changes", "status": "error", "message": timeouts}
    events = session.receive(Frame(TOPIC, "system", retried, None, "2"))
    assert events[0] == PostgresFailed(TOPIC, timeouts, final=False)
    waiting = session.channel(TOPIC)
    assert (waiting.postgres, waiting.postgres_error) == ("waiting", timeouts)
    text = 'Error parsing `filter` params: ["undefined"]'
    bad: JSONObject = {"extension": "postgres_changes", "status": "error", "message": text}
    events = session.receive(Frame(TOPIC, "system", bad, None, "2"))
    assert events[0] == PostgresFailed(TOPIC, text)
    failed = session.channel(TOPIC)
    assert (failed.postgres, failed.postgres_error) == ("failed", text)


# -- server closes, errors and stale frames ----------------------------------------------------


def test_system_error_then_phx_close_closes_with_the_message() -> None:
    """CH-06: a system error followed by phx_close closes the channel with that reason."""
    session, _ = joined_session()
    system: JSONObject = {"extension": "system", "status": "error", "message": "Token has expired"}
    (event,) = session.receive(Frame(TOPIC, "system", system, None, "1"))
    assert isinstance(event, SystemReceived)
    assert session.receive(Frame(TOPIC, "phx_close", {}, "1", "1")) == (
        ChannelClosedByServer(TOPIC, "Token has expired"),
    )
    assert session.channel(TOPIC).state is ChannelState.CLOSED
    assert session.receive(Frame(TOPIC, "phx_close", {}, "1", "1")) == ()


def test_stale_close_error_presence_and_system_frames_are_dropped() -> None:
    """CH-07: phx_close, phx_error, presence and system frames of another join_ref are
    dropped and counted; the channel stays joined and its presence empty."""
    session, _ = joined_session()
    stale = [
        Frame(TOPIC, "phx_close", {}, "0", "0"),
        Frame(TOPIC, "phx_error", {}, "0", "0"),
        Frame(TOPIC, "presence_state", {"a": {"metas": [{"phx_ref": "x"}]}}, None, "0"),
        Frame(TOPIC, "presence_diff", {"joins": {}, "leaves": {}}, None, "0"),
        Frame(TOPIC, "system", {"status": "error", "message": "old"}, None, "0"),
        Frame(TOPIC, "phx_close", {}, "0", None),  # V1: the ref is the join_ref
    ]
    for frame in stale:
        assert session.receive(frame) == (), frame
    assert session.stale_frames == len(stale)
    assert session.channel(TOPIC).state is ChannelState.JOINED
    assert session.presence_state(TOPIC) == {}
    # The dropped system error left no close reason behind.
    assert session.receive(Frame(TOPIC, "phx_close", {}, "1", "1")) == (
        ChannelClosedByServer(TOPIC, "the server closed the channel"),
    )


def test_phx_error_makes_the_channel_errored() -> None:
    """CH-05: a phx_error for the current join: ERRORED, reported once."""
    session, _ = joined_session()
    assert session.receive(Frame(TOPIC, "phx_error", {}, "1", "1")) == (ChannelErrored(TOPIC),)
    assert session.channel(TOPIC).state is ChannelState.ERRORED


def test_presence_for_the_current_join_is_applied() -> None:
    """PR-01: presence_state for the current join gives join and sync events."""
    session, _ = joined_session(presence_enabled=True)
    state: JSONObject = {"alice": {"metas": [{"phx_ref": "r1", "status": "on"}]}}
    events = session.receive(Frame(TOPIC, "presence_state", state, None, "1"))
    meta: JSONObject = {"presence_ref": "r1", "status": "on"}
    assert events == (
        PresenceChanged(TOPIC, PresenceEvent("join", "alice", [], [meta])),
        PresenceChanged(TOPIC, PresenceEvent("sync", None, state={"alice": [meta]})),
    )
    assert session.presence_state(TOPIC) == {"alice": [meta]}


def test_unknown_topics_events_and_malformed_payloads_are_counted() -> None:
    """BI-01: frames nobody can use are dropped and counted, never raised."""
    session, _ = joined_session()
    frames = [
        Frame("realtime:other", "broadcast", {"event": "x", "payload": {}}, None, None),
        Frame("realtime:other", "phx_close", {}, None, None),
        Frame(TOPIC, "what", {}, None, None),
        Frame(TOPIC, "postgres_changes", [], None, None),
        Frame(TOPIC, "presence_diff", [], None, "1"),
        Frame(TOPIC, "system", "text", None, "1"),
    ]
    for frame in frames:
        assert session.receive(frame) == ()
    assert session.unroutable_frames == len(frames)


def test_broadcast_event() -> None:
    """A broadcast comes out as the public Broadcast item."""
    session, _ = joined_session()
    payload: JSONObject = {
        "type": "broadcast",
        "event": "cursor",
        "payload": {"x": 1},
        "meta": {"id": "m"},
    }
    (event,) = session.receive(Frame(TOPIC, "broadcast", payload, None, "1"))
    assert event == Broadcast("cursor", {"x": 1}, TOPIC, {"id": "m"})
    assert session.receive(Frame(TOPIC, "broadcast", [1], None, "1")) == ()


# -- pushes, tokens, leaves ---------------------------------------------------------------------


def test_push_with_ack_expects_its_reply_and_reports_an_error_status() -> None:
    """BC-04, CH-08: an acked push is answered by ref; status error comes out as such."""
    session, _ = joined_session()
    frame = session.broadcast(TOPIC, "e", {"a": 1}, ack=True)
    assert frame == Frame(
        TOPIC, "broadcast", {"type": "broadcast", "event": "e", "payload": {"a": 1}}, "2", "1"
    )
    assert session.expecting_reply("2")
    (event,) = session.receive(reply("2", "error", {"reason": "payload too large"}))
    assert event == ReplyReceived(TOPIC, "2", "push", "error", {"reason": "payload too large"})
    assert isinstance(event, ReplyReceived)
    assert (event.ok, event.reason) == (False, "payload too large")
    unacked = session.broadcast(TOPIC, "e", 1, ack=False)
    assert not session.expecting_reply(unacked.ref or "")
    track = session.track(TOPIC, {"s": 1})
    assert track.payload == {"type": "presence", "event": "track", "payload": {"s": 1}}
    session.forget(track.ref or "")
    assert session.pending_replies == 0
    assert session.receive(reply(track.ref or "")) == ()


def test_broadcast_refs_are_the_broadcast_frames_refs() -> None:
    """BC-04: broadcast_refs numbers a push as broadcast does, expecting its reply only with
    ack, and refuses a channel that is not joined."""
    session, _ = joined_session()
    assert session.broadcast_refs(TOPIC, ack=True) == ("2", "1")
    assert session.expecting_reply("2")
    assert session.broadcast_refs(TOPIC, ack=False) == ("3", "1")
    assert not session.expecting_reply("3")
    assert session.broadcast(TOPIC, "e", 1, ack=False).ref == "4"
    session.forget("2")
    assert session.pending_replies == 0
    session.add_channel("realtime:other")
    with pytest.raises(ChannelStateError, match="'realtime:other' is closed: broadcast"):
        session.broadcast_refs("realtime:other", ack=True)
    assert session.pending_replies == 0


def test_push_on_a_channel_that_is_not_joined_names_the_state() -> None:
    """RS-10: pushing on a channel never joined is refused, naming its state."""
    session = Session()
    session.add_channel(TOPIC)
    with pytest.raises(ChannelStateError, match="'realtime:room' is closed: broadcast") as info:
        session.broadcast(TOPIC, "e", {}, ack=False)
    assert (info.value.state, info.value.operation) == ("closed", "broadcast")
    with pytest.raises(ChannelStateError):
        session.untrack(TOPIC)


def test_no_access_token_while_not_joined() -> None:
    """AU-03: access_token goes only to a joined channel; others get it with their join."""
    session = Session()
    session.add_channel(TOPIC)
    assert session.access_token(TOPIC, "t") is None
    session.join(TOPIC)
    assert session.access_token(TOPIC, "t") is None
    (event,) = session.receive(reply("1"))
    session.join_replied(event)  # type: ignore[arg-type]
    assert session.access_token(TOPIC, "t") == Frame(
        TOPIC, "access_token", {"access_token": "t"}, "2", "1"
    )
    assert session.access_token("realtime:nothing", "t") is None


def test_leave_of_a_joined_channel() -> None:
    """CH-02: leave goes out with the join_ref; LEAVING until answered; the phx_close that
    follows the reply is ignored."""
    session, _ = joined_session()
    frame = session.leave(TOPIC)
    assert frame == Frame(TOPIC, "phx_leave", {}, "2", "1")
    assert session.channel(TOPIC).state is ChannelState.LEAVING
    (event,) = session.receive(reply("2"))
    assert event == ReplyReceived(TOPIC, "2", "leave", "ok", {})
    session.leave_done(TOPIC)
    assert session.channel(TOPIC).state is ChannelState.CLOSED
    assert session.receive(Frame(TOPIC, "phx_close", {}, "1", "1")) == ()


def test_leave_of_a_joining_channel_closes_it_at_once() -> None:
    """CL-05: a leave while joining tells the server and closes the channel now."""
    session = Session()
    session.add_channel(TOPIC)
    session.join(TOPIC)
    assert session.leave(TOPIC) == Frame(TOPIC, "phx_leave", {}, "2", "1")
    assert session.channel(TOPIC).state is ChannelState.CLOSED
    assert session.pending_replies == 0
    assert session.leave(TOPIC) is None


def test_connection_lost() -> None:
    """RC-04: after a loss joined channels are ERRORED, a leave in flight ends, nothing is
    expected any more."""
    session, _ = joined_session()
    session.add_channel("realtime:b")
    session.join("realtime:b")
    session.add_channel("realtime:c")
    session.heartbeat(5.0)
    session.broadcast(TOPIC, "e", 1, ack=True)
    session.leave(TOPIC)
    assert session.connection_lost() == [TOPIC]
    assert session.channel(TOPIC).state is ChannelState.CLOSED
    assert session.channel("realtime:b").state is ChannelState.ERRORED
    assert session.channel("realtime:c").state is ChannelState.CLOSED
    assert (session.pending_replies, session.heartbeat_outstanding) == (0, None)


def test_close_forget_drops_bindings_and_presence() -> None:
    """CH-02: a channel closed for good forgets its bindings and presence, with leaves."""
    session, _ = joined_session()
    state: JSONObject = {"a": {"metas": [{"phx_ref": "r"}]}}
    session.receive(Frame(TOPIC, "presence_state", state, None, "1"))
    session.add_binding(TOPIC, postgres_binding())
    leaves = session.close(TOPIC, forget=True)
    assert [event.event for event in leaves] == ["leave", "sync"]
    assert session.channel(TOPIC).bindings == ()
    session.remove_channel(TOPIC)
    assert TOPIC not in session.channels


# -- heartbeat ----------------------------------------------------------------------------------


def test_heartbeat_reply_with_the_right_ref_only() -> None:
    """HB-01, HB-03: the heartbeat is outstanding until a reply with its ref; a reply with
    another ref is ignored; a second heartbeat while one is outstanding is refused."""
    session = Session()
    assert session.heartbeat(12.5) == Frame("phoenix", "heartbeat", {}, "1", None)
    assert session.heartbeat_outstanding == ("1", 12.5)
    with pytest.raises(ProtocolError):
        session.heartbeat(13.0)
    assert session.receive(reply("7", topic="phoenix")) == ()
    assert session.heartbeat_outstanding == ("1", 12.5)
    assert session.receive(reply("1", topic="phoenix")) == (HeartbeatReplied("1", "ok", 12.5),)
    assert session.receive(reply("1", topic="phoenix")) == ()
    assert session.heartbeat(14.0).ref == "2"  # no longer outstanding


# -- the transition table -----------------------------------------------------------------------


def test_illegal_transitions_raise_naming_the_state() -> None:
    """Every (state, trigger) outside the table raises ChannelStateError naming both."""
    session = Session()
    channel = session.add_channel(TOPIC)
    for state in ChannelState:
        for trigger in Trigger:
            channel.state = state
            if (state, trigger) in TRANSITIONS:
                channel._fire(trigger)
                assert channel.state is TRANSITIONS[state, trigger]
                continue
            with pytest.raises(ChannelStateError) as info:
                channel._fire(trigger)
            assert info.value.state == state.value
            assert info.value.operation == trigger.value
            assert channel.state is state


def test_joining_a_leaving_channel_is_illegal() -> None:
    """CH-02: a channel that is leaving cannot be joined until the leave is done."""
    session, _ = joined_session()
    session.leave(TOPIC)
    with pytest.raises(ChannelStateError, match="is leaving: send_join"):
        session.join(TOPIC)


def test_two_channels_on_one_topic_are_refused() -> None:
    session = Session()
    session.add_channel(TOPIC)
    with pytest.raises(ValueError, match="already exists"):
        session.add_channel(TOPIC)


# -- what mutation testing found untested ---------------------------------------------------------


def test_ch02_join_config_carries_every_option() -> None:
    """CH-02: each channel option reaches its own key of the join's config, and nothing else."""
    session = Session()
    options = ChannelOptions(
        broadcast_self=True, broadcast_ack=False, presence_key="k", private=True
    )
    session.add_channel(TOPIC, options)
    frame = session.join(TOPIC)
    assert frame.payload == {
        "config": {
            "broadcast": {"ack": False, "self": True},
            "presence": {"key": "k", "enabled": False},
            "private": True,
            "postgres_changes": [],
        }
    }
    other = "realtime:other"
    session.add_channel(other, ChannelOptions(broadcast_ack=True, presence_enabled=True))
    assert session.join(other).payload == {
        "config": {
            "broadcast": {"ack": True, "self": False},
            "presence": {"key": "", "enabled": True},
            "private": False,
            "postgres_changes": [],
        }
    }


def test_ch02_join_config_carries_the_replay_options_as_a_copy() -> None:
    """CH-02: a channel's replay options travel under ``broadcast.replay``, copied."""
    session = Session()
    channel = session.add_channel(TOPIC)
    channel.replay = {"since": 10, "limit": 5}
    frame = session.join(TOPIC)
    assert isinstance(frame.payload, dict)
    config = frame.payload["config"]
    assert config == {
        "broadcast": {"ack": False, "self": False, "replay": {"since": 10, "limit": 5}},
        "presence": {"key": "", "enabled": False},
        "private": False,
        "postgres_changes": [],
    }
    assert isinstance(config, dict)
    broadcast = config["broadcast"]
    assert isinstance(broadcast, dict)
    assert broadcast["replay"] is not channel.replay


def test_pr01_track_frame_is_exact_and_remembered_once_accepted() -> None:
    """PR-01, RS-01: a track is answered by ref; only an accepted one is remembered, as a copy."""
    session, _ = joined_session()
    state: JSONObject = {"status": "online"}
    frame = session.track(TOPIC, state)
    assert frame == Frame(
        TOPIC,
        "presence",
        {"type": "presence", "event": "track", "payload": {"status": "online"}},
        "2",
        "1",
    )
    assert session.expecting_reply("2")
    state["status"] = "changed"
    assert session.channel(TOPIC).tracked is None
    (event,) = session.receive(reply("2"))
    assert event == ReplyReceived(TOPIC, "2", "push", "ok", {})
    assert session.channel(TOPIC).tracked == {"status": "online"}
    refused = session.track(TOPIC, {"status": "away"})
    (event,) = session.receive(reply(refused.ref or "", "error", {}))
    assert event == ReplyReceived(TOPIC, "3", "push", "error", {})
    assert session.channel(TOPIC).tracked == {"status": "online"}


def test_pr01_untrack_frame_is_exact_and_forgets_every_track() -> None:
    """PR-01, RS-01: untrack is answered by ref, and forgets the tracked state at once, with
    any track still waiting for its reply on the channel (not on other channels)."""
    session, _ = joined_session()
    other = "realtime:other"
    session.add_channel(other)
    other_join = session.join(other)
    (joined,) = session.receive(reply(other_join.ref or "", topic=other))
    assert isinstance(joined, ReplyReceived)
    session.join_replied(joined)
    accepted = session.track(TOPIC, {"s": 1})
    session.receive(reply(accepted.ref or ""))
    waiting = session.track(TOPIC, {"s": 2})
    elsewhere = session.track(other, {"o": 1})
    frame = session.untrack(TOPIC)
    assert frame == Frame(
        TOPIC, "presence", {"type": "presence", "event": "untrack"}, frame.ref, "1"
    )
    assert frame.ref not in (None, waiting.ref, elsewhere.ref)
    assert session.expecting_reply(frame.ref or "")
    assert session.channel(TOPIC).tracked is None
    session.receive(reply(waiting.ref or ""))
    assert session.channel(TOPIC).tracked is None
    session.receive(reply(elsewhere.ref or "", topic=other))
    assert session.channel(other).tracked == {"o": 1}
    (event,) = session.receive(reply(frame.ref or ""))
    assert event == ReplyReceived(TOPIC, frame.ref or "", "push", "ok", {})


def test_close_drops_the_channels_replies_only() -> None:
    """CH-02: closing a channel drops the replies it waited for, not another channel's; without
    ``forget`` its bindings and tracked state stay for the next join."""
    session, _ = joined_session()
    other = "realtime:other"
    session.add_channel(other)
    other_join = session.join(other)
    accepted = session.track(TOPIC, {"s": 1})
    session.receive(reply(accepted.ref or ""))
    session.add_binding(TOPIC, postgres_binding())
    push = session.broadcast(TOPIC, "e", {}, ack=True)
    assert session.close(TOPIC) == []
    assert state_of(session) is ChannelState.CLOSED
    assert not session.expecting_reply(push.ref or "")
    assert session.expecting_reply(other_join.ref or "")
    channel = session.channel(TOPIC)
    assert channel.tracked == {"s": 1}
    assert len(channel.bindings) == 1
    assert channel.ever_joined


def test_close_forget_keeps_the_tracked_state_only_when_asked() -> None:
    """RS-01: a channel the server closed keeps its tracked state for a new join
    (``keep_tracked``); one closed for good forgets it, and is as if never joined."""
    for keep in (True, False):
        session, _ = joined_session()
        accepted = session.track(TOPIC, {"s": 1})
        session.receive(reply(accepted.ref or ""))
        session.add_binding(TOPIC, postgres_binding())
        session.close(TOPIC, forget=True, keep_tracked=keep)
        channel = session.channel(TOPIC)
        assert channel.tracked == ({"s": 1} if keep else None)
        assert (channel.bindings, channel.postgres, channel.ever_joined) == ((), "none", False)


def test_rs01_a_rejoin_tracks_the_accepted_state_again() -> None:
    """RS-01: after a rejoin the session hands the driver a track of the accepted state, with
    the new join_ref, and expects its reply."""
    session, _ = joined_session()
    accepted = session.track(TOPIC, {"s": 1})
    session.receive(reply(accepted.ref or ""))
    session.connection_lost()
    frame = session.join(TOPIC)
    assert frame.ref == "3"
    (event,) = session.receive(reply("3"))
    assert isinstance(event, ReplyReceived)
    track = Frame(
        TOPIC, "presence", {"type": "presence", "event": "track", "payload": {"s": 1}}, "4", "3"
    )
    assert session.join_replied(event) == JoinAccepted("3", rejoin=True, track=track)
    assert session.expecting_reply("4")
    session.receive(reply("4"))
    assert session.channel(TOPIC).tracked == {"s": 1}


def test_rs01_a_channel_taking_over_a_tracked_state_tracks_it_after_its_first_join() -> None:
    """RS-01: a channel created with an earlier channel's tracked state (a copy) asks for
    presence in its join and tracks that state once joined."""
    session = Session()
    state: JSONObject = {"s": 1}
    session.add_channel(TOPIC, tracked=state)
    state["s"] = 2
    frame = session.join(TOPIC)
    assert isinstance(frame.payload, dict)
    presence: JSONObject = {"key": "", "enabled": True}
    assert frame.payload["config"] == {**CONFIG, "presence": presence}
    (event,) = session.receive(reply("1"))
    assert isinstance(event, ReplyReceived)
    result = session.join_replied(event)
    assert isinstance(result, JoinAccepted)
    assert (result.rejoin, result.track) == (
        False,
        Frame(
            TOPIC,
            "presence",
            {"type": "presence", "event": "track", "payload": {"s": 1}},
            "2",
            "1",
        ),
    )


def test_join_failed_forgets_the_joins_reply() -> None:
    """CH-03: a failed join is ERRORED, and its reply, should it come, is stale."""
    session = Session()
    session.add_channel(TOPIC)
    session.join(TOPIC)
    session.join_failed(TOPIC)
    assert state_of(session) is ChannelState.ERRORED
    assert not session.expecting_reply("1")
    assert session.receive(reply("1")) == ()
    assert session.stale_frames == 1


def test_remove_channel_forgets_its_replies_only() -> None:
    """A removed channel's replies are no longer expected; another channel's still are."""
    session = Session()
    session.add_channel(TOPIC)
    session.add_channel("realtime:other")
    session.join(TOPIC)
    session.join("realtime:other")
    session.remove_channel(TOPIC)
    assert not session.expecting_reply("1")
    assert session.expecting_reply("2")
    assert TOPIC not in session.channels
    session.remove_channel(TOPIC)  # idempotent
    assert session.expecting_reply("2")


def test_a_second_heartbeat_while_one_is_outstanding_is_refused() -> None:
    """HB-02: a heartbeat is refused while the previous one is unanswered, saying so."""
    session = Session()
    assert session.heartbeat(1.0) == Frame("phoenix", "heartbeat", {}, "1", None)
    with pytest.raises(ProtocolError, match=r"^the previous heartbeat is still unanswered$"):
        session.heartbeat(2.0)
    assert session.heartbeat_outstanding == ("1", 1.0)


def test_a_join_starts_from_a_clean_slate() -> None:
    """CH-01: a new join clears the reason a system error left (the connection was lost before
    its phx_close), and without bindings there is no postgres readiness to wait for."""
    session, _ = joined_session()
    session.receive(
        Frame(
            TOPIC,
            "system",
            {"extension": "system", "status": "error", "message": "gone", "channel": "room"},
            None,
            "1",
        )
    )
    session.connection_lost()
    assert session.channel(TOPIC).close_reason == "gone"
    session.join(TOPIC)
    channel = session.channel(TOPIC)
    assert (channel.close_reason, channel.postgres) == (None, "none")


def test_pg01_binding_key_is_the_identity_the_server_echoes() -> None:
    """PG-01: a binding's identity is its upper-cased event, schema, table, filter and select
    columns; missing fields take the server's defaults (event ``*``, the rest empty)."""
    spec: JSONObject = {
        "event": "insert",
        "schema": "public",
        "table": "messages",
        "filter": "id=eq.1",
        "select": ["id", "body"],
    }
    assert binding_key(spec) == ("INSERT", "public", "messages", "id=eq.1", "id,body")
    assert binding_key({}) == ("*", "", "", "", "")
    assert binding_key({"event": "*", "schema": "s", "select": "id"}) == ("*", "s", "", "", "")


def test_rs04_a_new_join_forgets_the_last_postgres_error() -> None:
    """RS-04: the next join waits for readiness again, with no error from the last one."""
    session = Session()
    session.add_channel(TOPIC)
    session.add_binding(TOPIC, postgres_binding("INSERT", table="t"))
    session.join(TOPIC)
    text = 'Error parsing `filter` params: ["undefined"]'
    bad: JSONObject = {"extension": "postgres_changes", "status": "error", "message": text}
    session.receive(Frame(TOPIC, "system", bad, None, "1"))
    assert session.channel(TOPIC).postgres_error == text
    session.join_failed(TOPIC)
    session.join(TOPIC)
    channel = session.channel(TOPIC)
    assert (channel.postgres, channel.postgres_error) == ("waiting", None)


def test_rs03_the_joins_token_is_not_pushed_again() -> None:
    """RS-03: a channel runs with its join's token; pushing that token again sends nothing."""
    session = Session()
    session.add_channel(TOPIC)
    session.join(TOPIC, "t1")
    (event,) = session.receive(reply("1"))
    assert isinstance(event, ReplyReceived)
    session.join_replied(event)
    assert session.access_token(TOPIC, "t1") is None
    assert session.access_token(TOPIC, "t2") == Frame(
        TOPIC, "access_token", {"access_token": "t2"}, "2", "1"
    )


def test_a_join_reply_for_another_ref_is_superseded() -> None:
    """CH-01: a join reply whose ref is not the channel's current join settles nothing."""
    session = Session()
    session.add_channel(TOPIC)
    session.join(TOPIC)
    assert session.join_replied(ReplyReceived(TOPIC, "9", "join", "ok", {})) == JoinSuperseded()
    assert state_of(session) is ChannelState.JOINING


def test_rs01_the_re_track_after_a_rejoin_is_answered_on_its_channel() -> None:
    """RS-01: the reply to the session's own re-track comes out as a push reply."""
    session, _ = joined_session()
    accepted = session.track(TOPIC, {"s": 1})
    session.receive(reply(accepted.ref or ""))
    session.connection_lost()
    session.join(TOPIC)
    (event,) = session.receive(reply("3"))
    assert isinstance(event, ReplyReceived)
    session.join_replied(event)
    assert session.receive(reply("4")) == (ReplyReceived(TOPIC, "4", "push", "ok", {}),)


def test_presence_pushes_on_a_channel_not_joined_name_the_operation() -> None:
    """RS-10: track and untrack on a channel not joined are refused, each naming itself."""
    session = Session()
    session.add_channel(TOPIC)
    with pytest.raises(ChannelStateError, match=r"is closed: track is not allowed$") as info:
        session.track(TOPIC, {})
    assert info.value.operation == "track"
    with pytest.raises(ChannelStateError, match=r"is closed: untrack is not allowed$") as info:
        session.untrack(TOPIC)
    assert info.value.operation == "untrack"


def test_close_forget_forgets_the_tracked_state_by_default() -> None:
    """RS-01: a channel closed for good forgets its tracked state unless asked to keep it."""
    session, _ = joined_session()
    accepted = session.track(TOPIC, {"s": 1})
    session.receive(reply(accepted.ref or ""))
    session.close(TOPIC, forget=True)
    assert session.channel(TOPIC).tracked is None


def test_session_repr_next_ref_and_a_given_ref_counter() -> None:
    """SR-11: a session draws every ref from the counter it is given; its repr sums it up."""
    session = Session(refs=ref_counter(start=41))
    assert repr(session) == "<Session channels=0 pending_replies=0 heartbeat=none>"
    assert session.next_ref() == "42"
    session.add_channel(TOPIC)
    assert session.join(TOPIC).ref == "43"
    session.heartbeat(1.0)
    assert repr(session) == "<Session channels=1 pending_replies=1 heartbeat=outstanding>"


def test_rejoin_makes_a_joined_or_joining_channel_joining_only() -> None:
    """RC-04: ``rejoin`` turns a joined channel JOINING at once (no push with the old join_ref);
    a joining one stays JOINING, and other states are left alone."""
    session, _ = joined_session()
    session.rejoin(TOPIC)
    assert state_of(session) is ChannelState.JOINING
    with pytest.raises(ChannelStateError, match=r"is joining: broadcast is not allowed$"):
        session.broadcast(TOPIC, "e", {}, ack=False)
    session.rejoin(TOPIC)
    assert state_of(session) is ChannelState.JOINING
    session.connection_lost()
    session.rejoin(TOPIC)
    assert state_of(session) is ChannelState.ERRORED
    closed = "realtime:closed"
    session.add_channel(closed)
    session.rejoin(closed)
    assert state_of(session, closed) is ChannelState.CLOSED


def test_illegal_transition_errors_name_the_topic() -> None:
    """RS-10: the refusal of a transition names the channel's topic."""
    session = Session()
    channel = session.add_channel(TOPIC)
    with pytest.raises(ChannelStateError) as info:
        channel._fire(Trigger.JOIN_OK)
    assert info.value.topic == TOPIC


def test_pushes_while_joining_are_refused() -> None:
    """CH-08 (session side): a joining channel has a join_ref but takes no push yet."""
    session = Session()
    session.add_channel(TOPIC)
    session.join(TOPIC)
    with pytest.raises(ChannelStateError, match=r"'realtime:room' is joining: broadcast"):
        session.broadcast(TOPIC, "e", {}, ack=False)
    with pytest.raises(ChannelStateError, match=r"'realtime:room' is joining: track"):
        session.track(TOPIC, {})
    with pytest.raises(ChannelStateError, match=r"'realtime:room' is joining: untrack"):
        session.untrack(TOPIC)


def test_au03_the_same_token_is_pushed_once() -> None:
    """AU-03, RS-03: a token pushed once is the channel's token; pushing it again sends nothing."""
    session, _ = joined_session()
    assert session.access_token(TOPIC, "t2") == Frame(
        TOPIC, "access_token", {"access_token": "t2"}, "2", "1"
    )
    assert session.channel(TOPIC).token == "t2"
    assert session.access_token(TOPIC, "t2") is None
    assert session.access_token(TOPIC, "t3") == Frame(
        TOPIC, "access_token", {"access_token": "t3"}, "3", "1"
    )


def test_forget_of_an_unknown_ref_is_a_no_op() -> None:
    """CH-03: giving up on a reply that is not expected (any more) changes nothing."""
    session, _ = joined_session()
    push = session.broadcast(TOPIC, "e", 1, ack=True)
    session.forget("99")
    assert session.expecting_reply(push.ref or "")
    session.forget(push.ref or "")
    session.forget(push.ref or "")
    assert session.pending_replies == 0


def test_bi01_every_dropped_frame_is_counted() -> None:
    """BI-01, CH-07, HB-01: the counters count each dropped frame: broadcasts for unknown
    topics, heartbeat replies for another ref and replies nobody expects."""
    session = Session()
    for _ in range(2):
        assert session.receive(Frame("realtime:x", "broadcast", {"event": "e"}, None, None)) == ()
    assert session.unroutable_frames == 2
    session.heartbeat(1.0)
    for _ in range(2):
        assert session.receive(reply("9", topic="phoenix")) == ()
    assert session.stale_frames == 2
    for _ in range(2):
        assert session.receive(reply("9")) == ()
    assert session.stale_frames == 4


def test_replies_with_malformed_status_or_payload() -> None:
    """BI-01: a reply's non-string status reads as ``""``, and a reply whose payload is not an
    object has no response."""
    session, _ = joined_session()
    first = session.broadcast(TOPIC, "e", 1, ack=True)
    second = session.broadcast(TOPIC, "e", 2, ack=True)
    bad_status = Frame(TOPIC, "phx_reply", {"status": 5, "response": {"a": 1}}, first.ref, "1")
    assert session.receive(bad_status) == (
        ReplyReceived(TOPIC, first.ref or "", "push", "", {"a": 1}),
    )
    not_an_object = Frame(TOPIC, "phx_reply", "ok", second.ref, "1")
    assert session.receive(not_an_object) == (
        ReplyReceived(TOPIC, second.ref or "", "push", "", None),
    )


def test_pg02_a_change_event_carries_topic_change_and_bindings() -> None:
    """PG-02: the event names the channel, the parsed change and the bindings it reaches."""
    session = Session()
    session.add_channel(TOPIC)
    spec = postgres_binding("INSERT", table="t")
    key, _ = session.add_binding(TOPIC, spec)
    session.join(TOPIC)
    (event,) = session.receive(reply("1", response={"postgres_changes": [{**spec, "id": 7}]}))
    assert isinstance(event, ReplyReceived)
    session.join_replied(event)
    data: JSONObject = {
        "schema": "public",
        "table": "t",
        "type": "INSERT",
        "columns": [],
        "record": {},
    }
    payload: JSONObject = {"ids": [7], "data": data}
    change = parse_postgres_change(payload)
    assert change is not None
    assert session.receive(Frame(TOPIC, "postgres_changes", payload, None, None)) == (
        PostgresChangeReceived(TOPIC, change, (key,)),
    )


@pytest.mark.parametrize(
    "entry_id",
    [True, "7", 7.0, None],
)
def test_pg01_a_binding_id_that_is_not_an_integer_refuses_the_join(entry_id: JSONValue) -> None:
    """PG-01: the server's id for a binding must be an integer (not a bool)."""
    session = Session()
    session.add_channel(TOPIC)
    spec = postgres_binding("INSERT", table="t")
    session.add_binding(TOPIC, spec)
    session.join(TOPIC)
    (event,) = session.receive(
        reply("1", response={"postgres_changes": [{**spec, "id": entry_id}]})
    )
    assert isinstance(event, ReplyReceived)
    assert session.join_replied(event) == JoinRefused(BINDING_MISMATCH)


def test_pg01_a_join_without_bindings_accepts_any_response() -> None:
    """PG-01, BI-01: with no bindings, a reply whose response is not an object is accepted;
    with one, it is a mismatch."""
    for bindings, expected in (
        (0, JoinAccepted("1", rejoin=False)),
        (1, JoinRefused(BINDING_MISMATCH)),
    ):
        session = Session()
        session.add_channel(TOPIC)
        for _ in range(bindings):
            session.add_binding(TOPIC, postgres_binding(table="t"))
        session.join(TOPIC)
        ok = Frame(TOPIC, "phx_reply", {"status": "ok", "response": "odd"}, "1", "1")
        (event,) = session.receive(ok)
        assert isinstance(event, ReplyReceived)
        assert session.join_replied(event) == expected


def test_pr03_presence_diff_after_the_state_is_applied() -> None:
    """PR-02, PR-03, PR-04: the state of the current join is synced with its join_ref, so that
    the diffs that follow are applied at once, each with its events."""
    session, _ = joined_session(presence_enabled=True)
    state: JSONObject = {"alice": {"metas": [{"phx_ref": "r1"}]}}
    session.receive(Frame(TOPIC, "presence_state", state, None, "1"))
    assert session.channel(TOPIC).presence.synced_join_ref == "1"
    diff: JSONObject = {"joins": {"bob": {"metas": [{"phx_ref": "r2"}]}}, "leaves": {}}
    alice: JSONObject = {"presence_ref": "r1"}
    bob: JSONObject = {"presence_ref": "r2"}
    assert session.receive(Frame(TOPIC, "presence_diff", diff, None, "1")) == (
        PresenceChanged(TOPIC, PresenceEvent("join", "bob", [], [bob])),
        PresenceChanged(TOPIC, PresenceEvent("sync", None, state={"alice": [alice], "bob": [bob]})),
    )


def test_ch07_only_the_join_ref_marks_presence_and_system_frames() -> None:
    """CH-07, SR-02: a presence or system push's ref is no join marker (only the join_ref is),
    while a V1 phx_close or phx_error, which has no join_ref, is marked by its ref."""
    session, _ = joined_session(presence_enabled=True)
    state: JSONObject = {"alice": {"metas": [{"phx_ref": "r1"}]}}
    assert len(session.receive(Frame(TOPIC, "presence_state", state, "7", None))) == 2
    system: JSONObject = {"extension": "system", "status": "ok", "message": "hi"}
    assert len(session.receive(Frame(TOPIC, "system", system, "7", None))) == 1
    assert session.receive(Frame(TOPIC, "phx_error", {}, "0", None)) == ()
    assert session.stale_frames == 1
    assert session.receive(Frame(TOPIC, "phx_close", {}, "7", "1")) == (
        ChannelClosedByServer(TOPIC, "the server closed the channel"),
    )


def test_system_message_fields_of_any_type() -> None:
    """BI-01, PG-04: string fields are kept; others become ``""`` (a message: its text) and a
    non-string sub-channel ``None``."""
    session, _ = joined_session()
    good: JSONObject = {"extension": "system", "status": "ok", "message": "m", "channel": "room"}
    assert session.receive(Frame(TOPIC, "system", good, None, "1")) == (
        SystemReceived(TOPIC, SystemMessage("system", "ok", "m", "room", good)),
    )
    odd: JSONObject = {"extension": 1, "status": [], "message": 5, "channel": 2}
    assert session.receive(Frame(TOPIC, "system", odd, None, "1")) == (
        SystemReceived(TOPIC, SystemMessage("", "", "5", None, odd)),
    )


def test_ch05_a_server_close_or_error_while_joining_drops_the_joins_reply() -> None:
    """CH-05, CH-06: a phx_close or phx_error for the pending join ends it: its reply is stale."""
    for event, state in (("phx_close", ChannelState.CLOSED), ("phx_error", ChannelState.ERRORED)):
        session = Session()
        session.add_channel(TOPIC)
        session.join(TOPIC)
        assert len(session.receive(Frame(TOPIC, event, {}, "1", "1"))) == 1
        assert state_of(session) is state
        assert not session.expecting_reply("1")
        assert session.receive(reply("1")) == ()
        assert session.stale_frames == 1


def test_a_close_leaves_no_close_reason() -> None:
    """CH-06: after a local close or a server's phx_close, no close reason is left (``None``)."""
    session, _ = joined_session()
    system: JSONObject = {"extension": "system", "status": "error", "message": "expired"}
    session.receive(Frame(TOPIC, "system", system, None, "1"))
    session.close(TOPIC)
    assert session.channel(TOPIC).close_reason is None
    session.join(TOPIC)
    (event,) = session.receive(reply("2"))
    assert isinstance(event, ReplyReceived)
    session.join_replied(event)
    session.receive(Frame(TOPIC, "system", system, None, "2"))
    assert session.receive(Frame(TOPIC, "phx_close", {}, "2", "2")) == (
        ChannelClosedByServer(TOPIC, "expired"),
    )
    assert session.channel(TOPIC).close_reason is None


def _rejoined_after_track(state: JSONObject) -> tuple[Session, JoinAccepted]:
    """A joined session whose track of ``state`` was accepted, rejoined after a lost
    connection: the join's reply, which carries the re-track to send."""
    session, _ = joined_session()
    accepted = session.track(TOPIC, state)
    session.receive(reply(accepted.ref or ""))
    assert session.channel(TOPIC).tracked == state
    session.connection_lost()
    session.join(TOPIC)
    (event,) = session.receive(reply("3"))
    assert isinstance(event, ReplyReceived)
    result = session.join_replied(event)
    assert isinstance(result, JoinAccepted)
    return session, result


def test_rs01_an_empty_tracked_state_is_tracked_again_and_answered() -> None:
    """RS-01: the re-track of an empty state (``{}``) is a push like any other: its reply is
    expected."""
    session, result = _rejoined_after_track({})
    assert result.track is not None
    assert session.expecting_reply(result.track.ref or "")


def test_rs01_a_later_track_answered_before_the_re_track_stays_remembered() -> None:
    """RS-01: the reply to the session's re-track does not bring back the state it carried over
    a later track that the server accepted first."""
    session, result = _rejoined_after_track({"s": 1})
    assert result.track is not None
    later = session.track(TOPIC, {"s": 2})
    session.receive(reply(later.ref or ""))
    assert session.receive(reply(result.track.ref or "")) == (
        ReplyReceived(TOPIC, result.track.ref or "", "push", "ok", {}),
    )
    assert session.channel(TOPIC).tracked == {"s": 2}
