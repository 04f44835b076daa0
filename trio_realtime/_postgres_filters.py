"""Postgres changes filters: building them, parsing them as the server does, and matching rows.

Pure functions, shared by the client (which builds filters and checks them before a join) and by
the local server in ``trio_realtime.testing`` (which routes changes by filter, as the real
server does).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import orjson

from ._exceptions import FilterParseError as FilterParseError
from ._frames import JSONValue

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
    """Parse a filter string as the Realtime server does, with its error texts.

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
