"""The trio runtime over the session core: promises no other test checks, and the hardening
fixes (HD-*, RS-05, RS-07, RS-11) each with the test that fails without them.

Some tests script the server by hand over a memory transport pair (:func:`scripted`): the test
reads the client's frames and answers exactly what it needs, as h11's tests do with bytes.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import pytest
import trio
import trio.testing
from _realtime import connect, connect_socket, drain, next_event, settle, task_count
from conftest import APIKEY, TOKEN

from trio_realtime import (
    ChannelClosed,
    ChannelJoined,
    ChannelJoinFailed,
    ChannelState,
    Connected,
    ConnectionClosed,
    Disconnected,
    JoinError,
    ProtocolError,
    PushError,
    PushTimeout,
    RealtimeConnectionError,
    RealtimeError,
    SubscriptionOverflow,
    Transport,
    TransportOptions,
    backoff,
    open_realtime,
)
from trio_realtime._transport import MemoryTransport, memory_transport_pair
from trio_realtime._url import Endpoint
from trio_realtime.protocol import (
    Frame,
    JSONObject,
    encode_server_frame,
    parse_client_frame,
    parse_frame,
)
from trio_realtime.testing import serve_realtime

EXACT = backoff(jitter=0)


# -- a server scripted by the test --------------------------------------------------------------


class Script:
    """The server's end of each connection the client opened, and helpers to speak on it."""

    def __init__(self) -> None:
        self.ends: list[MemoryTransport] = []
        self.opened = trio.Event()

    @property
    def end(self) -> MemoryTransport:
        return self.ends[-1]

    async def factory(
        self, endpoint: Endpoint, options: TransportOptions, nursery: trio.Nursery
    ) -> Transport:
        client, server = memory_transport_pair()
        self.ends.append(server)
        self.opened.set()
        return client

    async def next_frame(self) -> Frame:
        messages = await self.end.receive_messages()
        assert len(messages) == 1, messages
        message = messages[0]
        frame, _ = parse_client_frame(message if isinstance(message, bytes) else message.encode())
        return frame

    async def send(self, frame: Frame) -> None:
        data, binary = encode_server_frame(frame)
        await self.end.send_message(data, binary)

    async def reply(
        self, to: Frame, status: str = "ok", response: JSONObject | None = None
    ) -> None:
        payload: JSONObject = {"status": status, "response": response or {}}
        await self.send(Frame(to.topic, "phx_reply", payload, to.ref, to.join_ref))

    async def accept_join(self) -> Frame:
        join = await self.next_frame()
        assert join.event == "phx_join"
        await self.reply(join, response={"postgres_changes": []})
        return join


@asynccontextmanager
async def scripted(**options: Any) -> AsyncIterator[tuple[Any, Script]]:
    script = Script()
    options.setdefault("heartbeat_interval", None)
    async with open_realtime(
        "ws://127.0.0.1:1/socket", apikey=APIKEY, transport=script.factory, **options
    ) as client:
        yield client, script


# -- HD-01 / RS-05 --------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["websockets", "trio-websocket"])
async def test_hd01_rs05_batch_cut_by_a_drop_raises_at_once(transport: str) -> None:
    """HD-01, RS-05: the server stops reading, so the client's writer blocks in the middle of
    a batch; then the connection drops. Every push of that batch raises ConnectionClosed at
    once (the writer task was cancelled mid-write: its batch's waiters used to stay unresolved
    until the push timeout); pushes still queued go out after the reconnect. None times out."""
    with trio.fail_after(20):
        async with serve_realtime() as server:
            async with connect_socket(server, transport, timeout=60.0) as client:
                room = client.channel("room", broadcast_ack=True)
                await room.join()
                # The server's reader sleeps in this join's back-off: nothing more is read.
                server.reject_joins("blocker", "RealtimeRestarting: standby", delay=60.0)
                blocker = client.channel("blocker")
                outcomes: dict[str, int] = {}

                async def push(n: int) -> None:
                    try:
                        await room.send_broadcast("big", {"n": n, "blob": "x" * 200_000})
                        key = "acked"
                    except ConnectionClosed:
                        key = "ConnectionClosed"
                    except PushTimeout:  # pragma: no cover - the regression
                        key = "PushTimeout"
                    outcomes[key] = outcomes.get(key, 0) + 1

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_join_quietly, blocker)
                    await trio.sleep(0.2)
                    for n in range(60):
                        nursery.start_soon(push, n)
                    await trio.sleep(1.0)  # the writer fills the socket and blocks
                    server.allow_joins("blocker")
                    started = trio.current_time()
                    await server.drop_connections()
                elapsed = trio.current_time() - started
                assert outcomes.get("PushTimeout", 0) == 0
                assert outcomes.get("ConnectionClosed", 0) >= 1
                assert sum(outcomes.values()) == 60
                assert elapsed < 15.0


