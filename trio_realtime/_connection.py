"""One live WebSocket connection: its outgoing queue, its heartbeat and its reply waiters.

A :class:`Connection` exists from the moment the transport is open until it is lost or closed;
each reconnect makes a new one. Everything tied to a connection dies with it: frames still in
the outgoing queue are reported as not written (so pushes wait for the rejoin and try again),
frames being written when the connection dropped as :class:`MaybeWritten` (part of the
batch may have reached the server), and waiters for replies fail with
:class:`ConnectionClosed`; in those last two cases the push may or may not have reached the
server, so it is not sent twice.

A push that finds nothing queued and nothing being written does not go through the queue: the
pushing task writes its frame itself (:meth:`Connection.push`), which spares the two task
switches of a hand-over to another task; ``benchmarks/sends.py`` measures the difference.
Frames sent while that write is under way queue behind it, so the order on the wire is the
order of the calls. Such a write is shielded from the caller's cancellation (a frame cut in
half would break the connection for everyone); only the caller's deadline interrupts it, and
then the connection is dropped, as when a queued batch's write is cut short.

The queue is a bounded list, written by a writer task that exists only while something is
queued: the first frame queued starts it, it writes whatever is queued in one transport write
per batch, and it ends when the queue is empty. A full queue makes senders wait in the order
they came (backpressure, never unbounded growth). An idle connection thus costs no task of its
own: its heartbeat is a callback of the run's one timer (:mod:`._timers`), which writes the
heartbeat frame at once when the socket takes it, or puts it at the head of the queue.

An acknowledged push made while other replies are awaited goes the other way
(:meth:`Connection.push_acked`): it is queued without waiting for its write, and everything
queued meanwhile goes in one write, so many concurrent acknowledged pushes cost a system call
per batch rather than one each. The writer writes what is left; the push that makes the queue
hold half of the awaited replies writes the queue itself, so that the server works on one half
while the client makes the other. Their reply deadlines are kept by one task per connection,
not by a cancel scope per push (:meth:`Connection.expect_reply`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import trio

from ._exceptions import ConnectionClosed, fresh
from ._session import ReplyReceived
from ._timers import TimerHandle, call_at
from ._transport import CLOSE_ABNORMAL, OutgoingMessage, Transport

logger = logging.getLogger("trio_realtime.connection")

T = TypeVar("T")

WRITE_BATCH = 256

YIELD_EVERY = 16
"""A push written at once by its caller yields to the scheduler once in this many pushes."""

FLUSH_AT = 4
"""The fewest queued frames an acknowledged push writes itself (see Connection.push_acked)."""


class MaybeWritten(ConnectionClosed):
    """The connection was lost while a frame was being written: the server may have it."""


class NotWritten(ConnectionClosed):
    """The connection was lost before a queued push's frame was written: it may be sent again."""


class ReplyTimeout(Exception):
    """No reply came by a timed reply waiter's deadline (see :meth:`Connection.expect_reply`)."""


class WriteTimeout(MaybeWritten):
    """A frame's write did not end by its deadline, so the connection was dropped."""


