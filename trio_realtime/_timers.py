"""One clock per trio run for the heartbeats of every connection in it.

Each connection needs a tick every heartbeat interval. A task per connection that sleeps
between ticks costs a task, its coroutine frames and a cancel scope for every connection a
process holds (several KiB each, with thousands of connections), and wakes the scheduler once per
connection per interval. Instead, :func:`call_at` registers a synchronous callback with the
run's one timer task, which sleeps until the earliest deadline, runs every callback that is
due, and sleeps again. The task is started with the first deadline and ends when no deadline is
left, so a run with no connection has no timer task.

The timer task is a trio system task: it belongs to no nursery, since the connections it serves
belong to many. That makes two rules binding on callbacks: they must not block (they run in the
timer task; work that waits goes into a task of its own, in a nursery the callback knows) and
they must not raise (an exception is logged and the timer goes on; one escaping a system task
would end the whole trio run).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections.abc import Callable
from typing import Final

import trio

logger = logging.getLogger("trio_realtime.connection")

YIELD_EVERY: Final = 64
"""The timer task yields to the scheduler once in this many callbacks due at the same time."""


class TimerHandle:
    """A registered callback; :meth:`cancel` unregisters it."""

    __slots__ = ("_timers", "callback", "deadline")

    def __init__(self, timers: _Timers, deadline: float, callback: Callable[[], None]) -> None:
        self._timers = timers
        self.deadline = deadline
        self.callback: Callable[[], None] | None = callback

    @property
    def pending(self) -> bool:
        """Whether the callback is still to run (neither run nor cancelled)."""
        return self.callback is not None

    def cancel(self) -> None:
        """Unregister the callback, unless it has run already. Idempotent."""
        if self.callback is not None:
            self.callback = None
            self._timers.cancelled()


class _Timers:
    """The deadlines of one trio run, and the task that keeps them."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._order = itertools.count()
        self._live = 0
        self._running = False
        self._sleep: trio.CancelScope | None = None

    def call_at(self, deadline: float, callback: Callable[[], None]) -> TimerHandle:
        handle = TimerHandle(self, deadline, callback)
        heapq.heappush(self._heap, (deadline, next(self._order), handle))
        self._live += 1
        if not self._running:
            self._running = True
            trio.lowlevel.spawn_system_task(self._run, name="trio_realtime timers")
        elif self._sleep is not None and deadline < self._sleep.deadline:
            self._sleep.deadline = deadline
        return handle

    def cancelled(self) -> None:
        self._live -= 1
        if not self._live and self._sleep is not None:
            self._sleep.cancel()  # nothing left to wait for: the task ends now

    async def _run(self) -> None:
        heap = self._heap
        ran = 0
        try:
            while self._live:
                deadline, _, handle = heap[0]
                callback = handle.callback
                if callback is None:
                    heapq.heappop(heap)
                    continue
                if deadline > trio.current_time():
                    ran = 0
                    with trio.CancelScope(deadline=deadline) as self._sleep:
                        await trio.sleep_forever()
                    self._sleep = None
                    continue
                heapq.heappop(heap)
                handle.callback = None
                self._live -= 1
                try:
                    callback()
                except Exception:
                    logger.exception("error in a timer callback")
                ran += 1
                if ran >= YIELD_EVERY:
                    ran = 0
                    await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            heap.clear()
            self._live = 0
            self._sleep = None
            self._running = False


_TIMERS: trio.lowlevel.RunVar[_Timers] = trio.lowlevel.RunVar("trio_realtime_timers")


def call_at(deadline: float, callback: Callable[[], None]) -> TimerHandle:
    """Call ``callback()`` from the run's timer task at trio time ``deadline``; see the module.

    A deadline in the past (or now) runs at the timer task's next turn; callbacks due at the
    same time run in the order registered.
    """
    if math.isnan(deadline):
        raise ValueError("a timer deadline must be a number")
    try:
        timers = _TIMERS.get()
    except LookupError:
        timers = _Timers()
        _TIMERS.set(timers)
    return timers.call_at(deadline, callback)
