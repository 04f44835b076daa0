"""Concurrent pushes: writes shared by acked pushes, reply deadlines, and schedule points.

BC-04 and HD-01 from the push's side: acknowledged pushes made while others are in flight are
queued and written together in one transport write, in the order of the calls; their reply
deadlines are kept by the connection (``PushTimeout`` at exactly the client timeout, no cancel
scope per push); a queued push that was never written when the connection dropped is sent
again after the reconnect, exactly once. Under load, the push that makes the queue hold half
of the awaited replies writes the queue itself, a batch the socket took in part is finished
before anything else, and a batch cut short fails every push in it. A task that sends without
ever waiting still lets the other tasks run (PS-01's sequential sender, as a behaviour).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from _realtime import connect_socket, task_count
from conftest import APIKEY

from trio_realtime import PushTimeout, open_realtime
from trio_realtime._connection import YIELD_EVERY, Connection, NotWritten, Outgoing, Waiter
from trio_realtime._session import ReplyReceived
from trio_realtime._transport import (
    MemoryTransport,
    OutgoingMessage,
    Transport,
    TransportOptions,
    memory_transport_pair,
)
from trio_realtime._url import Endpoint
from trio_realtime.protocol import Frame, JSONObject, encode_server_frame, parse_client_frame
from trio_realtime.testing import serve_realtime


class Recording(MemoryTransport):
    """The client's end of a memory transport that records the size of every write."""

    writes: list[int]

    async def send_messages(self, messages: Sequence[OutgoingMessage]) -> None:
        self.writes.append(len(messages))
        await super().send_messages(messages)


class Server:
    """The server's ends of the connections, scripted by the test."""

    def __init__(self, buffer: int = 1024) -> None:
        self.buffer = buffer
        self.ends: list[MemoryTransport] = []
        self.clients: list[Recording] = []
        self.opened = trio.Event()

    async def factory(
        self, endpoint: Endpoint, options: TransportOptions, nursery: trio.Nursery
    ) -> Transport:
        client, server = memory_transport_pair(buffer=self.buffer)
        client.__class__ = Recording
        assert isinstance(client, Recording)
        client.writes = []
        self.ends.append(server)
        self.clients.append(client)
        self.opened.set()
        self.opened = trio.Event()
        return client

    async def frames(self) -> list[Frame]:
        messages = await self.ends[-1].receive_messages()
        return [parse_client_frame(m if isinstance(m, bytes) else m.encode())[0] for m in messages]

    @staticmethod
    def user_payload(frame: Frame) -> object:
        """The user's payload of a broadcast push."""
        assert isinstance(frame.payload, dict)
        return frame.payload["payload"]

    async def frame(self) -> Frame:
        (frame,) = await self.frames()
        return frame

    async def reply(self, to: Frame, response: JSONObject | None = None) -> None:
        payload: JSONObject = {"status": "ok", "response": response or {}}
        data, binary = encode_server_frame(
            Frame(to.topic, "phx_reply", payload, to.ref, to.join_ref)
        )
        await self.ends[-1].send_message(data, binary)


