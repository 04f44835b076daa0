"""CL-05: cancellation at every await point of connect, join, send, track, leave and close.

Each operation runs again and again in a fresh world (local server, client, channel), under a
cancel scope that a :class:`trio.abc.Instrument` cancels right before the k-th task step taken
anywhere in the run once the operation has started, for k = 0 (cancelled before it starts),
1, 2, ... until the operation completes before the k-th step comes. Counting every task's steps,
not only the test task's, also reaches the await points of the tasks that run inside the
caller's cancel scope (a task being started by ``nursery.start``), and every interleaving of the
cancellation with the server's replies.

After each cancellation the test checks that:

* the channel is in a legal, settled state that agrees with the server;
* the client still works: a later join, send, track or leave succeeds (for close: everything
  is closed and the server saw the connection end);
* nothing leaked: no task, no reply waiter, no waiting push, no server connection;
* nothing hangs: every wait is bounded (the autojump clock turns a hang into a quick
  ``TooSlowError``).

Each sweep reports its figures (cancellations, distinct await points reached) in the
``figures`` section at the end of the run, and checks them against a lower bound.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import trio
import trio.testing
from _realtime import connect, drain, expected_presence, settle, task_count
from conftest import Figures

import trio_realtime
from trio_realtime import Channel, ChannelState, RealtimeClient, Subscription
from trio_realtime._events import Broadcast
from trio_realtime.testing import RealtimeServer, serve_realtime

GUARD = 600.0  # virtual seconds: a hang becomes TooSlowError at once under autojump
MAX_STEPS = 2000
# Where the package under test lives: the checkout, or site-packages when nox installed it.
PACKAGE = str(Path(trio_realtime.__file__).resolve().parent)


class CancelAtStep(trio.abc.Instrument):
    """Cancel ``scope`` right before the ``k``-th task step (of any task) from now on."""

    def __init__(self, scope: trio.CancelScope, k: int) -> None:
        self.scope = scope
        self.k = k
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1
        if self.steps == self.k:
            self.scope.cancel()

    @property
    def fired(self) -> bool:
        return self.steps >= self.k


def await_point(tb: TracebackType | None) -> str:
    """The innermost trio_realtime frame of a traceback, as ``module:line``."""
    where = "outside trio_realtime"
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.startswith(PACKAGE):
            where = f"{Path(filename).name}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where


@dataclass
class Coverage:
    """What the cancellations of one operation reached."""

    cancellations: int = 0
    points: set[str] = field(default_factory=set)


@dataclass
class World:
    """One local server and one client with a channel, fresh for each cancellation."""

    server: RealtimeServer
    client: RealtimeClient
    channel: Channel
    echoes: Subscription[Broadcast]


@asynccontextmanager
async def world(*, join: bool = True) -> AsyncIterator[World]:
    async with serve_realtime() as server:
        await settle()
        baseline = task_count()
        async with connect(server) as client:
            channel = client.channel(
                "room", broadcast_self=True, broadcast_ack=True, presence_key="me"
            )
            echoes = channel.broadcasts("msg")
            _presence = channel.presence_events(overflow="drop_oldest")  # kept to the end
            if join:
                await channel.join()
            yield World(server, client, channel, echoes)
            await settle()
            assert_no_leaks(client, channel)
        await settle()
        assert server.connections == []
        assert task_count() == baseline


def assert_no_leaks(client: RealtimeClient, channel: Channel) -> None:
    assert client.connected
    assert client.statistics().pending_replies == 0
    figures = channel.statistics()
    assert (figures.waiting_pushes, figures.pushes_in_flight) == (0, 0)


async def cancel_at(k: int, operation: Callable[[], Awaitable[object]], seen: Coverage) -> bool:
    """Run ``operation`` cancelled at step ``k``; return whether the cancellation took effect."""
    scope = trio.CancelScope()
    instrument = CancelAtStep(scope, k)
    if k == 0:
        scope.cancel()
    trio.lowlevel.add_instrument(instrument)
    try:
        with scope:
            try:
                await operation()
            except trio.Cancelled as exc:
                seen.points.add(await_point(exc.__traceback__))
                raise
    finally:
        trio.lowlevel.remove_instrument(instrument)
    if scope.cancelled_caught:
        seen.cancellations += 1
        return True
    return False


SWEEPS = 3


async def sweep(attempt: Callable[[int, Coverage], Awaitable[bool]]) -> Coverage:
    """Run ``attempt(k)`` for k = 0, 1, ... until the operation completes uncancelled, three
    times over.

    trio shuffles each batch of runnable tasks, so the await a given step's cancellation lands
    in changes from run to run; the points of three sweeps together are what the lower bounds
    of ``MINIMUM_POINTS`` are checked against (one sweep alone sometimes reaches fewer).
    """
    seen = Coverage()
    for _ in range(SWEEPS):
        for k in range(MAX_STEPS):
            with trio.fail_after(GUARD):
                if not await attempt(k, seen):
                    assert k > 0, "an operation cancelled before it started must not complete"
                    break
        else:
            raise AssertionError(f"the operation was still being cancelled after {MAX_STEPS} steps")
    return seen


async def still_works(w: World, marker: int) -> None:
    """The channel joins (if needed), an acked broadcast goes out and comes back, and presence
    converges to the server's state."""
    await w.channel.join()
    assert w.channel.state is ChannelState.JOINED
    await w.channel.send_broadcast("msg", {"check": marker})
    echoed = [item.payload for item in drain(w.echoes)]
    assert echoed[-1] == {"check": marker}, echoed
    await w.channel.track({"marker": marker})
    await settle()
    assert w.channel.presence_state() == expected_presence(w.server, "room")