async def _join_quietly(channel: Any) -> None:
    with suppress(JoinError, PushTimeout, ChannelClosed):
        await channel.join()


# -- HD-06 ----------------------------------------------------------------------------------------


async def test_hd06_exit_ends_every_task_when_the_graceful_part_fails(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """HD-06: an error in the graceful shutdown still cancels every task at once: the error
    comes out of open_realtime, at the time it happened, and no task is left."""
    baseline = task_count()
    async with serve_realtime() as server:
        with trio.fail_after(60):
            with pytest.raises(RealtimeError, match="boom"):
                async with connect(server) as client:
                    await client.channel("room").join()

                    async def failing_shutdown() -> None:
                        await trio.sleep(1.0)
                        raise RealtimeError("boom")

                    client._driver.shutdown = failing_shutdown  # type: ignore[method-assign]
            assert trio.current_time() == 1.0
        await settle()
    assert task_count() == baseline


# -- HD-07 ----------------------------------------------------------------------------------------


async def test_hd07_abandoned_joins_leave_no_reply_waiter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """HD-07: a join abandoned while it waits for its reply, and retried at once, forgets its
    reply waiter every time: nothing registered outlives the operation."""
    async with serve_realtime() as server, connect(server, timeout=30.0) as client:
        channel = client.channel("room")
        server.reply_delay = 1.0
        for _ in range(30):
            with trio.move_on_after(0.5):
                await channel.join()
            await settle()  # the join task runs its cancellation; the reply is 0.5 s away
            assert client.statistics().pending_replies == 0
            assert channel.state is ChannelState.CLOSED
        server.reply_delay = 0.0
        await channel.join()
        await trio.sleep(2.0)  # the late replies arrive and are dropped as stale
        assert client.statistics().pending_replies == 0
        assert client.statistics().stale_frames >= 1
        assert channel.joined


# -- HD-08 ----------------------------------------------------------------------------------------

BAD_OPTIONS = [
    ("timeout", math.nan),
    ("timeout", 0.0),
    ("timeout", -1.0),
    ("timeout", math.inf),
    ("heartbeat_interval", math.nan),
    ("heartbeat_interval", 0.0),
    ("heartbeat_interval", 0.0001),
    ("heartbeat_interval", -5.0),
    ("close_timeout", math.nan),
    ("close_timeout", 0),
    ("close_timeout", -1),
    ("connect_timeout", math.nan),
    ("connect_timeout", 0.0),
    ("connect_timeout", -2.0),
    ("max_message_size", 0),
    ("max_message_size", -1),
    ("max_message_size", 10),
    ("max_message_size", 4096.5),
    ("outgoing_buffer", 0),
    ("outgoing_buffer", -3),
]


@pytest.mark.parametrize(("name", "value"), BAD_OPTIONS)
async def test_hd08_every_option_is_validated_up_front(name: str, value: object) -> None:
    """HD-08: NaN, zero, negative or too small: a ValueError naming the option, before any
    connection is attempted."""
    attempts = 0

    async def factory(
        endpoint: Endpoint, options: TransportOptions, nursery: trio.Nursery
    ) -> Transport:  # pragma: no cover - must not be reached
        nonlocal attempts
        attempts += 1
        raise AssertionError("connected despite a bad option")

    with pytest.raises(ValueError, match=name):
        options: dict[str, Any] = {name: value}
        async with open_realtime(
            "ws://127.0.0.1:1/socket", apikey=APIKEY, transport=factory, **options
        ):
            pass  # pragma: no cover
    assert attempts == 0


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"rejoin": None}, TypeError),
        ({"reconnect": 5}, TypeError),
        ({"ssl_context": "yes"}, TypeError),
        ({"access_token": 5}, TypeError),
        ({"access_token": "\udc80"}, ValueError),
    ],
)
async def test_hd08_policies_and_tokens_are_validated_up_front(
    options: dict[str, Any], error: type[Exception]
) -> None:
    """HD-08, HD-04: policies, the TLS context and the token are checked before connecting."""
    with pytest.raises(error):
        async with open_realtime("ws://127.0.0.1:1/socket", apikey=APIKEY, **options):
            pass  # pragma: no cover


