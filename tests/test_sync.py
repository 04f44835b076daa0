"""The blocking interface, ``trio_realtime.sync`` (SY-01 to SY-05), against the local server.

The server runs in a thread of its own (``tests/sync_support.py``), the blocking client in its
own worker thread, so these tests use real time: every call that should complete has a generous
timeout, every call that should time out a short one, and no duration is asserted. Each test
has a time limit.
"""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio
from sync_support import (
    APIKEY,
    SHORT,
    TOKEN,
    WAIT,
    WORKER,
    Connect,
    ServerThread,
    field,
    worker_threads,
)
from sync_support import open_client_fixture as open_client_fixture  # the open_client fixture
from sync_support import server_fixture as server_fixture  # the server fixture
from sync_support import sync_time_limit as sync_time_limit  # autouse: each test's limit

from trio_realtime import (
    Broadcast,
    BroadcastMessage,
    ChannelClosed,
    ChannelJoined,
    ChannelState,
    Connected,
    ConnectionClosed,
    Disconnected,
    JoinError,
    Overflow,
    PostgresChange,
    PushTimeout,
    RealtimeError,
    Reconnecting,
    SubscriptionOverflow,
)
from trio_realtime.sync import Channel, Subscription, SyncTimeout, connect

HOLD = 0.5
"""Seconds the server holds replies back in the timeout tests."""


def receive_all(sub: Subscription[Any], count: int) -> list[Any]:
    """``count`` items from ``sub``, each within the generous timeout."""
    return [sub.receive(timeout=WAIT) for _ in range(count)]


# -- SY-01: the whole async feature set from plain blocking code ---------------------------------


def test_sy01_the_readme_example_between_two_clients(
    server: ServerThread, open_client: Connect
) -> None:
    """SY-01: the documented example: join, track, broadcast and iterate, with two clients."""
    bob = open_client()
    bob_channel = bob.channel("room:lobby", presence_key="bob")
    bob_messages = bob_channel.broadcasts("chat")
    bob_presence = bob_channel.presence_events()
    with bob_channel, bob_messages:
        with open_client() as client:
            channel = client.channel("room:lobby", presence_key="alice")
            messages = channel.broadcasts("chat")
            with channel, messages:
                channel.track({"status": "online"})
                channel.send_broadcast("chat", {"text": "hi"})
                for message in bob_messages:
                    assert isinstance(message, Broadcast)
                    assert (message.event, message.payload) == ("chat", {"text": "hi"})
                    break
                bob_channel.send_broadcast("chat", {"text": "hello alice"})
                for message in messages:
                    assert message.payload == {"text": "hello alice"}
                    break
                while "alice" not in bob_channel.presence_state():
                    bob_presence.receive(timeout=WAIT)
                (meta,) = bob_channel.presence_state()["alice"]
                assert meta["status"] == "online"
                assert "presence_ref" in meta
            assert channel.state is ChannelState.CLOSED
        # Alice's client is gone: Bob sees her leave.
        while "alice" in bob_channel.presence_state():
            bob_presence.receive(timeout=WAIT)


def test_sy01_broadcast_with_ack_and_self(open_client: Connect) -> None:
    """SY-01: with broadcast_ack, send_broadcast returns after the server's ack."""
    client = open_client()
    channel = client.channel("room:ack", broadcast_self=True, broadcast_ack=True)
    mine = channel.broadcasts()
    with channel:
        assert channel.joined
        channel.send_broadcast("ping", [1, 2, 3], timeout=WAIT)
        received = mine.receive(timeout=WAIT)
        assert (received.event, received.payload, received.topic) == (
            "ping",
            [1, 2, 3],
            "realtime:room:ack",
        )
    # The channel was left: its subscription ends, and the loop stops.
    assert list(mine) == []


