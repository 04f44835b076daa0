"""The worker thread that runs trio for a blocking client, and calls into it from other threads.

Theory of operation
-------------------
A :class:`Portal` owns one non-daemon thread running one ``trio.run``. Inside it, a nursery of
*calls* surrounds the async client (``open_realtime``), so that calls still waiting when the
client closes see the client's own shutdown (their subscriptions end, their pushes fail) before
anything is cancelled.

A blocking call hands a function to the trio thread with ``TrioToken.run_sync_soon`` and waits
on a lock that the trio thread releases once the result (an :class:`outcome.Outcome`) is in:

* synchronous functions (``client.channel()``, ``presence_state()``...) run right there, inside
  trio's entry-queue task, so they are never concurrent with the reader;
* async functions first try a non-blocking twin when they have one (``receive_nowait`` for
  ``receive``): an item already buffered costs no task. Otherwise they run as a task in the
  calls nursery, inside a cancel scope whose deadline is the call's ``timeout``: a timeout is
  a trio cancellation of the async call, with exactly the async API's semantics for it, and is
  then raised as :class:`SyncTimeout`.

A caller interrupted while it waits (``KeyboardInterrupt`` in the main thread) cancels its call
in the trio thread and waits for it to finish, so that nothing is left half done; a result that
arrived meanwhile is handed to the caller's *salvage* function (a subscription puts the item
back) and the interrupt is raised. The main thread waits in slices of :data:`WAIT_SLICE`
seconds, so that a signal delivered to another thread (or on Windows) still interrupts it
promptly; other threads wait without slices.

Closing sets an event that ends the body of ``open_realtime``; its exit leaves the channels and
closes the WebSocket with 1000 (bounded by ``close_timeout``), then the calls still waiting are
cancelled and fail with :class:`ConnectionClosed`, and the thread ends. When the client fails in
the background (the reconnect policy gave up, for example), every waiting and later call raises
a fresh copy of that failure, chained to it.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, suppress
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

import outcome
import trio

from .. import ConnectionClosed, RealtimeConnectionError, RealtimeError
from .._exceptions import fresh

logger = logging.getLogger("trio_realtime.sync")

T = TypeVar("T")
C = TypeVar("C")

WAIT_SLICE: Final = 0.1
"""Seconds the main thread waits at a time, so that signals reach it promptly."""

WATCH_INTERVAL: Final = 0.5
"""Seconds between checks that the main thread still runs (see :class:`Portal`)."""

CLOSE_NORMAL: Final = 1000

# Bumped in the child of every fork: a portal made before it has no thread there.
_fork_generation = [0]


def _forked() -> None:
    _fork_generation[0] += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)


class SyncTimeout(RealtimeError, TimeoutError):
    """A blocking call's ``timeout=`` elapsed before it completed.

    The async operation behind it was cancelled, with the async API's semantics for a
    cancellation (a cancelled join stops joining, a cancelled ``receive`` loses no item). It is
    both a :class:`~trio_realtime.RealtimeError` and a builtin :class:`TimeoutError`.

    Attributes:
        timeout: The timeout that elapsed, in seconds.
    """

    def __init__(self, what: str, timeout: float) -> None:
        super().__init__(f"{what} did not complete within {timeout} s")
        self.timeout = timeout


def check_timeout(timeout: float | None) -> float | None:
    """Validate a ``timeout=`` argument: ``None`` or a number of seconds, 0 or more.

    Raises:
        TypeError: for something that is not a number.
        ValueError: for a negative number or NaN.
    """
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"timeout must be a number of seconds or None, not {timeout!r}")
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(f"timeout must be a non-negative number of seconds, not {timeout!r}")
    return None if math.isinf(timeout) else float(timeout)


def fresh_failure(error: BaseException) -> BaseException:
    """A new exception like ``error`` (the failure that ended the client), chained to it."""
    copy = fresh(error)
    copy.__cause__ = error
    return copy


class _Call(Generic[T]):
    """One blocking call: its result, and what the trio side needs to cancel it."""

    __slots__ = ("_done", "interrupted", "result", "scope")

    def __init__(self) -> None:
        self._done = threading.Lock()
        self._done.acquire()
        self.result: outcome.Outcome[T] | None = None
        self.scope: trio.CancelScope | None = None
        self.interrupted = False

    def finish(self, result: outcome.Outcome[T]) -> None:
        """Set the result and wake the caller (trio thread; once)."""
        if self.result is None:
            self.result = result
            self._done.release()

    def wait(self) -> outcome.Outcome[T]:
        """Wait for the result (caller's thread); interruptible in the main thread."""
        result = self.result
        if result is None:
            done = self._done
            if threading.current_thread() is threading.main_thread():
                while not done.acquire(timeout=WAIT_SLICE):
                    pass
            else:
                done.acquire()
            done.release()
            result = self.result
            assert result is not None
        return result


@dataclass(frozen=True, slots=True)
class _Job(Generic[T]):
    """What an async call runs: ``await afn(*args)``, after trying ``nowait(*args)``."""

    afn: Callable[..., Awaitable[T]]
    args: tuple[Any, ...]
    nowait: Callable[..., T] | None
    timeout: float | None
    what: str


class _Refused(Exception):
    """Internal: the trio side no longer takes calls."""


class Portal(Generic[C]):
    """A trio run in its own thread, holding an async context manager open; see the module
    docstring.

    Args:
        opener: Returns the async context manager to hold open (``open_realtime(...)``).
        name: The worker thread's name.
        watch_main_thread: Close when the main thread ends (interpreter shutdown), so that a
            client the program forgot to close does not keep the process alive.
    """

    def __init__(
        self,
        opener: Callable[[], AbstractAsyncContextManager[C]],
        *,
        name: str,
        watch_main_thread: bool,
    ) -> None:
        self._opener = opener
        self._watch = watch_main_thread
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        self._stop_requested = False
        self._entered = False
        self._run_scope: trio.CancelScope | None = None
        # Written in the trio thread only: True while calls run (from the calls nursery's
        # opening until the context manager has exited).
        self._accepting = False
        self._failure: BaseException | None = None
        self._failure_reported = False
        self._report_lock = threading.Lock()
        self._ready: _Call[C] = _Call()
        self._generation = _fork_generation[0]
        self._thread = threading.Thread(target=self._thread_main, name=name, daemon=False)

    # -- lifecycle ------------------------------------------------------------------------------

    def open(self) -> C:
        """Start the thread and wait until the context manager is entered; return its value.

        Raises:
            Whatever entering raised (for example :class:`RealtimeConnectionError`).
        """
        self._thread.start()
        try:
            result = self._ready.wait()
        except BaseException:
            # Interrupted while connecting: give up the attempt and wait for the thread.
            self._request_stop()
            self._join()
            raise
        try:
            return result.unwrap()
        except BaseException:
            self._join()
            raise

    @property
    def thread(self) -> threading.Thread:
        """The worker thread."""
        return self._thread

    @property
    def closing(self) -> bool:
        """Whether close was asked for, or the client has ended."""
        return self._stop_requested or not self._accepting

    @property
    def failure(self) -> BaseException | None:
        """The failure that ended the client in the background, if any."""
        return self._failure

    def close(self) -> BaseException | None:
        """Stop the trio run and wait for the thread; return the background failure, if any,
        the first time it is asked for (``None`` afterwards).

        In a child process forked after the client was opened it does nothing: the client
        belongs to the parent.

        Raises:
            RuntimeError: when called in the worker thread.
        """
        if self._generation != _fork_generation[0]:
            return None
        self.check_thread()
        self._request_stop()
        self._join()
        with self._report_lock:
            if self._failure is None or self._failure_reported:
                return None
            self._failure_reported = True
            return self._failure

    def _request_stop(self) -> None:
        # The flag covers a run that has not published its token yet (it checks the flag
        # after publishing); the callback covers one that has.
        self._stop_requested = True
        token = self._token
        if token is None:
            return
        with suppress(trio.RunFinishedError):
            token.run_sync_soon(self._stop_in_trio)

    def _stop_in_trio(self) -> None:
        if self._stop is not None:
            self._stop.set()
        if not self._entered and self._run_scope is not None:
            # Still connecting: give up the attempt.
            self._run_scope.cancel()

    def _join(self) -> None:
        thread = self._thread
        if not thread.is_alive() or threading.current_thread() is thread:
            return
        if threading.current_thread() is threading.main_thread():
            while thread.is_alive():
                thread.join(WAIT_SLICE)
        else:
            thread.join()

    def check_thread(self) -> None:
        """Refuse a blocking call that would wait forever: from the worker thread itself, or
        in a child process forked after ``connect()`` (the child has no worker thread).

        Raises:
            RuntimeError: in either case.
        """
        if threading.current_thread() is self._thread:
            raise RuntimeError(
                "a blocking trio_realtime.sync call cannot run in the client's own thread"
            )
        if self._generation != _fork_generation[0]:
            raise RuntimeError(
                "this trio_realtime.sync client was opened before the process forked; "
                "open a client in the child process instead"
            )

    # -- the trio side --------------------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # pragma: no cover - _main catches everything
            logger.exception("the blocking client's trio run failed")
            self._failure = exc
            self._ready.finish(outcome.Error(exc))
        finally:
            self._accepting = False

    async def _main(self) -> None:
        self._stop = trio.Event()
        self._run_scope = trio.CancelScope()
        self._token = trio.lowlevel.current_trio_token()
        if self._stop_requested:
            self._stop_in_trio()
        failure: BaseException | None = None
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._accepting = True
            try:
                with self._run_scope:
                    async with self._opener() as value:
                        self._entered = True
                        if self._watch:
                            nursery.start_soon(self._watch_main_thread)
                        self._ready.finish(outcome.Value(value))
                        await self._stop.wait()
            except BaseException as exc:
                failure = exc
            finally:
                # Calls still waiting have seen the client's shutdown (their subscriptions
                # ended, their pushes failed) unless they wait for something that will not
                # come now, such as a reconnect: those fail as closed.
                self._accepting = False
                nursery.cancel_scope.cancel()
        if not self._entered:
            if failure is None:  # the attempt was given up (close() or an interrupt)
                failure = RealtimeConnectionError("the client was closed while connecting")
            self._ready.finish(outcome.Error(failure))
            return
        if failure is not None:
            logger.debug("the blocking client ended with %r", failure)
            self._failure = failure

    async def _watch_main_thread(self) -> None:
        main = threading.main_thread()
        # Polled: nothing signals the end of the main thread but its join(), and a thread
        # blocked in join() could not be stopped when the client closes first.
        while main.is_alive():  # noqa: ASYNC110
            await trio.sleep(WATCH_INTERVAL)
        logger.info("the main thread has ended; closing the blocking client")
        self._stop_requested = True
        self._stop_in_trio()

    def closed_error(self) -> BaseException:
        """The error for a call on a closed client: a fresh copy of the failure that ended it,
        else ``ConnectionClosed(1000)``."""
        if self._failure is not None:
            return fresh_failure(self._failure)
        return ConnectionClosed(CLOSE_NORMAL, "the client is closed")

    def _start_sync(self, call: _Call[T], fn: Callable[..., T], args: tuple[Any, ...]) -> None:
        if not self._accepting:
            call.finish(outcome.Error(_Refused()))
            return
        call.finish(outcome.capture(fn, *args))

    def _start(self, call: _Call[T], job: _Job[T]) -> None:
        nursery = self._nursery
        if not self._accepting or nursery is None:
            call.finish(outcome.Error(_Refused()))
            return
        if job.nowait is not None:
            try:
                call.finish(outcome.Value(job.nowait(*job.args)))
                return
            except trio.WouldBlock:
                pass
            except BaseException as exc:
                call.finish(outcome.Error(exc))
                return
        nursery.start_soon(self._run, call, job)

    async def _run(self, call: _Call[T], job: _Job[T]) -> None:
        result: outcome.Outcome[T] | None = None
        scope = trio.CancelScope()
        if job.timeout is not None:
            scope.deadline = trio.current_time() + job.timeout
        call.scope = scope
        try:
            if call.interrupted:
                scope.cancel()
            with scope:
                try:
                    result = outcome.Value(await job.afn(*job.args))
                except trio.Cancelled:
                    raise
                except BaseException as exc:
                    result = outcome.Error(exc)
        finally:
            if result is None:
                if call.interrupted:
                    result = outcome.Error(KeyboardInterrupt())
                elif scope.cancelled_caught and job.timeout is not None:
                    result = outcome.Error(SyncTimeout(job.what, job.timeout))
                else:
                    result = outcome.Error(_Refused())
            call.finish(result)

    def _interrupt(self, call: _Call[Any]) -> None:
        call.interrupted = True
        if call.scope is not None:
            call.scope.cancel()

    # -- calls from other threads ---------------------------------------------------------------

    def _submit(self, fn: Callable[..., object], *args: object) -> bool:
        """Queue ``fn(*args)`` for the trio thread; ``False`` when the run has finished."""
        token = self._token
        if token is None:
            return False
        try:
            token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            return False
        return True

    def _refused(self, after_close: Callable[..., T] | None, args: tuple[Any, ...]) -> T:
        if after_close is None:
            raise self.closed_error()
        # The client has ended: nothing else uses its objects once the thread is gone.
        self._join()
        return after_close(*args)

    def run_sync(
        self, fn: Callable[..., T], *args: Any, after_close: Callable[..., T] | None = None
    ) -> T:
        """Run ``fn(*args)`` in the trio thread and return its result (or raise its error).

        Args:
            fn: The function.
            args: Its arguments.
            after_close: Once the client has ended, ``after_close(*args)`` runs in the caller's
                thread instead (for calls that still make sense, such as statistics).

        Raises:
            ConnectionClosed: the client is closed (or a copy of the failure that ended it).
        """
        self.check_thread()
        call: _Call[T] = _Call()
        if not self._submit(self._start_sync, call, fn, args):
            return self._refused(after_close, args)
        try:
            return call.wait().unwrap()
        except _Refused:
            return self._refused(after_close, args)

    def run(
        self,
        afn: Callable[..., Awaitable[T]],
        *args: Any,
        timeout: float | None = None,
        what: str,
        nowait: Callable[..., T] | None = None,
        salvage: Callable[[T], None] | None = None,
        after_close: Callable[..., T] | None = None,
    ) -> T:
        """Run ``await afn(*args)`` in the trio thread, bounded by ``timeout``; return its result.

        Args:
            afn: The async function.
            args: Its arguments.
            timeout: Seconds (already checked), or ``None`` for no bound.
            what: What the call does, for the timeout's message.
            nowait: A synchronous twin tried first; ``trio.WouldBlock`` from it means "run
                ``afn``".
            salvage: Given the result when the caller was interrupted after it arrived.
            after_close: As for :meth:`run_sync`.

        Raises:
            SyncTimeout: the timeout elapsed first.
            ConnectionClosed: the client is closed (or a copy of the failure that ended it).
            KeyboardInterrupt: the caller was interrupted; the call was cancelled first.
        """
        self.check_thread()
        call: _Call[T] = _Call()
        job = _Job(afn, args, nowait, timeout, what)
        if not self._submit(self._start, call, job):
            return self._refused(after_close, args)
        try:
            result = call.wait()
        except BaseException:
            self._abandon(call, salvage)
            raise
        try:
            return result.unwrap()
        except _Refused:
            return self._refused(after_close, args)

    def _abandon(self, call: _Call[T], salvage: Callable[[T], None] | None) -> None:
        """The caller was interrupted: cancel the call and wait until it has finished.

        A second interrupt while waiting abandons the call without waiting.
        """
        if not self._submit(self._interrupt, call):
            return
        result = call.wait()
        if salvage is not None and isinstance(result, outcome.Value):
            salvage(result.value)
