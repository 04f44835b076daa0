"""Client lifecycle, heartbeat and reconnection (CL-*, HB-*, RC-*), against the local server.

Time is virtual (trio's MockClock with autojump), so every timing assertion is exact.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from _realtime import connect, drain, settle, task_count
from conftest import APIKEY, TOKEN

from trio_realtime import (
    ChannelJoined,
    Connected,
    ConnectionClosed,
    Disconnected,
    HeartbeatEvent,
    RealtimeConnectionError,
    RealtimeError,
    Reconnecting,
    Transport,
    TransportOptions,
    backoff,
    open_realtime,
)
from trio_realtime._driver import HEALTHY_AFTER
from trio_realtime._url import Endpoint
from trio_realtime.testing import RealtimeServer, serve_realtime

EXACT = backoff(jitter=0)


class Gate:
    """A transport factory that refuses connections (as a down server would) while closed."""

    def __init__(self, server: RealtimeServer) -> None:
        self.server = server
        self.open = True

    async def __call__(
        self, endpoint: Endpoint, options: TransportOptions, nursery: trio.Nursery
    ) -> Transport:
        if not self.open:
            await trio.lowlevel.checkpoint()
            raise RealtimeConnectionError("cannot connect: connection refused")
        return await self.server.memory_transport(endpoint, options, nursery)


async def test_cl01_missing_apikey_fails_fast() -> None:
    """CL-01: no apikey is a clear error before any I/O."""
    with pytest.raises(ValueError, match="apikey"):
        async with open_realtime("http://127.0.0.1:1", apikey=""):
            pass  # pragma: no cover


async def test_cl06_unsupported_vsn_is_refused() -> None:
    """CL-06: an unsupported vsn is refused at construction."""
    with pytest.raises(ValueError, match="vsn"):
        # The Vsn literal makes it a type error too; untyped callers get the ValueError.
        async with open_realtime("http://127.0.0.1:1", apikey=APIKEY, vsn="3.0.0"):  # type: ignore[arg-type]
            pass  # pragma: no cover


@pytest.mark.parametrize("vsn", ["1.0.0", "2.0.0"])
async def test_cl03_body_runs_once_connected_and_exit_closes_with_1000(
    vsn: str, autojump_clock: trio.testing.MockClock
) -> None:
    """CL-03: the body runs only once connected; leaving closes with 1000 and no task is left."""
    async with serve_realtime() as server:
        await settle()
        before = task_count()
        async with connect(server, vsn=vsn) as client:
            assert client.connected
            assert client.statistics().connects == 1
            assert len(server.connections) == 1
            connection = server.connections[0]
            assert connection.vsn == vsn
        await settle()
        assert connection.close_code == 1000
        assert task_count() == before


async def test_cl04_user_exception_propagates_unwrapped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """CL-04: an exception from the body comes out as itself, after a clean shutdown."""
    async with serve_realtime() as server:
        with pytest.raises(KeyError, match="boom"):
            async with connect(server) as client:
                channel = client.channel("room")
                await channel.join()
                raise KeyError("boom")
        await settle()
        assert server.connections == [] or server.connections[0].close_code == 1000
        assert (
            server.statistics().frames_received_by_topic.get("realtime:room", 0) >= 2
        )  # join + leave


async def test_cl07_refused_upgrade_is_one_library_error_without_the_apikey() -> None:
    """CL-07: HTTP 401 at upgrade surfaces as RealtimeConnectionError with the server message."""
    async with serve_realtime(apikey="the-right-key") as server:
        with pytest.raises(RealtimeConnectionError) as info:
            async with connect(server):
                pass  # pragma: no cover
        assert info.value.status_code == 401
        assert info.value.server_message
        assert APIKEY not in str(info.value)


async def test_cl07_connection_refused_real_socket() -> None:
    """CL-07: a refused TCP connection is one RealtimeConnectionError."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    with pytest.raises(RealtimeConnectionError) as info:
        async with open_realtime(f"http://127.0.0.1:{port}", apikey=APIKEY):
            pass  # pragma: no cover
    assert APIKEY not in str(info.value)


async def test_cl05_cancel_while_joining_leaves_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """CL-05: cancelling during a join (the server delays replies) leaks no task."""
    async with serve_realtime() as server:
        server.reply_delay = 5.0
        async with connect(server) as client:
            channel = client.channel("room")
            with trio.move_on_after(1.0):
                await channel.join()
            assert channel.state.value in ("joining", "closed")
        await settle()
        assert not client.connected


# -- heartbeat --------------------------------------------------------------------------------