def test_sy01_vsn_2_and_binary_payloads_from_the_url(server: ServerThread) -> None:
    """SY-01 (RS-08, BC-05): apikey and vsn may come from the URL; a bytes payload goes out as
    a binary broadcast under 2.0.0 and comes back as bytes."""
    url = server.server.websocket_url("2.0.0", APIKEY)
    with connect(url) as client:
        assert client.vsn == "2.0.0"
        channel = client.channel("room:binary", broadcast_self=True, broadcast_ack=True)
        messages = channel.broadcasts("blob")
        with channel, messages:
            channel.send_broadcast("blob", b"\x00\x01raw", timeout=WAIT)
            assert messages.receive(timeout=WAIT).payload == b"\x00\x01raw"
    assert not worker_threads()


def test_sy01_rest_sending_reaches_subscribers(open_client: Connect) -> None:
    """SY-01 (RB-01, RB-02): http_send and http_broadcast from blocking code, no join needed."""
    listener = open_client()
    channel = listener.channel("room:rest")
    messages = channel.broadcasts()
    sender = open_client()
    with channel, messages:
        outgoing = sender.channel("room:rest")
        outgoing.http_send("chat", {"text": "over http"}, timeout=WAIT)
        first = messages.receive(timeout=WAIT)
        assert (first.event, first.payload) == ("chat", {"text": "over http"})
        assert not outgoing.joined
        batch = (BroadcastMessage("room:rest", "batch", {"n": n}, id=f"m{n}") for n in range(2))
        assert sender.http_broadcast(batch, timeout=WAIT) == 2
        received = [messages.receive(timeout=WAIT) for _ in range(2)]
        assert [(m.event, m.payload) for m in received] == [
            ("batch", {"n": 0}),
            ("batch", {"n": 1}),
        ]
        assert [m.meta["id"] for m in received if isinstance(m.meta, dict)] == ["m0", "m1"]
        with pytest.raises(ValueError, match="event"):
            outgoing.http_send("", {})


def test_sy01_replay_on_a_private_channel(server: ServerThread, open_client: Connect) -> None:
    """SY-01 (RP-02): replay_since on a private channel replays stored broadcasts, with
    meta.replayed, through the blocking subscription."""
    stored_at = datetime.now(UTC) - timedelta(minutes=5)

    async def store() -> str:
        return await server.server.realtime_send(
            "room:replay", "chat", {"n": 1}, inserted_at=stored_at
        )

    message_id = server.run(store)
    client = open_client()
    channel = client.channel(
        "room:replay", private=True, replay_since=stored_at - timedelta(minutes=1), replay_limit=5
    )
    messages = channel.broadcasts()
    with channel, messages:
        replayed = messages.receive(timeout=WAIT)
        assert replayed.payload == {"n": 1}
        assert replayed.meta == {"id": message_id, "replayed": True}
        assert channel.replay is not None
    with pytest.raises(ValueError, match="private"):
        client.channel("room:public-replay", replay_since=0)


def test_sy01_channels_are_the_same_objects_for_the_same_topic(open_client: Connect) -> None:
    """SY-01 (CH-01): the same topic gives back the same channel, prefixed with realtime:."""
    client = open_client()
    channel = client.channel("room:one")
    assert isinstance(channel, Channel)
    assert client.channel("realtime:room:one") is channel
    assert channel.topic == "realtime:room:one"
    assert client.channels == [channel]
    with pytest.raises(ValueError, match="other options"):
        client.channel("room:one", broadcast_self=True)


def test_sy01_presence_untrack_and_presence_events(
    server: ServerThread, open_client: Connect
) -> None:
    """SY-01: track, untrack and presence events through the blocking interface."""
    client = open_client()
    channel = client.channel("room:presence", presence_key="carol")
    events = channel.presence_events()
    with channel:
        channel.track({"mood": "fine"}, timeout=WAIT)
        event = events.receive(timeout=WAIT)
        while (event.event, event.key) != ("join", "carol"):
            event = events.receive(timeout=WAIT)
        assert event.presences[0]["mood"] == "fine"
        assert events.receive(timeout=WAIT).event == "sync"
        assert list(channel.presence_state()) == ["carol"]
        channel.untrack(timeout=WAIT)
        while "carol" in channel.presence_state():
            events.receive(timeout=WAIT)
        assert server.server.presence_state("room:presence") == {}


