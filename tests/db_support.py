"""A throwaway PostgreSQL for the database-backed server tests (DB-*, AZ-*, BD-*).

One cluster per test session (``postgres_cluster``), a fresh database per test (``database``).
Without PostgreSQL, wal2json or psycopg the tests skip with the reason, except under CI (the
``CI`` environment variable set), where a missing dependency fails them.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest
import trio

from trio_realtime.testing import PostgresCluster, PostgresNotFound, start_postgres
from trio_realtime.testing._cluster import wal2json_available

JWT_SECRET = "jwt-SECRET-for-the-database-tests-" + "x" * 40
"""Long enough for HS512 (PyJWT warns about shorter keys)."""

_names = itertools.count(1)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, and the database tests cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster with wal_level=logical, for the whole session."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install 'trio-realtime[postgres]')")
    try:
        has_wal2json = wal2json_available()
    except PostgresNotFound as exc:
        _unavailable(str(exc))
    if not has_wal2json:
        _unavailable("wal2json is not installed (apt-get install postgresql-15-wal2json)")
    with start_postgres() as cluster:
        yield cluster


def run_sql(url: str, statement: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Run one statement (autocommit) and return its rows, if any."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


async def sql(url: str, statement: str, *params: object) -> list[tuple[object, ...]]:
    """Run :func:`run_sql` in a worker thread."""
    return await trio.to_thread.run_sync(run_sql, url, statement, params)


@pytest.fixture
def database(postgres_cluster: PostgresCluster) -> str:
    """The URL of a fresh database, with the publication and grants Supabase has."""
    return postgres_cluster.create_database(f"test_{os.getpid()}_{next(_names)}")
