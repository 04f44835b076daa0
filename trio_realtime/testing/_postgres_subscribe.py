"""Subscribing a channel's postgres_changes bindings, with the server's retries (RS-04).

The real server (``realtime_channel.ex`` ``handle_info(:postgres_subscribe)``) subscribes right
after the join reply and then sends one ``system`` message with extension
``postgres_changes``:

* ``ok`` "Subscribed to PostgreSQL" once subscribed;
* ``error`` with a parameter error (``:malformed_subscription_params``: a filter or ``select``
  that does not parse, no schema nor table) or a refused insert (``:subscription_insert_failed``:
  "Unable to subscribe to changes with given parameters. ..."): final, never retried;
* ``error`` with anything else, such as a database that does not answer
  (``{:error, "Too many database timeouts"}``, an ``inspect``-ed term): retried after a random
  5 to 10 s, each failure sent again, until "Subscribed to PostgreSQL".

The local server retries after :data:`RETRY_DELAY` seconds exactly, so that tests under
``MockClock`` can count on the times. Failures come from the database (a database-backed server
whose database does not answer) or from :meth:`RealtimeServer.fail_postgres_subscriptions`.
"""

from __future__ import annotations

from collections import deque
from typing import Final

import trio

from ._state import Channel, Hub

RETRY_DELAY: Final = 5.0
"""Seconds before a retried subscription (the real server waits a random 5 to 10 s)."""

DATABASE_TIMEOUTS: Final = '{:error, "Too many database timeouts"}'
"""The server's message when the database does not answer (retried)."""


def add_failures(hub: Hub, topic: str, count: int, message: str) -> None:
    """Make the next ``count`` subscription attempts of channels on ``topic`` fail."""
    failures = hub.postgres_failures.setdefault(topic, deque())
    failures.extend([message] * count)


async def attempt(hub: Hub, channel: Channel) -> str | None:
    """Try to subscribe ``channel``'s bindings once; return the error message, or ``None``.

    A checkpoint (the database's check runs in a worker thread).
    """
    failures = hub.postgres_failures.get(channel.topic)
    if failures:
        message = failures.popleft()
        if not failures:
            del hub.postgres_failures[channel.topic]
        await trio.lowlevel.checkpoint()
        return message
    if hub.database is not None:
        return await hub.database.subscribe(channel)
    await trio.lowlevel.checkpoint()
    return None