def test_sy01_postgres_changes_with_wait_postgres_ready(
    server: ServerThread, open_client: Connect
) -> None:
    """SY-01 (PG-06): postgres_changes, wait_postgres_ready(), and a change right after."""
    client = open_client()
    channel = client.channel("room:db")
    inserts = channel.postgres_changes("INSERT", table="messages")
    system = channel.system_events()
    with channel, inserts:
        channel.wait_postgres_ready(timeout=WAIT)
        assert system.receive(timeout=WAIT).message == "Subscribed to PostgreSQL"

        async def emit() -> int:
            return await server.server.emit_postgres_change(
                "public", "messages", "INSERT", record={"id": 7, "body": "hi"}
            )

        assert server.run(emit) == 1
        change = inserts.receive(timeout=WAIT)
        assert isinstance(change, PostgresChange)
        assert change.event_type == "INSERT"
        assert change.new == {"id": 7, "body": "hi"}
        assert change.old == {}
        assert change.table == "messages"


def test_sy01_set_auth_reaches_joined_channels(server: ServerThread, open_client: Connect) -> None:
    """SY-01 (AU-03): set_auth sends access_token on every joined channel."""
    client = open_client(access_token=TOKEN)
    channel = client.channel("room:auth")
    with channel:
        (connection,) = server.connections()
        client.set_auth(TOKEN + "-2", timeout=WAIT)
        # The access_token push has no reply: a broadcast after it, acknowledged, proves that
        # the server has read it.
        acked = client.channel("room:auth-ack", broadcast_ack=True)
        with acked:
            acked.send_broadcast("sync", {}, timeout=WAIT)
        frames = server.run_sync(lambda: list(connection.received_frames))
        tokens = [
            frame.payload["access_token"]
            for frame in frames
            if frame.event == "access_token" and isinstance(frame.payload, dict)
        ]
        assert tokens == [TOKEN + "-2"]
        joins = [frame for frame in frames if frame.event == "phx_join"]
        assert isinstance(joins[-1].payload, dict)
        assert joins[-1].payload["access_token"] == TOKEN + "-2"


def test_sy01_a_blocking_token_function_runs_in_a_worker_thread(
    server: ServerThread, open_client: Connect
) -> None:
    """SY-01 (AU-02): a plain token function is called before the first join, off the
    client's thread."""
    calls: list[str] = []

    def token() -> str:
        calls.append(threading.current_thread().name)
        return TOKEN

    client = open_client(access_token=token)
    with client.channel("room:token-fn"):
        (connection,) = server.connections()
        frames = server.run_sync(lambda: list(connection.received_frames))
    joins = [frame.payload for frame in frames if frame.event == "phx_join"]
    assert isinstance(joins[0], dict)
    assert joins[0]["access_token"] == TOKEN
    assert calls
    assert WORKER not in calls
    assert threading.current_thread().name not in calls


def test_sy01_an_async_token_function_is_awaited(
    server: ServerThread, open_client: Connect
) -> None:
    """SY-01 (AU-02): an async token function runs in the client's trio run."""

    async def token() -> str:
        await trio.lowlevel.checkpoint()
        return TOKEN

    client = open_client(access_token=token)
    with client.channel("room:token-async"):
        (connection,) = server.connections()
        frames = server.run_sync(lambda: list(connection.received_frames))
    joins = [frame.payload for frame in frames if frame.event == "phx_join"]
    assert isinstance(joins[0], dict)
    assert joins[0]["access_token"] == TOKEN


def test_sy01_connect_refuses_bad_options_at_the_call() -> None:
    """SY-01 (CL-01, HD-08): bad options fail at connect(), and leave no thread."""
    before = set(worker_threads())
    with pytest.raises(ValueError, match="apikey"):
        connect("http://127.0.0.1:9", apikey="")
    with pytest.raises(ValueError, match="vsn"):
        connect("http://127.0.0.1:9", apikey=APIKEY, vsn="3.0.0")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="access_token"):
        connect("http://127.0.0.1:9", apikey=APIKEY, access_token=42)  # type: ignore[arg-type]
    assert set(worker_threads()) <= before


