"""Pacing of rejoins: spread many channels' joins over time instead of sending them at once.

After a reconnect every channel rejoins. Sent all at once they count against the server's
tenant-wide joins-per-second limit (``ClientJoinRateLimitReached``, which closes the whole
connection with 1001) in one burst, from every client that reconnected at the same moment.
:class:`JoinPacer` lets the first ``rate`` joins of a connection go at once, then one every
``1 / rate`` seconds, in the order they asked. It uses trio's clock only and no randomness, so
under ``MockClock`` the join times are exact.
"""

from __future__ import annotations

import trio


class JoinPacer:
    """A token bucket of ``rate`` joins per second holding at most ``max(1, rate)`` tokens.

    Each join takes a token. When none is left it reserves the next one (the count goes below
    zero) and sleeps until that token is due, so the waiters go out ``1 / rate`` seconds apart
    in their order, without a lock.

    Args:
        rate: Joins per second, positive.
        now: Trio time at which the bucket is full.
    """

    __slots__ = ("_capacity", "_rate", "_tokens", "_updated")

    def __init__(self, rate: float, now: float) -> None:
        self._rate = rate
        self._capacity = max(1.0, rate)
        self._tokens = self._capacity
        self._updated = now

    async def wait(self) -> None:
        """Wait for this join's turn. A checkpoint; a cancelled wait gives its token back."""
        now = trio.current_time()
        self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        self._tokens -= 1
        if self._tokens >= 0:
            await trio.lowlevel.checkpoint()
            return
        try:
            await trio.sleep(-self._tokens / self._rate)
        except trio.Cancelled:
            self._tokens += 1
            raise
