"""Postgres-changes bindings and change messages, as pure functions.

A channel's ``config.postgres_changes`` entries become :class:`Binding` values; an emitted change
is a :class:`Change`; :func:`matching_ids` says which bindings of one channel it reaches. Filters
are parsed and evaluated by the shared ``_postgres`` module, so the server and the client's
filter builder agree on the syntax.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from .._frames import JSONObject, JSONValue
from .._postgres_filters import FilterCondition, FilterParseError, filter_matches, parse_filter
from ._filters import subscription_error
from ._select import parse_select

CHANGE_TYPES = ("INSERT", "UPDATE", "DELETE")
_EVENTS = frozenset((*CHANGE_TYPES, "*"))
WILDCARD = "*"

SUBSCRIBED = "Subscribed to PostgreSQL"

# phash2's default range, so ids look like the real server's.
_ID_RANGE = 2**27


@dataclass(frozen=True, slots=True)
class Binding:
    """One parsed ``postgres_changes`` binding of a channel.

    Attributes:
        id: The id sent in the join reply; identical raw bindings get identical ids.
        event: ``INSERT``, ``UPDATE``, ``DELETE`` or ``*``.
        schema: The schema, or ``*`` for every schema.
        table: The table, or ``*`` for every table of the schema.
        conditions: The parsed filter; all must hold.
        select: The columns asked for (``select``), sorted; ``None`` for all of them.
    """

    id: int
    event: str
    schema: str
    table: str
    conditions: tuple[FilterCondition, ...]
    select: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """One emitted row change.

    Attributes:
        schema: The row's schema.
        table: The row's table.
        type: ``INSERT``, ``UPDATE`` or ``DELETE``.
        row: What filters are evaluated against: the new record, or the old one on DELETE.
        data: The ``data`` object of the ``postgres_changes`` message.
        primary_key: The primary key columns, always sent when a binding selects columns.
    """

    schema: str
    table: str
    type: str
    row: Mapping[str, JSONValue]
    data: JSONObject
    primary_key: tuple[str, ...] = ()


def binding_id(raw: Mapping[str, JSONValue]) -> int:
    """Return a stable non-negative id for a raw binding object (key order does not matter)."""
    digest = hashlib.blake2b(orjson.dumps(raw, option=orjson.OPT_SORT_KEYS), digest_size=8)
    return int.from_bytes(digest.digest(), "big") % _ID_RANGE


def inspect(value: object) -> str:
    """Render ``value`` the way Elixir's ``inspect`` shows decoded JSON (for error texts)."""
    if value is None:
        return "nil"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return orjson.dumps(value).decode()
    if isinstance(value, list):
        return "[" + ", ".join(inspect(item) for item in value) + "]"
    if isinstance(value, dict):
        items = sorted(value.items())
        return "%{" + ", ".join(f"{inspect(k)} => {inspect(v)}" for k, v in items) + "}"
    return str(value)


def reply_entries(raw_bindings: Sequence[JSONObject]) -> list[JSONValue]:
    """Return the join reply's ``postgres_changes`` list: each raw binding plus its ``id``."""
    entries: list[JSONValue] = []
    for raw in raw_bindings:
        entry: JSONObject = {"id": binding_id(raw)}
        entry.update((key, value) for key, value in raw.items() if key != "id")
        entries.append(entry)
    return entries


def _binding_target(raw: Mapping[str, JSONValue]) -> tuple[str, str, str | None]:
    """``(schema, table, filter)`` of a binding, in the shapes the server accepts: schema,
    table and filter; schema and table; schema alone (every table); table alone (``public``).

    Raises:
        FilterParseError: for any other shape, with the server's message.
    """
    schema, table, text = raw.get("schema"), raw.get("table"), raw.get("filter")
    if "filter" in raw:
        if isinstance(schema, str) and isinstance(table, str) and isinstance(text, str):
            return schema, table, text
    elif isinstance(schema, str) and isinstance(table, str):
        return schema, table, None
    elif isinstance(schema, str) and "table" not in raw:
        return schema, WILDCARD, None
    elif isinstance(table, str) and "schema" not in raw:
        return "public", table, None
    shown = "<redacted>" if "user_token" in raw or "auth_token" in raw else inspect(raw)
    raise FilterParseError(
        "No subscription params provided. Please provide at least a `schema` or "
        f"`table` to subscribe to: {shown}"
    )