def test_sy01_a_refused_connection_raises_at_connect(server: ServerThread) -> None:
    """SY-01 (CL-07): a refused first connection raises the library's error from connect()."""
    before = set(worker_threads())
    with pytest.raises(RealtimeError) as caught, ServerThread(apikey="the-SECRET-key") as guarded:
        connect(guarded.url, apikey=APIKEY)
    assert caught.value.__class__.__name__ == "RealtimeConnectionError"
    assert set(worker_threads()) <= before


def test_sy01_join_refusal_raises_join_error(server: ServerThread, open_client: Connect) -> None:
    """SY-01 (CH-03): a refused join raises JoinError with the server's reason."""
    server.run_sync(server.server.reject_joins, "room:closed", "Unauthorized: no")
    client = open_client()
    channel = client.channel("room:closed")
    with pytest.raises(JoinError, match="Unauthorized: no"), channel:
        pytest.fail("joined a refused channel")
    assert channel.state is ChannelState.CLOSED


def test_sy01_statistics_and_connection_events(server: ServerThread, open_client: Connect) -> None:
    """SY-01: statistics() and connection_events() are the async API's objects."""
    client = open_client(heartbeat_interval=0.1)
    events = client.connection_events()
    with client.channel("room:stats") as channel:
        channel.send_broadcast("x", {}, timeout=WAIT)
        assert channel.statistics().subscriptions == 0
        assert channel.options == channel.channel.options
        stats = client.statistics()
        assert stats.connected
        assert stats.connects == 1
        assert stats.joined_channels == 1
        assert stats.frames_sent >= 2
        heartbeat = events.receive(timeout=WAIT)
        assert heartbeat.__class__.__name__ == "HeartbeatEvent"
    assert client.connected
    assert client.url.endswith("apikey=<redacted>&vsn=1.0.0")
    assert APIKEY not in repr(client)
    client.close()
    assert (client.connected, client.closed) == (False, True)
    # The last figures stay readable.
    assert client.statistics().connected is False


# -- SY-02: timeouts and overflow ----------------------------------------------------------------


def test_sy02_receive_timeout_loses_nothing(server: ServerThread, open_client: Connect) -> None:
    """SY-02: receive(timeout=) raises SyncTimeout, a TimeoutError; a later item arrives."""
    client = open_client()
    channel = client.channel("room:timeout")
    messages = channel.broadcasts("tick")
    every = channel.broadcasts("tick")
    with channel:
        with pytest.raises(SyncTimeout) as caught:
            messages.receive(timeout=SHORT)
        assert isinstance(caught.value, TimeoutError)
        assert isinstance(caught.value, RealtimeError)
        assert caught.value.timeout == SHORT
        with pytest.raises(TimeoutError):
            messages.receive_batch(timeout=0)
        server.broadcast("room:timeout", "tick", {"n": 1})
        assert messages.receive(timeout=WAIT).payload == {"n": 1}
        # timeout=0 still returns an item that is already there.
        server.broadcast("room:timeout", "tick", {"n": 2})
        server.broadcast("room:timeout", "tick", {"n": 3})
        receive_all(every, 3)
        assert messages.receive(timeout=0).payload == {"n": 2}
        assert messages.receive(timeout=0).payload == {"n": 3}
        with pytest.raises(trio.WouldBlock):
            messages.receive_nowait()


@pytest.mark.parametrize("bad", [-1, math.nan, "1", True])
def test_sy02_bad_timeouts_are_refused_at_the_call(open_client: Connect, bad: Any) -> None:
    """SY-02 (HD-08): a negative, NaN or non-number timeout is refused before anything runs."""
    client = open_client()
    channel = client.channel("room:bad-timeout")
    messages = channel.broadcasts()
    error = TypeError if isinstance(bad, str | bool) else ValueError
    with pytest.raises(error, match="timeout"):
        messages.receive(timeout=bad)
    with pytest.raises(error, match="timeout"):
        channel.join(timeout=bad)
    with pytest.raises(error, match="timeout"):
        client.wait_connected(timeout=bad)
    assert channel.state is ChannelState.CLOSED


