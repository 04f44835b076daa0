"""Faults end to end: the fault matrix, and regressions it found.

Regressions first: each is a race or an edge that a fault in the matrix ran into.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from _faults import MAX_MESSAGE_SIZE, ROOMS, VIRTUAL, Timing, World, harness, world
from _realtime import (
    client_tls_context,
    connect,
    connect_socket,
    drain,
    expected_presence,
    next_event,
    server_tls_context,
    settle,
)
from conftest import APIKEY, Figures

from trio_realtime import (
    Channel,
    ChannelClosed,
    ChannelJoined,
    ChannelJoinFailed,
    ChannelState,
    Connected,
    ConnectionClosed,
    Disconnected,
    PushError,
    PushTimeout,
    RealtimeError,
    SubscriptionOverflow,
    backoff,
    open_realtime,
)
from trio_realtime._channel import MAX_WAITING_PUSHES
from trio_realtime._connection import WRITE_BATCH
from trio_realtime.testing import serve_realtime

VSNS = ["1.0.0", "2.0.0"]
TRANSPORTS = ["websockets", "trio-websocket"]
GUARD = 10.0


# -- regressions ------------------------------------------------------------------------------


@pytest.mark.parametrize("vsn", VSNS)
async def test_ch06_server_close_read_with_the_join_reply(vsn: str) -> None:
    """CH-06: a ``system`` error and ``phx_close`` read in the same batch as the join reply
    close the channel (the join raises ChannelClosed with the server's message). The join task,
    resumed after them, used to set JOINED on a closed channel: an illegal transition that
    killed the whole client. The default transport hands over a whole read at once, and the
    server writes the delayed reply and the frames queued behind it in one write."""
    with trio.fail_after(GUARD):
        async with serve_realtime() as server, connect_socket(server, vsn=vsn) as client:
            channel = client.channel("room")
            messages = channel.broadcasts()
            server.reply_delay = 0.05

            async def close_once_joined() -> None:
                await server.wait_until_joined("room")
                await server.system_close("room", "Token has expired 0 seconds ago")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(close_once_joined)
                with pytest.raises(ChannelClosed) as info:
                    await channel.join()
            assert info.value.reason == "Token has expired 0 seconds ago"
            with pytest.raises(ChannelClosed):
                await messages.receive()
            assert channel.state is ChannelState.CLOSED
            server.reply_delay = 0.0
            await channel.join()
            assert client.statistics().connects == 1


@pytest.mark.parametrize("vsn", VSNS)
async def test_ch05_phx_error_read_with_the_join_reply(vsn: str) -> None:
    """CH-05: a ``phx_error`` read in the same batch as the join reply makes the channel rejoin;
    the user's join returns once that rejoin is done, and the client lives on."""
    with trio.fail_after(GUARD):
        async with serve_realtime() as server, connect_socket(server, vsn=vsn) as client:
            channel = client.channel("room")
            joins = channel.channel_events()
            server.reply_delay = 0.05

            async def crash_once_joined() -> None:
                await server.wait_until_joined("room")
                await server.push_error("room")
                server.reply_delay = 0.0

            async with trio.open_nursery() as nursery:
                nursery.start_soon(crash_once_joined)
                await channel.join()
            assert channel.joined
            assert [type(event) for event in drain(joins)] == [ChannelJoined]
            assert client.statistics().connects == 1


async def test_push_lost_mid_write_raises_and_is_never_sent_twice(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RC-04/CH-08: when the connection drops while the writer is writing a batch, the pushes
    in that batch may have reached the server: they raise ConnectionClosed, and are never sent
    again. Pushes still queued behind it were not written: they wait for the rejoin (the
    oldest beyond 100 waiting raise PushError) and then go out. Every push is accounted for."""
    async with (
        serve_realtime() as server,
        connect(server, reconnect=backoff(jitter=0)) as client,
    ):
        room = client.channel("room", broadcast_self=True)
        echoes = room.broadcasts(buffer=10_000)
        await room.join()
        # A refused join with a back-off blocks the server's reader, as the real server does:
        # the client's frames pile up until its writer blocks in the middle of a batch.
        server.reject_joins("blocker", "RealtimeRestarting: standby", delay=60.0)
        outcomes: list[str] = []

        async def push(n: int) -> None:
            try:
                await room.send_broadcast("msg", {"n": n})
            except ConnectionClosed:
                outcomes.append("maybe")
            except PushError:
                outcomes.append("dropped")
            else:
                outcomes.append("written")

        async def join_blocker() -> None:
            with contextlib.suppress(RealtimeError):
                await client.channel("blocker").join()

        total = 3000
        async with trio.open_nursery() as nursery:
            nursery.start_soon(join_blocker)
            await settle()
            for n in range(total):
                nursery.start_soon(push, n)
            await settle()
            (connection,) = server.connections
            assert connection.frames_received == 2  # the room's join and the blocker's
            server.allow_joins("blocker")
            await server.drop_connections()
        await settle()
        resent = [item.payload["n"] for item in drain(echoes)]
        written, maybe = outcomes.count("written"), outcomes.count("maybe")
        # Batches written whole before the memory pair (1024 messages) filled up count as
        # written; the batch cut short by the drop raised; what was still queued waited for
        # the rejoin (100 of it; older ones raised PushError) and went out once, after it.
        assert written + maybe + outcomes.count("dropped") == total
        assert 0 < maybe <= WRITE_BATCH
        assert 0 < len(resent) <= MAX_WAITING_PUSHES
        assert written - len(resent) <= 1024
        assert len(set(resent)) == len(resent)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_push_the_server_drops_the_connection_for_raises_once(
    transport: str, ca: trustme.CA
) -> None:
    """RC-01/BP-03/HD-01: a push over the server's frame limit (a server configured below the
    5,000,000 bytes the client refuses itself) makes the server close (1009) while the client
    is still writing it (over TLS the write cannot finish first). It raises ConnectionClosed at
    once; it used to be retried after every reconnect, making each new connection fail in turn
    until the push timed out."""
    with trio.fail_after(GUARD):
        async with serve_realtime(
            ssl_context=server_tls_context(ca), max_message_size=1_000_000
        ) as server:
            async with open_realtime(
                server.url,
                apikey=APIKEY,
                transport=transport,
                ssl_context=client_tls_context(ca),
                reconnect=lambda attempt: 0.0,
                timeout=5.0,
            ) as client:
                events = client.connection_events()
                channel = client.channel("room", presence_key="me", broadcast_ack=True)
                await channel.join()
                try:
                    await channel.track({"blob": "x" * 4_000_000})
                except PushTimeout:  # pragma: no cover - the regression
                    pytest.fail("the push was retried until it timed out")
                except ConnectionClosed:
                    pass
                await next_event(events, Connected)
                await server.wait_until_joined("room")
                await channel.send_broadcast("msg", {"after": True})
                assert server.statistics().connections_accepted == 2


# -- the matrix -------------------------------------------------------------------------------
#
# Every scenario runs under vsn 1.0.0 and 2.0.0, in memory under the MockClock (exact virtual
# times) and over loopback sockets with both transports. It starts from a World (tests/_faults):
# a peer tracking presence in three rooms, the client joined to all three with broadcast (self,
# ack), presence and postgres_changes, every subscription drained by a consumer task. After the
# fault, the runner checks that each room still alive is healthy (joined as the server sees it,
# receives broadcasts and Postgres changes, gets an acked push through, and has exactly the
# server's presence state), that every acked push ended acked or raised and none arrived twice,
# that nothing accumulated (waiters, waiting pushes, buffers, server connections and channels),
# and, once the client has closed, that no task is left.


@dataclass
class Outcome:
    """What a scenario reports.

    Attributes:
        recovery: Seconds from the fault to full recovery (every affected room rejoined, or the
            first push acknowledged again); ``None`` when nothing can recover and a clear
            library exception was raised instead.
        alive: The rooms still joined at the end.
    """

    recovery: float | None
    alive: tuple[str, ...] = ROOMS


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[World], Awaitable[Outcome]]
    virtual_recovery: float | None
    """The exact recovery time in virtual seconds (in memory, the default policies)."""
    options: Callable[[Timing], dict[str, Any]] = lambda timing: {}

    def __str__(self) -> str:
        return self.name


def disconnects(w: World) -> list[Disconnected]:
    return [e for e in w.connection_events.items if isinstance(e, Disconnected)]


async def flood(w: World, room: str, total: int) -> None:
    """Broadcast ``total`` numbered ``flood`` events to ``room``, paced to the readers."""
    for n in range(total):
        w.server.broadcast_nowait(room, "flood", {"n": n})
        if n % 250 == 249:
            await w.server.wait_flushed()
    await w.server.wait_flushed()


async def drop_mid_flood(w: World) -> Outcome:
    """RC-05/RC-04/RC-08: the server drops the TCP connection in the middle of a flood while
    acked pushes are in flight on the other rooms. The flood arrives in order, without
    duplicates, up to the drop; every room rejoins and signals the gap."""
    room0 = w.room("room0")
    before = w.rejoins()
    total = 3000

    async def push_meanwhile() -> None:
        for index in range(60):
            await w.ledger.push(w.rooms[1 + index % 2])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(flood, w, "room0", total)
        nursery.start_soon(push_meanwhile)
        await room0.messages.wait_for(lambda: len(room0.events("flood")) >= 1000)
        fault = trio.current_time()
        await w.server.drop_connections(connection=w.harness.client_connection())
        await w.wait_rejoined(before)
        recovered = trio.current_time()
    numbers = [payload["n"] for payload in room0.events("flood")]
    assert numbers == sorted(set(numbers)), "the flood arrived out of order or twice"
    assert 1000 <= len(numbers) < total
    assert [e.code for e in disconnects(w)] == [1006]
    return Outcome(recovered - fault)


async def half_open(w: World) -> Outcome:
    """HB-03: the server stops answering heartbeats (the connection stays up): the missing reply
    at the next tick closes the connection, and the client reconnects and rejoins."""
    before = w.rejoins()
    w.harness.client_connection().answer_heartbeats = False
    fault = trio.current_time()
    await w.wait_rejoined(before)
    assert [(e.code, e.reason) for e in disconnects(w)] == [(1006, "heartbeat timeout")]
    return Outcome(trio.current_time() - fault)


async def server_restart(w: World) -> Outcome:
    """PR-07/RC-04/RS-01: the server restarts (same port, or the same factory in memory) and
    the presences change: the old peer is gone, a newcomer is there, and the client tracks its
    own presence again. Presence converges to the new server's state, with no ghost."""
    before = w.rejoins()
    fault, new = await w.harness.restart()
    await w.wait_rejoined(before)
    recovered = trio.current_time()
    for room in w.rooms:
        await new.wait_until_joined(room.name, 2)
        channel = room.channel

        def both_there(channel: Channel = channel) -> bool:
            return sorted(channel.presence_state()) == ["client", "newcomer"]

        await room.presence.wait_for(both_there)
        assert channel.presence_state() == expected_presence(new, room.name)
    return Outcome(recovered - fault)


def close_with(code: int) -> Callable[[World], Awaitable[Outcome]]:
    async def scenario(w: World) -> Outcome:
        before = w.rejoins()
        connection = w.harness.client_connection()
        fault = trio.current_time()
        if code == 1012:
            await w.server.request_disconnect(connection=connection)
        else:
            await w.server.close_connections(code, "bye", connection=connection)
        await w.wait_rejoined(before)
        assert [e.code for e in disconnects(w)] == [code]
        return Outcome(trio.current_time() - fault)

    scenario.__doc__ = f"RC-05: the server closes with {code}; the client reconnects."
    return scenario


async def phx_error_on_one(w: World) -> Outcome:
    """CH-05: ``phx_error`` on room1: it rejoins with backoff and its subscriptions continue;
    the other rooms are not touched and keep delivering during the gap."""
    room0, room1 = w.room("room0"), w.room("room1")
    before = w.rejoins()
    refs = [room.channel.join_ref for room in w.rooms]
    fault = trio.current_time()
    await w.server.push_error("room1", connection=w.harness.client_connection())
    await w.server.broadcast("room0", "during", {"gap": True})
    await room0.messages.wait_for(lambda: room0.events("during") == [{"gap": True}])
    await w.wait_rejoined(before, ["room1"])
    recovered = trio.current_time()
    after = [room.channel.join_ref for room in w.rooms]
    assert after[0] == refs[0]
    assert after[2] == refs[2]
    assert after[1] != refs[1]
    assert not room1.messages.ended
    return Outcome(recovered - fault)


async def token_expired_on_one(w: World) -> Outcome:
    """CH-06: ``system`` "Token has expired" then ``phx_close`` on room1: its subscriptions
    raise ChannelClosed with the server's message, a push on it raises ChannelClosed; the other
    rooms go on. The user can join room1 again."""
    room1 = w.room("room1")
    message = "Token has expired 3 seconds ago"
    await w.server.system_close("room1", message, connection=w.harness.client_connection())
    for sink in room1.sinks:
        await sink.wait_ended()
        assert isinstance(sink.error, ChannelClosed), sink.error
        assert sink.error.reason == message
        assert sink.error.by_server
    assert room1.channel.state is ChannelState.CLOSED
    closed = w.ledger.outcomes["ChannelClosed"]
    await w.ledger.push(room1)
    assert w.ledger.outcomes["ChannelClosed"] == closed + 1
    await w.check_healthy(["room0", "room2"])
    w.check_bounded(channels=2)
    fresh = room1.channel.broadcasts()
    async with fresh:
        await room1.channel.join()
        await w.server.wait_until_joined("room1", 2)
        await w.server.broadcast("room1", "again", {"joined": True})
        assert (await fresh.receive()).payload == {"joined": True}
    return Outcome(None, alive=("room0", "room2"))


async def join_refused_on_rejoin(w: World) -> Outcome:
    """RC-04/CH-03: after a reconnect the server refuses room1 for good (Unauthorized): room1's
    subscriptions raise ChannelClosed with the reason and a ChannelJoinFailed without retry is
    reported; it is not retried. The other rooms rejoin."""
    room1 = w.room("room1")
    reason = "Unauthorized: You do not have permissions to read from this Channel topic: room1"
    w.server.reject_joins("room1", reason)
    before = w.rejoins()
    fault = trio.current_time()
    await w.server.drop_connections(connection=w.harness.client_connection())
    await w.wait_rejoined(before, ["room0", "room2"])
    recovered = trio.current_time()
    await room1.messages.wait_ended()
    assert isinstance(room1.messages.error, ChannelClosed)
    assert room1.messages.error.reason == reason
    failed = [e for e in room1.joins.items if isinstance(e, ChannelJoinFailed)]
    assert [e.retry_in for e in failed] == [None]
    assert w.server.statistics().joins_refused == 1
    w.server.allow_joins("room1")
    return Outcome(recovered - fault, alive=("room0", "room2"))


async def delayed_replies(w: World) -> Outcome:
    """BC-04: the server holds every reply back beyond the push timeout: acked pushes
    raise PushTimeout at exactly the timeout, the connection stays, and once replies flow again
    the next push (queued behind the late replies) is acknowledged."""
    connection = w.harness.client_connection()
    timing = w.harness.timing
    connection.reply_delay = timing.reply_delay
    fault = trio.current_time()
    async with trio.open_nursery() as nursery:
        for room in w.rooms * 2:
            nursery.start_soon(w.ledger.push, room)
    assert w.ledger.outcomes["PushTimeout"] == 6
    if w.harness.virtual:
        assert trio.current_time() - fault == timing.timeout
    connection.reply_delay = None
    await w.ledger.push(w.room("room0"))
    assert w.ledger.outcomes["acked"] == 1
    assert w.client.statistics().connects == 1
    return Outcome(trio.current_time() - fault)


async def slow_consumer(w: World) -> Outcome:
    """HB-05/BP-01/BP-02: a subscription nobody reads during a flood keeps its 100 items and
    counts the rest as dropped, then raises SubscriptionOverflow with the count; the reader
    never waits for it, so the other subscriptions get everything and nothing reconnects."""
    room0 = w.room("room0")
    slow = room0.channel.broadcasts("flood", buffer=100)
    total = 3000
    await flood(w, "room0", total)
    await room0.messages.wait_for(lambda: len(room0.events("flood")) == total)
    stats = slow.statistics()
    assert (stats.buffered, stats.dropped) == (100, total - 100)
    assert [(await slow.receive()).payload for _ in range(100)] == [{"n": n} for n in range(100)]
    with pytest.raises(SubscriptionOverflow) as info:
        await slow.receive()
    assert info.value.dropped == total - 100
    assert w.client.statistics().dropped_items == total - 100
    await slow.aclose()
    assert w.client.statistics().connects == 1
    return Outcome(0.0)


def junk(vsn: str) -> list[str | bytes]:
    """Malformed, wrong-shape, unknown and stale frames (BI-01, CH-07)."""
    frames: list[str | bytes] = [
        "",
        "not json",
        "{",
        "[1, 2]",
        "null",
        b"\x00",
        b"\x04\xff\xff\xff",
        bytes(range(256)),
        "\ud7ff" * 3,
    ]
    if vsn == "1.0.0":
        frames += [
            '{"event":"broadcast","payload":{},"ref":null,"topic":"realtime:nowhere"}',
            '{"event":"mystery","payload":{},"ref":null,"topic":"realtime:room0"}',
            '{"event":"broadcast","payload":[1],"ref":null,"topic":"realtime:room0"}',
            '{"event":"presence_diff","payload":{"joins":7},"ref":null,"topic":"realtime:room0"}',
            '{"event":"phx_reply","payload":{"status":"ok"},"ref":"999999","topic":"realtime:room0"}',
            '{"event":"phx_close","payload":{},"ref":"999999","topic":"realtime:room1"}',
            '{"event":"phx_error","payload":{},"ref":"999999","topic":"realtime:room2"}',
        ]
    else:
        frames += [
            '[null,null,"realtime:nowhere","broadcast",{}]',
            '[null,null,"realtime:room0","mystery",{}]',
            '["999999","999999","realtime:room1","phx_close",{}]',
            '["999999","999999","realtime:room2","phx_error",{}]',
            '[null,"999999","realtime:room0","phx_reply",{"status":"ok"}]',
            '[null,null,"realtime:room0","postgres_changes",{"ids":"x","data":5}]',
            b"\x04\x05\x07\x00nowhere",
            b"\x04\x00\x00\x00",
        ]
    return frames


async def malformed_and_oversize(w: World) -> Outcome:
    """BI-01/CH-07/BP-03: malformed, unknown and stale frames are skipped with the connection
    kept; then a message over the size cap closes it (1009) and the client reconnects."""
    connection = w.harness.client_connection()
    frames = junk(w.harness.vsn)
    for raw in frames:
        await w.server.send_raw(raw, connection=connection)
    await w.check_healthy()
    stats = w.client.statistics()
    assert stats.connects == 1
    assert stats.malformed_frames >= 5
    before = w.rejoins()
    fault = trio.current_time()
    big = '{"event":"x","payload":"' + "y" * MAX_MESSAGE_SIZE + '","ref":null,"topic":"t"}'
    if w.harness.vsn == "2.0.0":
        big = '[null,null,"t","x","' + "y" * MAX_MESSAGE_SIZE + '"]'
    await w.server.send_raw(big, connection=connection)
    await w.wait_rejoined(before)
    assert [e.code for e in disconnects(w)] == [1009]
    return Outcome(trio.current_time() - fault)


async def burst_while_disconnected(w: World) -> Outcome:
    """CH-08/RC-01: 1,000 acked pushes made while the server is unreachable: each room keeps
    the 100 latest waiting (the older ones raise PushError at once), and those go out and are
    acknowledged after the reconnect (the first attempt is refused)."""
    h = w.harness
    h.gate.open = False
    before = w.rejoins()
    fault = trio.current_time()
    await w.server.drop_connections(connection=h.client_connection())
    await w.connection_events.wait_for(lambda: bool(disconnects(w)))
    async with trio.open_nursery() as nursery:
        for index in range(1000):
            nursery.start_soon(w.ledger.push, w.rooms[index % 3])
        await trio.testing.wait_all_tasks_blocked()
        assert w.ledger.outcomes["PushError"] == 1000 - 3 * MAX_WAITING_PUSHES
        if h.virtual:
            await trio.sleep(1.5)  # attempt 1 (at 1 s) is refused; attempt 2 comes at 3 s
        assert h.gate.refused >= 1
        h.gate.open = True
    await w.wait_rejoined(before)
    assert w.ledger.outcomes["acked"] == 3 * MAX_WAITING_PUSHES
    return Outcome(trio.current_time() - fault)


SCENARIOS = [
    Scenario("drop-mid-flood", drop_mid_flood, 1.0),
    Scenario(
        "half-open",
        half_open,
        51.0,
        options=lambda timing: {"heartbeat_interval": timing.heartbeat_interval},
    ),
    Scenario("server-restart", server_restart, 1.0),
    Scenario("close-1000", close_with(1000), 1.0),
    Scenario("close-1001", close_with(1001), 1.0),
    Scenario("close-1012", close_with(1012), 1.0),
    Scenario("phx-error", phx_error_on_one, 1.0),
    Scenario("token-expired", token_expired_on_one, None),
    Scenario("join-refused-on-rejoin", join_refused_on_rejoin, 1.0),
    Scenario(
        "delayed-replies",
        delayed_replies,
        15.0,
        options=lambda timing: {"timeout": timing.timeout},
    ),
    Scenario("slow-consumer", slow_consumer, 0.0),
    Scenario("malformed-oversize", malformed_and_oversize, 1.0),
    Scenario("burst-while-disconnected", burst_while_disconnected, 3.0),
]


async def run_scenario(kind: str, vsn: str, scenario: Scenario, figures: Figures) -> Outcome:
    async with harness(kind, vsn) as h:
        options = {"heartbeat_interval": 25.0, "timeout": VIRTUAL.timeout}
        if not h.virtual:
            options["timeout"] = 5.0
        options.update(scenario.options(h.timing))
        async with world(h, **options) as w:
            outcome = await scenario.run(w)
            await w.check_healthy(outcome.alive)
            w.check_bounded(channels=3 if scenario.name == "token-expired" else len(outcome.alive))
            await trio.testing.wait_all_tasks_blocked()  # the consumers take what is buffered
            w.ledger.check(w.rooms)
            figures["recovery_s"] = None if outcome.recovery is None else round(outcome.recovery, 4)
            figures["pushes"] = dict(w.ledger.outcomes)
            figures["reconnects"] = w.client.statistics().reconnects
    return outcome


@pytest.mark.parametrize("scenario", SCENARIOS, ids=str)
@pytest.mark.parametrize("vsn", VSNS)
async def test_fault_in_memory(
    vsn: str, scenario: Scenario, autojump_clock: trio.testing.MockClock, figures: Figures
) -> None:
    """The fault matrix over the in-memory transport, in virtual time: exact recovery times."""
    with trio.fail_after(600):  # virtual seconds: a hang fails at once under autojump
        outcome = await run_scenario("memory", vsn, scenario, figures)
    assert outcome.recovery == scenario.virtual_recovery


@pytest.mark.parametrize("scenario", SCENARIOS, ids=str)
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("vsn", VSNS)
async def test_fault_over_sockets(
    vsn: str, transport: str, scenario: Scenario, figures: Figures
) -> None:
    """The fault matrix over loopback sockets with both transports (real clock, measured)."""
    with trio.fail_after(30):
        outcome = await run_scenario(transport, vsn, scenario, figures)
    assert (outcome.recovery is None) == (scenario.virtual_recovery is None)