def parse_bindings(raw_bindings: Sequence[JSONObject]) -> tuple[Binding, ...]:
    """Parse a channel's raw bindings; all of them subscribe, or none does.

    Raises:
        FilterParseError: with the text the server puts in its ``system`` error message, for a
            binding of a shape the server refuses (a filter needs both schema and table), a
            filter that does not parse, or one the server's subscription trigger refuses
            (``_filters``).
    """
    bindings: list[Binding] = []
    for raw in raw_bindings:
        event = raw.get("event")
        normalised = event.upper() if isinstance(event, str) else WILDCARD
        schema, table, text = _binding_target(raw)
        conditions = parse_filter(text) if text else []
        binding = Binding(
            id=binding_id(raw),
            event=normalised if normalised in _EVENTS else WILDCARD,
            schema=schema,
            table=table,
            conditions=tuple(conditions),
            select=parse_select(raw.get("select"), schema, table),
        )
        select = raw.get("select")
        columns = (
            [name for name in select if isinstance(name, str)] if isinstance(select, list) else []
        )
        error = subscription_error(
            binding.event, binding.schema, binding.table, binding.conditions, columns or None
        )
        if error is not None:
            raise FilterParseError(error)
        bindings.append(binding)
    return tuple(bindings)


def matching_ids(bindings: Sequence[Binding], change: Change) -> list[int]:
    """Return the ids of ``bindings`` that ``change`` matches, in binding order, once each."""
    ids: list[int] = []
    for binding in bindings:
        if binding.event not in (WILDCARD, change.type):
            continue
        if binding.schema not in (WILDCARD, change.schema):
            continue
        if binding.table not in (WILDCARD, change.table):
            continue
        if binding.conditions and not filter_matches(binding.conditions, change.row):
            continue
        if binding.id not in ids:
            ids.append(binding.id)
    return ids


def format_commit_timestamp(moment: datetime | None = None) -> str:
    """Format ``moment`` (default: now) as the server does: UTC, ``...THH:MM:SS.mmmZ``."""
    moment = datetime.now(UTC) if moment is None else moment
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def _type_name(value: JSONValue) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int8"
    if isinstance(value, float):
        return "float8"
    if isinstance(value, dict | list):
        return "jsonb"
    return "text"


def infer_columns(*rows: Mapping[str, JSONValue] | None) -> list[JSONValue]:
    """Guess ``columns`` from the rows' values: bool, int8, float8, jsonb, else text."""
    columns: dict[str, str] = {}
    for row in rows:
        for name, value in (row or {}).items():
            if name not in columns or value is not None:
                columns[name] = _type_name(value)
    return [{"name": name, "type": type_name} for name, type_name in columns.items()]


def build_change(
    schema: str,
    table: str,
    change_type: str,
    *,
    record: Mapping[str, JSONValue] | None,
    old_record: Mapping[str, JSONValue] | None,
    columns: Sequence[Mapping[str, JSONValue]] | None,
    commit_timestamp: str | datetime | None,
    errors: Sequence[str] | None,
    primary_key: Sequence[str] | None = None,
) -> Change:
    """Build the change message data (section 7.4) and the row its filters see.

    Raises:
        ValueError: for a type other than INSERT, UPDATE or DELETE (any case).
    """
    normalised = change_type.upper()
    if normalised not in CHANGE_TYPES:
        raise ValueError(f"change type must be INSERT, UPDATE or DELETE, not {change_type!r}")
    new_row: JSONObject = dict(record or {})
    old_row: JSONObject = dict(old_record or {})
    if isinstance(commit_timestamp, str):
        timestamp = commit_timestamp
    else:
        timestamp = format_commit_timestamp(commit_timestamp)
    if columns is None:
        column_list = infer_columns(new_row if normalised != "DELETE" else None, old_row)
    else:
        column_list = [dict(column) for column in columns]
    data: JSONObject = {
        "schema": schema,
        "table": table,
        "commit_timestamp": timestamp,
        "type": normalised,
        "errors": None if errors is None else list(errors),
        "columns": column_list,
    }
    if normalised != "DELETE":
        data["record"] = new_row
    if normalised != "INSERT":
        data["old_record"] = old_row
    row = old_row if normalised == "DELETE" else new_row
    if primary_key is None:
        names = {c.get("name") for c in column_list if isinstance(c, dict)} | set(row)
        primary_key = ("id",) if "id" in names else ()
    return Change(schema, table, normalised, row, data, tuple(primary_key))
