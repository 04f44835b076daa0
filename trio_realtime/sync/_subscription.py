"""The blocking face of a subscription: ``receive(timeout=...)`` and ``for item in sub``."""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Generic, TypeVar

import trio

from .. import Subscription as AsyncSubscription
from .. import SubscriptionStatistics
from ._portal import Portal, check_timeout

T = TypeVar("T")


def _take_batch_nowait(sub: AsyncSubscription[T], max_items: int | None) -> list[T]:
    """Every item buffered now (up to ``max_items``); ``trio.WouldBlock`` when there is none.

    An overflow or an end is raised only for an empty batch, as ``receive_batch`` does: the
    items counted by ``statistics().buffered`` come before either. With a decoder, the batch
    stops before a message it refuses, and the next call raises :class:`DecodeError` for it.
    """
    return sub._receive_batch_nowait(max_items)


class Subscription(Generic[T]):
    """A bounded stream of items of one kind, read by blocking calls.

    It wraps the async :class:`trio_realtime.Subscription` that the same factory of the async
    API returns, with the same buffer, overflow policy and items: it is registered from the
    moment it is created, so nothing is missed before the first ``receive``. Iterate over it
    (``for item in sub``: the loop ends when the channel is left) or call :meth:`receive`;
    ``with sub:`` closes it at the end of the block.

    Items stay in the async subscription's buffer until a call takes them, so the overflow
    policy applies exactly as in the async API. Any thread may read it, and several threads may
    read the same subscription (each item goes to one of them).
    """

    def __init__(self, portal: Portal[Any], subscription: AsyncSubscription[T]) -> None:
        self._portal = portal
        self._sub = subscription
        name = subscription.statistics().name
        self._what = f"receive on {name}"
        self._what_batch = f"receive_batch on {name}"
        # Items taken by a call whose caller was interrupted before it got them: they come
        # first, so an interrupt never loses an item.
        self._salvaged: deque[T] = deque()

    def __repr__(self) -> str:
        return f"<sync {self._sub!r}>"

    @property
    def subscription(self) -> AsyncSubscription[T]:
        """The async subscription behind this one (use it only in the client's trio thread)."""
        return self._sub

    def _salvage(self, item: T) -> None:
        self._salvaged.append(item)

    def _salvage_batch(self, batch: list[T]) -> None:
        self._salvaged.extend(batch)

    def receive(self, *, timeout: float | None = None) -> T:
        """Wait for and return the next item.

        Args:
            timeout: Seconds to wait at most; ``None`` waits as long as it takes.

        Raises:
            SyncTimeout: no item arrived in time (no item is lost).
            SubscriptionOverflow: after the items buffered before an overflow, with
                ``overflow="error"``.
            ChannelClosed: after the buffered items, when the server closed the channel.
            trio.EndOfChannel: after the buffered items, when the channel was left or the
                client closed.
            trio.ClosedResourceError: after :meth:`close`.
        """
        checked = check_timeout(timeout)
        if self._salvaged:
            try:
                return self._salvaged.popleft()
            except IndexError:  # taken by another thread meanwhile
                pass
        sub = self._sub
        return self._portal.run(
            sub.receive,
            timeout=checked,
            what=self._what,
            nowait=sub.receive_nowait,
            salvage=self._salvage,
            after_close=sub.receive_nowait,
        )

    def receive_nowait(self) -> T:
        """Return the next item if one is buffered.

        Otherwise it raises what :meth:`receive` raises.

        Raises:
            trio.WouldBlock: when nothing is buffered.
        """
        if self._salvaged:
            try:
                return self._salvaged.popleft()
            except IndexError:
                pass
        sub = self._sub
        return self._portal.run_sync(sub.receive_nowait, after_close=sub.receive_nowait)

    def receive_batch(
        self, max_items: int | None = None, *, timeout: float | None = None
    ) -> list[T]:
        """Wait for at least one item, then return every buffered item (up to ``max_items``).

        One round trip to the client's thread per batch: the cheapest way to drain a busy
        stream.

        It raises what :meth:`receive` raises, an overflow or end only when the batch would
        otherwise be empty.

        Raises:
            ValueError: for ``max_items`` below 1.
        """
        if max_items is not None and (isinstance(max_items, bool) or max_items < 1):
            raise ValueError("max_items must be at least 1")
        checked = check_timeout(timeout)
        if self._salvaged:
            batch: list[T] = []
            while self._salvaged and (max_items is None or len(batch) < max_items):
                try:
                    batch.append(self._salvaged.popleft())
                except IndexError:
                    break
            if batch:
                return batch
        sub = self._sub

        def take(limit: int | None) -> list[T]:
            return _take_batch_nowait(sub, limit)

        return self._portal.run(
            sub.receive_batch,
            max_items,
            timeout=checked,
            what=self._what_batch,
            nowait=take,
            salvage=self._salvage_batch,
            after_close=take,
        )

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        """The next item; the iteration stops when the channel was left (``EndOfChannel``)."""
        try:
            return self.receive()
        except trio.EndOfChannel:
            raise StopIteration from None

    def close(self) -> None:
        """Close and unregister the subscription; buffered items are discarded. Idempotent.

        A no-op once the client is closed.
        """
        self._salvaged.clear()
        sub = self._sub
        self._portal.run_sync(sub.close, after_close=sub.close)

    def __enter__(self) -> Subscription[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def ended(self) -> bool:
        """Whether the stream has ended (items may still be buffered)."""
        return self._sub.ended

    def statistics(self) -> SubscriptionStatistics:
        """Return the subscription's figures (``buffered`` counts every item not yet received)."""
        sub = self._sub
        stats = self._portal.run_sync(sub.statistics, after_close=sub.statistics)
        if self._salvaged:
            stats = dataclasses.replace(stats, buffered=stats.buffered + len(self._salvaged))
        return stats
