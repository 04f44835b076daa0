"""A change's way to its subscribers: values converted, filters, then each one's message.

The poller (``_database``) converts the values of each change with PostgreSQL itself
(:func:`decode_changes`) into a :class:`Change`; :meth:`Change.match` picks
the subscribers whose filters pass, and :func:`build_message` builds one subscriber's message:
the columns its role may select (and its binding's ``select``), or the error record the real
server sends instead (no primary key, no privilege, a failing policy, a change too large).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import psycopg

from .._frames import JSONObject, JSONValue
from .._postgres_filters import filter_matches
from ._database_setup import SCHEMA
from ._postgres_changes import Binding, format_commit_timestamp
from ._state import Channel

DECODE_SQL = f"""
select (x.e ->> 'i')::int, x.e ->> 'k', x.e -> 'c' ->> 'name',
       {SCHEMA}.to_json_value(x.e -> 'c' -> 'value' #>> '{{}}', t.oid),
       x.e -> 'c' -> 'value' #>> '{{}}', format_type(t.oid, null),
       octet_length(x.e -> 'c' ->> 'value')
from jsonb_array_elements(%s::jsonb) with ordinality as x(e, ord)
join pg_type t
  on t.oid = coalesce((x.e -> 'c' ->> 'typeoid')::oid, (x.e -> 'c' ->> 'type')::regtype::oid)
order by x.ord
"""

SMALL_VALUE_BYTES = 64

ERROR_NO_PK = "Error 400: Bad Request, no primary key"
ERROR_UNAUTHORIZED = "Error 401: Unauthorized"
ERROR_TOO_LARGE = "Error 413: Payload Too Large"
ERROR_RLS = "Error 500: Internal Server Error, RLS policy evaluation failed"


@dataclass(slots=True)
class Subscriber:
    """What the poller's worker thread needs of one subscribed channel (a snapshot)."""

    channel: Channel
    bindings: tuple[Binding, ...]
    role: str | None
    claims: str


@dataclass(slots=True)
class Column:
    """One column of a decoded row: its value converted by PostgreSQL, and as text."""

    name: str
    value: JSONValue
    text: str | None
    regtype: str
    size: int


@dataclass(eq=False, slots=True)
class Change:
    """One decoded change on its way to the subscribers (inside the poller's worker thread)."""

    wal: JSONObject
    action: str
    schema: str
    name: str
    size: int
    candidates: list[tuple[Subscriber, Binding]]
    table: Table = field(init=False)
    new: dict[str, Column] = field(default_factory=dict)
    old: dict[str, Column] = field(default_factory=dict)
    matched: dict[int, tuple[Subscriber, list[int]]] = field(default_factory=dict)
    visible: dict[tuple[str | None, str], bool | None] = field(default_factory=dict)

    def set_rows(self, new: list[Column], old: list[Column]) -> None:
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
class Table:
    """What the poller knows of a table: its columns, RLS, and each role's privileges."""

    columns: list[tuple[str, str, bool]]  # name, type name, is primary key, in attnum order
    rls: bool
    privileges: dict[str | None, set[str]] = field(default_factory=dict)

    @property
    def primary_key(self) -> list[str]:
        """The primary key's columns, in attnum order."""
        return [name for name, _type, pk in self.columns if pk]


def build_message(
    change: Change,
    subscriber: Subscriber,
    select: tuple[str, ...] | None,
    ids: list[int],
    *,
    privileges: set[str],
    max_record_bytes: int,
) -> JSONObject | None:
    """The message for one subscriber and one ``select`` group; ``None`` when RLS hides
    the row. ``privileges`` are the columns the subscriber's role may select."""
    schema, name, action, table = change.schema, change.name, change.action, change.table
    too_large = change.size > max_record_bytes
    pk = table.primary_key
    role = subscriber.role
    base: JSONObject = {"schema": schema, "table": name, "type": action}
    if action != "DELETE" and not pk:
        return error_data(base, action, ids, ERROR_NO_PK)
    if action != "DELETE" and not all(key in privileges for key in pk):
        return error_data(base, action, ids, ERROR_UNAUTHORIZED)
    if table.rls and action != "DELETE":
        seen = change.visible.get((role, subscriber.claims), False)
        if seen is None:
            return error_data(base, action, ids, ERROR_RLS)
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

    def small(column: Column) -> bool:
        return not too_large or column.size <= SMALL_VALUE_BYTES

    data: JSONObject = {
        "schema": schema,
        "table": name,
        "commit_timestamp": commit_timestamp(change.wal.get("timestamp")),
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


def commit_timestamp(value: JSONValue) -> str | None:
    """wal2json's ``2026-08-21 12:00:00.123456+00`` as ``2026-08-21T12:00:00.123Z``."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    return format_commit_timestamp(moment)


def error_data(base: JSONObject, action: str, ids: list[int], error: str) -> JSONObject:
    """A message that carries only ``error``, as the server sends it instead of the record."""
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


def select_groups(
    subscriber: Subscriber, ids: list[int]
) -> list[tuple[tuple[str, ...] | None, list[int]]]:
    """The matched binding ids grouped by their ``select`` (one message per group)."""
    groups: dict[tuple[str, ...] | None, list[int]] = {}
    for binding in subscriber.bindings:
        if binding.id in ids and binding.id not in groups.get(binding.select, ()):
            groups.setdefault(binding.select, []).append(binding.id)
    return list(groups.items())


def decode_changes(
    conn: psycopg.Connection[Any], changes: list[JSONObject]
) -> list[tuple[list[Column], list[Column]]]:
    """Convert the values of every change at once: ``(columns, identity)`` per change."""
    items: list[JSONValue] = []
    for index, wal in enumerate(changes):
        for kind in ("columns", "identity"):
            listed = wal.get(kind)
            if isinstance(listed, list):
                items.extend({"i": index, "k": kind, "c": column} for column in listed)
    decoded: list[tuple[list[Column], list[Column]]] = [([], []) for _ in changes]
    if not items:
        return decoded
    rows = conn.execute(DECODE_SQL, (orjson.dumps(items).decode(),)).fetchall()
    for index, kind, name, value, text, regtype, size in rows:
        new, old = decoded[index]
        (new if kind == "columns" else old).append(Column(name, value, text, regtype, size))
    return decoded
