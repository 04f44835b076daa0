"""Postgres changes: the change record and the conversion of its column values by type.

Pure functions, used by the client (which converts the values of each change it receives). The
filters (building, parsing and matching them) are in ``_postgres_filters``.

Value conversion follows realtime-js: the server sends each column's Postgres type name, and
values that arrive as text are converted by type. Values that already have the right JSON type
pass through, as do values that cannot be converted and types that are not listed.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

import orjson

from ._frames import JSONObject, JSONValue

# numeric gives an int when its text is integral, else a float.
_INTEGER_TYPES: Final = frozenset({"int2", "int4", "int8", "oid", "numeric"})
_FLOAT_TYPES: Final = frozenset({"float4", "float8"})
_JSON_TYPES: Final = frozenset({"json", "jsonb"})


# ---------------------------------------------------------------------------------------------
# Value conversion.


def _to_bool(value: JSONValue) -> JSONValue:
    if value == "t":
        return True
    if value == "f":
        return False
    return value


def _to_int(value: JSONValue) -> JSONValue:
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return _to_float(value)
    return value


def _to_float(value: JSONValue) -> JSONValue:
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return number if math.isfinite(number) else value
    return value


def _to_json(value: JSONValue) -> JSONValue:
    if isinstance(value, str):
        try:
            parsed: JSONValue = orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
        return parsed
    return value


def _to_timestamp(value: JSONValue) -> JSONValue:
    if isinstance(value, str):
        # Only the date/time separator: a BC timestamp has a second space before "BC".
        return value.replace(" ", "T", 1)
    return value


def _split_array_literal(body: str) -> list[tuple[str | None, bool]]:
    """Split the inside of a Postgres array literal ``{a,"b,c",NULL}`` into its elements.

    Returns ``(text, nested)`` pairs: ``text`` is ``None`` for an unquoted ``NULL``, and
    ``nested`` tells an unquoted sub-array ``{...}``, kept verbatim (quotes and escapes
    included) for the recursive split. A quoted element is always a string.
    """
    items: list[tuple[str | None, bool]] = []
    current: list[str] = []
    quoted = False
    was_quoted = False
    depth = 0
    index = 0
    while index < len(body):
        char = body[index]
        if quoted:
            if char == "\\" and index + 1 < len(body):
                if depth:
                    current.append(char)
                index += 1
                current.append(body[index])
            elif char == '"':
                quoted = False
                if depth:
                    current.append(char)
            else:
                current.append(char)
        elif char == '"':
            quoted = True
            if depth:
                current.append(char)
            else:
                was_quoted = True
        elif char == "{":
            depth += 1
            current.append(char)
        elif char == "}":
            depth -= 1
            current.append(char)
        elif char == "," and depth == 0:
            items.append(_array_item("".join(current), was_quoted))
            current = []
            was_quoted = False
        else:
            current.append(char)
        index += 1
    items.append(_array_item("".join(current), was_quoted))
    return items


def _array_item(text: str, quoted: bool) -> tuple[str | None, bool]:
    if quoted:
        return text, False
    if text == "NULL":
        return None, False
    return text, text.startswith("{") and text.endswith("}")


def _to_array(value: JSONValue, element_type: str) -> JSONValue:
    if isinstance(value, list):
        return [convert_cell(element_type, item) for item in value]
    if not isinstance(value, str) or len(value) < 2 or value[0] != "{" or value[-1] != "}":
        return value
    body = value[1:-1]
    if not body:
        return []
    return [
        _to_array(item, element_type) if nested else convert_cell(element_type, item)
        for item, nested in _split_array_literal(body)
    ]


def convert_cell(type_name: str, value: JSONValue) -> JSONValue:
    """Convert one column value according to its Postgres type name.

    ``bool`` ``t``/``f`` become booleans; ``int2``, ``int4``, ``int8`` and ``oid`` become ints;
    ``float4`` and ``float8`` floats; ``numeric`` an int when integral, else a float; ``json``
    and ``jsonb`` are parsed; ``timestamp`` gets a ``T`` between date and time; a type starting
    with ``_`` is an array of the rest (``{1,2,3}`` becomes ``[1, 2, 3]``). ``None`` stays
    ``None``. Anything that does not convert is returned unchanged.
    """
    if value is None:
        return None
    if type_name.startswith("_"):
        return _to_array(value, type_name[1:])
    if type_name == "bool":
        return _to_bool(value)
    if type_name in _INTEGER_TYPES:
        return _to_int(value)
    if type_name in _FLOAT_TYPES:
        return _to_float(value)
    if type_name in _JSON_TYPES:
        return _to_json(value)
    if type_name == "timestamp":
        return _to_timestamp(value)
    return value


def convert_change_data(
    columns: object, record: object, *, skip_types: Collection[str] = ()
) -> JSONObject:
    """Convert every value of ``record`` by the types listed in ``columns``.

    Args:
        columns: The change's ``columns``, a list of ``{"name": ..., "type": ...}``.
        record: The ``record`` or ``old_record`` object.
        skip_types: Type names to leave unconverted.

    Returns:
        A new dict. A record that is not an object gives ``{}``; columns without a type entry
        pass through unchanged.
    """
    if not isinstance(record, dict):
        return {}
    types: dict[str, str] = {}
    if isinstance(columns, list):
        for column in columns:
            if isinstance(column, dict):
                name = column.get("name")
                type_name = column.get("type")
                if isinstance(name, str) and isinstance(type_name, str):
                    types[name] = type_name
    converted: JSONObject = {}
    for name, value in record.items():
        type_name = types.get(name)
        if type_name is None or type_name in skip_types:
            converted[name] = value
        else:
            converted[name] = convert_cell(type_name, value)
    return converted


@dataclass(frozen=True, slots=True)
class PostgresChange:
    """One row change, as delivered to a ``postgres_changes`` subscription.

    Attributes:
        schema: The table's schema, for example ``public``.
        table: The table name.
        commit_timestamp: When the transaction committed, ``YYYY-MM-DDTHH:MM:SS.mmmZ``.
        event_type: ``INSERT``, ``UPDATE`` or ``DELETE``.
        new: The new row for INSERT and UPDATE, values converted; ``{}`` for DELETE.
        old: The old row for UPDATE and DELETE (often only the primary key); ``{}`` for INSERT.
        columns: ``[{"name": ..., "type": ...}]`` as the server sent them.
        errors: ``None``, or the server's error strings (for example ``"Error 401: Unauthorized"``).
        ids: The binding ids this change matched.
    """

    schema: str
    table: str
    commit_timestamp: str | None
    event_type: str
    new: JSONObject
    old: JSONObject
    columns: list[JSONValue]
    errors: JSONValue
    ids: tuple[int, ...] = ()


def parse_postgres_change(
    payload: object, *, skip_types: Collection[str] = ()
) -> PostgresChange | None:
    """Build a :class:`~trio_realtime.PostgresChange` from a ``postgres_changes`` frame payload.

    Returns:
        ``None`` when the payload does not have the ``{"ids": [...], "data": {...}}`` shape.
    """
    if not isinstance(payload, dict):
        return None
    data = payload.get("data")
    if not isinstance(data, dict):
        return None
    raw_ids = payload.get("ids")
    ids = tuple(i for i in raw_ids if isinstance(i, int)) if isinstance(raw_ids, list) else ()
    columns = data.get("columns")
    column_list: list[JSONValue] = columns if isinstance(columns, list) else []
    schema = data.get("schema")
    table = data.get("table")
    event_type = data.get("type", data.get("eventType"))
    commit_timestamp = data.get("commit_timestamp")
    return PostgresChange(
        schema=schema if isinstance(schema, str) else "",
        table=table if isinstance(table, str) else "",
        commit_timestamp=commit_timestamp if isinstance(commit_timestamp, str) else None,
        event_type=event_type if isinstance(event_type, str) else "",
        new=convert_change_data(column_list, data.get("record"), skip_types=skip_types),
        old=convert_change_data(column_list, data.get("old_record"), skip_types=skip_types),
        columns=column_list,
        errors=data.get("errors"),
        ids=ids,
    )


# The postgres_changes errors the server does not retry (``realtime_channel.ex``
# ``handle_info(:postgres_subscribe)``: ``:malformed_subscription_params`` from
# ``Subscriptions.parse_subscription_params/1`` and ``:subscription_insert_failed`` from
# ``Subscriptions.create/5``). Every other error (a database timeout, shown as
# ``{:error, "Too many database timeouts"}``, an exception...) is retried after 5 to 10 s and
# may be followed by "Subscribed to PostgreSQL".
FINAL_POSTGRES_ERRORS: Final = (
    "Error parsing `filter` params",
    "Error parsing `select` params",
    "No subscription params provided",
    "Column selection is not supported",
    "Unable to subscribe to changes with given parameters",
)


def is_final_postgres_error(message: str) -> bool:
    """Whether a postgres_changes ``system`` error is final: one the server does not retry."""
    return message.startswith(FINAL_POSTGRES_ERRORS)