def server_joined(w: World) -> bool:
    return w.server.statistics().channels_joined == 1


# Lower bounds: a change that removes await points (or stops a sweep from reaching them) shows
# up as a failure here rather than as a silently thinner sweep.
MINIMUM_POINTS = {"connect": 2, "join": 1, "send": 2, "track": 2, "leave": 2, "close": 0}


def report(operation: str, seen: Coverage, figures: Figures) -> None:
    """Record the sweep's figures (printed at the end of the run); check its lower bound."""
    figures["cancellations"] = seen.cancellations
    figures["await_points"] = len(seen.points)
    figures["where"] = " ".join(sorted(seen.points))
    assert len(seen.points) >= MINIMUM_POINTS[operation], seen.points


async def test_cl05_cancel_connect_at_every_step(
    autojump_clock: trio.testing.MockClock, figures: Figures
) -> None:
    """CL-05: connect cancelled anywhere: no task, no server connection left; connecting again
    works."""

    async def attempt(k: int, seen: Coverage) -> bool:
        async with serve_realtime() as server:
            await settle()
            baseline = task_count()
            entered: list[RealtimeClient] = []

            async def operation() -> None:
                async with connect(server) as client:
                    entered.append(client)

            cancelled = await cancel_at(k, operation, seen)
            await settle()
            assert task_count() == baseline
            assert server.connections == []
            if entered:
                assert not entered[0].connected
            async with world() as w:
                await still_works(w, k)
            return cancelled

    report("connect", await sweep(attempt), figures)


async def test_cl05_cancel_join_at_every_step(
    autojump_clock: trio.testing.MockClock, figures: Figures
) -> None:
    """CL-05: join cancelled anywhere: the channel settles joined or closed, as the server sees
    it, and joins again."""

    async def attempt(k: int, seen: Coverage) -> bool:
        async with world(join=False) as w:
            cancelled = await cancel_at(k, w.channel.join, seen)
            await settle()
            assert w.channel.state in (ChannelState.JOINED, ChannelState.CLOSED)
            assert server_joined(w) == w.channel.joined
            await still_works(w, k)
            return cancelled

    report("join", await sweep(attempt), figures)


async def test_cl05_cancel_send_at_every_step(
    autojump_clock: trio.testing.MockClock, figures: Figures
) -> None:
    """CL-05: an acked send cancelled anywhere reaches the server at most once; the channel
    stays joined and sends again."""

    async def attempt(k: int, seen: Coverage) -> bool:
        async with world() as w:
            cancelled = await cancel_at(k, lambda: w.channel.send_broadcast("msg", {"n": k}), seen)
            await settle()
            assert w.channel.state is ChannelState.JOINED
            echoed = [item.payload for item in drain(w.echoes)]
            assert echoed in ([], [{"n": k}])
            if not cancelled:
                assert echoed == [{"n": k}]
            await still_works(w, k)
            return cancelled

    report("send", await sweep(attempt), figures)


