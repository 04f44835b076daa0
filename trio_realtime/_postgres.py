"""Postgres changes: value conversion, the filter builder, and filter matching.

Pure functions, shared by the client (which converts the values of each change) and by the local
server in ``trio_realtime.testing`` (which routes changes by filter, as PROTOCOL.md section 7
describes).

Value conversion follows realtime-js: the server sends each column's Postgres type name, and
values that arrive as text are converted by type. Values that already have the right JSON type
pass through, as do values that cannot be converted and types that are not listed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import orjson

from ._exceptions import FilterParseError as FilterParseError
from ._frames import JSONObject, JSONValue

FilterOperator = Literal[
    "eq",
    "neq",
    "lt",
    "lte",
    "gt",
    "gte",
    "in",
    "like",
    "ilike",
    "is",
    "match",
    "imatch",
    "isdistinct",
]
FILTER_OPERATORS: Final = (
    "eq",
    "neq",
    "lt",
    "lte",
    "gt",
    "gte",
    "in",
    "like",
    "ilike",
    "is",
    "match",
    "imatch",
    "isdistinct",
)
"""Every operator the Realtime server accepts in a postgres_changes filter."""

IS_VALUES: Final = ("null", "true", "false", "unknown")
"""The only values of an ``is`` filter (lower case, as the server checks them)."""

_PATTERN_OPERATORS: Final = frozenset({"like", "ilike", "match", "imatch"})

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


# ---------------------------------------------------------------------------------------------
# Filter builder.

# Characters that make a value need double quotes: the filter's own syntax, plus what a
# Postgres array literal gives meaning to (the server turns ``in.(a,b)`` into ``{a,b}``).
_NEEDS_QUOTES: Final = frozenset(',()"\\{}')


def _filter_value(value: object, *, in_list: bool = False) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if (
        not text
        or text != text.strip()
        or any(char in _NEEDS_QUOTES for char in text)
        or (in_list and text.upper() == "NULL")
    ):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def postgres_filter(
    column: str, operator: FilterOperator, value: object, *, negate: bool = False
) -> str:
    """Build a postgres_changes filter such as ``room_id=eq.5``.

    What each operator means, as the server applies it to the column's value ``v``:

    * ``eq neq lt lte gt gte``: ``v = value``, ``v != value``, ``v < value``...;
    * ``in``: ``v`` is one of the values (at most 100);
    * ``like``, ``ilike``: SQL ``LIKE`` / ``ILIKE`` patterns (``%`` any text, ``_`` one
      character, ``\\`` escapes), on text columns;
    * ``match``, ``imatch``: the POSIX regular expression matches somewhere in ``v``
      (``~`` / ``~*``, ``imatch`` ignoring case), on text columns;
    * ``is``: ``v IS NULL`` (``None`` or ``"null"``), ``IS TRUE``, ``IS FALSE`` or
      ``IS UNKNOWN`` (the last three on boolean columns);
    * ``isdistinct``: ``v IS DISTINCT FROM value`` (a NULL ``v`` is distinct from any value).

    A NULL ``v`` passes no filter but ``is`` and ``isdistinct``, negated or not. Several
    conditions, all of which must hold, are joined by :func:`postgres_filters`.

    Args:
        column: The column name.
        operator: One of ``FILTER_OPERATORS``.
        value: The value; for ``in``, an iterable of values, written as ``(a,b)``; for
            ``is``, ``None``, ``True``, ``False`` or one of ``IS_VALUES``; for the pattern
            operators, a string. ``None`` is written ``null``. A value that is empty, has
            surrounding whitespace, or contains a comma, parenthesis, brace, backslash or
            double quote is double-quoted with backslash escapes (in an ``in`` list, so is the
            text ``NULL``), so the server reads back exactly the value given.
        negate: Prefix the operator with ``not.`` (``not.is.null`` is ``IS NOT NULL``,
            ``not.isdistinct`` is ``IS NOT DISTINCT FROM``).

    Raises:
        ValueError: for an unknown operator, an empty column, an ``in`` value that is a
            string or not iterable, an ``is`` value other than those listed, or a pattern
            that is not a string.
    """
    if operator not in FILTER_OPERATORS:
        raise ValueError(f"filter operator must be one of {', '.join(FILTER_OPERATORS)}")
    if not isinstance(column, str) or not column or any(char in column for char in "=,"):
        raise ValueError(f"invalid filter column {column!r}")
    if operator == "in":
        if isinstance(value, str | bytes) or not isinstance(value, Iterable):
            raise ValueError("an 'in' filter needs an iterable of values")
        rendered = "(" + ",".join(_filter_value(item, in_list=True) for item in value) + ")"
    elif operator == "is":
        rendered = _is_value(value)
    elif operator in _PATTERN_OPERATORS and not isinstance(value, str):
        raise ValueError(f"a {operator!r} filter needs a string pattern")
    else:
        rendered = _filter_value(value)
    prefix = "not." if negate else ""
    return f"{column}={prefix}{operator}.{rendered}"


def _is_value(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value in IS_VALUES:
        return value
    raise ValueError("an 'is' filter takes None, True, False, 'null', 'true', 'false' or 'unknown'")


def postgres_filters(*filters: str) -> str:
    """Join filters built by :func:`postgres_filter` into one: the server ANDs them.

    ``postgres_filters(postgres_filter("room", "eq", 5), postgres_filter("kind", "neq", "x"))``
    gives ``room=eq.5,kind=neq.x``: a change passes only if both hold.

    Raises:
        ValueError: for no filter at all, or a part the server would not parse (the message
            is the server's).
    """
    if not filters:
        raise ValueError("postgres_filters needs at least one filter")
    for text in filters:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"not a filter: {text!r}")
        parse_filter(text)
    return ",".join(filters)


# ---------------------------------------------------------------------------------------------
# Filter parsing and matching (used by the local server).


@dataclass(frozen=True, slots=True)
class FilterCondition:
    """One parsed ``column=op.value`` condition of a postgres_changes filter."""

    column: str
    operator: str
    value: str | tuple[str, ...]
    negate: bool = False


_FILTER_ERROR = "Error parsing `filter` params: "
_QUOTE_OPENERS = frozenset(".(,")


def _split_top_level(text: str, *, start: str = "") -> list[str]:
    """Split ``text`` at the commas outside parentheses and double quotes, as the server does.

    A double quote opens a quoted part only right after ``.``, ``(`` or ``,`` (``start`` is
    taken as the character before the text and before each part); inside it a backslash
    escapes the next character. A ``)`` never takes the depth below zero.
    """
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    depth = 0
    previous = start
    index = 0
    while index < len(text):
        char = text[index]
        if quoted:
            current.append(char)
            if char == "\\" and index + 1 < len(text):
                index += 1
                current.append(text[index])
            elif char == '"':
                quoted = False
        elif char == '"' and previous in _QUOTE_OPENERS:
            quoted = True
            current.append(char)
        elif char == "(":
            depth += 1
            current.append(char)
        elif char == ")":
            depth = max(0, depth - 1)
            current.append(char)
        elif char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            char = start  # the next part starts after ``start``, like the text
        else:
            current.append(char)
        previous = char
        index += 1
    parts.append("".join(current))
    return parts


def _unquote(text: str) -> str:
    """Strip the double quotes around a value and undo its backslash escapes.

    As the server does, a value whose quotes do not close exactly at its end is kept verbatim.
    """
    if not text.startswith('"'):
        return text
    result: list[str] = []
    index = 1
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            index += 1
            result.append(text[index])
        elif char == '"':
            return "".join(result) if index == len(text) - 1 else text
        else:
            result.append(char)
        index += 1
    return text


def _inspected(pieces: list[str]) -> FilterParseError:
    """The server's error for a segment it cannot split, with the pieces Elixir-inspected."""
    listed = ", ".join(orjson.dumps(piece).decode() for piece in pieces)
    return FilterParseError(f"{_FILTER_ERROR}[{listed}]")


def parse_filter(text: str) -> list[FilterCondition]:
    """Parse a filter string as the Realtime server does (PROTOCOL.md section 7.2).

    Several conditions joined by commas must all hold; whitespace around each is ignored and
    a blank filter has no conditions. Supported operators are ``FILTER_OPERATORS``, each
    optionally prefixed with ``not.``. A double-quoted value may hold commas and parentheses,
    with backslash escapes.

    Raises:
        FilterParseError: with the server's error text, for example
            ``Error parsing `filter` params: `in` filter value must be wrapped by parentheses``
            or, for an unknown operator, ``Error parsing `filter` params: ["fts", "hey"]``.
    """
    text = text.strip()
    if not text:
        return []
    conditions: list[FilterCondition] = []
    for part in _split_top_level(text):
        segment = part.strip()
        if not segment:
            raise FilterParseError(
                _FILTER_ERROR + "filter must not contain empty segments (check for extra commas)"
            )
        column, sep, rest = segment.partition("=")
        if not sep:
            raise _inspected([segment])
        negate = rest.startswith("not.")
        if negate:
            rest = rest[4:]
        operator, dot, raw_value = rest.partition(".")
        if not dot:
            raise _inspected([rest])
        if operator not in FILTER_OPERATORS:
            raise _inspected([operator, raw_value])
        if operator == "in":
            if not (raw_value.startswith("(") and raw_value.endswith(")")):
                raise FilterParseError(
                    _FILTER_ERROR + "`in` filter value must be wrapped by parentheses"
                )
            inner = raw_value[1:-1]
            items = (
                tuple(_unquote(item.strip()) for item in _split_top_level(inner, start=","))
                if inner
                else ()
            )
            conditions.append(FilterCondition(column, operator, items, negate))
        else:
            conditions.append(FilterCondition(column, operator, _unquote(raw_value), negate))
    return conditions


def _coerce(value: JSONValue, text: str) -> tuple[object, object] | None:
    """Return ``(value, filter value)`` in comparable form, or ``None`` if they cannot compare."""
    if isinstance(value, bool):
        lowered = text.lower()
        if lowered in ("true", "t"):
            return value, True
        if lowered in ("false", "f"):
            return value, False
        return None
    if isinstance(value, int | float):
        try:
            number = float(text) if isinstance(value, float) or "." in text else int(text)
        except ValueError:
            return None
        return value, number
    if isinstance(value, str):
        return value, text
    return orjson.dumps(value).decode(), text


def _text(value: JSONValue) -> str:
    """``value`` as Postgres shows it as text (``true``, ``5``, JSON for objects)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return orjson.dumps(value).decode()


def like_pattern(pattern: str, *, ignore_case: bool = False) -> re.Pattern[str]:
    """Compile a SQL ``LIKE`` pattern: ``%`` any text, ``_`` one character, ``\\`` escapes."""
    parts: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            index += 1
            parts.append(re.escape(pattern[index]))
        elif char == "%":
            parts.append(".*")
        elif char == "_":
            parts.append(".")
        else:
            parts.append(re.escape(char))
        index += 1
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    return re.compile("".join(parts), flags)


def _equal(value: JSONValue, text: str) -> bool:
    pair = _coerce(value, text)
    return pair is not None and pair[0] == pair[1]


def _compare(operator: str, value: JSONValue, text: str) -> bool | None:
    """``value <operator> text`` for the operators whose result is NULL on a NULL value."""
    if operator in _PATTERN_OPERATORS:
        subject = _text(value)
        try:
            if operator in ("like", "ilike"):
                return (
                    like_pattern(text, ignore_case=operator == "ilike").fullmatch(subject)
                    is not None
                )
            flags = re.IGNORECASE if operator == "imatch" else 0
            return re.search(text, subject, flags) is not None
        except re.error:
            return None  # refused at subscription; never matches
    pair = _coerce(value, text)
    if pair is None:
        return None  # values that cannot be compared never match
    left, right = pair
    try:
        if operator == "eq":
            return bool(left == right)
        if operator == "neq":
            return bool(left != right)
        if operator == "lt":
            return bool(left < right)  # type: ignore[operator]
        if operator == "lte":
            return bool(left <= right)  # type: ignore[operator]
        if operator == "gt":
            return bool(left > right)  # type: ignore[operator]
        if operator == "gte":
            return bool(left >= right)  # type: ignore[operator]
    except TypeError:
        return None
    return None


def _holds(condition: FilterCondition, value: JSONValue) -> bool:
    operator = condition.operator
    if operator == "is":
        # IS NULL / TRUE / FALSE / UNKNOWN: never NULL itself, so negation applies plainly.
        keyword = condition.value
        if keyword in ("null", "unknown"):
            result = value is None
        elif keyword in ("true", "false"):
            result = value is (keyword == "true")
        else:
            return False  # refused at subscription
        return result is not condition.negate
    if operator == "isdistinct":
        assert isinstance(condition.value, str)
        equal = value is not None and _equal(value, condition.value)
        return equal if condition.negate else not equal
    if value is None:
        return False  # SQL: any other comparison with NULL is NULL, negated or not
    if operator == "in":
        items = condition.value if isinstance(condition.value, tuple) else (condition.value,)
        result = any(_equal(value, item) for item in items)
    else:
        assert isinstance(condition.value, str)
        outcome = _compare(operator, value, condition.value)
        if outcome is None:
            return False
        result = outcome
    return not result if condition.negate else result


def filter_matches(conditions: Sequence[FilterCondition], record: Mapping[str, JSONValue]) -> bool:
    """Return whether ``record`` satisfies every condition (a missing column never matches)."""
    for condition in conditions:
        if condition.column not in record:
            return False
        if not _holds(condition, record[condition.column]):
            return False
    return True


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
