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

Failures are visible: a poll that fails is logged, counted in :class:`DatabaseStatistics`, and
retried with a back-off; a lost connection is re-opened with a new slot (changes made while it
was down are lost, as on the real server when its slot goes away).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
import psycopg
import trio
from psycopg import sql

from .._frames import POSTGRES_CHANGES, JSONObject, JSONValue, make_frame
from .._postgres_filters import filter_matches
from ._database_types import DatabaseSetupError, DatabaseStatistics
from ._jwt import unverified_claims
from ._postgres_changes import Binding, format_commit_timestamp, inspect
from ._replay import StoredMessage, deliver_stored
from ._state import Channel, Hub, Policies, encode
from ._supabase_sql import AUTH_SQL, REALTIME_SQL, ROLES_SQL

logger = logging.getLogger("trio_realtime.testing")

_T = TypeVar("_T")

SCHEMA = "trio_realtime"
PUBLICATION = "supabase_realtime"
DEFAULT_POLL_INTERVAL = 0.1
DEFAULT_MAX_CHANGES = 1000
DEFAULT_MAX_RECORD_BYTES = 1024 * 1024
SMALL_VALUE_BYTES = 64

ERROR_NO_PK = "Error 400: Bad Request, no primary key"
ERROR_UNAUTHORIZED = "Error 401: Unauthorized"
ERROR_TOO_LARGE = "Error 413: Payload Too Large"
ERROR_RLS = "Error 500: Internal Server Error, RLS policy evaluation failed"

_ACTIONS = {"I": "INSERT", "U": "UPDATE", "D": "DELETE"}

_SETUP_SQL = f"""
create schema if not exists {SCHEMA};
create or replace function {SCHEMA}.to_json_value(value text, type_oid oid)
  returns jsonb language plpgsql stable as $body$
declare
  converted jsonb;
begin
  if value is null then
    return 'null'::jsonb;
  end if;
  execute format('select to_jsonb(%L::%s)', value, type_oid::regtype) into converted;
  return converted;
end
$body$;
"""

_DECODE_SQL = f"""
select (x.e ->> 'i')::int, x.e ->> 'k', x.e -> 'c' ->> 'name',
       {SCHEMA}.to_json_value(x.e -> 'c' -> 'value' #>> '{{}}', t.oid),
       x.e -> 'c' -> 'value' #>> '{{}}', format_type(t.oid, null),
       octet_length(x.e -> 'c' ->> 'value')
from jsonb_array_elements(%s::jsonb) with ordinality as x(e, ord)
join pg_type t
  on t.oid = coalesce((x.e -> 'c' ->> 'typeoid')::oid, (x.e -> 'c' ->> 'type')::regtype::oid)
order by x.ord
"""

_TABLE_SQL = """
select a.attname, t.typname, coalesce(a.attnum = any(k.conkey), false), c.relrowsecurity
from pg_class c
join pg_namespace n on n.oid = c.relnamespace
join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
join pg_type t on t.oid = a.atttypid
left join pg_constraint k on k.conrelid = c.oid and k.contype = 'p'
where n.nspname = %s and c.relname = %s
order by a.attnum
"""

_PRIVILEGES_SQL = """
select a.attname, has_column_privilege(coalesce(%s::name, current_user), c.oid, a.attname, 'SELECT')
from pg_class c
join pg_namespace n on n.oid = c.relnamespace
join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
where n.nspname = %s and c.relname = %s
"""


@dataclass(slots=True)
class _Subscriber:
    """What the poller's worker thread needs of one subscribed channel (a snapshot)."""

    channel: Channel
    bindings: tuple[Binding, ...]
    role: str | None
    claims: str


@dataclass(slots=True)
class _Column:
    name: str
    value: JSONValue
    text: str | None
    regtype: str
    size: int


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


@dataclass(eq=False, slots=True)
class _Change:
    """One decoded change on its way to the subscribers (inside the poller's worker thread)."""

    wal: JSONObject
    action: str
    schema: str
    name: str
    size: int
    candidates: list[tuple[_Subscriber, Binding]]
    table: _Table = field(init=False)
    new: dict[str, _Column] = field(default_factory=dict)
    old: dict[str, _Column] = field(default_factory=dict)
    matched: dict[int, tuple[_Subscriber, list[int]]] = field(default_factory=dict)
    visible: dict[tuple[str | None, str], bool | None] = field(default_factory=dict)

    def set_rows(self, new: list[_Column], old: list[_Column]) -> None:
        """Keep the converted rows; an unchanged TOASTed value comes from the old row."""
        values = {column.name: column for column in new}
        self.old = {column.name: column for column in old}
        self.new = {**self.old, **values} if self.action == "UPDATE" else values

    def match(self) -> None:
        """Pick the subscribers whose filters pass (on DELETE, on the old row)."""
        new_row: dict[str, JSONValue] = {k: c.value for k, c in self.new.items()}
        old_row: dict[str, JSONValue] = {k: c.value for k, c in self.old.items()}
        for subscriber, binding in self.candidates:
            if binding.conditions and not (
                filter_matches(binding.conditions, new_row)
                or (self.action == "DELETE" and filter_matches(binding.conditions, old_row))
            ):
                continue
            entry = self.matched.setdefault(id(subscriber), (subscriber, []))
            if binding.id not in entry[1]:
                entry[1].append(binding.id)


