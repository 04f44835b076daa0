"""Preparing the database: the checks, the ``trio_realtime`` schema, the publication, the slot.

Run in worker threads, before anything is served (and again, for the slot, on a reconnect).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from ._database_types import DatabaseSetupError
from ._supabase_sql import AUTH_SQL, REALTIME_SQL, ROLES_SQL

logger = logging.getLogger("trio_realtime.testing")

SCHEMA = "trio_realtime"

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


def connect(url: str) -> psycopg.Connection[Any]:
    """Open an autocommit connection to ``url``.

    Raises:
        DatabaseSetupError: when it cannot connect.
    """
    try:
        return psycopg.connect(url, autocommit=True, application_name="trio_realtime")
    except psycopg.OperationalError as exc:
        raise DatabaseSetupError(f"cannot connect to the database: {exc}".strip()) from None


def prepare(control: psycopg.Connection[Any], publication: str, tables: Sequence[str]) -> None:
    """Check that the database can stream changes, and create what the server needs in it.

    Raises:
        DatabaseSetupError: for a ``wal_level`` other than ``logical``, a user that may not
            create replication slots, or a table of ``tables`` not in the publication.
    """
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
            "select 1 from pg_publication where pubname = %s", (publication,)
        ).fetchone()
        if not exists:
            control.execute(sql.SQL("create publication {}").format(sql.Identifier(publication)))
            logger.info("database: created the empty publication %s", publication)
    for name in tables:
        schema, _, table = name.rpartition(".")
        schema = schema or "public"
        if not control.execute(
            "select 1 from pg_publication_tables "
            "where pubname = %s and schemaname = %s and tablename = %s",
            (publication, schema, table),
        ).fetchone():
            raise DatabaseSetupError(
                f"table {schema}.{table} is not in the publication {publication}: run "
                f"ALTER PUBLICATION {publication} ADD TABLE {schema}.{table}"
            )


def create_slot(url: str, slot: str) -> psycopg.Connection[Any]:
    """Connect and create the temporary wal2json slot ``slot``; return the connection.

    Raises:
        DatabaseSetupError: when wal2json is missing or the slot cannot be created.
    """
    poll = connect(url)
    try:
        poll.execute("select pg_create_logical_replication_slot(%s, 'wal2json', true)", (slot,))
    except psycopg.errors.UndefinedFile as exc:
        poll.close()
        raise DatabaseSetupError(
            "the wal2json output plugin is not installed in this PostgreSQL (Debian/Ubuntu: "
            f"apt-get install postgresql-<version>-wal2json): {exc}".strip()
        ) from None
    except psycopg.Error as exc:
        poll.close()
        message = f"cannot create a replication slot: {exc}".strip()
        hint = exc.diag.message_hint
        if hint and hint not in message:
            # For example PostgreSQL's list of trusted output plugins, which says what to change.
            message = f"{message} ({hint})"
        raise DatabaseSetupError(message) from None
    return poll