def test_hd08_backoff_refuses_nan_and_bad_attempts() -> None:
    """HD-08: the backoff schedule itself refuses NaN, infinities and a max below 1."""
    for delays in ((math.nan,), (1.0, math.inf), (-1.0,), ()):
        with pytest.raises(ValueError, match="delays"):
            backoff(delays)
    with pytest.raises(ValueError, match="jitter"):
        backoff(jitter=math.nan)
    with pytest.raises(ValueError, match="max_attempts"):
        backoff(max_attempts=0)


async def test_hd08_channel_options_are_checked(autojump_clock: trio.testing.MockClock) -> None:
    """HD-08, HD-04: channel options of the wrong type, or text that cannot be sent, are
    refused by client.channel(); same_options compares presence_enabled too."""
    async with serve_realtime() as server, connect(server) as client:
        with pytest.raises(TypeError, match="broadcast_ack"):
            client.channel("room", broadcast_ack=1)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="presence_key"):
            client.channel("room", presence_key=None)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="topic"):
            client.channel("room\udc80")
        with pytest.raises(ValueError, match="presence_key"):
            client.channel("room", presence_key="\udc80")
        client.channel("room", presence_enabled=True)
        with pytest.raises(ValueError, match="other options"):
            client.channel("room")


# -- a push in flight when the server closes the channel -----------------------------------------


