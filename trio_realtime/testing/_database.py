"""postgres_changes from a real PostgreSQL: logical decoding with wal2json, RLS per subscriber.

Theory of operation
-------------------
:func:`open_database` connects twice with psycopg 3 (blocking calls, each run in a worker thread
with ``trio.to_thread.run_sync``; a lock per connection keeps one call at a time):

* the **poll connection** creates a *temporary* logical replication slot with the wal2json
  plugin (so the slot belongs to this server and PostgreSQL drops it when the connection ends,
  however the server ends) and reads it every ``poll_interval`` seconds, at once again while
  changes keep coming, as the real server's poller does;
* the **control connection** checks subscriptions when a channel joins (the table is in the
  publication, the filter's columns exist, the role exists).

For each decoded change the poller picks the subscribed channels whose bindings name its table
and event, converts the row's values with PostgreSQL itself (``to_jsonb`` of the value cast to
its column type, what the real server's ``realtime.cast`` does), evaluates the filters on the
converted row (the old row for DELETE), and then, for each distinct (role, claims) pair,
decides visibility the way Supabase Realtime does:

* on a table with row level security, an INSERT or UPDATE is visible when the row, looked up by
  its primary key, can be selected as that role with ``request.jwt.claims`` set to the claims
  (so ``auth.uid()`` works); a policy that raises gives ``Error 500`` without the record;
* DELETEs cannot be checked against a deleted row: they go to every matching subscriber, with
  only the primary key in ``old_record`` when the table has RLS;
* ``columns``, ``record`` and ``old_record`` keep only the columns the role may select (and the
  binding's ``select`` list plus the primary key); a table without primary key gives
  ``Error 400``, a role that may not select the key ``Error 401``; a change bigger than
  ``max_record_bytes`` ``Error 413``, keeping only values of at most 64 bytes.

The objects this needs live in the schema ``trio_realtime``, created idempotently. Where the
database has no ``auth`` schema (a plain PostgreSQL, not Supabase's), ``auth.uid()``,
``auth.role()`` and ``auth.jwt()`` are created as Supabase defines them, so that policies
written for Supabase work unchanged. The ``supabase_realtime`` publication is created (empty)
when it is missing; tables join it with ``ALTER PUBLICATION supabase_realtime ADD TABLE ...``.

The setup is in ``_database_setup``, the checks of the control connection in
``_database_checks``, and the per-subscriber messages in ``_database_messages``; this module
keeps the connections and the poll loop.

Failures are visible: a poll that fails is logged, counted in :class:`DatabaseStatistics`, and
retried with a back-off; a lost connection is re-opened with a new slot (changes made while it
was down are lost, as on the real server when its slot goes away).

The module is longer than the project's usual 500 lines because the poll loop and the
connections it re-opens share their state; the setup, the checks and the messages already live
in modules of their own.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
import psycopg
import trio

from .._frames import POSTGRES_CHANGES, JSONObject, JSONValue, make_frame
from ._database_checks import TABLE_SQL, authorize_topic, check_subscription, visible_keys
from ._database_messages import (
    Change,
    Column,
    Subscriber,
    Table,
    build_message,
    decode_changes,
    select_groups,
)
from ._database_setup import connect, create_slot, prepare
from ._database_types import DatabaseStatistics
from ._jwt import unverified_claims
from ._postgres_changes import Binding
from ._postgres_subscribe import DATABASE_TIMEOUTS
from ._replay import StoredMessage, deliver_stored
from ._state import Channel, Hub, Policies, encode

logger = logging.getLogger("trio_realtime.testing")

_T = TypeVar("_T")

PUBLICATION = "supabase_realtime"
DEFAULT_POLL_INTERVAL = 0.1
DEFAULT_MAX_CHANGES = 1000
DEFAULT_MAX_RECORD_BYTES = 1024 * 1024

_ACTIONS = {"I": "INSERT", "U": "UPDATE", "D": "DELETE"}

_PRIVILEGES_SQL = """
select a.attname, has_column_privilege(coalesce(%s::name, current_user), c.oid, a.attname, 'SELECT')
from pg_class c
join pg_namespace n on n.oid = c.relnamespace
join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
where n.nspname = %s and c.relname = %s
"""


@dataclass(frozen=True, slots=True)
class _Broadcast:
    """A row inserted into ``realtime.messages`` (``realtime.send``), to broadcast."""

    topic: str
    event: str
    payload: JSONValue
    private: bool
    id: str


@dataclass(slots=True)
class _Polled:
    """What one poll found: rows read, postgres_changes messages, database broadcasts."""

    count: int
    deliveries: list[tuple[Channel, JSONObject]]
    broadcasts: list[_Broadcast]


class Database:
    """The database side of the local server; create it with :func:`open_database`."""

    def __init__(
        self,
        url: str,
        hub: Hub,
        *,
        publication: str,
        poll_interval: float,
        max_changes: int,
        max_record_bytes: int,
    ) -> None:
        self._url = url
        self._hub = hub
        self._publication = publication
        self._poll_interval = poll_interval
        self._max_changes = max_changes
        self._max_record_bytes = max_record_bytes
        self._slot = f"trio_realtime_{secrets.token_hex(6)}"
        self._poll_conn: psycopg.Connection[Any] | None = None
        self._control_conn: psycopg.Connection[Any] | None = None
        self._control_lock = trio.Lock()
        self._subscribed: dict[Channel, None] = {}
        self._claims_cache: dict[str | None, tuple[str | None, str]] = {}
        self._polls = 0
        self._changes = 0
        self._queued = 0
        self._errors = 0
        self._reconnects = 0
        self._broadcasts_sent = 0
        self._progress = trio.lowlevel.ParkingLot()
        self._wakeup = trio.Event()

    @property
    def slot_name(self) -> str:
        """The name of this server's temporary replication slot."""
        return self._slot

    @property
    def publication(self) -> str:
        """The publication whose tables are streamed."""
        return self._publication

    async def wait_until(self, predicate: Callable[[DatabaseStatistics], bool]) -> None:
        """Wait until ``predicate(self.statistics())`` holds; it is checked after every poll,
        poll failure, reconnect and new subscription. A checkpoint even when it holds already."""
        await trio.lowlevel.checkpoint()
        while not predicate(self.statistics()):
            await self._progress.park()

    def statistics(self) -> DatabaseStatistics:
        """Return a snapshot of the poller's counters."""
        return DatabaseStatistics(
            polls=self._polls,
            changes_decoded=self._changes,
            messages_queued=self._queued,
            poll_errors=self._errors,
            reconnects=self._reconnects,
            broadcasts_queued=self._broadcasts_sent,
            subscribed_channels=sum(1 for channel in self._subscribed if channel.room is not None),
        )

    # -- setup (worker thread) ------------------------------------------------------------------

    def _setup(self, tables: Sequence[str]) -> None:
        control = self._control_conn = connect(self._url)
        prepare(control, self._publication, tables)
        self._open_slot()

    def _open_slot(self) -> None:
        self._poll_conn = create_slot(self._url, self._slot)

    def _close(self) -> None:
        for conn in (self._poll_conn, self._control_conn):
            if conn is not None and not conn.closed:
                try:
                    if conn is self._poll_conn:
                        conn.execute("select pg_drop_replication_slot(%s)", (self._slot,))
                except Exception as exc:
                    logger.debug("database: dropping the slot: %s", exc)
                conn.close()

    # -- subscriptions ----------------------------------------------------------------------------

    def _check_subscription(self, bindings: tuple[Binding, ...], role: str | None) -> str | None:
        return check_subscription(self._control(), self._publication, bindings, role)

    def _authorize(self, role: str | None, claims: str, topic: str) -> Policies | None:
        return authorize_topic(self._control(), role, claims, topic)

    def _control(self) -> psycopg.Connection[Any]:
        """The control connection, opened again if it was lost (in the worker thread)."""
        conn = self._control_conn
        if conn is None or conn.closed or conn.broken:
            logger.warning("database: re-opening the control connection")
            conn = self._control_conn = connect(self._url)
        return conn

    def _claims(self, token: str | None) -> tuple[str | None, str]:
        cached = self._claims_cache.get(token)
        if cached is None:
            claims = unverified_claims(token)
            role = claims.get("role")
            cached = (role if isinstance(role, str) else None, orjson.dumps(claims).decode())
            if len(self._claims_cache) > 10_000:
                self._claims_cache.clear()
            self._claims_cache[token] = cached
        return cached

    async def subscribe(self, channel: Channel) -> str | None:
        """Check and register ``channel``'s bindings; return an error message, or ``None``.

        This is a checkpoint: the check runs on the control connection in a worker thread.
        """
        role, _claims = self._claims(channel.token)
        try:
            error = await self._on_control(self._check_subscription, channel.bindings, role)
        except Exception as exc:  # the database is gone: say so, as the server does (retried)
            logger.warning("database: subscription check failed: %s", exc)
            error = DATABASE_TIMEOUTS
        if error is None and channel.room is not None:
            self._subscribed[channel] = None
            self._progress.unpark_all()
        return error

    async def authorize(self, token: str | None, topic: str) -> Policies | None:
        """Evaluate the ``realtime.messages`` policies for ``topic`` under ``token``'s claims.

        This is a checkpoint (a worker thread on the control connection).

        Returns:
            The policies, or ``None`` when a policy raised or the database failed.
        """
        role, claims = self._claims(token)
        try:
            return await self._on_control(self._authorize, role, claims, topic)
        except Exception as exc:
            logger.warning("database: authorization check failed: %s", exc)
            return None

    async def _on_control(self, function: Callable[..., _T], *args: object) -> _T:
        """Run ``function`` in a worker thread with the control connection to itself; a lost
        connection is opened again and the call tried once more."""
        async with self._control_lock:
            try:
                return await trio.to_thread.run_sync(function, *args)
            except psycopg.OperationalError as exc:
                logger.warning("database: control connection lost (%s); retrying", exc)
                return await trio.to_thread.run_sync(function, *args)

    def _snapshot(self) -> list[Subscriber]:
        subscribers: list[Subscriber] = []
        for channel in list(self._subscribed):
            if channel.room is None:  # left, or the connection closed
                del self._subscribed[channel]
                continue
            role, claims = self._claims(channel.token)
            subscribers.append(Subscriber(channel, channel.bindings, role, claims))
        return subscribers

    # -- polling (worker thread) ----------------------------------------------------------------

    def _read_slot(self) -> list[str]:
        conn = self._poll_conn
        assert conn is not None
        rows = conn.execute(
            "select data from pg_logical_slot_get_changes(%s, null, %s, "
            "'format-version', '2', 'include-pk', 'true', 'include-timestamp', 'true', "
            "'include-type-oids', 'true', 'include-transaction', 'false', "
            "'actions', 'insert,update,delete')",
            (self._slot, self._max_changes),
        ).fetchall()
        return [row[0] for row in rows]

    def _table(self, cache: dict[tuple[str, str], Table], schema: str, table: str) -> Table:
        key = (schema, table)
        found = cache.get(key)
        if found is None:
            conn = self._poll_conn
            assert conn is not None
            rows = conn.execute(TABLE_SQL, key).fetchall()
            found = cache[key] = Table(
                [(row[0], row[1], bool(row[2])) for row in rows], bool(rows and rows[0][3])
            )
        return found

    def _privileges(self, table: Table, role: str | None, schema: str, name: str) -> set[str]:
        found = table.privileges.get(role)
        if found is None:
            conn = self._poll_conn
            assert conn is not None
            rows = conn.execute(_PRIVILEGES_SQL, (role, schema, name)).fetchall()
            found = table.privileges[role] = {row[0] for row in rows if row[1]}
        return found

    def _decode_changes(self, changes: list[JSONObject]) -> list[tuple[list[Column], list[Column]]]:
        conn = self._poll_conn
        assert conn is not None
        return decode_changes(conn, changes)

    def _poll(self, subscribers: list[Subscriber]) -> _Polled:
        texts = self._read_slot()
        changes: list[Change] = []
        messages: list[JSONObject] = []
        for text in texts:
            wal = orjson.loads(text)
            action = _ACTIONS.get(wal.get("action"))
            if action is None:
                continue
            schema, name = wal["schema"], wal["table"]
            if schema == "realtime" and (name == "messages" or name.startswith("messages_")):
                if action == "INSERT":
                    messages.append(wal)
                continue
            candidates = [
                (subscriber, binding)
                for subscriber in subscribers
                for binding in subscriber.bindings
                if binding.event in ("*", action)
                and binding.schema in ("*", schema)
                and binding.table in ("*", name)
            ]
            if candidates:
                changes.append(Change(wal, action, schema, name, len(text.encode()), candidates))
        broadcasts = self._broadcasts(messages)
        if not changes:
            return _Polled(len(texts), [], broadcasts)
        tables: dict[tuple[str, str], Table] = {}
        decoded = self._decode_changes([change.wal for change in changes])
        for change, (new, old) in zip(changes, decoded, strict=True):
            change.table = self._table(tables, change.schema, change.name)
            change.set_rows(new, old)
            change.match()
        self._check_visibility(changes)
        out: list[tuple[Channel, JSONObject]] = []
        for change in changes:
            out.extend(self._messages(change))
        return _Polled(len(texts), out, broadcasts)

    def _broadcasts(self, messages: list[JSONObject]) -> list[_Broadcast]:
        """Broadcast from Database: the ``realtime.messages`` rows with extension broadcast."""
        if not messages:
            return []
        broadcasts: list[_Broadcast] = []
        for new, _old in self._decode_changes(messages):
            row = {column.name: column.value for column in new}
            topic, event = row.get("topic"), row.get("event")
            if row.get("extension") != "broadcast" or not isinstance(topic, str):
                continue
            broadcasts.append(
                _Broadcast(
                    topic=topic,
                    event=event if isinstance(event, str) else "",
                    payload=row.get("payload"),
                    private=row.get("private") is True,
                    id=str(row.get("id")),
                )
            )
        return broadcasts

    def _check_visibility(self, changes: list[Change]) -> None:
        """Fill each change's ``visible`` map: one query per table, role and claims."""
        pending: dict[tuple[str, str, str | None, str], list[Change]] = {}
        for change in changes:
            table = change.table
            if not table.rls or change.action == "DELETE" or not table.primary_key:
                continue
            pk = table.primary_key
            if not all(key in change.new for key in pk):
                continue
            for subscriber, _ids in change.matched.values():
                key = (change.schema, change.name, subscriber.role, subscriber.claims)
                group = pending.setdefault(key, [])
                if not group or group[-1] is not change:
                    group.append(change)
        for (schema, name, role, claims), group in pending.items():
            pk = group[0].table.primary_key
            rows = [[change.new[key] for key in pk] for change in group]
            assert self._poll_conn is not None
            found = visible_keys(self._poll_conn, schema, name, rows, role=role, claims=claims)
            for change, row in zip(group, rows, strict=True):
                seen = None if found is None else tuple(key.text for key in row) in found
                change.visible[(role, claims)] = seen

    def _messages(self, change: Change) -> list[tuple[Channel, JSONObject]]:
        out: list[tuple[Channel, JSONObject]] = []
        for subscriber, matched_ids in change.matched.values():
            for select, ids in select_groups(subscriber, matched_ids):
                message = build_message(
                    change,
                    subscriber,
                    select,
                    ids,
                    privileges=self._privileges(
                        change.table, subscriber.role, change.schema, change.name
                    ),
                    max_record_bytes=self._max_record_bytes,
                )
                if message is not None:
                    out.append((subscriber.channel, message))
        return out

    # -- the poll loop --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll the slot until cancelled, delivering what each subscriber may see."""
        task_status.started()
        backoff = self._poll_interval
        while True:
            subscribers = self._snapshot()
            try:
                polled = await trio.to_thread.run_sync(self._poll, subscribers)
            except Exception as exc:
                self._errors += 1
                self._progress.unpark_all()
                logger.error("database: polling the replication slot failed: %s", exc)  # noqa: TRY400
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                await self._reconnect_if_closed()
                self._progress.unpark_all()
                continue
            backoff = self._poll_interval
            self._polls += 1
            self._changes += polled.count
            self._deliver(polled.deliveries)
            self._send_broadcasts(polled.broadcasts)
            self._progress.unpark_all()
            if polled.count == 0:
                with trio.move_on_after(self._poll_interval):
                    await self._wakeup.wait()
                if self._wakeup.is_set():
                    self._wakeup = trio.Event()

    def poll_now(self) -> None:
        """Make the poller read the slot now instead of at the end of its interval."""
        self._wakeup.set()

    async def _reconnect_if_closed(self) -> None:
        conn = self._poll_conn
        if conn is not None and not conn.closed and not conn.broken:
            return
        try:
            await trio.to_thread.run_sync(self._reopen)
        except Exception as exc:
            logger.error("database: cannot re-open the poll connection: %s", exc)  # noqa: TRY400

    def _reopen(self) -> None:
        if self._poll_conn is not None:
            self._poll_conn.close()
        self._slot = f"trio_realtime_{secrets.token_hex(6)}"
        self._open_slot()
        if self._control_conn is None or self._control_conn.closed or self._control_conn.broken:
            self._control_conn = connect(self._url)
        self._reconnects += 1
        logger.warning("database: reconnected with a new slot %s", self._slot)

    def _send_broadcasts(self, broadcasts: list[_Broadcast]) -> None:
        for message in broadcasts:
            # Stored too, so that private channels joining with replay get it again.
            stored = StoredMessage(
                id=message.id,
                topic=message.topic,
                event=message.event,
                payload=message.payload,
                private=message.private,
                inserted_at=datetime.now(UTC),
            )
            self._broadcasts_sent += deliver_stored(self._hub, stored)

    def _deliver(self, deliveries: list[tuple[Channel, JSONObject]]) -> None:
        for channel, payload in deliveries:
            if channel.room is None:
                continue
            frame = make_frame(channel.topic, POSTGRES_CHANGES, payload)
            if channel.peer.enqueue(encode(frame, channel.vsn)):
                self._queued += 1


@asynccontextmanager
async def open_database(
    url: str,
    hub: Hub,
    *,
    tables: Sequence[str] = (),
    publication: str = PUBLICATION,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    max_changes: int = DEFAULT_MAX_CHANGES,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> AsyncIterator[Database]:
    """Prepare the database and yield a :class:`Database`; its slot is dropped on exit.

    The caller runs :meth:`Database.run` in its nursery.

    Raises:
        DatabaseSetupError: before anything is served, when the database cannot connect, has
            ``wal_level`` other than ``logical``, has no wal2json, does not let the user create
            a replication slot, or a table of ``tables`` is not in the publication.
    """
    if poll_interval <= 0 or max_changes < 1 or max_record_bytes < 1:
        raise ValueError("poll_interval, max_changes and max_record_bytes must be positive")
    database = Database(
        url,
        hub,
        publication=publication,
        poll_interval=poll_interval,
        max_changes=max_changes,
        max_record_bytes=max_record_bytes,
    )
    try:
        await trio.to_thread.run_sync(database._setup, list(tables))
        logger.info("database: streaming %s through slot %s", publication, database.slot_name)
        yield database
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(database._close)