class Waiter(Generic[T]):
    """A one-shot result that one task sets and other tasks await.

    SPEED: a ``trio.Event`` with the value beside it would do, but one waiter exists per reply
    awaited (every join and every acknowledged push), and an Event costs several times this
    to create and to set; this one parks its tasks with ``trio.lowlevel`` directly.
    """

    __slots__ = ("_done", "_error", "_more", "_task", "_value")

    def __init__(self) -> None:
        self._done = False
        self._value: T | None = None
        self._error: BaseException | None = None
        # The waiting tasks: nearly always one (a push's reply), kept without a list or a
        # closure; any others in a list.
        self._task: trio.lowlevel.Task | None = None
        self._more: list[trio.lowlevel.Task] | None = None

    @property
    def done(self) -> bool:
        """Whether a value or an error has been set."""
        return self._done

    def set(self, value: T) -> None:
        """Set the value, unless already done."""
        if not self._done:
            self._value = value
            self._finish()

    def fail(self, error: BaseException) -> None:
        """Set an error that :meth:`wait` raises, unless already done."""
        if not self._done:
            self._error = error
            self._finish()

    def _finish(self) -> None:
        self._done = True
        task, self._task = self._task, None
        if task is not None:
            trio.lowlevel.reschedule(task)
        more, self._more = self._more, None
        if more:
            for task in more:
                trio.lowlevel.reschedule(task)

    async def wait(self) -> T:
        """Wait for the result; raise the error if one was set. A checkpoint.

        The error is raised as a fresh copy chained to the stored one, so that tasks waiting
        for the same result never share (and grow) one traceback.
        """
        if self._done:
            await trio.lowlevel.checkpoint()
        elif self._task is None:
            await trio.lowlevel.wait_task_rescheduled(self.hold(trio.lowlevel.current_task()))
        else:
            await self._wait_more(trio.lowlevel.current_task())
        return self.result()

    def hold(self, task: trio.lowlevel.Task) -> Callable[[object], trio.lowlevel.Abort]:
        """Make ``task`` the waiting task; return the abort function to park it with.

        For a caller that parks itself, ``await trio.lowlevel.wait_task_rescheduled(
        waiter.hold(task))``, and then takes :meth:`result`: what :meth:`wait` does, one
        coroutine level closer to the task (see ``Channel.send_broadcast``). Only while the
        result is not done and no other task waits.
        """
        self._task = task
        return self._abort_first

    def result(self) -> T:
        """The value, or the error raised as in :meth:`wait`; only once done."""
        if self._error is not None:
            raise fresh(self._error) from self._error
        return self._value  # type: ignore[return-value]

    def _abort_first(self, _: object) -> trio.lowlevel.Abort:
        self._task = None
        return trio.lowlevel.Abort.SUCCEEDED

    async def _wait_more(self, task: trio.lowlevel.Task) -> None:
        more = self._more
        if more is None:
            more = self._more = []
        more.append(task)

        def abort(_: object) -> trio.lowlevel.Abort:
            if self._more is not None:
                self._more.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)


@dataclass(slots=True)
class Outgoing:
    """An encoded frame waiting for the writer, and who wants to know its fate: ``written``
    is told when it is written, ``reply`` (an acknowledged push's) only when it is not.
    A ``rest`` is the unwritten end of a frame that :meth:`Transport.send_nowait` began: bytes
    for :meth:`Transport.send_rest`, which go out before anything else."""

    data: bytes
    binary: bool
    written: Waiter[None] | None = None
    reply: Waiter[ReplyReceived] | None = None
    rest: bool = False