async def test_push_waiting_for_its_reply_raises_channel_closed_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """CH-06: a push sent and waiting for its ack when the server closes the channel raises
    ChannelClosed at once with the server's message, not PushTimeout after the timeout."""
    async with scripted(timeout=10.0) as (client, script):
        channel = client.channel("room", broadcast_ack=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(channel.join)
            join = await script.accept_join()
        outcome: list[BaseException] = []

        async def push() -> None:
            try:
                await channel.send_broadcast("e", {"a": 1})
            except RealtimeError as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(push)
            pushed = await script.next_frame()
            assert pushed.event == "broadcast"
            await trio.sleep(2.0)
            system: JSONObject = {"extension": "system", "status": "error", "message": "bye"}
            await script.send(Frame(join.topic, "system", system, None, join.ref))
            await script.send(Frame(join.topic, "phx_close", {}, join.ref, join.ref))
        (error,) = outcome
        assert isinstance(error, ChannelClosed)
        assert (error.reason, error.by_server) == ("bye", True)
        assert trio.current_time() == 2.0
        assert client.statistics().pending_replies == 0


# -- RS-07 ----------------------------------------------------------------------------------------


async def test_rs07_a_stored_failure_is_raised_fresh_each_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RS-07: the ChannelClosed every subscription of a closed channel raises is a new object
    each time, chained to the one stored, so tracebacks never pile up across raises."""
    async with serve_realtime() as server, connect(server) as client:
        channel = client.channel("room")
        first, second = channel.broadcasts(), channel.system_events()
        await channel.join()
        await server.system_close("room", "Token has expired 1 seconds ago")
        await settle()
        message = second.receive_nowait()
        assert message.message == "Token has expired 1 seconds ago"
        raised: list[ChannelClosed] = []
        for sub in (first, first, second):
            with pytest.raises(ChannelClosed) as info:
                await sub.receive()
            raised.append(info.value)
        assert len({id(error) for error in raised}) == 3
        causes = {id(error.__cause__) for error in raised}
        assert len(causes) == 1
        assert all(error.reason == "Token has expired 1 seconds ago" for error in raised)
        with pytest.raises(ChannelClosed) as info:
            await channel.send_broadcast("e", {})
        assert info.value not in raised


# -- RS-11, HD-09, HD-10 ---------------------------------------------------------------------------


async def test_rs11_oversize_push_is_refused_before_sending(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RS-11: a push over the server's 5,000,000-byte frame limit raises ProtocolError at
    once; nothing is sent and the connection stays."""
    async with serve_realtime() as server, connect(server, max_message_size=10_000_000) as client:
        channel = client.channel("room", broadcast_ack=True)
        await channel.join()
        with pytest.raises(ProtocolError, match="over the server's limit"):
            await channel.send_broadcast("big", {"blob": "x" * 5_000_000})
        assert trio.current_time() == 0.0
        await channel.send_broadcast("small", {"n": 1})
        frames = [
            f.event for f in server.connections[0].received_frames if f.topic == channel.topic
        ]
        assert frames == ["phx_join", "broadcast"]
        assert client.statistics().connects == 1
        assert client.statistics().pending_replies == 0


async def test_hd09_oversize_join_is_never_sent(autojump_clock: trio.testing.MockClock) -> None:
    """HD-09: a join the server would close the connection for (here a 6 MB presence key) is
    refused at once and never sent, instead of poisoning every reconnect."""
    async with serve_realtime() as server, connect(server) as client:
        channel = client.channel("room", presence_key="k" * 6_000_000)
        with pytest.raises(JoinError, match="cannot be sent"):
            await channel.join()
        assert server.statistics().frames_received_by_topic.get(channel.topic, 0) == 0
        assert client.statistics().connects == 1
        assert channel.state is ChannelState.CLOSED


async def test_hd10_set_auth_refuses_a_token_no_join_could_carry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """HD-10, HD-04: set_auth refuses an oversize or unencodable token at the call; the
    previous token stays and every later rejoin still works."""
    async with serve_realtime() as server, connect(server, access_token=TOKEN) as client:
        channel = client.channel("room")
        await channel.join()
        with pytest.raises(ValueError, match="frame limit"):
            await client.set_auth("t" * 3_000_000)
        with pytest.raises(ValueError, match="surrogate"):
            await client.set_auth("\udc80")
        with pytest.raises(TypeError):
            await client.set_auth(42)  # type: ignore[arg-type]
        await server.drop_connections()
        await server.wait_until_joined("room")
        await settle()
        assert channel.joined
        joins = [f for f in server.connections[-1].received_frames if f.event == "phx_join"]
        assert isinstance(joins[-1].payload, dict)
        assert joins[-1].payload["access_token"] == TOKEN


# -- rejoin policy, background rejoins --------------------------------------------------------


async def test_rejoin_policy_returning_none_gives_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """CH-04: a rejoin policy that returns None gives up: the channel closes with the last
    reason and a final ChannelJoinFailed(retry_in=None); it used to retry every 10 s."""

    def twice(attempt: int) -> float | None:
        return 1.0 if attempt <= 2 else None

    async with serve_realtime() as server, connect(server, rejoin=twice, reconnect=EXACT) as client:
        channel = client.channel("room")
        events = channel.channel_events()
        messages = channel.broadcasts()
        await channel.join()
        server.reject_joins("room", "RealtimeRestarting: try later")
        await server.drop_connections()
        with pytest.raises(ChannelClosed, match="gave up after 3 attempts") as info:
            await messages.receive()
        assert info.value.by_server
        failures: list[ChannelJoinFailed] = []
        with pytest.raises(ChannelClosed):
            while True:
                event = events.receive_nowait()
                if isinstance(event, ChannelJoinFailed):
                    failures.append(event)
        assert [(f.attempt, f.retry_in) for f in failures] == [(1, 1.0), (2, 1.0), (3, None)]
        assert trio.current_time() == 3.0  # reconnect at 1 s, then two retries of 1 s
        assert channel.state is ChannelState.CLOSED


async def test_rejoin_policy_returning_none_after_phx_error_closes_the_channel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """CH-05: after a phx_error, a rejoin policy that gives up at once closes the channel
    (it used to rejoin after 10 s regardless)."""
    async with serve_realtime() as server, connect(server, rejoin=lambda attempt: None) as client:
        channel = client.channel("room")
        messages = channel.broadcasts()
        await channel.join()
        await server.push_error("room")
        with pytest.raises(ChannelClosed, match="rejoin policy gave up"):
            await messages.receive()
        assert trio.current_time() == 0.0
        assert channel.state is ChannelState.CLOSED
        assert server.statistics().channels_joined == 0


async def test_timed_out_background_rejoin_is_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RC-04: a background rejoin whose reply does not come within the timeout is reported
    (ChannelJoinFailed naming the timeout) and retried after the policy's delay."""
    async with (
        serve_realtime() as server,
        connect(server, timeout=5.0, rejoin=EXACT, reconnect=EXACT) as client,
    ):
        channel = client.channel("room")
        await channel.join()
        events = channel.channel_events()
        server.reply_delay = 6.0
        await server.drop_connections()
        failure = await events.receive()
        assert isinstance(failure, ChannelJoinFailed), failure
        assert "within 5.0 s" in failure.reason
        assert (failure.attempt, failure.retry_in) == (1, 1.0)
        assert trio.current_time() == 6.0  # reconnect after 1 s, then the 5 s timeout
        server.reply_delay = 0.0
        joined = await events.receive()
        assert isinstance(joined, ChannelJoined)
        assert joined.rejoin


# -- reconnect refusals -------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_rc09_reconnect_refused_with_4xx_is_fatal(
    status: int, autojump_clock: trio.testing.MockClock
) -> None:
    """RC-09: a reconnect refused at the upgrade with HTTP 400, 401, 403 or 404 ends the
    client with RealtimeConnectionError carrying the status; nothing retries it."""
    async with serve_realtime() as server:
        calls = 0

        async def factory(
            endpoint: Endpoint, options: TransportOptions, nursery: trio.Nursery
        ) -> Transport:
            nonlocal calls
            calls += 1
            if calls == 1:
                return await server.memory_transport(endpoint, options, nursery)
            raise RealtimeConnectionError("refused", status_code=status, server_message="no")

        with pytest.raises(RealtimeConnectionError) as info:
            async with open_realtime(server.url, apikey=APIKEY, transport=factory, reconnect=EXACT):
                await server.drop_connections()
                await trio.sleep_forever()
        assert info.value.status_code == status
        assert calls == 2


