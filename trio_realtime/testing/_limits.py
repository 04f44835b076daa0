"""The Realtime server's rate limits, for the local server (all off unless configured).

What the real server counts, and what it does past each limit (``realtime_channel.ex``,
``presence_handler.ex``, ``broadcast_handler.ex``, ``tenant_rate_limiters.ex``,
``rate_counter.ex``):

* **joins per second** (tenant-wide ``max_joins_per_second``, default 100): every join that
  gets past the users check counts. While the limit is triggered a join is refused with
  ``ClientJoinRateLimitReached: Too many joins per second`` and the socket is then closed with
  1001, and new connections are refused with HTTP 429 ``Too many joins per second``;
* **concurrent users** (``max_concurrent_users``, default 200): connections with at least one
  joined channel. A further connection's first join is refused with
  ``ConnectionRateLimitReached: Too many connected users``, and new connections get HTTP 429
  ``Too many connected users``;
* **events per second** (tenant-wide ``max_events_per_second``, default 100): every broadcast a
  client sends, every unknown event, and every broadcast delivered to a channel. A channel that
  receives a broadcast while the limit is triggered gets it, then ``system`` error
  ``Too many messages per second`` and ``phx_close``;
* **presence events per second** (tenant-wide ``max_presence_events_per_second``, default
  1000): each track, each ``presence_state`` sent at join and each ``presence_diff`` delivered.
  A track or join while the average is above the limit closes the channel with
  ``Too many presence messages per second``;
* **presence calls per channel** (``client_presence_max_calls`` per
  ``client_presence_window``, default 5 per 30 s): a sixth ``presence`` message within the
  window closes the channel with ``Client presence rate limit exceeded``.

The per-second limits are rolling averages, as the server's ``RateCounter`` computes them: the
count of each 5 s tick goes into a list of the last 12 ticks (a minute; the list starts with
one empty tick when the counter starts), the average is their sum divided by their number and
by 5, and it is recomputed at each tick only: a limit becomes triggered at the tick where the
average reaches it, and stays so until a tick where the average is below it again.

A counter starts when it is first used, as the server's are (``RateCounter.new``/``get``): the
joins counter at the first connection or join, the events and presence counters at the first
join. Every :data:`IDLE_SHUTDOWN` seconds after it starts, a counter whose whole list is empty
stops (``rate_counter.ex`` ``handle_info(:idle_shutdown)``), and the next use starts a new one,
with its ticks counted from then and its list empty again: after five quiet minutes a burst is
averaged over a short list, and triggers a limit sooner than over a full minute. All in trio's
time (virtual under ``MockClock``), lazily: nothing runs in the background.

**Payload size** (not a rate, and always on, as on the server): a presence ``track`` whose
payload's Erlang external term size (:func:`term_size`, what ``:erlang.external_size/1``
measures; ``tenants.ex`` ``validate_payload_size/2``) is over :data:`MAX_PAYLOAD_SIZE` closes
the channel with ``Track message size exceeded`` (``presence_handler.ex`` ``track/2``, checked
after the not-a-map and unchanged-payload checks and before the presence rate).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

TICK = 5.0
"""Seconds per counting interval of a rolling average."""

BUCKETS = 12
"""Intervals a rolling average spans (one minute)."""

IDLE_SHUTDOWN = 300.0
"""Seconds between a counter's idle checks; one with an empty list then stops."""

MAX_PAYLOAD_SIZE = 3_000 * 1000 + 500
"""The tenant's ``max_payload_size_in_kb`` default (3000) times 1000, plus 500 bytes."""