class Connection:
    """The state of one open connection; see the module docstring."""

    def __init__(
        self,
        transport: Transport,
        nursery: trio.Nursery,
        *,
        outgoing_buffer: int,
        reply_timeout: float = math.inf,
    ) -> None:
        self.transport = transport
        self.nursery = nursery
        # The queue, in the order of the calls, at most outgoing_buffer frames (a heartbeat or
        # a rest may go in above it); senders waiting for room, with what wakes them, in order
        # (a list made by the first sender that has to wait: most connections never fill).
        self._frames: list[Outgoing] = []
        self._blocked: list[tuple[Outgoing, Waiter[None]]] | None = None
        self._outgoing_buffer = outgoing_buffer
        self._writing = False  # whether the writer task exists
        self.replies: dict[str, Waiter[ReplyReceived]] = {}
        self.lost: ConnectionClosed | None = None
        self.frames_sent = 0
        # Frames queued or being written, by the writer or by a pushing task: a push writes its
        # frame itself only while this is zero (see send).
        self._unwritten = 0
        self._beat: TimerHandle | None = None
        self._heartbeat: Callable[[], OutgoingMessage | None] | None = None
        self._interval = math.inf
        self._direct_writes = 0
        # Timed reply waiters (see expect_reply): ref -> deadline, in the order registered,
        # which is the order of their deadlines, since every one is now + reply_timeout.
        self.reply_timeout = reply_timeout
        self._reply_deadlines: dict[str, float] = {}
        self._expiring = False

    def expect_reply(
        self, ref: str, *, timed: bool = False, since: float | None = None
    ) -> Waiter[ReplyReceived]:
        """Register interest in the reply to ``ref``; register before sending.

        The caller must :meth:`forget_reply` when it stops waiting, however it stops
        (reply, timeout, cancellation), or the registration would stay behind.

        A ``timed`` waiter fails with :class:`ReplyTimeout` when no reply came within
        ``reply_timeout`` seconds, which spares its caller a cancel scope of its own (one per
        push). The deadlines are kept by one task, started when the first timed waiter is
        registered and ended when it wakes to find none left: it sleeps until the oldest
        deadline, fails what expired, and sleeps again, so a flood of pushes answered in time
        costs it a wake-up per ``reply_timeout``, not one per push. The timeout counts from
        ``since`` when given: the time the caller's operation began, read with nothing run
        since (so that deadlines stay in the order registered), else from now.
        """
        waiter: Waiter[ReplyReceived] = Waiter()
        if self.lost is not None:
            waiter.fail(ConnectionClosed(self.lost.code, self.lost.reason))
            return waiter
        self.replies[ref] = waiter
        if timed:
            if since is None:
                since = trio.current_time()
            self._reply_deadlines[ref] = since + self.reply_timeout
            if not self._expiring:
                self._expiring = True
                self.nursery.start_soon(self._expire_replies)
        return waiter

    def forget_reply(self, ref: str) -> None:
        """Stop waiting for the reply to ``ref``. Idempotent."""
        self.replies.pop(ref, None)
        self._reply_deadlines.pop(ref, None)

    async def _expire_replies(self) -> None:
        """Fail timed reply waiters whose deadline passed; see :meth:`expect_reply`."""
        deadlines = self._reply_deadlines
        try:
            while deadlines:
                now = trio.current_time()
                expired: list[str] = []
                wake_at = math.inf
                for ref, deadline in deadlines.items():
                    if deadline > now:
                        wake_at = deadline
                        break
                    expired.append(ref)
                for ref in expired:
                    del deadlines[ref]
                    waiter = self.replies.pop(ref, None)
                    if waiter is not None:
                        waiter.fail(ReplyTimeout())
                if wake_at == math.inf:
                    break
                await trio.sleep_until(wake_at)
        finally:
            self._expiring = False

    @property
    def has_room(self) -> bool:
        """Whether the outgoing queue has room for a frame (and the connection is open).

        Frames being written count as queued, so this may say no while there is room."""
        return self.lost is None and self._unwritten < self._outgoing_buffer

    @property
    def writable_now(self) -> bool:
        """Whether a push would be written at once by :meth:`push` (nothing queued or being
        written, and a transport that can write without waiting)."""
        return self.lost is None and not self._unwritten and self.transport.can_send_nowait()

    async def send(self, data: bytes, binary: bool) -> None:
        """Write an encoded frame, or queue it for the writer; wait while the queue is full.

        For frames whose fate nobody awaits (joins, leaves, token updates); pushes use
        :meth:`push`. With nothing queued or being written, the frame is written at once, as
        much of it as the socket takes (the rest goes first in the queue), so a join costs no
        hand-over to a writer task. A checkpoint.

        Raises:
            ConnectionClosed: when the connection is already lost.
        """
        if self.lost is not None:
            await trio.lowlevel.checkpoint()
            raise ConnectionClosed(self.lost.code, self.lost.reason)
        if self.writable_now:
            await trio.lowlevel.checkpoint_if_cancelled()
            self._write_first(data, binary)
            if self.lost is not None:
                raise ConnectionClosed(self.lost.code, self.lost.reason)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        await self._queue(Outgoing(data, binary))

    async def _queue(self, item: Outgoing) -> None:
        """Queue ``item``, waiting in line while the queue is full. A checkpoint.

        Cancelled while it waits, the item is not queued; once queued, it is written.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.lost is not None:
            raise self._closed_error()
        if self._queue_nowait(item):
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        entry = (item, Waiter[None]())
        blocked = self._blocked
        if blocked is None:
            blocked = self._blocked = []
        blocked.append(entry)
        try:
            await entry[1].wait()  # set once queued, failed when the connection is lost
        except BaseException:
            if not entry[1].done:
                blocked.remove(entry)
            raise

    def _queue_nowait(self, item: Outgoing) -> bool:
        """Queue ``item`` if there is room and nobody waits for it; start the writer."""
        if self._blocked or len(self._frames) >= self._outgoing_buffer:
            return False
        self._frames.append(item)
        self._unwritten += 1
        self._start_writer()
        return True

    async def push(
        self,
        data: bytes,
        binary: bool,
        *,
        write_within: float = math.inf,
        schedule: bool = True,
    ) -> None:
        """Write a push's encoded frame; return once it is written to the socket.

        With nothing queued or being written, the calling task writes the frame itself (see
        the module docstring); otherwise it is queued for the writer, and this waits until
        the writer has written it (or while the queue is full). A write this task began is
        bounded by ``write_within`` seconds and the caller's own deadline, not by its cancellation.

        Always a cancellation point. A frame the socket takes at once is written without
        yielding to the scheduler, except once in :data:`YIELD_EVERY` such pushes (and never
        with ``schedule`` false, for a caller that waits next anyway): a full schedule point
        costs about as much as encoding and framing the push, and a task that keeps sending
        still lets the reader and the writer run at that bound.

        Raises:
            ConnectionClosed: the frame was not written, since the connection is lost (it may
                be sent again on the next connection).
            MaybeWritten: the connection was lost while the frame was being written.
        """
        if self.lost is not None:
            await trio.lowlevel.checkpoint()
            raise ConnectionClosed(self.lost.code, self.lost.reason)
        if not self._unwritten:
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                rest = self.transport.send_nowait(((data, binary),))
            except ConnectionClosed as exc:
                self.lose(exc.code, exc.reason)  # nothing of it was written
                raise ConnectionClosed(exc.code, exc.reason) from None
            if rest is None:
                await self._write_now(((data, binary),), write_within)
            elif rest:
                await self._write_now(rest, write_within)
            else:
                self.frames_sent += 1
                if schedule:
                    self._direct_writes += 1
                    if self._direct_writes >= YIELD_EVERY:
                        self._direct_writes = 0
                        await trio.lowlevel.cancel_shielded_checkpoint()
            return
        written: Waiter[None] = Waiter()
        await self._queue(Outgoing(data, binary, written))
        await written.wait()

    async def push_acked(
        self,
        data: bytes,
        binary: bool,
        reply: Waiter[ReplyReceived],
        *,
        write_within: float = math.inf,
    ) -> None:
        """Write an acknowledged push's frame, or queue it when other pushes are in flight.

        ``reply`` is the push's registered reply waiter. When it is the only reply awaited and
        nothing is queued, the frame is written at once, as :meth:`push` does. Otherwise it is
        queued without waiting for the write, and written in one batch with the others queued
        meanwhile (one write for many concurrent pushes): by the writer, or by this task when
        its frame makes the queue hold at least half of the pushes awaiting replies (and at
        least :data:`FLUSH_AT`) and nothing is being written. The writer runs only after every
        task woken with it has run, so a read of 64 replies would otherwise queue 64 pushes
        before writing any, and the server would wait for the client, then the client for
        the server; written in halves, one half reaches the server while the client makes the
        other. Its fate reaches ``reply``, which fails with :class:`MaybeWritten` when the
        write was cut short and with :class:`NotWritten` when the connection was lost before
        it (it may then be sent again). The queue's bound still applies: a full queue makes
        this wait. A write begun here is bounded as in :meth:`push`; no schedule point follows
        it, since the caller waits for the reply next.

        Raises:
            ConnectionClosed: the frame was not written, since the connection is lost.
            MaybeWritten: the connection was lost while the frame was being written.
        """
        if self._unwritten or len(self.replies) > 1:
            await trio.lowlevel.checkpoint_if_cancelled()
            if self.lost is not None:
                raise ConnectionClosed(self.lost.code, self.lost.reason)
            item = Outgoing(data, binary, None, reply)
            if not self._queue_nowait(item):
                await self._queue(item)  # a full queue: wait for room
            elif (
                (queued := len(self._frames)) >= FLUSH_AT
                and 2 * queued >= len(self.replies)
                and self.transport.can_send_nowait()
            ):
                await self._flush_here(write_within)
            return
        await self.push(data, binary, write_within=write_within, schedule=False)

    async def _flush_here(self, within: float) -> None:
        """Write the head of the queue from the calling task (see :meth:`push_acked`).

        Nothing is being written (the caller checked), so the queue's order is the wire's. The
        frames go at once as far as the socket takes them; the end of a batch it did not take
        is written from here, before anything else can be, bounded like :meth:`push`'s own
        write: cut short, every push of the batch fails with :class:`MaybeWritten` and the
        connection is dropped.
        """
        sent = self._send_batch_nowait()
        if sent is None or not sent[1]:
            return
        batch, rest = sent
        code, reason = CLOSE_ABNORMAL, ""
        try:
            deadline = min(trio.current_time() + within, trio.current_effective_deadline())
            with trio.CancelScope(shield=True, deadline=deadline) as scope:
                await self.transport.send_rest(rest)
        except ConnectionClosed as exc:
            code, reason = exc.code, exc.reason or "connection lost while sending"
        if scope.cancelled_caught:
            reason = "a write did not complete in time"
        if reason:
            self._batch_failed(batch, code, reason)
            self.lose(code, reason)
        else:
            self._batch_written(batch)

    def _send_batch_nowait(self) -> tuple[list[Outgoing], bytes] | None:
        """Write the head of the queue (not a rest) now, as far as the socket takes it.

        ``None`` when the socket is busy: nothing was written. Otherwise the batch, taken off
        the queue, and the end of it the socket did not take: ``b""`` when it took everything
        (the batch is then done), or bytes that must be written next with
        :meth:`Transport.send_rest`, whose lock is held until then. When the connection turns
        out to be lost, nothing was written: the batch is empty, and the queue fails as not
        written.
        """
        queue = self._frames
        batch = queue[:WRITE_BATCH]
        try:
            rest = self.transport.send_nowait([(item.data, item.binary) for item in batch])
        except ConnectionClosed as exc:
            self.lose(exc.code, exc.reason)
            return [], b""
        if rest is None:
            return None
        del queue[: len(batch)]
        if rest:
            self._admit_blocked()
        else:
            self._batch_written(batch)
        return batch, rest

    def _batch_written(self, batch: list[Outgoing]) -> None:
        """A batch taken off the queue is written: tell who waits, let waiting senders in."""
        self._unwritten -= len(batch)
        self.frames_sent += len(batch)
        for item in batch:
            if item.written is not None:
                item.written.set(None)
        self._admit_blocked()
        if self._frames:
            self._start_writer()

    def _batch_failed(self, batch: list[Outgoing], code: int, reason: str) -> None:
        """A batch taken off the queue was cut short: part of it may have reached the server."""
        self._unwritten -= len(batch)
        for item in batch:
            if item.written is not None:
                item.written.fail(MaybeWritten(code, reason))
            elif item.reply is not None:
                item.reply.fail(MaybeWritten(code, reason))

    async def _write_now(self, frames: bytes | Sequence[OutgoingMessage], within: float) -> None:
        """Write one push's frame (or what ``send_nowait`` left of it) from the calling task."""
        self._unwritten += 1
        code, reason = CLOSE_ABNORMAL, ""
        transport = self.transport
        try:
            # The caller's cancellation waits for the write; its deadline does not.
            deadline = min(trio.current_time() + within, trio.current_effective_deadline())
            with trio.CancelScope(shield=True, deadline=deadline) as scope:
                if isinstance(frames, bytes):
                    await transport.send_rest(frames)
                else:
                    await transport.send_messages(frames)
        except ConnectionClosed as exc:
            code, reason = exc.code, exc.reason or "connection lost while sending"
        finally:
            self._unwritten -= 1
        if scope.cancelled_caught:
            reason = "a write did not complete in time"
        elif not reason:
            self.frames_sent += 1
            # A cancellation that came during the write is delivered now that it is done.
            await trio.lowlevel.checkpoint_if_cancelled()
            return
        # Cut short: part of the frame may have reached the server, and the stream cannot be
        # trusted after it.
        self.lose(code, reason)
        if scope.cancelled_caught:
            # The deadline that cut it is the caller's: its cancellation comes first.
            await trio.lowlevel.checkpoint_if_cancelled()
            raise WriteTimeout(code, reason)
        raise MaybeWritten(code, reason)

    def _closed_error(self, _: BaseException | None = None) -> ConnectionClosed:
        lost = self.lost or ConnectionClosed(CLOSE_ABNORMAL, "")
        return ConnectionClosed(lost.code, lost.reason)

    def lose(self, code: int, reason: str) -> None:
        """Mark the connection lost and stop its tasks. Idempotent; the first reason wins."""
        if self.lost is None:
            self.lost = ConnectionClosed(code, reason)
            self.nursery.cancel_scope.cancel()
            if self._beat is not None:
                self._beat.cancel()

    def fail_pending(self) -> None:
        """Fail every reply waiter and every frame not yet written. Call once, after loss."""
        lost = self.lost or ConnectionClosed(CLOSE_ABNORMAL, "")
        blocked, self._blocked = self._blocked or (), None
        for _item, admitted in blocked:
            admitted.fail(ConnectionClosed(lost.code, lost.reason))
        queue = self._frames[:]
        self._frames.clear()
        for item in queue:
            if item.written is not None:
                item.written.fail(ConnectionClosed(lost.code, lost.reason))
            if item.reply is not None:
                item.reply.fail(NotWritten(lost.code, lost.reason))
        # After the queue: a reply waiter whose frame was never written has failed above.
        replies, self.replies = self.replies, {}
        for waiter in replies.values():
            waiter.fail(ConnectionClosed(lost.code, lost.reason))

    def start_heartbeat(
        self, heartbeat: Callable[[], OutgoingMessage | None], interval: float
    ) -> None:
        """Every ``interval`` seconds, write the frame ``heartbeat()`` returns.

        The ticks are callbacks of the run's timer (:func:`._timers.call_at`), so they cost
        this connection no task. ``heartbeat`` must not block; it returns ``None`` when the
        connection is dead (it has called :meth:`lose`), and the ticks stop. The frame is
        written at once when nothing else is being written and the socket takes it, and
        otherwise goes at the head of the queue: a full queue does not hold a heartbeat back.
        A write stuck for longer holds it back, so the next tick finds it unanswered.
        """
        self._heartbeat = heartbeat
        self._interval = interval
        self._beat = call_at(trio.current_time() + interval, self._tick)

    def _tick(self) -> None:
        """One heartbeat (a timer callback; see :meth:`start_heartbeat`).

        A heartbeat that fails with an unexpected error drops the connection (logged), so
        that it is reconnected rather than left without a heartbeat.
        """
        self._beat = None
        if self.lost is not None or self._heartbeat is None:
            return
        try:
            beat = self._heartbeat()
            if beat is None or self.lost is not None:
                return
            self._write_first(*beat)
        except Exception:
            logger.exception("the heartbeat failed; dropping the connection")
            self.lose(CLOSE_ABNORMAL, "the heartbeat failed")
            return
        self._beat = call_at(trio.current_time() + self._interval, self._tick)

    def _write_first(self, data: bytes, binary: bool) -> None:
        """Write a frame without waiting: at once if the socket takes it, else first in line."""
        if not self._unwritten:
            try:
                rest = self.transport.send_nowait(((data, binary),))
            except ConnectionClosed as exc:
                self.lose(exc.code, exc.reason)
                return
            if rest == b"":
                self.frames_sent += 1
                return
            item = Outgoing(data, binary) if rest is None else Outgoing(rest, binary, rest=True)
        else:
            item = Outgoing(data, binary)
        queue = self._frames
        queue.insert(1 if queue and queue[0].rest else 0, item)  # never inside a begun frame
        self._unwritten += 1
        self._start_writer()

    async def _write_queued(self) -> None:
        """The writer task: write what is queued, in batches, until nothing is; then end.

        A batch goes at once when the socket takes it: trio's ``send_all`` would hold the send
        lock over a schedule point, and the pushes made meanwhile could not write themselves
        (see :meth:`push_acked`).
        """
        queue = self._frames
        transport = self.transport
        try:
            while queue and self.lost is None:
                # A rest is only ever first: it is queued when nothing else is, and nothing
                # goes ahead of it (see _write_first).
                rest: bytes | None = None
                sent = None if queue[0].rest else self._send_batch_nowait()
                if sent is not None:
                    batch, rest = sent  # taken off the queue
                    if not rest:
                        continue  # all written, or nothing since the connection is lost
                else:
                    batch = queue[:1] if queue[0].rest else queue[:WRITE_BATCH]
                    if batch[0].rest:
                        rest = batch[0].data
                    del queue[: len(batch)]
                    self._admit_blocked()
                try:
                    if rest is not None:
                        await transport.send_rest(rest)
                    else:
                        await transport.send_messages([(i.data, i.binary) for i in batch])
                except BaseException as exc:
                    # Cut short, by the transport or by the loss cancelling this task: part
                    # of the batch may have reached the server, so every push in it fails now.
                    if isinstance(exc, ConnectionClosed):
                        code, reason = exc.code, exc.reason or "connection lost while sending"
                    else:
                        lost = self.lost or ConnectionClosed(CLOSE_ABNORMAL, "")
                        code, reason = lost.code, lost.reason or "connection lost while sending"
                    self._batch_failed(batch, code, reason)
                    if not isinstance(exc, ConnectionClosed):
                        raise
                    self.lose(code, reason)
                    return
                self._batch_written(batch)
                del batch
        finally:
            self._writing = False

    def _start_writer(self) -> None:
        """Start the writer task for what was just queued, unless it runs already."""
        if not self._writing:
            self._writing = True
            self.nursery.start_soon(self._write_queued)

    def _admit_blocked(self) -> None:
        """Move the senders waiting for room into the queue, as far as there is room."""
        blocked = self._blocked
        room = self._outgoing_buffer - len(self._frames)
        if not blocked or room <= 0:
            return
        admitted = blocked[:room]
        del blocked[:room]
        for item, waiter in admitted:
            self._frames.append(item)
            self._unwritten += 1
            waiter.set(None)