async def test_rc09_reconnect_refused_with_5xx_is_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RC-09: a 503 at the upgrade is retried with the backoff."""
    async with serve_realtime() as server:
        calls = 0

        async def factory(
            endpoint: Endpoint, options: TransportOptions, nursery: trio.Nursery
        ) -> Transport:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise RealtimeConnectionError("busy", status_code=503)
            return await server.memory_transport(endpoint, options, nursery)

        async with open_realtime(
            server.url, apikey=APIKEY, transport=factory, reconnect=EXACT
        ) as client:
            events = client.connection_events()
            await server.drop_connections()
            await next_event(events, Connected)
            assert calls == 3
            assert trio.current_time() == 3.0  # 1 s, then 2 s after the refusal


# -- replies -----------------------------------------------------------------------------------


async def test_push_error_on_status_error(autojump_clock: trio.testing.MockClock) -> None:
    """BC-04: an acked push answered with ``status: error`` raises PushError carrying the
    server's response."""
    async with scripted() as (client, script):
        channel = client.channel("room", broadcast_ack=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(channel.join)
            await script.accept_join()

        async def answer_with_an_error() -> None:
            pushed = await script.next_frame()
            payload: JSONObject = {"status": "error", "response": "payload_size_exceeded"}
            await script.send(
                Frame(pushed.topic, "phx_reply", payload, pushed.ref, pushed.join_ref)
            )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer_with_an_error)
            with pytest.raises(PushError, match="payload_size_exceeded") as info:
                await channel.send_broadcast("e", {"a": 1})
        assert info.value.response == "payload_size_exceeded"
        assert client.statistics().pending_replies == 0