TRACK_TOO_LARGE = "Track message size exceeded"
TOO_MANY_JOINS = "ClientJoinRateLimitReached: Too many joins per second"
TOO_MANY_USERS = "ConnectionRateLimitReached: Too many connected users"
TOO_MANY_EVENTS = "Too many messages per second"
TOO_MANY_PRESENCE = "Too many presence messages per second"
CLIENT_PRESENCE = "Client presence rate limit exceeded"
CONNECT_TOO_MANY_JOINS = "Too many joins per second"
CONNECT_TOO_MANY_USERS = "Too many connected users"
CLOSE_GOING_AWAY = 1001
"""The close code after a join refused for the join rate (Phoenix's ``disconnect``)."""


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Rate limits for :func:`~trio_realtime.testing.serve_realtime`; ``None`` turns one off.

    The channels-per-connection limit is ``serve_realtime(max_channels_per_client=)``.
    :meth:`supabase` gives the hosted server's defaults.

    Attributes:
        max_joins_per_second: Joins per second over all connections (rolling average).
        max_concurrent_users: Connections that may have joined channels at once.
        max_events_per_second: Broadcast events per second over all channels (rolling).
        max_presence_events_per_second: Presence events per second over all channels.
        client_presence_max_calls: Presence messages a channel may send per window.
        client_presence_window: The window of ``client_presence_max_calls``, in seconds.
    """

    max_joins_per_second: float | None = None
    max_concurrent_users: int | None = None
    max_events_per_second: float | None = None
    max_presence_events_per_second: float | None = None
    client_presence_max_calls: int | None = None
    client_presence_window: float = 30.0

    def __post_init__(self) -> None:
        for name in (
            "max_joins_per_second",
            "max_concurrent_users",
            "max_events_per_second",
            "max_presence_events_per_second",
            "client_presence_max_calls",
        ):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive, or None to turn it off")
        if not self.client_presence_window > 0:
            raise ValueError("client_presence_window must be positive")

    @classmethod
    def supabase(cls) -> RateLimits:
        """The hosted server's defaults: 100 joins/s, 200 users, 100 events/s, 1000 presence
        events/s, 5 presence messages per channel per 30 s."""
        return cls(100, 200, 100, 1000, 5, 30.0)


class RateCounter:
    """A rolling average of events per second with a limit, as the server's ``RateCounter``.

    Args:
        limit: The average at which the limit triggers.
        now: Trio time at which the counter starts (its first, empty, tick), or ``None`` to
            start it at its first use.
    """

    __slots__ = (
        "_buckets",
        "_origin",
        "_pending",
        "_running",
        "_ticks",
        "average",
        "limit",
        "triggered",
    )

    def __init__(self, limit: float, now: float | None) -> None:
        self.limit = limit
        self._origin = 0.0
        self._ticks = 0
        self._pending = 0
        self._buckets: deque[int] = deque([0], maxlen=BUCKETS)
        self.average = 0.0
        self.triggered = False
        self._running = False
        if now is not None:
            self.start(now)

    @property
    def running(self) -> bool:
        """Whether the counter runs (it has started and not stopped idle since)."""
        return self._running

    def start(self, now: float) -> None:
        """Start the counter at ``now`` unless it runs: an empty list, ticks from ``now``."""
        if self._running:
            return
        self._running = True
        self._origin = now
        self._ticks = 0
        self._pending = 0
        self._buckets = deque([0], maxlen=BUCKETS)
        self.average = 0.0
        self.triggered = False

    def advance(self, now: float) -> None:
        """Run the ticks and idle checks due by ``now``; then start again if it had stopped
        (every use of a stopped counter starts a new one, as ``RateCounter.get`` does)."""
        if self._running:
            self._run_ticks(now)
        self.start(now)

    def _run_ticks(self, now: float) -> None:
        due = math.floor((now - self._origin) / TICK)
        idle_ticks = round(IDLE_SHUTDOWN / TICK)
        while self._ticks < due:
            self._ticks += 1
            self._buckets.appendleft(self._pending)
            self._pending = 0
            self.average = sum(self._buckets) / len(self._buckets) / TICK
            # Triggered at a tick whose average reaches the limit; released at one below it.
            self.triggered = self.average >= self.limit
            if any(self._buckets):
                continue
            if self._ticks % idle_ticks == 0:
                self._running = False  # the idle check: nothing counted for a whole list
                return
            # Nothing changes before the next idle check: go straight to it.
            self._ticks = min(due, (self._ticks // idle_ticks + 1) * idle_ticks - 1)

    def add(self, now: float, count: int = 1) -> None:
        """Count ``count`` events at ``now``."""
        self.advance(now)
        self._pending += count

    def is_triggered(self, now: float) -> bool:
        """Whether the limit is triggered as of the last tick."""
        self.advance(now)
        return self.triggered

    def average_at(self, now: float) -> float:
        """The average as of the last tick."""
        self.advance(now)
        return self.average


def term_size(value: object) -> int:
    """The size of a decoded JSON value in Erlang's external term format, version byte included.

    What ``:erlang.external_size/1`` returns for the term Jason decodes (strings are binaries,
    objects maps, arrays lists, ``null``/``true``/``false`` atoms).
    """
    return 1 + _term_size(value)


def _term_size(value: object) -> int:
    if value is None:
        return 5  # SMALL_ATOM_UTF8_EXT "nil"
    if value is True:
        return 6
    if value is False:
        return 7
    if isinstance(value, str):
        return 5 + len(value.encode())  # BINARY_EXT
    if isinstance(value, int):
        if 0 <= value <= 255:
            return 2  # SMALL_INTEGER_EXT
        if -(2**31) <= value < 2**31:
            return 5  # INTEGER_EXT
        digits = (abs(value).bit_length() + 7) // 8
        return 3 + digits if digits < 256 else 6 + digits  # SMALL_BIG_EXT / LARGE_BIG_EXT
    if isinstance(value, float):
        return 9  # NEW_FLOAT_EXT
    if isinstance(value, dict):
        return 5 + sum(_term_size(k) + _term_size(v) for k, v in value.items())  # MAP_EXT
    if isinstance(value, list):
        if not value:
            return 1  # NIL_EXT
        if len(value) < 65536 and all(
            isinstance(item, int) and not isinstance(item, bool) and 0 <= item <= 255
            for item in value
        ):
            return 3 + len(value)  # STRING_EXT
        return 6 + sum(_term_size(item) for item in value)  # LIST_EXT and its NIL_EXT tail
    raise TypeError(f"not a decoded JSON value: {type(value).__name__}")


def track_too_large(payload: object) -> bool:
    """Whether a presence track payload is over the server's payload size limit."""
    return term_size(payload) > MAX_PAYLOAD_SIZE


