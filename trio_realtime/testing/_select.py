"""``select`` of postgres_changes bindings: the columns a subscriber asked for.

A binding may carry ``"select": ["id", "body"]``. The server then sends, for a matching change,
only those columns plus the primary key, in ``columns``, ``record`` and ``old_record`` alike
(``realtime.apply_rls``). Subscribers of one change are served per distinct ``select``: a
channel whose matching bindings ask for different columns gets one message per column set,
each with the ids of its bindings.

Parsing follows ``Subscriptions.parse_subscription_params``: a list keeps its strings (none
left means no selection), a string is an error, and a selection on a wildcard schema or table
is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from .._frames import JSONObject, JSONValue
from .._postgres_filters import FilterParseError

SELECT_NOT_A_LIST: Final = (
    "Error parsing `select` params: expected a list of column name strings, "
    'e.g. select: ["col1", "col2"]'
)
SELECT_ON_WILDCARD: Final = (
    "Column selection is not supported for wildcard subscriptions. "
    "Provide an explicit schema and table name."
)


def parse_select(raw: JSONValue, schema: str, table: str) -> tuple[str, ...] | None:
    """The binding's selected columns, sorted (as the server stores them), or ``None``.

    Raises:
        FilterParseError: with the server's words, for a string, or a selection on a
            wildcard schema or table.
    """
    if isinstance(raw, str):
        raise FilterParseError(SELECT_NOT_A_LIST)
    if not isinstance(raw, list):
        return None
    columns = sorted({column for column in raw if isinstance(column, str)})
    if not columns:
        return None
    if schema == "*" or table == "*":
        raise FilterParseError(SELECT_ON_WILDCARD)
    return tuple(columns)


def selected_data(
    data: JSONObject, select: Sequence[str] | None, primary_key: Iterable[str]
) -> JSONObject:
    """``data`` of a change message keeping only ``select`` and the primary key."""
    if select is None:
        return data
    keep = set(select).union(primary_key)
    result = dict(data)
    columns = data.get("columns")
    if isinstance(columns, list):
        result["columns"] = [
            column for column in columns if isinstance(column, dict) and column.get("name") in keep
        ]
    for key in ("record", "old_record"):
        row = data.get(key)
        if isinstance(row, dict):
            result[key] = {name: value for name, value in row.items() if name in keep}
    return result