async def test_heartbeat_reply_with_the_wrong_ref_does_not_count(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """HB-03: a heartbeat reply with another ref is ignored: the heartbeat stays outstanding
    and the connection is declared dead at the next tick."""
    async with scripted(heartbeat_interval=5.0, reconnect=EXACT) as (client, script):
        events = client.connection_events()
        await trio.sleep(5.0)
        heartbeat = await script.next_frame()
        assert heartbeat.event == "heartbeat"
        await script.send(
            Frame("phoenix", "phx_reply", {"status": "ok", "response": {}}, "999", None)
        )
        disconnected = await next_event(events, Disconnected)
        assert disconnected.reason == "heartbeat timeout"
        assert trio.current_time() == 10.0


# -- subscriptions -----------------------------------------------------------------------------


async def test_bp04_receive_batch_and_overflow_episodes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """BP-01: receive_batch takes everything buffered; each overflow episode raises once with
    its own count, and items after it are delivered again."""
    async with serve_realtime() as server, connect(server) as client:
        channel = client.channel("room")
        sub = channel.broadcasts("e", buffer=3)
        await channel.join()
        for n in range(5):
            await server.broadcast("room", "e", {"n": n})
        await settle()
        batch = await sub.receive_batch()
        assert [item.payload for item in batch] == [{"n": 0}, {"n": 1}, {"n": 2}]
        with pytest.raises(SubscriptionOverflow) as info:
            await sub.receive_batch()
        assert info.value.dropped == 2
        for n in range(5, 12):
            await server.broadcast("room", "e", {"n": n})
        await settle()
        assert [item.payload for item in await sub.receive_batch(max_items=2)] == [
            {"n": 5},
            {"n": 6},
        ]
        assert [item.payload for item in await sub.receive_batch()] == [{"n": 7}]
        with pytest.raises(SubscriptionOverflow) as info:
            await sub.receive()
        assert info.value.dropped == 4
        assert sub.statistics().dropped == 6
        with pytest.raises(ValueError, match="max_items"):
            await sub.receive_batch(max_items=0)


async def test_receive_is_a_cancellation_point_even_with_items_buffered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """STYLE 15: receive() with items buffered still honours a cancellation, losing nothing."""
    async with serve_realtime() as server, connect(server) as client:
        channel = client.channel("room")
        sub = channel.broadcasts()
        await channel.join()
        await server.broadcast("room", "e", {"n": 1})
        await settle()
        with trio.CancelScope() as scope:
            scope.cancel()
            await sub.receive()
        assert scope.cancelled_caught
        assert (await sub.receive()).payload == {"n": 1}


async def test_close_unregisters_the_subscription(autojump_clock: trio.testing.MockClock) -> None:
    """BP-01: closing a subscription unregisters it: the channel stops feeding it."""
    async with serve_realtime() as server, connect(server) as client:
        channel = client.channel("room")
        sub = channel.broadcasts()
        other = channel.broadcasts()
        await channel.join()
        assert channel.statistics().subscriptions == 2
        await sub.aclose()
        assert channel.statistics().subscriptions == 1
        await server.broadcast("room", "e", {})
        await settle()
        assert sub.statistics().delivered == 0
        assert other.statistics().delivered == 1
        with pytest.raises(trio.ClosedResourceError):
            sub.receive_nowait()


async def test_wait_connected(autojump_clock: trio.testing.MockClock) -> None:
    """RC-04: wait_connected returns at once while connected, and after a drop once the
    reconnect is done."""
    async with serve_realtime() as server, connect(server, reconnect=EXACT) as client:
        await client.wait_connected()
        assert trio.current_time() == 0.0
        await server.drop_connections()
        await settle()
        assert not client.connected
        await client.wait_connected()
        assert trio.current_time() == 1.0
        assert client.connected


# -- postgres ----------------------------------------------------------------------------------


async def test_pg02_client_side_event_filter(autojump_clock: trio.testing.MockClock) -> None:
    """PG-02: a change tagged with an INSERT binding's id but of another type does not reach
    that binding's subscription; a ``*`` binding on the same id gets it."""
    async with scripted() as (client, script):
        channel = client.channel("room")
        inserts = channel.postgres_changes("INSERT", table="t")
        everything = channel.postgres_changes("*", table="t")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(channel.join)
            join = await script.next_frame()
            assert isinstance(join.payload, dict)
            config = join.payload["config"]
            assert isinstance(config, dict)
            bindings = config["postgres_changes"]
            assert isinstance(bindings, list)
            server = [{**b, "id": 7} for b in bindings if isinstance(b, dict)]
            await script.reply(join, response={"postgres_changes": server})  # type: ignore[dict-item]
        data: JSONObject = {"schema": "public", "table": "t", "type": "UPDATE", "columns": []}
        data["record"] = {"id": 1}
        await script.send(
            Frame(join.topic, "postgres_changes", {"ids": [7], "data": data}, None, join.ref)
        )
        await settle()
        assert drain(inserts) == []
        (change,) = drain(everything)
        assert (change.event_type, change.new) == ("UPDATE", {"id": 1})


# -- the codec ---------------------------------------------------------------------------------


def test_sr06_kind4_frame_one_byte_short_is_rejected() -> None:
    """SR-06: a kind-4 binary broadcast cut anywhere inside its header (one byte short of the
    payload included) raises ProtocolError, never a partial frame; the whole frame parses."""
    body = b"\x00\x01payload"
    payload: dict[str, Any] = {"type": "broadcast", "event": "e", "payload": body}
    frame = Frame("realtime:room", "broadcast", payload)
    data, binary = encode_server_frame(frame, "2.0.0", user_broadcast=True)
    assert binary
    whole = parse_frame(data, "2.0.0")
    assert whole.payload == payload
    header = len(data) - len(body)
    for cut in range(1, header):
        with pytest.raises(ProtocolError):
            parse_frame(data[:cut], "2.0.0")
