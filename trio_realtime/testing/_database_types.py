"""The database-backed server's public types, importable without psycopg."""

from __future__ import annotations

from dataclasses import dataclass


class DatabaseSetupError(RuntimeError):
    """The database cannot serve postgres_changes; the message says what to change."""


@dataclass(frozen=True, slots=True)
class DatabaseStatistics:
    """Counters of the database poller; see ``server.database.statistics()``.

    Attributes:
        polls: Reads of the replication slot.
        changes_decoded: Row changes read from the slot.
        messages_queued: ``postgres_changes`` messages queued to channels.
        poll_errors: Polls that failed (logged, then retried).
        reconnects: Times the poll connection was re-opened with a new slot.
        broadcasts_queued: Broadcasts from the database (``realtime.send``) queued to channels.
        subscribed_channels: Joined channels whose postgres_changes bindings are streaming.
    """

    polls: int
    changes_decoded: int
    messages_queued: int
    poll_errors: int
    reconnects: int
    broadcasts_queued: int
    subscribed_channels: int