@asynccontextmanager
async def joined(**options: Any) -> AsyncIterator[tuple[Any, Any, Server]]:
    """A client with a joined channel ``room`` (broadcast acks on), on a scripted server."""
    server = Server()
    options.setdefault("heartbeat_interval", None)
    async with open_realtime(
        "ws://127.0.0.1:1/socket", apikey=APIKEY, transport=server.factory, **options
    ) as client:
        room = client.channel("room", broadcast_ack=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(room.join)
            join = await server.frame()
            await server.reply(join, {"postgres_changes": []})
        yield client, room, server


async def test_bc04_concurrent_acked_pushes_are_written_together_in_call_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """BC-04: the first of 8 concurrent acked pushes is written at once by its own task, the
    7 made while it is in flight are queued and written in one write, in the order of the
    calls; each returns on its own reply, and nothing stays registered."""
    async with joined(timeout=10.0) as (client, room, server):
        returned: list[int] = []
        called: list[int] = []

        async def push(n: int) -> None:
            called.append(n)
            await room.send_broadcast("e", {"n": n})
            returned.append(n)

        writes = server.clients[-1].writes
        writes.clear()
        async with trio.open_nursery() as nursery:
            for n in range(8):
                nursery.start_soon(push, n)  # the 8 tasks start in one scheduler batch
            frames: list[Frame] = []
            while len(frames) < 8:
                frames += await server.frames()
            assert [server.user_payload(f) for f in frames] == [{"n": n} for n in called]
            assert writes == [1, 7]
            for frame in reversed(frames):
                await server.reply(frame)
        assert sorted(returned) == list(range(8))
        assert trio.current_time() == 0.0
        assert client.statistics().pending_replies == 0


async def test_bc04_acked_pushes_time_out_at_exactly_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """BC-04: unanswered acked pushes made at 0 s and 3 s raise PushTimeout at exactly 10 s
    and 13 s (the connection keeps their deadlines); an answered one in between returns. The
    task that keeps the deadlines exists only while pushes wait for replies."""
    async with joined(timeout=10.0) as (client, room, server):
        before = task_count()
        outcome: dict[int, tuple[str, float]] = {}

        async def push(n: int) -> None:
            try:
                await room.send_broadcast("e", {"n": n})
                outcome[n] = ("ok", trio.current_time())
            except PushTimeout as exc:
                outcome[n] = (str(exc).rsplit(": ", 1)[-1], trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(push, 0)
            await server.frame()
            await trio.sleep(3.0)
            nursery.start_soon(push, 1)
            await server.frame()
            nursery.start_soon(push, 2)
            answered = await server.frame()
            await trio.sleep(1.0)
            await server.reply(answered)
        timed_out = "broadcast 'e' on 'realtime:room' not completed within 10.0 s"
        assert outcome == {0: (timed_out, 10.0), 1: (timed_out, 13.0), 2: ("ok", 4.0)}
        assert client.statistics().pending_replies == 0
        await trio.testing.wait_all_tasks_blocked()
        assert task_count() == before


class _Stalled(MemoryTransport):
    """A transport whose writes never end (a socket the server stopped reading)."""

    async def send_messages(self, messages: Sequence[OutgoingMessage]) -> None:
        await trio.sleep_forever()


async def test_hd01_a_queued_acked_push_not_yet_written_may_be_sent_again() -> None:
    """HD-01: when the connection is lost, an acked push still in the queue fails with
    NotWritten (it never reached the server: the channel sends it on the next connection),
    one in the batch being written with MaybeWritten's ConnectionClosed, and one written and
    waiting for its reply with ConnectionClosed."""
    client_end, _server_end = memory_transport_pair()
    client_end.__class__ = _Stalled
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            connection = Connection(client_end, nursery, outgoing_buffer=8)
            written = connection.expect_reply("1")
            connection.replies["0"] = connection.expect_reply("0")  # another push in flight
            in_batch = connection.expect_reply("2")
            queued = connection.expect_reply("3")
            await connection.push_acked(b"a", False, in_batch)
            await trio.testing.wait_all_tasks_blocked()  # the writer is stuck writing it
            await connection.push_acked(b"b", False, queued)
            connection.lose(1006, "dropped")
        connection.fail_pending()
        errors: dict[str, BaseException] = {}
        for name, waiter in (("written", written), ("in_batch", in_batch), ("queued", queued)):
            try:
                await waiter.wait()
            except Exception as exc:
                errors[name] = exc
        assert isinstance(errors["queued"], NotWritten)
        assert type(errors["in_batch"]).__name__ == "MaybeWritten"
        assert type(errors["written"]).__name__ == "ConnectionClosed"


async def test_bc04_an_unwritten_acked_push_is_delivered_once_after_the_reconnect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """BC-04, HD-01: the server stops reading; of three acked pushes, the first is written,
    the second is in the writer's batch when the connection drops, the third still queued.
    The first two raise ConnectionClosed (they may have reached the server); the third is
    sent on the next connection after the rejoin, once, and returns on its reply."""
    from trio_realtime import ConnectionClosed

    server = Server(buffer=1)  # the client's writes block once one message is unread
    async with open_realtime(
        "ws://127.0.0.1:1/socket",
        apikey=APIKEY,
        transport=server.factory,
        heartbeat_interval=None,
        timeout=30.0,
        reconnect=lambda attempt: 1.0,
    ) as client:
        room = client.channel("room", broadcast_ack=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(room.join)
            await server.reply(await server.frame(), {"postgres_changes": []})
        outcome: dict[int, str] = {}

        async def push(n: int) -> None:
            try:
                await room.send_broadcast("e", {"n": n})
                outcome[n] = "ok"
            except ConnectionClosed:
                outcome[n] = "ConnectionClosed"

        async with trio.open_nursery() as nursery:
            for n in range(3):
                nursery.start_soon(push, n)
                await trio.testing.wait_all_tasks_blocked()
            assert client.statistics().pending_replies == 3
            reconnected = server.opened
            await server.ends[-1].abort()
            await reconnected.wait()
            join = await server.frame()
            assert join.event == "phx_join"
            await server.reply(join, {"postgres_changes": []})
            again = await server.frame()
            assert server.user_payload(again) == {"n": 2}
            await server.reply(again)
        assert outcome == {0: "ConnectionClosed", 1: "ConnectionClosed", 2: "ok"}
        assert trio.current_time() == 1.0


@pytest.mark.parametrize("ack", [False, True])
async def test_ps01_a_sender_that_never_waits_lets_other_tasks_run(ack: bool) -> None:
    """PS-01: a task sending 320 broadcasts in a loop, each written at once by the sending
    task itself, yields to the scheduler at least once every YIELD_EVERY pushes (an acked
    push waits for its reply anyway), so another task keeps running meanwhile."""
    with trio.fail_after(30):
        async with serve_realtime() as realtime:
            async with connect_socket(realtime, "websockets", timeout=30.0) as client:
                room = client.channel("room", broadcast_ack=ack)
                await room.join()
                turns = 0
                done = False

                async def other() -> None:
                    nonlocal turns
                    while not done:
                        turns += 1
                        await trio.lowlevel.checkpoint()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(other)
                    for n in range(320):
                        await room.send_broadcast("e", {"n": n})
                    done = True
                assert turns >= math.floor(320 / YIELD_EVERY) - 1


async def test_rs07_a_waiter_wakes_every_task_and_survives_a_cancelled_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RS-07: the reply waiter wakes every task waiting for it; a task cancelled while waiting
    leaves the others waiting; a failure reaches each task as its own exception object; a
    waiter already done returns at once, still a checkpoint."""
    from trio_realtime._connection import Waiter

    waiter: Waiter[int] = Waiter()
    got: list[int] = []

    async def wait() -> None:
        got.append(await waiter.wait())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        with trio.move_on_after(1.0):
            await waiter.wait()  # this one gives up at 1 s
        nursery.start_soon(wait)
        await trio.sleep(1.0)
        assert not waiter.done
        waiter.set(7)
        waiter.set(8)  # done already: ignored
    assert got == [7, 7]
    assert trio.current_time() == 2.0
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await waiter.wait()  # done, yet a checkpoint

    failing: Waiter[int] = Waiter()
    errors: list[NotWritten] = []

    async def wait_error() -> None:
        try:
            await failing.wait()
        except NotWritten as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        for _ in range(2):
            nursery.start_soon(wait_error)
        await trio.testing.wait_all_tasks_blocked()
        failing.fail(NotWritten(1006, "gone"))
    assert len(errors) == 2
    assert errors[0] is not errors[1]
    assert all(e.reason == "gone" for e in errors)

    # The first task to wait is the one cancelled: the later ones still get the value.
    late: Waiter[int] = Waiter()
    values: list[tuple[str, int]] = []

    async def wait_late(name: str) -> None:
        values.append((name, await late.wait()))

    async with trio.open_nursery() as nursery:
        with trio.move_on_after(1.0):
            nursery.start_soon(wait_late, "second")
            await late.wait()  # first in line, gives up at 3 s
        nursery.start_soon(wait_late, "third")  # waits after the first gave up
        await trio.testing.wait_all_tasks_blocked()
        late.set(9)
    assert sorted(values) == [("second", 9), ("third", 9)]
    assert trio.current_time() == 3.0


async def test_ps02_an_idle_connection_costs_no_task_of_its_own(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """PS-02's memory per connection, as a behaviour: a connected client with a joined channel
    and a heartbeat runs one task (its reader) while idle, not a writer or a heartbeat task;
    the heartbeats of every connection in the run share one timer task, which ends with the
    last connection."""
    before = task_count()
    async with joined(heartbeat_interval=15.0) as (_client, _room, first):
        await trio.testing.wait_all_tasks_blocked()
        assert task_count() == before + 2  # the reader and the run's timer
        async with joined(heartbeat_interval=7.0) as (_other, _other_room, second):
            await trio.testing.wait_all_tasks_blocked()
            assert task_count() == before + 3
            beats: list[tuple[str, float]] = []

            async def answer(server: Server, name: str) -> None:
                while True:
                    frame = await server.frame()
                    assert frame.topic == "phoenix"
                    beats.append((name, trio.current_time()))
                    await server.reply(frame)

            with trio.move_on_at(trio.current_time() + 15.5):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(answer, first, "first")
                    nursery.start_soon(answer, second, "second")
            assert beats == [("second", 7.0), ("second", 14.0), ("first", 15.0)]
            await trio.testing.wait_all_tasks_blocked()
            assert task_count() == before + 3  # nothing was left behind by the writes
    await trio.testing.wait_all_tasks_blocked()
    assert task_count() == before


class _Gated(MemoryTransport):
    """A transport whose writes wait for ``gate``, one at a time, in the order they came (as
    the default transport's do), and record each batch's frames."""

    gate: trio.Event
    batches: list[list[bytes]]
    lock: trio.StrictFIFOLock

    async def send_messages(self, messages: Sequence[OutgoingMessage]) -> None:
        async with self.lock:
            await self.gate.wait()
            self.batches.append([bytes(data) for data, _ in messages])
            await super().send_messages(messages)


def _gated_connection(nursery: trio.Nursery, outgoing_buffer: int) -> tuple[Connection, _Gated]:
    client_end, _server_end = memory_transport_pair()
    client_end.__class__ = _Gated
    assert isinstance(client_end, _Gated)
    client_end.gate, client_end.batches, client_end.lock = trio.Event(), [], trio.StrictFIFOLock()
    nursery.cancel_scope.deadline = trio.current_time() + 10
    return Connection(client_end, nursery, outgoing_buffer=outgoing_buffer), client_end


async def test_bp_a_full_queue_makes_senders_wait_in_the_order_they_came() -> None:
    """The outgoing queue's bound: with two frames queued behind the writes in progress (a
    push's own and the writer's), later senders wait in line; one cancelled while it waits
    is never written; the others go out in the order of the calls once the writer has made
    room, and the writer task ends when the queue is empty."""
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            connection, transport = _gated_connection(nursery, outgoing_buffer=2)
            before = task_count()
            nursery.start_soon(connection.push, b"a", False)  # written by its own task
            await trio.testing.wait_all_tasks_blocked()
            for data in (b"b", b"c", b"d"):  # the writer takes b; c and d fill the queue
                await connection.send(data, False)
                await trio.testing.wait_all_tasks_blocked()
            full = not connection.has_room
            assert full
            returned: list[bytes] = []
            scopes: dict[bytes, trio.CancelScope] = {}

            async def send(data: bytes) -> None:
                with trio.CancelScope() as scopes[data]:
                    await connection.send(data, False)
                    returned.append(data)

            for data in (b"e", b"f", b"g"):
                nursery.start_soon(send, data)
                await trio.testing.wait_all_tasks_blocked()
            assert returned == []
            scopes[b"f"].cancel()
            await trio.testing.wait_all_tasks_blocked()
            transport.gate.set()
            await trio.testing.wait_all_tasks_blocked()
            assert transport.batches == [[b"a"], [b"b"], [b"c", b"d"], [b"e", b"g"]]
            assert sorted(returned) == [b"e", b"g"]  # woken together, they return in any order
            assert connection.frames_sent == 6
            assert connection.has_room
            assert task_count() == before  # the writer is gone
            nursery.cancel_scope.cancel()


async def test_hb01_a_heartbeat_goes_ahead_of_frames_queued_behind_a_write(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """HB-01 under load: a heartbeat due while a write is in progress goes out first in the
    next write, ahead of the frames queued behind it, at its exact time; then the
    heartbeats keep the interval from the tick, not from the write."""
    async with trio.open_nursery() as nursery:
        connection, transport = _gated_connection(nursery, outgoing_buffer=8)
        ticks: list[float] = []

        def heartbeat() -> OutgoingMessage:
            ticks.append(trio.current_time())
            return (b"HB", False)

        connection.start_heartbeat(heartbeat, 1.0)
        await connection.send(b"x", False)  # taken by the writer, which waits for the gate
        await trio.testing.wait_all_tasks_blocked()
        await connection.send(b"y", False)
        await trio.sleep(1.5)
        assert ticks == [1.0]
        transport.gate.set()
        await trio.sleep(1.0)
        assert transport.batches == [[b"x"], [b"HB", b"y"], [b"HB"]]
        assert ticks == [1.0, 2.0]
        nursery.cancel_scope.cancel()
    connection.lose(1000, "")
    connection.fail_pending()


async def test_hb01_a_heartbeat_the_socket_took_in_part_is_finished_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """HB-01 on a full socket: when the socket takes only part of a heartbeat, the rest is
    written before any other frame (a frame is never interleaved with another)."""

    class _Partial(_Gated):
        def can_send_nowait(self) -> bool:
            return True

        full = False

        def send_nowait(self, messages: Sequence[OutgoingMessage]) -> bytes | None:
            if self.full:
                return None  # still full: the writer waits for it
            self.full = True
            return b"-rest of " + messages[0][0]

        async def send_rest(self, data: bytes) -> None:
            async with self.lock:
                await self.gate.wait()
                self.batches.append([b"rest: " + data])

    async with trio.open_nursery() as nursery:
        connection, transport = _gated_connection(nursery, outgoing_buffer=8)
        transport.__class__ = _Partial
        connection.start_heartbeat(lambda: (b"HB", False), 1.0)
        await trio.sleep(1.5)  # the rest is being written
        await connection.send(b"x", False)
        await trio.sleep(1.0)  # the next heartbeat goes ahead of x, behind the rest
        transport.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert transport.batches == [[b"rest: -rest of HB"], [b"HB", b"x"]]
        assert connection.frames_sent == 3
        connection.lose(1000, "")  # stops the heartbeat and the nursery
    connection.fail_pending()


async def test_hd01_a_write_that_fails_at_once_loses_the_connection_and_raises() -> None:
    """HD-01 for frames written at once: a join (or leave) whose write fails raises
    ConnectionClosed from
    send(), and the connection is lost for everything after it: a queued frame, a push and
    the next heartbeat tick."""
    from trio_realtime import ConnectionClosed

    class _Broken(_Gated):
        def can_send_nowait(self) -> bool:
            return True

        def send_nowait(self, messages: Sequence[OutgoingMessage]) -> bytes | None:
            raise ConnectionClosed(1006, "connection lost while sending")

    async with trio.open_nursery() as nursery:
        connection, transport = _gated_connection(nursery, outgoing_buffer=8)
        transport.__class__ = _Broken
        with pytest.raises(ConnectionClosed, match="connection lost while sending"):
            await connection.send(b"join", False)
        assert connection.lost is not None
        assert connection.lost.reason == "connection lost while sending"
        with pytest.raises(ConnectionClosed):
            await connection.send(b"leave", False)
        with pytest.raises(ConnectionClosed):
            await connection._queue(Outgoing(b"x", False))
        assert transport.batches == []
    connection.fail_pending()


async def test_hb03_a_dead_connection_stops_its_heartbeat_ticks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """HB-03 from the connection's side: once the heartbeat callback declares the connection
    dead (it returns None), no tick follows, and the run's timer task ends."""
    async with trio.open_nursery() as nursery:
        connection, transport = _gated_connection(nursery, outgoing_buffer=8)
        transport.gate.set()
        before = task_count()
        ticks: list[float] = []

        def heartbeat() -> OutgoingMessage | None:
            ticks.append(trio.current_time())
            if len(ticks) == 2:
                connection.lose(1006, "heartbeat timeout")
                return None
            return (b"HB", False)

        connection.start_heartbeat(heartbeat, 5.0)
        await trio.sleep(30)
        assert ticks == [5.0, 10.0]
        assert transport.batches == [[b"HB"]]
        await trio.testing.wait_all_tasks_blocked()
        assert task_count() == before
    connection.fail_pending()


async def test_hd_a_heartbeat_that_fails_drops_the_connection_visibly(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """No connection is left without a heartbeat: one whose heartbeat raises is dropped (so
    that it reconnects), with the error logged, at the tick's exact time."""
    async with trio.open_nursery() as nursery:
        connection, _transport = _gated_connection(nursery, outgoing_buffer=8)

        def heartbeat() -> OutgoingMessage | None:
            raise RuntimeError("broken encoder")

        connection.start_heartbeat(heartbeat, 5.0)
        await trio.sleep(6)  # the loss cancels the connection's nursery: this one
    assert connection.lost is not None
    assert connection.lost.reason == "the heartbeat failed"
    assert trio.current_time() == 5.0
    assert "broken encoder" in caplog.text
    connection.fail_pending()


class _Socket(MemoryTransport):
    """A transport that writes at once, like a socket with room (``send_nowait``), and records
    each write with the task that made it. ``take`` is how much of the next write the socket
    takes (all of it when ``None``); a write it takes in part holds the send lock until its
    rest is written (``rest_gate``), as the default transport's does."""

    batches: list[tuple[str, list[bytes]]]
    take: int | None
    rest_gate: trio.Event
    lock: trio.StrictFIFOLock

    def can_send_nowait(self) -> bool:
        return not self.lock.locked()

    def send_nowait(self, messages: Sequence[OutgoingMessage]) -> bytes | None:
        if self.lock.locked():
            return None
        frames = [bytes(data) for data, _ in messages]
        self.batches.append((trio.lowlevel.current_task().name, frames))
        if self.take is None:
            return b""
        data = b"".join(frames)
        self.lock.acquire_nowait()
        rest, self.take = data[self.take :], None
        return rest

    async def send_rest(self, data: bytes) -> None:
        try:
            await self.rest_gate.wait()
            self.batches.append(("rest", [data]))
        finally:
            self.lock.release()

    async def send_messages(self, messages: Sequence[OutgoingMessage]) -> None:
        async with self.lock:
            await trio.lowlevel.checkpoint_if_cancelled()  # as trio's socket send does
            self.batches.append(("send_messages", [bytes(data) for data, _ in messages]))


def _socket_connection(
    nursery: trio.Nursery, outgoing_buffer: int = 64
) -> tuple[Connection, _Socket]:
    client_end, _server_end = memory_transport_pair()
    client_end.__class__ = _Socket
    assert isinstance(client_end, _Socket)
    client_end.batches, client_end.take = [], None
    client_end.rest_gate, client_end.lock = trio.Event(), trio.StrictFIFOLock()
    return Connection(client_end, nursery, outgoing_buffer=outgoing_buffer), client_end


def _writers(batches: list[tuple[str, list[bytes]]]) -> list[tuple[str, list[bytes]]]:
    """The batches, each with who wrote it: the ``writer`` task or a ``pusher`` (a pushing
    task); a rest and a ``send_messages`` write are named so."""

    def who(name: str) -> str:
        if name.endswith("_write_queued"):
            return "writer"
        return name if name in ("rest", "send_messages") else "pusher"

    return [(who(name), frames) for name, frames in batches]


async def test_bc04_the_push_that_queues_half_the_awaited_replies_writes_them_itself() -> None:
    """BC-04 at load: with 16 acknowledged pushes awaiting replies, pushes queue (no write)
    until the queue holds half of them; the push that makes it 8 writes the 8 itself, at
    once, in the order of the calls, before any other task runs (the server gets them while
    the client makes the next ones). What is queued after goes with the writer task, which
    then ends; every push's reply waiter is still waiting."""
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            connection, transport = _socket_connection(nursery)
            before = task_count()
            replies = [connection.expect_reply(str(n)) for n in range(16)]
            for n in range(8):
                await connection.push_acked(b"%d" % n, False, replies[n])
                if n < 7:
                    assert transport.batches == []
            assert _writers(transport.batches) == [("pusher", [b"%d" % n for n in range(8)])]
            assert connection.frames_sent == 8
            for n in range(8, 11):
                await connection.push_acked(b"%d" % n, False, replies[n])
            assert len(transport.batches) == 1
            await trio.testing.wait_all_tasks_blocked()
            assert _writers(transport.batches)[1:] == [("writer", [b"8", b"9", b"10"])]
            assert connection.frames_sent == 11
            assert not any(reply.done for reply in replies)
            assert task_count() == before  # the writer is gone
            connection.lose(1000, "")
        connection.fail_pending()


async def _four_pushes(
    connection: Connection, replies: list[Waiter[ReplyReceived]], returned: list[float]
) -> None:
    """Four acked pushes from one task, the fourth writing the queue (half of 8 replies);
    note when its call returned."""
    for n in range(3):  # queued without a schedule point: the writer has not run
        await connection.push_acked(b"%d" % n, False, replies[n])
    await connection.push_acked(b"3", False, replies[3], write_within=10.0)
    returned.append(trio.current_time())


async def test_bc04_a_batch_the_socket_took_in_part_is_finished_before_anything_else(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """BC-04 on a full socket: when the socket takes only part of the batch a push writes
    itself, that push writes the rest (its call returns once it is written); a push queued
    meanwhile waits for it and goes next, with the writer. The order on the wire is the
    order of the calls, and no frame is cut by another."""
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            connection, transport = _socket_connection(nursery)
            replies = [connection.expect_reply(str(n)) for n in range(8)]
            transport.take = 2  # the socket takes "01" of the 4 frames "0123"
            finished: list[float] = []
            nursery.start_soon(_four_pushes, connection, replies, finished)
            await trio.testing.wait_all_tasks_blocked()
            assert finished == []  # it is writing the rest
            await connection.push_acked(b"4", False, replies[4])
            await trio.sleep(1.0)
            transport.rest_gate.set()
            await trio.testing.wait_all_tasks_blocked()
            assert finished == [1.0]
            assert _writers(transport.batches) == [
                ("pusher", [b"0", b"1", b"2", b"3"]),
                ("rest", [b"23"]),
                ("send_messages", [b"4"]),
            ]
            assert connection.frames_sent == 5
            assert connection.lost is None
            connection.lose(1000, "")
        connection.fail_pending()


async def test_hd01_a_batch_rest_that_is_not_written_in_time_fails_the_whole_batch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """HD-01 for a batch a push writes itself: when the rest of it is not written within the
    push's write bound (10 s here), the connection is dropped at exactly 10 s, and every
    push of the batch fails with MaybeWritten (part of it reached the server). So does one
    queued behind it, which the writer took and holds while the socket is busy: nothing is
    written after the broken frame."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            connection, transport = _socket_connection(nursery)
            replies = [connection.expect_reply(str(n)) for n in range(8)]
            transport.take = 1
            returned: list[float] = []
            nursery.start_soon(_four_pushes, connection, replies, returned)
            await trio.testing.wait_all_tasks_blocked()
            await connection.push_acked(b"4", False, replies[4])
            await trio.sleep(20.0)
            assert returned == [10.0]
            assert connection.lost is not None
            assert connection.lost.reason == "a write did not complete in time"
        connection.fail_pending()
        errors: list[str] = []
        for reply in replies[:5]:
            try:
                await reply.wait()
            except Exception as exc:
                errors.append(type(exc).__name__)
        assert errors == ["MaybeWritten"] * 5
        assert _writers(transport.batches) == [("pusher", [b"0", b"1", b"2", b"3"])]


async def test_hd01_a_queued_batch_the_socket_refuses_is_sent_again_later() -> None:
    """HD-01 for the writer: when the connection turns out to be lost as the writer writes a
    batch at once (nothing of it was written), the queued acked pushes fail with NotWritten,
    so the channel sends them again on the next connection."""
    from trio_realtime import ConnectionClosed

    class _Refusing(_Socket):
        def send_nowait(self, messages: Sequence[OutgoingMessage]) -> bytes | None:
            raise ConnectionClosed(1006, "connection lost while sending")

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            connection, transport = _socket_connection(nursery)
            transport.__class__ = _Refusing
            replies = [connection.expect_reply(str(n)) for n in range(8)]
            for n in range(2):
                await connection.push_acked(b"%d" % n, False, replies[n])
            await trio.testing.wait_all_tasks_blocked()
            assert connection.lost is not None
            assert connection.lost.reason == "connection lost while sending"
        connection.fail_pending()
        for reply in replies[:2]:
            with pytest.raises(NotWritten):
                await reply.wait()
