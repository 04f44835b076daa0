"""A server connection's bounded send buffer and its single writer, frames and controls in line.

Send buffer policy: the buffer holds at most ``send_buffer`` frames, counting the batch the
writer is handing to the transport. :meth:`SendBuffer.put` refuses a frame that arrives at a full
buffer; the connection then knows its client is not reading fast enough and drops it at once,
with no close frame, counted in ``ServerStatistics.dropped_slow_connections``. This is what the
real server does to a socket whose process heap passes 50 MB (a TCP drop), and it keeps the
server's memory bounded by ``send_buffer`` frames per connection however hard it is flooded.

Control items share the buffer so they keep their place in line: a :class:`Delay` marker
(``reply_delay``: the writer holds everything behind it until the marker's time) and a
:class:`Close` request (the writer hands it to the connection, which stops the reader and closes
the transport with the given code after the frames before it). Control items are few (one per
delayed reply or per fault call), so they bypass the bound.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

import trio

from .._transport import OutgoingMessage, Transport

WRITE_BATCH = 1024
"""Most frames the writer hands to the transport in one call."""


@dataclass(frozen=True, slots=True)
class Delay:
    """Hold everything queued behind this marker until trio time ``due``."""

    due: float


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection with ``code`` once everything queued before has been written."""

    code: int
    reason: str


Item = OutgoingMessage | Delay | Close


class SendBuffer:
    """The frames and control items queued for one client, and the writer that sends them.

    Args:
        capacity: The most frames the buffer holds (the batch being written included).
    """

    def __init__(self, capacity: int) -> None:
        self._queue: deque[Item] = deque()
        self._capacity = capacity
        self._controls = 0
        self._in_flight = 0
        self._writer_parked = False
        self._writer_lot = trio.lowlevel.ParkingLot()
        self._written_lot = trio.lowlevel.ParkingLot()
        self.frames_sent = 0
        """Frames handed to the transport."""

    @property
    def pending(self) -> int:
        """Frames queued and not yet handed to the transport (the batch in hand included)."""
        return len(self._queue) - self._controls + self._in_flight

    def put(self, item: OutgoingMessage) -> bool:
        """Queue an encoded frame and wake the writer; never blocks.

        Returns:
            ``False``, queueing nothing, when the buffer is full (or cleared).
        """
        queue = self._queue
        if len(queue) + self._in_flight < self._capacity:
            queue.append(item)
            if self._writer_parked:
                self._writer_parked = False
                self._writer_lot.unpark()
            return True
        return False

    def put_control(self, item: Delay | Close) -> None:
        """Queue a control item behind the frames already queued, and wake the writer."""
        self._queue.append(item)
        self._controls += 1
        if self._writer_parked:
            self._writer_parked = False
            self._writer_lot.unpark()

    def clear(self) -> None:
        """Drop everything queued and accept nothing more (the connection has ended)."""
        self._capacity = 0
        self._queue.clear()
        self._controls = 0
        self._in_flight = 0
        self._written_lot.unpark_all()

    async def wait_written(self) -> None:
        """Wait until the writer has handed a batch to the transport, or the buffer is cleared."""
        await self._written_lot.park()

    async def write_to(
        self,
        transport: Transport,
        sent: Callable[[int], None],
        close: Callable[[Transport, Close], Awaitable[None]],
    ) -> None:
        """Write everything queued to ``transport``, in order, until a :class:`Close` item.

        Frames go out in batches of up to :data:`WRITE_BATCH`, each reported to ``sent`` with
        its size; a :class:`Delay` is waited out; a :class:`Close` is handed to ``close``, and
        then this returns.

        Raises:
            ConnectionClosed: when the transport fails.
        """
        queue = self._queue
        while True:
            if not queue:
                self._writer_parked = True
                await self._writer_lot.park()
                continue
            if not self._controls:
                if len(queue) <= WRITE_BATCH:
                    batch = cast("list[OutgoingMessage]", list(queue))
                    queue.clear()
                else:
                    batch = cast(
                        "list[OutgoingMessage]", [queue.popleft() for _ in range(WRITE_BATCH)]
                    )
            else:
                # Only tuples before the first control item; then the control item itself.
                batch = []
                while queue and type(queue[0]) is tuple and len(batch) < WRITE_BATCH:
                    batch.append(cast("OutgoingMessage", queue.popleft()))
                if not batch:
                    control = queue.popleft()
                    self._controls -= 1
                    if isinstance(control, Delay):
                        await trio.sleep_until(control.due)
                        continue
                    assert isinstance(control, Close)
                    await close(transport, control)
                    return
            self._in_flight = len(batch)
            await transport.send_messages(batch)
            self._in_flight = 0
            self.frames_sent += len(batch)
            sent(len(batch))
            self._written_lot.unpark_all()