class PresenceWindow:
    """A channel's presence-call window: ``max_calls`` per ``window`` seconds."""

    __slots__ = ("_count", "_max_calls", "_reset_at", "_window")

    def __init__(self, max_calls: int, window: float) -> None:
        self._max_calls = max_calls
        self._window = window
        self._count = 0
        self._reset_at: float | None = None

    def allow(self, now: float) -> bool:
        """Count one call at ``now``; ``False`` when it is over the limit (not counted)."""
        if self._reset_at is None or now > self._reset_at:
            self._count = 1
            self._reset_at = now + self._window
            return True
        if self._count >= self._max_calls:
            return False
        self._count += 1
        return True


class Limiter:
    """The limits of one server, and its counters (see the module docstring)."""

    def __init__(self, limits: RateLimits, now: float) -> None:
        self.limits = limits
        del now  # the counters start at their first use, as the server's do
        self.joins = (
            RateCounter(limits.max_joins_per_second, None)
            if limits.max_joins_per_second is not None
            else None
        )
        self.events = (
            RateCounter(limits.max_events_per_second, None)
            if limits.max_events_per_second is not None
            else None
        )
        self.presence = (
            RateCounter(limits.max_presence_events_per_second, None)
            if limits.max_presence_events_per_second is not None
            else None
        )
        self.users: set[int] = set()
        """Ids of the connections with at least one joined channel."""

    def connect_refusal(self, now: float) -> str | None:
        """The HTTP 429 message refusing a new connection now, if any."""
        maximum = self.limits.max_concurrent_users
        if maximum is not None and len(self.users) >= maximum:
            return CONNECT_TOO_MANY_USERS
        if self.joins is not None and self.joins.is_triggered(now):
            return CONNECT_TOO_MANY_JOINS
        return None

    def join_refusal(self, connection_id: int, now: float) -> str | None:
        """Check and count a join, in the server's order (users, then the join rate).

        A join starts the events and presence counters if they do not run (the server's
        ``assign_counter`` and ``assign_presence_counter`` at join).
        """
        for counter in (self.events, self.presence):
            if counter is not None:
                counter.advance(now)
        maximum = self.limits.max_concurrent_users
        if maximum is not None and connection_id not in self.users and len(self.users) >= maximum:
            return TOO_MANY_USERS
        if self.joins is not None:
            if self.joins.is_triggered(now):
                return TOO_MANY_JOINS
            self.joins.add(now)
        return None

    def count_event(self, now: float) -> None:
        """Count an event a client sent (a broadcast, or an event the server ignores)."""
        if self.events is not None:
            self.events.add(now)

    def delivered_event(self, now: float) -> bool:
        """Count a broadcast delivered to a channel; ``True`` when that channel must close."""
        if self.events is None:
            return False
        self.events.add(now)
        return self.events.triggered

    def presence_allowed(self, now: float) -> bool:
        """Check and count a presence event (track, or state sent at join)."""
        if self.presence is None:
            return True
        if self.presence.average_at(now) > self.presence.limit:
            return False
        self.presence.add(now)
        return True

    def delivered_presence(self, now: float, count: int) -> None:
        """Count ``count`` presence diffs delivered."""
        if self.presence is not None and count:
            self.presence.add(now, count)

    def presence_window(self) -> PresenceWindow | None:
        """A new channel's presence-call window, when that limit is on."""
        calls = self.limits.client_presence_max_calls
        if calls is None:
            return None
        return PresenceWindow(calls, self.limits.client_presence_window)