def test_sy02_a_join_timeout_cancels_the_join(server: ServerThread, open_client: Connect) -> None:
    """SY-02: join(timeout=) raises SyncTimeout and stops joining, as a cancelled async join."""
    client = open_client()
    channel = client.channel("room:slow")
    # Replies are held back, with whatever the server queues behind them, for HOLD seconds.
    server.run_sync(setattr, server.server, "reply_delay", HOLD)
    with pytest.raises(SyncTimeout, match="join of 'realtime:room:slow'"):
        channel.join(timeout=SHORT)
    assert channel.state is ChannelState.CLOSED
    server.run_sync(setattr, server.server, "reply_delay", 0.0)
    with client.channel("room:after") as after:
        assert after.joined


def test_sy02_a_push_timeout_from_the_async_api_comes_through(
    server: ServerThread, open_client: Connect
) -> None:
    """SY-02: the client's own timeout (PushTimeout) is raised as such."""
    # The join must fit in the client timeout even on a busy machine; the held-back ack not.
    client = open_client(timeout=1.0)
    channel = client.channel("room:unacked", broadcast_ack=True)
    with channel:
        server.run_sync(setattr, server.server, "reply_delay", 3.0)
        with pytest.raises(PushTimeout):
            channel.send_broadcast("x", {}, timeout=WAIT)
        server.run_sync(setattr, server.server, "reply_delay", 0.0)


def flood(server: ServerThread, topic: str, count: int) -> None:
    """Broadcast ``count`` messages ``{"n": i}`` in one step of the server."""

    def send_all() -> None:
        for n in range(count):
            server.server.broadcast_nowait(topic, "flood", {"n": n})

    server.run_sync(send_all)


@pytest.mark.parametrize(
    ("overflow", "expected"),
    [("drop_oldest", [7, 8, 9]), ("drop_newest", [0, 1, 2])],
)
def test_sy02_overflow_policies_drop_as_in_the_async_api(
    server: ServerThread, open_client: Connect, overflow: Overflow, expected: list[int]
) -> None:
    """SY-02 (BP-01): drop_oldest keeps the newest items, drop_newest the oldest."""
    client = open_client()
    channel = client.channel("room:flood")
    small = channel.broadcasts("flood", buffer=3, overflow=overflow)
    every = channel.broadcasts("flood")
    with channel:
        flood(server, "room:flood", 10)
        # The large subscription saw all ten: the small one has had them offered too.
        assert [field(item, "n") for item in receive_all(every, 10)] == list(range(10))
        assert small.statistics().dropped == 7
        assert [field(item, "n") for item in small.receive_batch(timeout=WAIT)] == expected
        with pytest.raises(SyncTimeout):
            small.receive(timeout=SHORT)


def test_sy02_error_overflow_raises_after_the_buffered_items(
    server: ServerThread, open_client: Connect
) -> None:
    """SY-02 (BP-01): overflow="error" delivers the buffered items, then raises with the count,
    then delivers again."""
    client = open_client()
    channel = client.channel("room:overflow")
    small = channel.broadcasts("flood", buffer=3)
    every = channel.broadcasts("flood")
    with channel:
        flood(server, "room:overflow", 10)
        receive_all(every, 10)
        assert [field(small.receive(timeout=WAIT), "n") for _ in range(3)] == [0, 1, 2]
        with pytest.raises(SubscriptionOverflow) as caught:
            small.receive(timeout=WAIT)
        assert caught.value.dropped == 7
        server.broadcast("room:overflow", "flood", {"n": 10})
        assert small.receive(timeout=WAIT).payload == {"n": 10}