async def test_hb01_hb02_heartbeat_every_interval_with_latency(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """HB-01/HB-02: a heartbeat on topic phoenix every interval; latency reported."""
    async with serve_realtime() as server:
        server.reply_delay = 0.25
        async with connect(server, heartbeat_interval=10.0) as client:
            events = client.connection_events()
            start = trio.current_time()
            times = []
            for _ in range(3):
                event = await events.receive()
                assert isinstance(event, HeartbeatEvent)
                assert event.status == "ok"
                assert event.latency == pytest.approx(0.25)
                times.append(trio.current_time() - start)
            assert times == pytest.approx([10.25, 20.25, 30.25])
            assert client.statistics().heartbeat_latency == pytest.approx(0.25)
            assert server.statistics().frames_received_by_topic["phoenix"] == 3


async def test_hb03_no_reply_by_next_tick_reconnects(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """HB-03: a heartbeat unanswered at the next tick closes the connection and reconnects."""
    async with serve_realtime() as server:
        async with connect(server, heartbeat_interval=25.0, reconnect=EXACT) as client:
            events = client.connection_events()
            start = trio.current_time()
            server.answer_heartbeats = False
            event = await events.receive()
            assert isinstance(event, Disconnected)
            assert event.reason == "heartbeat timeout"
            assert trio.current_time() - start == pytest.approx(50.0)
            assert isinstance(await events.receive(), Reconnecting)
            server.answer_heartbeats = True
            event = await events.receive()
            assert isinstance(event, Connected)
            assert event.reconnect
            assert trio.current_time() - start == pytest.approx(51.0)


async def test_hb05_stalled_subscriber_does_not_delay_heartbeats(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """HB-05/BP-01: a subscriber that never reads does not delay or stop heartbeats."""
    async with serve_realtime() as server:
        async with connect(server, heartbeat_interval=5.0) as client:
            channel = client.channel("flood")
            stalled = channel.broadcasts(buffer=10, overflow="drop_newest")
            events = client.connection_events(overflow="drop_oldest")
            async with channel:
                start = trio.current_time()
                for _ in range(50):
                    await server.broadcast("flood", "msg", {"n": 1})
                beats: list[float] = []
                while len(beats) < 4:
                    event = await events.receive()
                    if isinstance(event, HeartbeatEvent):
                        beats.append(trio.current_time() - start)
                assert beats == pytest.approx([5.0, 10.0, 15.0, 20.0])
                assert stalled.statistics().buffered == 10
                assert stalled.statistics().dropped == 40


async def test_hb04_error_reply_is_reported_and_connection_continues(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """HB-04: a heartbeat reply with status error is reported; the connection stays."""
    async with serve_realtime() as server:
        async with connect(server, heartbeat_interval=5.0) as client:
            events = client.connection_events()
            server.answer_heartbeats = False
            await trio.sleep(5.0)
            await settle()
            # Answer the outstanding heartbeat with an error status by hand.
            pending = client._runtime.session.heartbeat_outstanding
            assert pending is not None
            heartbeat_ref = pending[0]
            await server.send_raw(
                '{"event":"phx_reply","payload":{"response":{},"status":"error"},'
                f'"ref":"{heartbeat_ref}","topic":"phoenix"}}'
            )
            event = await events.receive()
            assert isinstance(event, HeartbeatEvent)
            assert event.status == "error"
            server.answer_heartbeats = True
            event = await events.receive()
            assert isinstance(event, HeartbeatEvent)
            assert event.status == "ok"
            assert client.statistics().connects == 1


# -- reconnection -----------------------------------------------------------------------------


async def test_rc01_backoff_schedule_and_custom_policy(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RC-01: reconnect delays 1, 2, 5, 10, 10 s; a custom policy is honoured."""
    async with serve_realtime() as server:
        gate = Gate(server)
        async with connect(server, reconnect=EXACT, transport=gate) as client:
            events = client.connection_events()
            start = trio.current_time()
            gate.open = False
            await server.drop_connections()
            delays: list[float] = []
            while len(delays) < 5:
                event = await events.receive()
                if isinstance(event, Reconnecting):
                    delays.append(event.delay)
            assert delays == [1.0, 2.0, 5.0, 10.0, 10.0]
            assert trio.current_time() - start == pytest.approx(1 + 2 + 5 + 10)
            gate.open = True
            while not isinstance(await events.receive(), Connected):
                pass
            assert trio.current_time() - start == pytest.approx(1 + 2 + 5 + 10 + 10)

    async with serve_realtime() as server:
        async with connect(server, reconnect=lambda attempt: 0.5 * attempt) as client:
            events = client.connection_events()
            start = trio.current_time()
            await server.drop_connections()
            assert isinstance(await events.receive(), Disconnected)
            reconnecting = await events.receive()
            assert isinstance(reconnecting, Reconnecting)
            assert reconnecting.delay == 0.5
            assert isinstance(await events.receive(), Connected)
            assert trio.current_time() - start == pytest.approx(0.5)


def test_rc01_jitter_stays_within_the_schedule() -> None:
    """RC-01: jitter only shortens delays, never beyond the 10 s cap."""
    policy = backoff()
    for attempt in range(1, 50):
        delay = policy(attempt)
        assert delay is not None
        expected = [1.0, 2.0, 5.0, 10.0][min(attempt, 4) - 1]
        assert expected * 0.9 <= delay <= expected


async def test_rc02_no_reconnect_after_user_close(autojump_clock: trio.testing.MockClock) -> None:
    """RC-02: once the user closes the client, nothing reconnects."""
    async with serve_realtime() as server:
        async with connect(server):
            pass
        await trio.sleep(60)
        assert server.statistics().connections_accepted == 1


async def test_rc03_backoff_resets_after_success(autojump_clock: trio.testing.MockClock) -> None:
    """RC-03, HD-11: after a reconnect that stayed up for HEALTHY_AFTER seconds, the next loss
    starts again at 1 s."""
    async with serve_realtime() as server:
        async with connect(server, reconnect=EXACT) as client:
            events = client.connection_events()
            for _ in range(3):
                await trio.sleep(HEALTHY_AFTER)
                await server.drop_connections()
                delays = []
                while True:
                    event = await events.receive()
                    if isinstance(event, Reconnecting):
                        delays.append(event.delay)
                    if isinstance(event, Connected):
                        break
                assert delays == [1.0]


async def test_hd11_backoff_grows_while_connections_drop_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """HD-11: a server that accepts and drops at once is retried with a growing delay: the
    backoff is not reset by an upgrade that did not stay up, and resets once one does."""
    async with serve_realtime() as server:
        async with connect(server, reconnect=EXACT) as client:
            events = client.connection_events()
            delays: list[float] = []
            times: list[float] = []
            for _ in range(5):
                await server.drop_connections()
                while True:
                    event = await events.receive()
                    if isinstance(event, Reconnecting):
                        delays.append(event.delay)
                    if isinstance(event, Connected):
                        times.append(trio.current_time())
                        break
            assert delays == [1.0, 2.0, 5.0, 10.0, 10.0]
            assert times == [1.0, 3.0, 8.0, 18.0, 28.0]
            await trio.sleep(HEALTHY_AFTER)
            await server.drop_connections()
            event = await events.receive()
            assert isinstance(event, Disconnected)
            event = await events.receive()
            assert event == Reconnecting(1, 1.0)


@pytest.mark.parametrize("vsn", ["1.0.0", "2.0.0"])
async def test_rc04_rc06_rc08_channels_rejoin_with_new_join_ref(
    vsn: str, autojump_clock: trio.testing.MockClock
) -> None:
    """RC-04/RC-06/RC-08: events in order; every channel rejoins; subscriptions keep going."""
    async with serve_realtime() as server:
        async with connect(server, vsn=vsn, reconnect=EXACT) as client:
            events = client.connection_events()
            rooms = [client.channel(f"room{i}") for i in range(3)]
            subs = [room.broadcasts("msg") for room in rooms]
            joins = [room.channel_events() for room in rooms]
            for room in rooms:
                await room.join()
            first_refs = [room.join_ref for room in rooms]
            await server.drop_connections()
            kinds = []
            while True:
                event = await events.receive()
                kinds.append(type(event).__name__)
                if isinstance(event, Connected):
                    break
            assert kinds == ["Disconnected", "Reconnecting", "Connected"]
            for room in rooms:
                await server.wait_until_joined(room.topic)
            await settle()
            assert all(room.joined for room in rooms)
            assert [room.join_ref for room in rooms] != first_refs
            for index, channel_events in enumerate(joins):
                seen = drain(channel_events)
                assert [e.rejoin for e in seen if isinstance(e, ChannelJoined)] == [False, True]
                del index
            for i in range(3):
                await server.broadcast(f"room{i}", "msg", {"i": i})
            for i, sub in enumerate(subs):
                item = await sub.receive()
                assert item.payload == {"i": i}


@pytest.mark.parametrize(
    "fault", ["close-1000", "close-1001", "close-1012", "drop", "request-disconnect"]
)
async def test_rc05_close_codes_and_drops_all_reconnect(
    fault: str, autojump_clock: trio.testing.MockClock
) -> None:
    """RC-05: close codes 1000, 1001, 1012 and a dropped connection all lead to a reconnect."""
    async with serve_realtime() as server:
        async with connect(server, reconnect=EXACT) as client:
            events = client.connection_events()
            room = client.channel("room")
            await room.join()
            if fault == "drop":
                await server.drop_connections()
                expected = 1006
            elif fault == "request-disconnect":
                await server.request_disconnect()
                expected = 1012
            else:
                expected = int(fault.split("-")[1])
                await server.close_connections(expected, "bye")
            event = await events.receive()
            assert isinstance(event, Disconnected)
            assert event.code == expected
            assert event.will_reconnect
            while not isinstance(await events.receive(), Connected):
                pass
            await server.wait_until_joined("room")


async def test_rc07_token_callback_awaited_before_rejoin(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RC-07: the token callback runs again on reconnect, before the rejoin."""
    calls: list[float] = []
    tokens: list[str | None] = []

    async def token() -> str:
        calls.append(trio.current_time())
        await trio.sleep(0.5)
        return f"{TOKEN}-{len(calls)}"

    def check(value: str) -> str | None:
        tokens.append(value)
        return None

    async with serve_realtime(token_check=check) as server:
        async with connect(server, access_token=token, reconnect=EXACT) as client:
            room = client.channel("room")
            await room.join()
            assert tokens == [f"{TOKEN}-1"]
            await server.drop_connections()
            await server.wait_until_joined("room")
            await settle()
            assert tokens == [f"{TOKEN}-1", f"{TOKEN}-2"]
            assert len(calls) == 2


async def test_reconnect_disabled_raises_connection_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With reconnect=None a lost connection ends open_realtime with ConnectionClosed."""
    async with serve_realtime() as server:
        with pytest.raises(ConnectionClosed) as info:
            async with connect(server, reconnect=None):
                await server.close_connections(1001, "going away")
                await trio.sleep_forever()
        assert info.value.code == 1001


async def test_reconnect_policy_giving_up_is_visible(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A policy that gives up ends open_realtime with a library error, never silently."""
    async with serve_realtime() as server:
        with pytest.raises(RealtimeError):
            gate = Gate(server)
            async with connect(server, reconnect=backoff(max_attempts=2, jitter=0), transport=gate):
                gate.open = False
                await server.drop_connections()
                await trio.sleep_forever()


async def test_connect_timeout_bounds_a_hanging_upgrade(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Opening a connection is bounded by connect_timeout; a hang fails like a refusal."""

    async def never(
        endpoint: Endpoint, options: TransportOptions, nursery: trio.Nursery
    ) -> Transport:
        await trio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    start = trio.current_time()
    with pytest.raises(RealtimeConnectionError, match=r"within 7\.5 s"):
        async with open_realtime(
            "http://127.0.0.1:1", apikey=APIKEY, transport=never, connect_timeout=7.5
        ):
            pass  # pragma: no cover
    assert trio.current_time() - start == pytest.approx(7.5)

    async with serve_realtime() as server:
        gate = Gate(server)
        hanging = False

        async def sometimes_hang(
            endpoint: Endpoint, options: TransportOptions, nursery: trio.Nursery
        ) -> Transport:
            if hanging:
                await trio.sleep_forever()
            return await gate(endpoint, options, nursery)

        async with connect(
            server, transport=sometimes_hang, reconnect=EXACT, connect_timeout=3.0
        ) as client:
            events = client.connection_events()
            hanging = True
            start = trio.current_time()
            await server.drop_connections()
            assert isinstance(await events.receive(), Disconnected)
            assert isinstance(await events.receive(), Reconnecting)
            second = await events.receive()
            assert isinstance(second, Reconnecting)
            # 1 s of backoff, then a 3 s attempt that hung, then the next backoff.
            assert trio.current_time() - start == pytest.approx(4.0)
            assert second.delay == 2.0
            hanging = False
            assert isinstance(await events.receive(), Connected)
            assert trio.current_time() - start == pytest.approx(6.0)


async def test_rc_background_failure_surfaces_through_a_nursery_in_the_body(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """When the reconnect policy gives up while the body waits inside its own nursery, the
    body's nursery raises a group of cancellations: open_realtime still raises the
    ConnectionClosed, not that group."""
    with trio.fail_after(30):
        async with serve_realtime() as server:
            gate = Gate(server)
            raised: BaseException | None = None
            try:
                async with connect(
                    server, transport=gate, reconnect=backoff(max_attempts=1)
                ) as client:
                    channel = client.channel("room")
                    messages = channel.broadcasts()
                    await channel.join()
                    gate.open = False
                    await server.drop_connections()
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(messages.receive)
            except BaseException as exc:
                raised = exc
            assert isinstance(raised, ConnectionClosed), repr(raised)
            assert "reconnect failed" in str(raised)
