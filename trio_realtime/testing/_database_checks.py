"""What the server asks the database: a join's bindings, a topic's policies, rows' visibility.

:func:`check_subscription` checks postgres_changes bindings against the publication and the
table, with the real server's error strings; :func:`authorize_topic` evaluates the read and
write policies of ``realtime.messages`` for a private channel's topic (both on the control
connection); :func:`visible_keys` finds which changed rows a role may select under row level
security (on the poll connection).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import psycopg
from psycopg import sql

from ._database_messages import Column
from ._postgres_changes import Binding, inspect
from ._state import Policies

logger = logging.getLogger("trio_realtime.testing")

TABLE_SQL = """
select a.attname, t.typname, coalesce(a.attnum = any(k.conkey), false), c.relrowsecurity
from pg_class c
join pg_namespace n on n.oid = c.relnamespace
join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
join pg_type t on t.oid = a.atttypid
left join pg_constraint k on k.conrelid = c.oid and k.contype = 'p'
where n.nspname = %s and c.relname = %s
order by a.attnum
"""


def subscription_text(binding: Binding) -> str:
    """A binding as the real server prints it in its error messages (Elixir's inspect)."""
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


def check_subscription(
    conn: psycopg.Connection[Any], publication: str, bindings: tuple[Binding, ...], role: str | None
) -> str | None:
    """Check a join's bindings as the real server does; return its error message, or ``None``.

    Each binding's table must be in the publication, the role must exist and the filter's
    columns must be the table's.

    Raises:
        psycopg.OperationalError: when the connection is lost.
    """
    for binding in bindings:
        text = subscription_text(binding)
        if binding.table == "*":
            query = "select 1 from pg_publication_tables where pubname = %s" + (
                "" if binding.schema == "*" else " and schemaname = %s"
            )
            params: tuple[str, ...] = (publication,)
            if binding.schema != "*":
                params += (binding.schema,)
        else:
            query = (
                "select 1 from pg_publication_tables "
                "where pubname = %s and schemaname = %s and tablename = %s"
            )
            params = (publication, binding.schema, binding.table)
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
                    for row in conn.execute(TABLE_SQL, (binding.schema, binding.table)).fetchall()
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


def authorize_topic(
    conn: psycopg.Connection[Any], role: str | None, claims: str, topic: str
) -> Policies | None:
    """Evaluate the read and write policies of ``realtime.messages`` for ``topic``.

    As the real server does: reads are checked by inserting a broadcast and a presence
    message for the topic as the server's own user, then selecting them back as the
    subscriber; writes by inserting them as the subscriber (a refusal is
    ``insufficient_privilege``). Everything is rolled back. ``None`` when a policy raised.

    Raises:
        psycopg.OperationalError: when the connection is lost.
    """
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


def visible_keys(
    conn: psycopg.Connection[Any],
    schema: str,
    name: str,
    rows: list[list[Column]],
    *,
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
                sql.SQL("{}::{}").format(sql.Literal(key.text), sql.SQL(key.regtype)) for key in row
            )
        )
        for row in rows
    )
    query = sql.SQL("select {} from {}.{} where ({}) in ({})").format(
        texts, sql.Identifier(schema), sql.Identifier(name), key_list, values
    )
    claims_data = orjson.loads(claims)
    sub = claims_data.get("sub") if isinstance(claims_data, dict) else None
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
