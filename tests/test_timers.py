"""The run's one timer, which keeps every connection's heartbeat (HB-01, PS-02).

Callbacks run at their exact virtual times, in deadline order and, at the same time, in the
order registered; a cancelled one never runs; a deadline earlier than the one the timer sleeps
for wakes it in time; an exception in one callback is logged and the others still run; the
timer task exists only while a deadline is pending.
"""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing
from _realtime import task_count

from trio_realtime._timers import YIELD_EVERY, call_at


async def test_hb01_callbacks_run_at_their_exact_times_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """HB-01: deadline order, registration order for equal deadlines, exact times."""
    ran: list[tuple[str, float]] = []

    def note(name: str) -> None:
        ran.append((name, trio.current_time()))

    call_at(5.0, lambda: note("c"))
    call_at(2.0, lambda: note("a"))
    call_at(5.0, lambda: note("d"))
    call_at(3.5, lambda: note("b"))
    await trio.sleep(10)
    assert ran == [("a", 2.0), ("b", 3.5), ("c", 5.0), ("d", 5.0)]


async def test_hb01_an_earlier_deadline_wakes_the_sleeping_timer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """HB-01: a connection that opens with a shorter interval is not held to a longer one."""
    ran: list[float] = []
    call_at(30.0, lambda: ran.append(trio.current_time()))
    await trio.sleep(1.0)
    call_at(4.0, lambda: ran.append(trio.current_time()))
    await trio.sleep(40)
    assert ran == [4.0, 30.0]


async def test_hb01_a_callback_may_register_the_next_tick(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """HB-01: a heartbeat re-registers itself from its own callback, every interval."""
    ran: list[float] = []

    def tick() -> None:
        ran.append(trio.current_time())
        if len(ran) < 4:
            call_at(trio.current_time() + 2.5, tick)

    call_at(2.5, tick)
    await trio.sleep(20)
    assert ran == [2.5, 5.0, 7.5, 10.0]


async def test_ps02_a_cancelled_callback_never_runs_and_the_timer_task_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """PS-02: the timer task exists only while a deadline is pending; cancelling the last
    one ends it at once, without waiting for the deadline."""
    before = task_count()
    ran: list[str] = []
    first = call_at(10.0, lambda: ran.append("first"))
    second = call_at(20.0, lambda: ran.append("second"))
    await trio.testing.wait_all_tasks_blocked()
    assert task_count() == before + 1
    first.cancel()
    first.cancel()  # idempotent
    assert not first.pending
    assert second.pending
    await trio.sleep(5.0)
    assert task_count() == before + 1
    second.cancel()
    await trio.testing.wait_all_tasks_blocked()
    assert task_count() == before
    assert trio.current_time() == 5.0
    await trio.sleep(30)
    assert ran == []
    again = call_at(trio.current_time() + 1.0, lambda: ran.append("again"))
    await trio.sleep(2)
    assert ran == ["again"]
    assert not again.pending
    await trio.testing.wait_all_tasks_blocked()
    assert task_count() == before


async def test_hd_an_exception_in_one_callback_is_logged_and_the_others_run(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """No background task dies of one callback: the error is logged, the timer goes on."""
    ran: list[float] = []

    def broken() -> None:
        raise RuntimeError("broken callback")

    call_at(1.0, broken)
    call_at(1.0, lambda: ran.append(trio.current_time()))
    call_at(3.0, lambda: ran.append(trio.current_time()))
    await trio.sleep(5)
    assert ran == [1.0, 3.0]
    assert [r.getMessage() for r in caplog.records] == ["error in a timer callback"]
    assert "broken callback" in caplog.text


async def test_ps02_many_due_callbacks_let_other_tasks_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """PS-02: thousands of heartbeats due at once do not hold the scheduler for all of them:
    the timer yields once in YIELD_EVERY callbacks."""
    ran = 0
    seen: list[int] = []

    def note() -> None:
        nonlocal ran
        ran += 1

    for _ in range(3 * YIELD_EVERY):
        call_at(1.0, note)

    async def watch() -> None:
        await trio.sleep_until(1.0)
        while ran < 3 * YIELD_EVERY:
            seen.append(ran)
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
    assert seen
    assert all(0 < count < 3 * YIELD_EVERY for count in seen[1:])
    assert trio.current_time() == 1.0


async def test_hd08_a_nan_deadline_is_refused() -> None:
    """HD-08: a NaN deadline gets a ValueError at the call, and no timer task is started."""
    before = task_count()
    with pytest.raises(ValueError, match="must be a number"):
        call_at(math.nan, lambda: None)
    assert task_count() == before
