"""Bounded subscriptions: a ``trio.abc.ReceiveChannel`` fed by the reader without blocking.

Theory of operation
-------------------
A subscription comes as a pair, like trio's memory channels: :func:`open_subscription` returns
the producer's :class:`Feed` (kept by the channel or client that routes items) and the
consumer's :class:`Subscription`, a ``trio.abc.ReceiveChannel`` handed to the user. Only the
feed can put items or end the stream. Both share one ``_Stream`` (the buffer and its figures),
as trio's memory channels share their state.

The registration is weak: the channel keeps the feed, and so the stream, but not the
:class:`Subscription`. One the user drops without closing it is garbage-collected like any
object; it then closes its stream (later items are ignored, buffered ones discarded) and asks
its owner to unregister the feed. It does not warn: dropping a subscription is a legitimate way
to be done with it (a subscription made for a side effect, such as ``presence_events()``
enabling presence, or one whose reader returned), and the subscription leaves nothing behind
either way. That finalizer can run in any thread and between any two bytecodes, even while
the reader loops over the very list of feeds, so it only appends to the owner's queue of
abandoned feeds (a list: one append is atomic, from any thread); the owner removes them from its
lists before it next delivers anything, and before it counts or creates subscriptions. A client
and its channels share one queue, so whichever of them comes first runs every unregistration
queued (each removes its own feed from its own list).

The reader task must never wait for a consumer: one stalled consumer would delay heartbeats and
every other subscription. So the producer side, :meth:`Feed.put`, is synchronous. It
appends to a bounded deque and wakes a waiting consumer. When the deque is full, the overflow
policy decides:

* ``"error"`` (the default): the new item is dropped and counted. Once the consumer has taken
  every item buffered before the overflow, ``receive`` raises :class:`SubscriptionOverflow`
  with the number dropped; items that arrive after that point are delivered again.
* ``"drop_oldest"``: the oldest buffered item is dropped to make room (latest state wins).
* ``"drop_newest"``: the new item is dropped.

Drops are always counted in :meth:`Subscription.statistics`, and logged at warning level once
per overflow episode.

The producer ends a subscription with :meth:`Feed.end`: a clean end (the channel was
left) makes ``receive`` raise ``trio.EndOfChannel`` after the buffered items, so an ``async
for`` loop just stops; an end with an error (the server closed the channel) raises that error
after the buffered items.

``receive`` is always a cancellation point, but it yields to the scheduler only when it has to
wait for an item. A full schedule point costs several microseconds, as much as parsing the
frame, and there is a second reason: the reader puts a whole network read's worth of messages
(a hundred or more) into the buffer in one step, so a consumer that yielded after every few
items would get one short turn per reader step and fall behind until its buffer overflowed.
Draining the buffer before yielding keeps a consumer that can keep up, caught up; it cannot
starve other tasks, because only the reader refills the buffer and it needs a turn to do so.
:meth:`Subscription.receive_batch` takes everything buffered in one call.

A subscription may convert its items as they are received (``broadcasts(decode=...)``): the
buffer then holds the items as the reader put them, and each is converted by the consumer's
call that takes it, in the consumer's task, never in the reader's. A conversion that fails
consumes its item and raises to that one call; the subscription stays open and the next call
goes on with the next item. ``receive_batch`` returns the items converted before a failure and
leaves the failure to the next call, so that no converted item is lost and no item is converted
twice.

The module is longer than the project's usual 500 lines because it holds the two ends of one
buffer (the producer's :class:`Feed`, the consumer's :class:`Subscription` and its converting
variant) and the registry of abandoned subscriptions, which all share the buffer's state.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Generic, Literal, TypeVar, cast

import trio

from ._exceptions import SubscriptionOverflow, fresh

logger = logging.getLogger("trio_realtime.subscription")

T = TypeVar("T")
R = TypeVar("R")

Overflow = Literal["error", "drop_oldest", "drop_newest"]
OVERFLOW_POLICIES: Final = ("error", "drop_oldest", "drop_newest")
DEFAULT_BUFFER: Final = 4096


@dataclass(frozen=True, slots=True)
class SubscriptionStatistics:
    """Figures of one subscription.

    Attributes:
        name: What the subscription receives, for example ``"broadcast 'cursor' on realtime:x"``.
        buffered: Items waiting to be received.
        buffer: The capacity.
        overflow: The overflow policy.
        delivered: Items put into the buffer so far.
        dropped: Items dropped by the overflow policy so far.
        closed: Whether the subscription has ended or been closed.
    """

    name: str
    buffered: int
    buffer: int
    overflow: Overflow
    delivered: int
    dropped: int
    closed: bool


def check_subscription_options(buffer: int, overflow: str) -> Overflow:
    """Validate ``buffer`` and ``overflow``.

    Raises:
        ValueError: for a buffer below 1 or an unknown policy.
    """
    if not isinstance(buffer, int) or isinstance(buffer, bool) or buffer < 1:
        raise ValueError(f"buffer must be a positive int, not {buffer!r}")
    if overflow == "error":
        return "error"
    if overflow == "drop_oldest":
        return "drop_oldest"
    if overflow == "drop_newest":
        return "drop_newest"
    raise ValueError(f"overflow must be one of {', '.join(OVERFLOW_POLICIES)}, not {overflow!r}")


class _Stream(Generic[T]):
    """The state a :class:`Feed` and a :class:`Subscription` share: the buffer, the overflow
    policy and the figures. The producer's methods never block."""

    def __init__(
        self,
        name: str,
        *,
        buffer: int = DEFAULT_BUFFER,
        overflow: str = "error",
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._policy = check_subscription_options(buffer, overflow)
        self._name = name
        self._capacity = buffer
        self._items: deque[T] = deque()
        # Made when a consumer first waits: most subscriptions of a process are idle.
        self._lot: trio.lowlevel.ParkingLot | None = None
        self._on_close = on_close
        self._delivered = 0
        self._dropped = 0
        self._overflowed = 0  # drops in the current "error" episode, not yet raised
        self._end_error: BaseException | None = None
        self._ended = False
        self._closed = False
        self._fast = True
        self._parked = 0

    def __repr__(self) -> str:
        return f"<Subscription {self._name} buffered={len(self._items)}/{self._capacity}>"

    @property
    def finished(self) -> bool:
        """Whether the stream was closed by its consumer or ended by its producer."""
        return self._closed or self._ended

    # -- producer side (the reader task; never blocks) ------------------------------------------

    def _put(self, item: T) -> None:
        """Add an item, applying the overflow policy when the buffer is full (the feed's)."""
        items = self._items
        if self._fast and len(items) < self._capacity:
            items.append(item)
            self._delivered += 1
        elif self._ended or self._closed:
            return
        else:
            self._overflow(item)
        # The consumer stays counted in _parked until it runs; the lot is empty once unparked,
        # so the rest of a read's items do not pay for another unpark.
        if self._parked and self._lot:
            self._lot.unpark()

    def _update_fast(self) -> None:
        # _put()'s fast path: open, and not in an unreported "error" overflow episode.
        self._fast = not (self._ended or self._closed or self._overflowed)

    async def _park(self) -> None:
        self._parked += 1
        if self._lot is None:
            self._lot = trio.lowlevel.ParkingLot()
        try:
            await self._lot.park()
        finally:
            self._parked -= 1

    def _overflow(self, item: T) -> None:
        policy = self._policy
        if policy == "drop_oldest":
            if len(self._items) >= self._capacity:
                self._items.popleft()
                self._dropped += 1
            self._items.append(item)
            self._delivered += 1
            return
        if policy == "error" and not self._overflowed:
            logger.warning(
                "subscription %s overflowed its buffer of %d items; dropping until it catches up",
                self._name,
                self._capacity,
            )
        self._dropped += 1
        if policy == "error":
            self._overflowed += 1
            self._fast = False

    def _end(self, error: BaseException | None = None) -> None:
        """End the stream: after the buffered items, raise ``error`` or ``trio.EndOfChannel``."""
        if self._ended:
            return
        self._ended = True
        self._fast = False
        self._end_error = error
        if self._lot is not None:
            self._lot.unpark_all()

    @property
    def ended(self) -> bool:
        """Whether the producer has ended the stream (items may still be buffered)."""
        return self._ended

    # -- consumer side --------------------------------------------------------------------------

    def receive_nowait(self) -> T:
        """Take the next item without waiting.

        Raises:
            trio.WouldBlock: when nothing is buffered.
            SubscriptionOverflow: as described in the module docstring.
            ChannelClosed: after the buffered items, when the server closed the channel.
            trio.EndOfChannel: after the buffered items, when the channel was left.
            trio.ClosedResourceError: after :meth:`aclose`.
        """
        if self._closed:
            raise trio.ClosedResourceError("subscription is closed")
        if self._items:
            return self._items.popleft()
        self._raise_if_finished()
        raise trio.WouldBlock

    def _raise_if_finished(self) -> None:
        if self._overflowed:
            dropped, self._overflowed = self._overflowed, 0
            self._update_fast()
            raise SubscriptionOverflow(dropped, self._capacity)
        if self._ended:
            if self._end_error is not None:
                # A fresh copy each time: several subscriptions share one error, and
                # raising one object again and again would grow its traceback.
                raise fresh(self._end_error) from self._end_error
            raise trio.EndOfChannel

    async def receive(self) -> T:
        """Wait for and return the next item.

        Always a cancellation point; a schedule point only when it has to wait (see the module
        docstring). Cancelling it never loses an item.

        Raises:
            The same as :meth:`receive_nowait`, except ``trio.WouldBlock``.
        """
        if self._items and not self._closed:
            await trio.lowlevel.checkpoint_if_cancelled()
            return self._items.popleft()
        parked = False
        while True:
            try:
                item = self.receive_nowait()
            except trio.WouldBlock:
                await self._park()
                parked = True
                continue
            except BaseException:
                if not parked:
                    await trio.lowlevel.checkpoint()
                raise
            if not parked:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return item

    async def receive_batch(self, max_items: int | None = None) -> list[T]:
        """Wait for at least one item, then return every buffered item (up to ``max_items``).

        One checkpoint per batch, which makes it the cheapest way to drain a busy stream.

        Raises:
            The same as :meth:`receive`; an overflow or end is raised only when the batch would
            otherwise be empty.
        """
        if max_items is not None and max_items < 1:
            raise ValueError("max_items must be at least 1")
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._items:
            try:
                self.receive_nowait()
            except trio.WouldBlock:
                await self._park()
                continue
        items = self._items
        if self._closed:
            raise trio.ClosedResourceError("subscription is closed")
        if max_items is None or max_items >= len(items):
            batch = list(items)
            items.clear()
        else:
            batch = [items.popleft() for _ in range(max_items)]
        await trio.lowlevel.cancel_shielded_checkpoint()
        return batch

    def close(self) -> None:
        """Close and unregister the subscription; buffered items are discarded. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._fast = False
        self._items.clear()
        if self._lot is not None:
            self._lot.unpark_all()
        if self._on_close is not None:
            callback, self._on_close = self._on_close, None
            callback()

    def abandon(self) -> None:
        """The consumer's end was garbage-collected: take nothing more, keep nothing.

        Safe in any thread, at any moment: only flags, a ``deque.clear`` and no callback (the
        owner unregisters the feed later, from its queue of abandoned feeds).
        """
        self._closed = True
        self._fast = False
        self._on_close = None
        self._items.clear()

    def statistics(self) -> SubscriptionStatistics:
        """Return the subscription's figures."""
        return SubscriptionStatistics(
            name=self._name,
            buffered=len(self._items),
            buffer=self._capacity,
            overflow=self._policy,
            delivered=self._delivered,
            dropped=self._dropped,
            closed=self._closed or self._ended,
        )


class Subscription(trio.abc.ReceiveChannel[T], Generic[T]):
    """A bounded stream of items of one kind; see the module docstring.

    Created by the channel and client factories (``channel.broadcasts()`` and so on), never
    directly. It is registered from the moment it is created, so nothing is missed before the
    first ``receive``. Use it as ``async with sub: async for item in sub: ...``; closing it
    unregisters it.

    The channel does not keep the subscription alive: one dropped without being closed is
    unregistered once it is garbage-collected (its buffered items are discarded), so a
    forgotten subscription costs nothing for long. Closing it, or ``async with``, still says
    exactly when it stops; a subscription the channel ended (it was left, or closed by the
    server, or the client closed) needs no close.
    """

    def __init__(
        self,
        stream: _Stream[T],
        unregister: Callable[[], None] | None = None,
        abandoned: list[Callable[[], None]] | None = None,
    ) -> None:
        self._stream = stream
        self._unregister = unregister
        self._abandoned = abandoned

    def __repr__(self) -> str:
        return repr(self._stream)

    def __del__(self) -> None:
        # Garbage-collected while still registered: close, and queue the unregistration
        # Runs in whatever thread dropped the last reference (see the module).
        stream = self._stream
        if stream._closed or stream._ended:
            return
        stream.abandon()
        if self._unregister is not None and self._abandoned is not None:
            self._abandoned.append(self._unregister)

    @property
    def ended(self) -> bool:
        """Whether the producer has ended the stream (items may still be buffered)."""
        return self._stream._ended

    def receive_nowait(self) -> T:
        """Take the next item without waiting.

        Raises:
            trio.WouldBlock: when nothing is buffered.
            SubscriptionOverflow: as described in the module docstring.
            ChannelClosed: after the buffered items, when the server closed the channel.
            trio.EndOfChannel: after the buffered items, when the channel was left.
            trio.ClosedResourceError: after :meth:`aclose`.
        """
        return self._stream.receive_nowait()

    async def receive(self) -> T:
        """Wait for and return the next item.

        Always a cancellation point; a schedule point only when it has to wait (see the module
        docstring). Cancelling it never loses an item.

        Raises:
            The same as :meth:`receive_nowait`, except ``trio.WouldBlock``.
        """
        stream = self._stream
        if stream._items and not stream._closed:
            # The stream's own fast path, inline: one call less per item.
            await trio.lowlevel.checkpoint_if_cancelled()
            return stream._items.popleft()
        return await stream.receive()

    async def __anext__(self) -> T:
        """The next item of ``async for``: :meth:`receive`, with the fast path inline.

        SPEED: ``trio.abc.ReceiveChannel.__anext__`` awaits :meth:`receive`, one coroutine
        more per item (``benchmarks/throughput.py`` measures ``async for``).
        """
        stream = self._stream
        if stream._items and not stream._closed:
            await trio.lowlevel.checkpoint_if_cancelled()
            return stream._items.popleft()
        try:
            return await stream.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def receive_batch(self, max_items: int | None = None) -> list[T]:
        """Wait for at least one item, then return every buffered item (up to ``max_items``).

        One checkpoint per batch, which makes it the cheapest way to drain a busy stream.

        Raises:
            The same as :meth:`receive`; an overflow or end is raised only when the batch would
            otherwise be empty.
        """
        return await self._stream.receive_batch(max_items)

    def _receive_batch_nowait(self, max_items: int | None) -> list[T]:
        """Every item buffered now (up to ``max_items``), for the blocking interface.

        Raises what :meth:`receive_nowait` raises (``trio.WouldBlock`` included) only when the
        batch would be empty, as :meth:`receive_batch` does.
        """
        batch = [self.receive_nowait()]
        items = self._stream._items
        while items and (max_items is None or len(batch) < max_items):
            batch.append(items.popleft())
        return batch

    def close(self) -> None:
        """Close and unregister the subscription; buffered items are discarded. Idempotent."""
        self._stream.close()

    async def aclose(self) -> None:
        """Close and unregister the subscription; see :meth:`close`. A checkpoint."""
        self._stream.close()
        await trio.lowlevel.checkpoint()

    def statistics(self) -> SubscriptionStatistics:
        """Return the subscription's figures."""
        return self._stream.statistics()


class _Failed:
    """A buffered item whose conversion failed while a batch was taken: raised on its turn."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


class _ConvertingSubscription(Subscription[T]):
    """A subscription whose stream holds raw items, converted by the call that takes each one.

    See the module docstring. The feed puts raw items (see :func:`open_converting_subscription`);
    the stream is typed as the base class's but holds those, and :class:`_Failed` markers.
    """

    def __init__(
        self,
        stream: _Stream[Any],
        convert: Callable[[Any], T],
        unregister: Callable[[], None] | None = None,
        abandoned: list[Callable[[], None]] | None = None,
    ) -> None:
        super().__init__(stream, unregister, abandoned)
        self._convert = convert
        self._raw: deque[Any] = stream._items

    def _take(self, raw: object) -> T:
        if type(raw) is _Failed:
            raise raw.error
        return self._convert(raw)

    def _drain(self, batch: list[T], max_items: int | None) -> list[T]:
        """Convert and append buffered items up to a failure, which stays first in the buffer."""
        raw_items = self._raw
        while raw_items and (max_items is None or len(batch) < max_items):
            raw = raw_items[0]
            if type(raw) is _Failed:
                break
            try:
                item = self._convert(raw)
            except Exception as exc:
                raw_items[0] = _Failed(exc)
                break
            raw_items.popleft()
            batch.append(item)
        return batch

    def receive_nowait(self) -> T:
        """Take and convert the next item without waiting; see :meth:`Subscription.receive_nowait`.

        Raises:
            Exception: what the conversion raised for this item (:class:`DecodeError`).
        """
        return self._take(self._stream.receive_nowait())

    async def receive(self) -> T:
        """Wait for, convert and return the next item; see :meth:`Subscription.receive`.

        Raises:
            Exception: what the conversion raised for this item (:class:`DecodeError`).
        """
        stream = self._stream
        if stream._items and not stream._closed:
            await trio.lowlevel.checkpoint_if_cancelled()
            return self._take(self._raw.popleft())
        return self._take(await stream.receive())

    async def __anext__(self) -> T:
        """The next item of ``async for``, converted: :meth:`receive`, not the base class's
        inline fast path, which would hand out raw items."""
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def receive_batch(self, max_items: int | None = None) -> list[T]:
        """Wait for at least one item, then return the buffered items, converted.

        The batch stops before an item whose conversion fails; the next call raises for it.

        Raises:
            The same as :meth:`receive`.
        """
        if max_items is not None and max_items < 1:
            raise ValueError("max_items must be at least 1")
        first = await self.receive()
        return self._drain([first], max_items)

    def _receive_batch_nowait(self, max_items: int | None) -> list[T]:
        return self._drain([self.receive_nowait()], max_items)


class Feed(Generic[T]):
    """The producer's end of a subscription: :meth:`put` and :meth:`end`; see the module
    docstring. Made by :func:`open_subscription`."""

    __slots__ = ("put", "stream")

    def __init__(self, stream: _Stream[T]) -> None:
        self.stream = stream
        # A bound method stored once: put() is the reader's hot path, one call per item.
        self.put: Callable[[T], None] = stream._put
        """Add an item without blocking, applying the overflow policy when the buffer is full."""

    def end(self, error: BaseException | None) -> None:
        """End the stream: after the buffered items, raise the error or ``EndOfChannel``."""
        self.stream._end(error)

    def __repr__(self) -> str:
        return f"<Feed of {self.stream!r}>"

    @property
    def dropped(self) -> int:
        """Items dropped by the overflow policy so far."""
        return self.stream._dropped


def open_subscription(
    name: str,
    *,
    buffer: int = DEFAULT_BUFFER,
    overflow: str = "error",
    on_close: Callable[[Feed[T]], None] | None = None,
    abandoned: list[Callable[[], None]] | None = None,
) -> tuple[Feed[T], Subscription[T]]:
    """Make a subscription: the producer's :class:`Feed` and the consumer's end.

    Args:
        name: What it receives, for statistics and logs.
        buffer: Items held before the overflow policy applies.
        overflow: ``"error"``, ``"drop_oldest"`` or ``"drop_newest"``.
        on_close: Called with the feed when the consumer closes the subscription (to
            unregister it).
        abandoned: The owner's queue of abandoned subscriptions: when one is
            garbage-collected without being closed (in any thread), its ``on_close`` call is
            appended to it, for the owner to run at its next safe point with
            :func:`purge_abandoned` (see the module docstring).

    Raises:
        ValueError: for a buffer below 1 or an unknown policy.
    """
    stream: _Stream[T] = _Stream(name, buffer=buffer, overflow=overflow)
    feed = Feed(stream)
    unregister = None
    if on_close is not None:

        def unregister() -> None:
            on_close(feed)

        stream._on_close = unregister
    return feed, Subscription(stream, unregister if abandoned is not None else None, abandoned)


def purge_abandoned(abandoned: list[Callable[[], None]]) -> None:
    """Unregister every subscription queued in ``abandoned``.

    Call it in the owner's trio thread, and never while iterating over a list of feeds.
    """
    while abandoned:
        abandoned.pop()()


def open_converting_subscription(
    name: str,
    convert: Callable[[R], T],
    *,
    buffer: int = DEFAULT_BUFFER,
    overflow: str = "error",
    on_close: Callable[[Feed[R]], None] | None = None,
    abandoned: list[Callable[[], None]] | None = None,
) -> tuple[Feed[R], Subscription[T]]:
    """Make a subscription whose feed puts ``R`` items that ``convert`` turns into ``T`` items.

    The conversion runs in the consumer's call that takes each item (see the module docstring);
    the other arguments and errors are those of :func:`open_subscription`.
    """
    stream: _Stream[R] = _Stream(name, buffer=buffer, overflow=overflow)
    feed = Feed(stream)
    unregister = None
    if on_close is not None:

        def unregister() -> None:
            on_close(feed)

        stream._on_close = unregister
    # The stream holds the raw items; the handle converts them as they are taken.
    subscription: Subscription[T] = _ConvertingSubscription(
        cast("_Stream[Any]", stream),
        convert,
        unregister if abandoned is not None else None,
        abandoned,
    )
    return feed, subscription