@dataclass(slots=True)
class _Table:
    columns: list[tuple[str, str, bool]]  # name, type name, is primary key, in attnum order
    rls: bool
    privileges: dict[str | None, set[str]] = field(default_factory=dict)

    @property
    def primary_key(self) -> list[str]:
        return [name for name, _type, pk in self.columns if pk]


def _connect(url: str) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(url, autocommit=True, application_name="trio_realtime")
    except psycopg.OperationalError as exc:
        raise DatabaseSetupError(f"cannot connect to the database: {exc}".strip()) from None


def _subscription_text(binding: Binding) -> str:
    filters = ", ".join(
        "{"
        + ", ".join(
            inspect(part)
            for part in (
                c.column,
                c.operator,
                c.value if isinstance(c.value, str) else "(" + ",".join(c.value) + ")",
            )
        )
        + "}"
        for c in binding.conditions
    )
    select = binding.select
    return (
        f"[event: {binding.event}, schema: {binding.schema}, table: {binding.table}, "
        f"filters: [{filters}], select: {inspect(list(select)) if select else 'nil'}]"
    )


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
        control = self._control_conn = _connect(self._url)
        row = control.execute("show wal_level").fetchone()
        if row is None or row[0] != "logical":
            level = row[0] if row else "unknown"
            raise DatabaseSetupError(
                f"wal_level is {level!r}, and logical decoding needs 'logical': run ALTER SYSTEM "
                "SET wal_level = logical, then restart PostgreSQL"
            )
        row = control.execute(
            "select rolname, rolsuper or rolreplication from pg_roles where rolname = current_user"
        ).fetchone()
        if row is None or not row[1]:
            user = row[0] if row else "the current user"
            raise DatabaseSetupError(
                f"role {user!r} may not create replication slots: "
                f"ALTER ROLE {user} WITH REPLICATION (or connect as a superuser)"
            )
        with control.transaction():
            control.execute(f"select pg_advisory_xact_lock(hashtext('{SCHEMA}'))")
            control.execute(_SETUP_SQL)
            if control.execute("select 1 from pg_namespace where nspname = 'auth'").fetchone():
                logger.debug("database: keeping the existing auth schema")
            else:
                control.execute(AUTH_SQL)
            if control.execute("select 1 from pg_namespace where nspname = 'realtime'").fetchone():
                logger.debug("database: keeping the existing realtime schema")
            else:
                control.execute(ROLES_SQL)
                control.execute(REALTIME_SQL)
            exists = control.execute(
                "select 1 from pg_publication where pubname = %s", (self._publication,)
            ).fetchone()
            if not exists:
                control.execute(
                    sql.SQL("create publication {}").format(sql.Identifier(self._publication))
                )
                logger.info("database: created the empty publication %s", self._publication)
        for name in tables:
            schema, _, table = name.rpartition(".")
            schema = schema or "public"
            if not control.execute(
                "select 1 from pg_publication_tables "
                "where pubname = %s and schemaname = %s and tablename = %s",
                (self._publication, schema, table),
            ).fetchone():
                raise DatabaseSetupError(
                    f"table {schema}.{table} is not in the publication {self._publication}: run "
                    f"ALTER PUBLICATION {self._publication} ADD TABLE {schema}.{table}"
                )
        self._open_slot()

    def _open_slot(self) -> None:
        poll = self._poll_conn = _connect(self._url)
        try:
            poll.execute(
                "select pg_create_logical_replication_slot(%s, 'wal2json', true)", (self._slot,)
            )
        except psycopg.errors.UndefinedFile as exc:
            poll.close()
            raise DatabaseSetupError(
                "the wal2json output plugin is not installed in this PostgreSQL (Debian/Ubuntu: "
                f"apt-get install postgresql-<version>-wal2json): {exc}".strip()
            ) from None
        except psycopg.Error as exc:
            poll.close()
            raise DatabaseSetupError(f"cannot create a replication slot: {exc}".strip()) from None

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

    def _control(self) -> psycopg.Connection[Any]:
        """The control connection, opened again if it was lost (in the worker thread)."""
        conn = self._control_conn
        if conn is None or conn.closed or conn.broken:
            logger.warning("database: re-opening the control connection")
            conn = self._control_conn = _connect(self._url)
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

    def _check_subscription(self, bindings: tuple[Binding, ...], role: str | None) -> str | None:
        conn = self._control()
        for binding in bindings:
            text = _subscription_text(binding)
            if binding.table == "*":
                query = "select 1 from pg_publication_tables where pubname = %s" + (
                    "" if binding.schema == "*" else " and schemaname = %s"
                )
                params: tuple[str, ...] = (self._publication,)
                if binding.schema != "*":
                    params += (binding.schema,)
            else:
                query = (
                    "select 1 from pg_publication_tables "
                    "where pubname = %s and schemaname = %s and tablename = %s"
                )
                params = (self._publication, binding.schema, binding.table)
            try:
                found = conn.execute(query, params).fetchone()
                if not found:
                    return (
                        "Unable to subscribe to changes with given parameters. Please check "
                        f"Realtime is enabled for the given connect parameters: {text}"
                    )
                problem: str | None = None
                if (
                    role is not None
                    and not conn.execute(
                        "select 1 from pg_roles where rolname = %s", (role,)
                    ).fetchone()
                ):
                    problem = f'ERROR 22023 (invalid_parameter_value) role "{role}" does not exist'
                if problem is None and binding.table != "*":
                    names = {
                        row[0]
                        for row in conn.execute(
                            _TABLE_SQL, (binding.schema, binding.table)
                        ).fetchall()
                    }
                    for condition in binding.conditions:
                        if condition.column not in names:
                            problem = (
                                "ERROR P0001 (raise_exception) invalid column for filter "
                                f"{condition.column}"
                            )
                            break
            except psycopg.Error as exc:
                if isinstance(exc, psycopg.OperationalError):
                    raise
                problem = str(exc).strip()
            if problem is not None:
                return (
                    "Unable to subscribe to changes with given parameters. An exception "
                    f"happened so please check your connect parameters: {text}. "
                    f"Exception: {problem}"
                )
        return None

    async def subscribe(self, channel: Channel) -> str | None:
        """Check and register ``channel``'s bindings; return an error message, or ``None``.

        This is a checkpoint: the check runs on the control connection in a worker thread.
        """
        role, _claims = self._claims(channel.token)
        try:
            error = await self._on_control(self._check_subscription, channel.bindings, role)
        except Exception as exc:  # the database is gone: say so, as the server does
            logger.warning("database: subscription check failed: %s", exc)
            error = repr(exc)
        if error is None and channel.room is not None:
            self._subscribed[channel] = None
            self._progress.unpark_all()
        return error

    def _authorize(self, role: str | None, claims: str, topic: str) -> Policies | None:
        """Evaluate the read and write policies of ``realtime.messages`` for ``topic``.

        As the real server does: reads are checked by inserting a broadcast and a presence
        message for the topic as the server's own user, then selecting them back as the
        subscriber; writes by inserting them as the subscriber (a refusal is
        ``insufficient_privilege``). Everything is rolled back.
        """
        conn = self._control()
        settings = (
            "select set_config('role', %s, true), set_config('realtime.topic', %s, true), "
            "set_config('request.jwt.claims', %s, true), "
            "set_config('request.jwt.claim.sub', %s, true), "
            "set_config('request.jwt.claim.role', %s, true)"
        )
        claims_data = orjson.loads(claims)
        sub = claims_data.get("sub") if isinstance(claims_data, dict) else None
        values = (role or "none", topic, claims, sub if isinstance(sub, str) else "", role or "")
        insert = (
            "insert into realtime.messages (topic, extension, private) "
            "values (%s, %s, true) returning id"
        )
        try:
            with conn.transaction(force_rollback=True):
                ids = {}
                for extension in ("broadcast", "presence"):
                    row = conn.execute(insert, (topic, extension)).fetchone()
                    assert row is not None
                    ids[extension] = row[0]
                if role is not None:
                    conn.execute(settings, values)
                else:
                    conn.execute(settings.replace("set_config('role', %s, true), ", ""), values[1:])
                seen = {
                    row[0]
                    for row in conn.execute(
                        "select id from realtime.messages where topic = %s and id = any(%s)",
                        (topic, list(ids.values())),
                    ).fetchall()
                }
            writes: dict[str, bool] = {}
            with conn.transaction(force_rollback=True):
                if role is not None:
                    conn.execute(settings, values)
                else:
                    conn.execute(settings.replace("set_config('role', %s, true), ", ""), values[1:])
                for extension in ("broadcast", "presence"):
                    try:
                        with conn.transaction():
                            conn.execute(insert, (topic, extension))
                        writes[extension] = True
                    except psycopg.errors.InsufficientPrivilege:
                        writes[extension] = False
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError):
                raise
            logger.warning("database: RLS policy error on realtime.messages: %s", exc)
            return None
        return Policies(
            broadcast_read=ids["broadcast"] in seen,
            presence_read=ids["presence"] in seen,
            broadcast_write=writes["broadcast"],
            presence_write=writes["presence"],
        )

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

    def _snapshot(self) -> list[_Subscriber]:
        subscribers: list[_Subscriber] = []
        for channel in list(self._subscribed):
            if channel.room is None:  # left, or the connection closed
                del self._subscribed[channel]
                continue
            role, claims = self._claims(channel.token)
            subscribers.append(_Subscriber(channel, channel.bindings, role, claims))
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

    def _table(self, cache: dict[tuple[str, str], _Table], schema: str, table: str) -> _Table:
        key = (schema, table)
        found = cache.get(key)
        if found is None:
            conn = self._poll_conn
            assert conn is not None
            rows = conn.execute(_TABLE_SQL, key).fetchall()
            found = cache[key] = _Table(
                [(row[0], row[1], bool(row[2])) for row in rows], bool(rows and rows[0][3])
            )
        return found

    def _privileges(self, table: _Table, role: str | None, schema: str, name: str) -> set[str]:
        found = table.privileges.get(role)
        if found is None:
            conn = self._poll_conn
            assert conn is not None
            rows = conn.execute(_PRIVILEGES_SQL, (role, schema, name)).fetchall()
            found = table.privileges[role] = {row[0] for row in rows if row[1]}
        return found

    def _decode(self, changes: list[JSONObject]) -> list[tuple[list[_Column], list[_Column]]]:
        """Convert the values of every change at once: ``(columns, identity)`` per change."""
        items: list[JSONValue] = []
        for index, wal in enumerate(changes):
            for kind in ("columns", "identity"):
                listed = wal.get(kind)
                if isinstance(listed, list):
                    items.extend({"i": index, "k": kind, "c": column} for column in listed)
        decoded: list[tuple[list[_Column], list[_Column]]] = [([], []) for _ in changes]
        if not items:
            return decoded
        conn = self._poll_conn
        assert conn is not None
        rows = conn.execute(_DECODE_SQL, (orjson.dumps(items).decode(),)).fetchall()
        for index, kind, name, value, text, regtype, size in rows:
            new, old = decoded[index]
            (new if kind == "columns" else old).append(_Column(name, value, text, regtype, size))
        return decoded

    def _visible_keys(
        self,
        schema: str,
        name: str,
        rows: list[list[_Column]],
        role: str | None,
        claims: str,
    ) -> set[tuple[str | None, ...]] | None:
        """The primary keys among ``rows`` that can be selected as ``role`` with ``claims``
        (one query for all of them); ``None`` when the policy raised."""
        first = rows[0]
        key_list = sql.SQL(", ").join(sql.Identifier(key.name) for key in first)
        texts = sql.SQL(", ").join(
            sql.SQL("{}::text").format(sql.Identifier(key.name)) for key in first
        )
        values = sql.SQL(", ").join(
            sql.SQL("({})").format(
                sql.SQL(", ").join(
                    sql.SQL("{}::{}").format(sql.Literal(key.text), sql.SQL(key.regtype))
                    for key in row
                )
            )
            for row in rows
        )
        query = sql.SQL("select {} from {}.{} where ({}) in ({})").format(
            texts, sql.Identifier(schema), sql.Identifier(name), key_list, values
        )
        claims_data = orjson.loads(claims)
        sub = claims_data.get("sub") if isinstance(claims_data, dict) else None
        conn = self._poll_conn
        assert conn is not None
        try:
            with conn.transaction():
                conn.execute(
                    "select set_config('request.jwt.claims', %s, true), "
                    "set_config('request.jwt.claim.sub', %s, true), "
                    "set_config('request.jwt.claim.role', %s, true)",
                    (claims, sub if isinstance(sub, str) else "", role or ""),
                )
                if role is not None:
                    conn.execute("select set_config('role', %s, true)", (role,))
                found = conn.execute(query).fetchall()
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError):
                raise
            logger.warning("database: RLS check on %s.%s as %s failed: %s", schema, name, role, exc)
            return None
        return {tuple(row) for row in found}

    def _poll(self, subscribers: list[_Subscriber]) -> _Polled:
        texts = self._read_slot()
        changes: list[_Change] = []
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
                changes.append(_Change(wal, action, schema, name, len(text.encode()), candidates))
        broadcasts = self._broadcasts(messages)
        if not changes:
            return _Polled(len(texts), [], broadcasts)
        tables: dict[tuple[str, str], _Table] = {}
        decoded = self._decode([change.wal for change in changes])
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
        for new, _old in self._decode(messages):
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

    def _check_visibility(self, changes: list[_Change]) -> None:
        """Fill each change's ``visible`` map: one query per table, role and claims."""
        pending: dict[tuple[str, str, str | None, str], list[_Change]] = {}
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
            found = self._visible_keys(schema, name, rows, role, claims)
            for change, row in zip(group, rows, strict=True):
                seen = None if found is None else tuple(key.text for key in row) in found
                change.visible[(role, claims)] = seen

    def _messages(self, change: _Change) -> list[tuple[Channel, JSONObject]]:
        out: list[tuple[Channel, JSONObject]] = []
        for subscriber, matched_ids in change.matched.values():
            for select, ids in _select_groups(subscriber, matched_ids):
                message = self._message(change, subscriber, select, ids)
                if message is not None:
                    out.append((subscriber.channel, message))
        return out

    def _message(
        self,
        change: _Change,
        subscriber: _Subscriber,
        select: tuple[str, ...] | None,
        ids: list[int],
    ) -> JSONObject | None:
        """The message for one subscriber and one ``select`` group; ``None`` when RLS hides
        the row."""
        schema, name, action, table = change.schema, change.name, change.action, change.table
        too_large = change.size > self._max_record_bytes
        pk = table.primary_key
        role = subscriber.role
        privileges = self._privileges(table, role, schema, name)
        base: JSONObject = {"schema": schema, "table": name, "type": action}
        if action != "DELETE" and not pk:
            return _error_data(base, action, ids, ERROR_NO_PK)
        if action != "DELETE" and not all(key in privileges for key in pk):
            return _error_data(base, action, ids, ERROR_UNAUTHORIZED)
        if table.rls and action != "DELETE":
            seen = change.visible.get((role, subscriber.claims), False)
            if seen is None:
                return _error_data(base, action, ids, ERROR_RLS)
            if not seen:
                return None

        def keep(
            column: str,
            select: tuple[str, ...] | None = select,
            privileges: set[str] = privileges,
        ) -> bool:
            if column not in privileges:
                return False
            return select is None or column in select or column in pk

        def small(column: _Column) -> bool:
            return not too_large or column.size <= SMALL_VALUE_BYTES

        data: JSONObject = {
            "schema": schema,
            "table": name,
            "commit_timestamp": _commit_timestamp(change.wal.get("timestamp")),
            "type": action,
            "columns": [
                {"name": column, "type": type_name}
                for column, type_name, _pk in table.columns
                if keep(column)
            ],
            "errors": [ERROR_TOO_LARGE] if too_large else None,
        }
        if action != "DELETE":
            data["record"] = {k: c.value for k, c in change.new.items() if keep(k) and small(c)}
        if action == "UPDATE":
            data["old_record"] = {k: c.value for k, c in change.old.items() if keep(k) and small(c)}
        elif action == "DELETE":
            data["old_record"] = {
                k: c.value
                for k, c in change.old.items()
                if keep(k) and small(c) and (not table.rls or k in pk)
            }
        return {"ids": list(ids), "data": data}

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
            self._control_conn = _connect(self._url)
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


def _commit_timestamp(value: JSONValue) -> str | None:
    """wal2json's ``2026-08-21 12:00:00.123456+00`` as ``2026-08-21T12:00:00.123Z``."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    return format_commit_timestamp(moment)


def _error_data(base: JSONObject, action: str, ids: list[int], error: str) -> JSONObject:
    data: JSONObject = {
        **base,
        "columns": [],
        "commit_timestamp": None,
        "errors": [error],
    }
    if action != "DELETE":
        data["record"] = {}
    if action != "INSERT":
        data["old_record"] = {}
    return {"ids": list(ids), "data": data}


def _select_groups(
    subscriber: _Subscriber, ids: list[int]
) -> list[tuple[tuple[str, ...] | None, list[int]]]:
    """The matched binding ids grouped by their ``select`` (one message per group)."""
    groups: dict[tuple[str, ...] | None, list[int]] = {}
    for binding in subscriber.bindings:
        if binding.id in ids and binding.id not in groups.get(binding.select, ()):
            groups.setdefault(binding.select, []).append(binding.id)
    return list(groups.items())


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