async def test_cl05_cancel_track_at_every_step(
    autojump_clock: trio.testing.MockClock, figures: Figures
) -> None:
    """CL-05: track cancelled anywhere: presence still converges to the server's state."""

    async def attempt(k: int, seen: Coverage) -> bool:
        async with world() as w:
            cancelled = await cancel_at(k, lambda: w.channel.track({"n": k}), seen)
            await settle()
            assert w.channel.state is ChannelState.JOINED
            assert w.channel.presence_state() == expected_presence(w.server, "room")
            await still_works(w, k)
            return cancelled

    report("track", await sweep(attempt), figures)


async def test_cl05_cancel_leave_at_every_step(
    autojump_clock: trio.testing.MockClock, figures: Figures
) -> None:
    """CL-05: leave cancelled anywhere still leaves: the channel is closed and unregistered,
    its subscriptions end, and it can join again."""

    async def attempt(k: int, seen: Coverage) -> bool:
        async with world() as w:
            cancelled = await cancel_at(k, w.channel.leave, seen)
            await settle()
            assert w.channel.state is ChannelState.CLOSED
            assert w.client.channels == []
            assert w.echoes.statistics().closed
            assert not server_joined(w)
            w.echoes = w.channel.broadcasts("msg")
            await still_works(w, k)
            await w.channel.leave()
            return cancelled

    report("leave", await sweep(attempt), figures)


async def test_cl05_cancel_close_at_every_step(
    autojump_clock: trio.testing.MockClock, figures: Figures
) -> None:
    """CL-05: closing cancelled anywhere still closes: the server sees the channel left and the
    connection closed with 1000, and no task is left."""

    async def attempt(k: int, seen: Coverage) -> bool:
        async with serve_realtime() as server:
            await settle()
            baseline = task_count()
            scope = trio.CancelScope()
            instrument = CancelAtStep(scope, k)
            closing = False
            with scope:
                try:
                    async with connect(server) as client:
                        channel = client.channel("room", presence_key="me")
                        await channel.join()
                        await channel.track({"here": True})
                        (connection,) = server.connections
                        closing = True
                        if k == 0:
                            scope.cancel()
                        trio.lowlevel.add_instrument(instrument)
                except trio.Cancelled as exc:
                    seen.points.add(await_point(exc.__traceback__))
                    raise
                finally:
                    if closing:
                        trio.lowlevel.remove_instrument(instrument)
            assert closing
            await connection.wait_finished()
            await settle()
            assert connection.close_code == 1000
            assert server.statistics().channels_joined == 0
            assert server.presence_state("room") == {}
            assert channel.state is ChannelState.CLOSED
            assert not client.connected
            assert task_count() == baseline
            cancelled = k == 0 or instrument.fired
            if cancelled:
                seen.cancellations += 1
            return cancelled

    report("close", await sweep(attempt), figures)


async def test_cl05_cancelled_from_outside_still_leaves_and_closes_with_1000(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """CL-05/CL-03: a deadline around the whole ``async with`` cancels the body, and the exit
    still leaves the joined channels and closes with 1000 (the background tasks are not cut
    off first)."""
    async with serve_realtime() as server:
        await settle()
        baseline = task_count()
        with trio.move_on_after(5.0) as scope:
            async with connect(server) as client:
                channel = client.channel("room", presence_key="me")
                await channel.join()
                await channel.track({"here": True})
                (connection,) = server.connections
                await trio.sleep_forever()
        assert scope.cancelled_caught
        await connection.wait_finished()
        await settle()
        assert trio.current_time() == 5.0
        assert connection.close_code == 1000
        assert [frame.event for frame in connection.received_frames][-1] == "phx_leave"
        assert server.presence_state("room") == {}
        assert task_count() == baseline
