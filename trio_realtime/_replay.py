"""Broadcast replay on private channels: the join option, and catching up after a gap.

Realtime stores the broadcasts that go through ``realtime.messages`` (``realtime.send()`` and
``realtime.broadcast_changes()`` from the database) and, when a private channel joins with
``config.broadcast.replay = {"since": <unix ms>, "limit": <n>}``, pushes the newest ``limit``
of those inserted at or after ``since`` right after the join reply, oldest first, each with
``meta = {"id": <uuid>, "replayed": true}``. The server's limits:

* private channels only (``UnableToReplayMessages: Replay is not allowed for public channels``);
* ``limit`` is clamped to 1..25 (:data:`MAX_REPLAY_LIMIT`), 25 when not given;
* stored messages are kept 72 hours (older partitions are dropped);
* a live copy of a message that was just replayed is not sent again.

:class:`ReplayTracker` is the client's half, one per channel with replay or catch-up: it builds
the ``replay`` object of each join, remembers when the last broadcast arrived and which ids it
has delivered, and drops a replayed message whose id was delivered already. With
``replay_on_rejoin``, every rejoin (after a reconnect, a server ``phx_error`` or a binding
change) asks for the messages since the last one seen, less :data:`CATCH_UP_MARGIN`, so that
what was stored during the gap arrives with ``meta.replayed`` before live traffic resumes.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Final

from ._frames import JSONObject, JSONValue

MAX_REPLAY_LIMIT: Final = 25
"""The server's hard limit on replayed messages per join (``Realtime.Messages``)."""

RETENTION_SECONDS: Final = 72 * 3600
"""How long the server keeps stored messages (older ones cannot be replayed)."""

CATCH_UP_MARGIN: Final = 10.0
"""Seconds subtracted from the time of the last message seen when a rejoin asks to catch up:
room for clock skew between this host and the database (duplicates are dropped by id)."""

SEEN_IDS: Final = 1000
"""Message ids remembered for dropping replayed duplicates (the oldest are forgotten first)."""


def replay_since_ms(value: object) -> int:
    """Turn ``replay_since`` into Unix milliseconds, as the server takes it.

    Raises:
        ValueError: for a naive datetime or a negative time.
        TypeError: for anything but an aware ``datetime`` or an ``int``.
    """
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("replay_since must be a timezone-aware datetime (or epoch ms)")
        millis = int(value.timestamp() * 1000)
    elif isinstance(value, int) and not isinstance(value, bool):
        millis = value
    else:
        raise TypeError(
            "replay_since must be a timezone-aware datetime or epoch milliseconds (int), not "
            f"{type(value).__name__}"
        )
    if millis < 0:
        raise ValueError("replay_since must not be before 1970")
    return millis


def check_replay(
    *, private: bool, since: object, limit: object, on_rejoin: bool
) -> tuple[int | None, int | None]:
    """Validate the channel's replay options; return ``(since_ms, limit)``.

    Raises:
        ValueError: replay on a public channel (as realtime-js refuses it), a limit outside
            1..25, or a limit without ``replay_since``.
        TypeError: for values of the wrong type.
    """
    if since is None and limit is None and not on_rejoin:
        return None, None
    if not private:
        raise ValueError(
            "replay needs a private channel (private=True): the server refuses replay on "
            "public channels"
        )
    if since is None and limit is not None:
        raise ValueError("replay_limit needs replay_since")
    checked_limit: int | None = None
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool):
            raise TypeError("replay_limit must be an int")
        if not 1 <= limit <= MAX_REPLAY_LIMIT:
            raise ValueError(f"replay_limit must be between 1 and {MAX_REPLAY_LIMIT}")
        checked_limit = limit
    return (replay_since_ms(since) if since is not None else None), checked_limit


class ReplayTracker:
    """One channel's replay settings and what it has seen.

    Args:
        since_ms: ``replay_since`` in Unix ms, or ``None`` (no replay on the first join).
        limit: ``replay_limit``, or ``None`` (the server's 25).
        on_rejoin: Catch up on every rejoin from the last message seen.
        clock: Wall-clock seconds (``time.time``; replaceable in tests).
    """

    def __init__(
        self,
        since_ms: int | None,
        limit: int | None,
        *,
        on_rejoin: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.since_ms = since_ms
        self.limit = limit
        self.on_rejoin = on_rejoin
        self._clock = clock
        self._last_seen: float | None = None
        self._last_joined: float | None = None
        self._seen: set[str] = set()
        self._seen_order: deque[str] = deque()
        self.duplicates_dropped = 0

    def options(self) -> tuple[int | None, int | None, bool]:
        """The settings, to compare with another ``client.channel`` call."""
        return self.since_ms, self.limit, self.on_rejoin

    def join_replay(self, rejoin: bool) -> JSONObject | None:
        """The ``config.broadcast.replay`` object for the next join, or ``None``."""
        since = self.since_ms
        if rejoin and self.on_rejoin:
            last = self._last_seen if self._last_seen is not None else self._last_joined
            if last is not None:
                catch_up = int((last - CATCH_UP_MARGIN) * 1000)
                since = catch_up if since is None else max(since, catch_up)
        if since is None:
            return None
        replay: JSONObject = {"since": max(since, 0)}
        if self.limit is not None:
            replay["limit"] = self.limit
        return replay

    def joined(self) -> None:
        """Note that a join succeeded (the point a later catch-up starts from, if nothing
        arrives)."""
        self._last_joined = self._clock()

    def accept(self, meta: JSONValue) -> bool:
        """Record a broadcast about to be delivered; ``False`` for a replayed duplicate."""
        self._last_seen = self._clock()
        if not isinstance(meta, dict):
            return True
        message_id = meta.get("id")
        if not isinstance(message_id, str):
            return True
        if message_id in self._seen:
            if meta.get("replayed") is True:
                self.duplicates_dropped += 1
                return False
            return True
        self._seen.add(message_id)
        self._seen_order.append(message_id)
        if len(self._seen_order) > SEEN_IDS:
            self._seen.discard(self._seen_order.popleft())
        return True
