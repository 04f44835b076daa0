"""The checks the server's database makes when it stores a subscription's filters.

The Realtime server parses a filter (``_postgres_filters.parse_filter``, the same parser the
client's builder is tested against), then inserts the subscription into
``realtime.subscription``, whose trigger (``realtime.subscription_check_filters``) refuses some
values that parse. The local server without a database has no tables to check columns and types
against, so it makes the checks that need none, in the trigger's order, and reports a failure
with the server's words:

* an ``in`` list of more than 100 values;
* an ``is`` value other than ``null``, ``true``, ``false`` or ``unknown``;
* a ``match`` / ``imatch`` pattern that is not a valid regular expression (checked with
  Python's ``re``, which accepts nearly the same patterns as PostgreSQL's; the detail after
  ``invalid regular expression:`` is Python's).

Unknown columns, values that do not cast to the column's type and ``is true`` on a non-boolean
column are left to a database-backed server, whose trigger reports them itself.

Pure functions, so that any local server can use them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .._postgres_filters import IS_VALUES, FilterCondition

MAX_IN_VALUES = 100
"""The most values an ``in`` filter may list."""

UNABLE_TO_SUBSCRIBE = (
    "Unable to subscribe to changes with given parameters. An exception happened so please "
    "check your connect parameters: [{params}]. Exception: ERROR P0001 (raise_exception) {error}"
)


def _inspect_text(text: str) -> str:
    """A string as Elixir's ``inspect`` shows it."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _in_literal(items: tuple[str, ...]) -> str:
    """The Postgres array literal the server stores for an ``in`` list."""
    rendered = []
    for item in items:
        if not item or any(char in item for char in ',{}"\\ ') or item.upper() == "NULL":
            rendered.append('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"')
        else:
            rendered.append(item)
    return "{" + ",".join(rendered) + "}"


def stored_filters(conditions: Sequence[FilterCondition]) -> str:
    """The filters as the server logs them: ``[{"col", "op", "value", negate}, ...]``."""
    parts = []
    for condition in conditions:
        value = condition.value
        text = _in_literal(value) if isinstance(value, tuple) else value
        negate = "true" if condition.negate else "false"
        fields = ", ".join(
            _inspect_text(part) for part in (condition.column, condition.operator, text)
        )
        parts.append(f"{{{fields}, {negate}}}")
    return "[" + ", ".join(parts) + "]"


def subscription_params(
    event: str,
    schema: str,
    table: str,
    conditions: Sequence[FilterCondition],
    select: Sequence[str] | None,
) -> str:
    """A subscription's parameters as the server writes them in its error messages."""
    selected = "nil" if select is None else "[" + ", ".join(map(_inspect_text, select)) + "]"
    return (
        f"event: {event}, schema: {schema}, table: {table}, "
        f"filters: {stored_filters(conditions)}, select: {selected}"
    )


def trigger_error(condition: FilterCondition) -> str | None:
    """What the subscription trigger raises for ``condition``, or ``None`` if it passes the
    checks that need no table (see the module docstring)."""
    operator = condition.operator
    value = condition.value
    if operator == "in" and isinstance(value, tuple) and len(value) > MAX_IN_VALUES:
        return f"too many values for `in` filter. Maximum {MAX_IN_VALUES}"
    if operator == "is" and value not in IS_VALUES:
        return "invalid value for is filter: must be null, true, false, or unknown"
    if operator in ("match", "imatch") and isinstance(value, str):
        try:
            re.compile(value)
        except re.error as exc:
            return (
                f"invalid regular expression for {operator} filter: "
                f"invalid regular expression: {exc.msg}"
            )
    return None


def subscription_error(
    event: str,
    schema: str,
    table: str,
    conditions: Sequence[FilterCondition],
    select: Sequence[str] | None = None,
) -> str | None:
    """The ``system`` error message the server sends when storing this subscription fails in
    the trigger, or ``None`` when it passes."""
    for condition in conditions:
        error = trigger_error(condition)
        if error is not None:
            params = subscription_params(event, schema, table, conditions, select)
            return UNABLE_TO_SUBSCRIBE.format(params=params, error=error)
    return None