def test_sy02_receive_batch_returns_everything_buffered(
    server: ServerThread, open_client: Connect
) -> None:
    """SY-02: receive_batch() takes what is buffered, up to max_items."""
    client = open_client()
    channel = client.channel("room:batch")
    messages = channel.broadcasts("flood")
    every = channel.broadcasts("flood")
    with channel:
        flood(server, "room:batch", 5)
        receive_all(every, 5)
        assert [field(m, "n") for m in messages.receive_batch(2, timeout=WAIT)] == [0, 1]
        assert [field(m, "n") for m in messages.receive_batch(timeout=WAIT)] == [2, 3, 4]
        with pytest.raises(ValueError, match="max_items"):
            messages.receive_batch(0)
    assert messages.statistics().closed


# -- SY-03: reconnects and gap events ------------------------------------------------------------


def test_sy03_reconnect_rejoins_and_signals_the_gap(
    server: ServerThread, open_client: Connect
) -> None:
    """SY-03 (RC-04, RC-06, RC-08): a dropped connection is reconnected, the channel rejoins with
    a gap signal, and the subscription keeps delivering."""
    client = open_client(heartbeat_interval=None)
    events = client.connection_events()
    channel = client.channel("room:gap")
    gaps = channel.channel_events()
    messages = channel.broadcasts("after")
    with channel:
        first = gaps.receive(timeout=WAIT)
        assert isinstance(first, ChannelJoined)
        assert not first.rejoin
        old_ref = channel.join_ref
        assert server.run(server.server.drop_connections) == 1
        lost = events.receive(timeout=WAIT)
        assert isinstance(lost, Disconnected)
        assert (lost.code, lost.will_reconnect) == (1006, True)
        retry = events.receive(timeout=WAIT)
        assert isinstance(retry, Reconnecting)
        assert (retry.attempt, retry.delay) == (1, 0.01)
        back = events.receive(timeout=WAIT)
        assert isinstance(back, Connected)
        assert back.reconnect
        gap = gaps.receive(timeout=WAIT)
        assert isinstance(gap, ChannelJoined)
        assert gap.rejoin
        assert channel.join_ref != old_ref
        server.broadcast("room:gap", "after", {"ok": True})
        assert messages.receive(timeout=WAIT).payload == {"ok": True}
        assert client.statistics().reconnects == 1


def test_sy03_a_failure_that_ends_the_client_surfaces(
    server: ServerThread, open_client: Connect
) -> None:
    """SY-03 (RS-07): when reconnecting is disabled, a lost connection ends the client: waiting
    subscriptions end, the with block raises ConnectionClosed, later calls a fresh copy."""
    client = open_client(reconnect=None, heartbeat_interval=None)
    channel = client.channel("room:fatal")
    messages = channel.broadcasts()
    channel.join(timeout=WAIT)
    done = threading.Event()
    seen: list[object] = []

    def consume() -> None:
        seen.extend(messages)
        done.set()

    consumer = threading.Thread(target=consume)
    consumer.start()
    server.run(server.server.drop_connections)
    assert done.wait(WAIT)
    consumer.join(WAIT)
    assert seen == []
    with pytest.raises(ConnectionClosed) as caught:
        client.__exit__(None, None, None)
    assert caught.value.code == 1006
    with pytest.raises(ConnectionClosed) as later:
        channel.send_broadcast("x", {})
    assert later.value is not caught.value
    assert later.value.__cause__ is caught.value
    # Reported once: closing again is quiet.
    client.close()
    assert not worker_threads()


def test_sy03_a_server_close_of_the_channel_raises_channel_closed(
    server: ServerThread, open_client: Connect
) -> None:
    """SY-03 (CH-06): a system error + phx_close ends the subscription with ChannelClosed."""
    client = open_client()
    channel = client.channel("room:kicked")
    messages = channel.broadcasts()
    with channel:
        server.run(server.server.system_close, "room:kicked", "Token has expired 3 seconds ago")
        with pytest.raises(ChannelClosed, match="Token has expired") as caught:
            messages.receive(timeout=WAIT)
        assert caught.value.by_server
