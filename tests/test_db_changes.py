"""The database-backed local server: postgres_changes from real writes (DB-01 .. DB-06).

Each test gets a fresh database on the session's throwaway cluster (``db_support``). Changes
travel through a real logical replication slot, so these tests run on the real clock: they
wait for frames under ``trio.fail_after`` and never sleep.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from db_support import JWT_SECRET, sql
from server_support import VSNS, RawClient, connect, obj, reply_status

from trio_realtime.protocol import (
    Frame,
    JSONValue,
    channel_config,
    postgres_binding,
)
from trio_realtime.testing import (
    DatabaseSetupError,
    PostgresCluster,
    RealtimeServer,
    make_token,
    serve_realtime,
    start_postgres,
)

LIMIT = 20.0
"""Seconds any one test may take."""

OTHER_SECRET = "another-SECRET-" + "y" * 50
USER_A = "00000000-0000-0000-0000-00000000000a"
USER_B = "00000000-0000-0000-0000-00000000000b"
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@asynccontextmanager
async def db_server(url: str, **options: object) -> AsyncIterator[RealtimeServer]:
    """A server on ``url`` polling every 20 ms, to keep the tests quick."""
    async with serve_realtime(
        database_url=url,
        poll_interval=0.02,
        **options,  # type: ignore[arg-type]
    ) as server:
        yield server


async def subscribe(
    server: RealtimeServer,
    nursery: trio.Nursery,
    *bindings: dict[str, JSONValue],
    vsn: str = "1.0.0",
    token: str | None = None,
    topic: str = "db",
) -> tuple[RawClient, list[int]]:
    """Connect, join ``topic`` with ``bindings``, wait for "Subscribed to PostgreSQL"."""
    apikey = token or make_token(JWT_SECRET, role="anon")
    client = await connect(server, vsn, nursery, apikey=apikey)
    reply = await client.join(topic, bindings=bindings, access_token=token)
    status, response = reply_status(reply)
    assert status == "ok", response
    ids = [entry["id"] for entry in obj(response)["postgres_changes"]]
    system = await client.receive()
    assert system.event == "system", system
    assert obj(system.payload)["message"] == "Subscribed to PostgreSQL", system.payload
    return client, ids


async def next_change(client: RawClient) -> dict[str, JSONValue]:
    """The next frame, which must be a postgres_changes message; returns its payload."""
    frame: Frame = await client.receive()
    assert frame.event == "postgres_changes", frame
    assert (frame.ref, frame.join_ref) == (None, None)
    return obj(frame.payload)


TYPES_TABLE = """
create table public.things (
  id int primary key,
  amount numeric,
  flag boolean,
  doc jsonb,
  tags text[],
  happened timestamp,
  happened_tz timestamptz,
  note text
);
alter publication supabase_realtime add table public.things;
"""


@pytest.mark.parametrize("vsn", VSNS)
async def test_db01_insert_types_columns_and_timestamp(
    database: str, vsn: str, nursery: trio.Nursery
) -> None:
    """DB-01: an INSERT made with SQL arrives with columns, typed values and commit_timestamp."""
    with trio.fail_after(LIMIT):
        await sql(database, TYPES_TABLE)
        async with db_server(database) as server:
            client, ids = await subscribe(
                server,
                nursery,
                postgres_binding("INSERT", schema="public", table="things"),
                vsn=vsn,
            )
            await sql(
                database,
                "insert into things values (1, 12.50, true, '{\"a\": [1, 2]}', '{x,y}',"
                " '2026-08-21 12:00:00', '2026-08-21 12:00:00+02', null)",
            )
            payload = await next_change(client)
    assert payload["ids"] == ids
    data = obj(payload["data"])
    assert _TIMESTAMP.fullmatch(str(data.pop("commit_timestamp")))
    assert data == {
        "schema": "public",
        "table": "things",
        "type": "INSERT",
        "errors": None,
        "columns": [
            {"name": "id", "type": "int4"},
            {"name": "amount", "type": "numeric"},
            {"name": "flag", "type": "bool"},
            {"name": "doc", "type": "jsonb"},
            {"name": "tags", "type": "_text"},
            {"name": "happened", "type": "timestamp"},
            {"name": "happened_tz", "type": "timestamptz"},
            {"name": "note", "type": "text"},
        ],
        "record": {
            "id": 1,
            "amount": 12.50,
            "flag": True,
            "doc": {"a": [1, 2]},
            "tags": ["x", "y"],
            "happened": "2026-08-21T12:00:00",
            "happened_tz": "2026-08-21T10:00:00+00:00",
            "note": None,
        },
    }


async def test_db01_update_and_delete_old_record(database: str, nursery: trio.Nursery) -> None:
    """DB-01: UPDATE carries old_record (the key; the full row with REPLICA IDENTITY FULL),
    DELETE the primary key only."""
    with trio.fail_after(LIMIT):
        await sql(
            database,
            "create table notes (id int primary key, body text);"
            "create table logs (id int primary key, body text);"
            "alter table logs replica identity full;"
            "alter publication supabase_realtime add table notes, logs;"
            "insert into notes values (1, 'a'); insert into logs values (1, 'a');",
        )
        async with db_server(database) as server:
            client, _ = await subscribe(
                server, nursery, postgres_binding("*", schema="public", table="*")
            )
            await sql(database, "update notes set body = 'b' where id = 1")
            update = obj((await next_change(client))["data"])
            await sql(database, "update logs set body = 'b' where id = 1")
            full = obj((await next_change(client))["data"])
            await sql(database, "delete from notes where id = 1")
            delete = obj((await next_change(client))["data"])
            await sql(database, "delete from logs where id = 1")
            delete_full = obj((await next_change(client))["data"])
    assert (update["type"], update["record"], update["old_record"]) == (
        "UPDATE",
        {"id": 1, "body": "b"},
        {"id": 1},
    )
    assert full["old_record"] == {"id": 1, "body": "a"}
    assert (delete["type"], delete["old_record"]) == ("DELETE", {"id": 1})
    assert "record" not in delete
    assert delete["columns"] == [{"name": "id", "type": "int4"}, {"name": "body", "type": "text"}]
    assert delete_full["old_record"] == {"id": 1, "body": "b"}


async def test_db01_filters_on_insert_and_delete(database: str, nursery: trio.Nursery) -> None:
    """DB-01: a binding's filter picks the rows; on DELETE it sees the old row."""
    with trio.fail_after(LIMIT):
        await sql(
            database,
            "create table messages (id int primary key, room int, body text);"
            "alter table messages replica identity full;"
            "alter publication supabase_realtime add table messages;",
        )
        async with db_server(database) as server:
            client, ids = await subscribe(
                server,
                nursery,
                postgres_binding("*", schema="public", table="messages", filter="room=eq.5"),
                postgres_binding("INSERT", schema="public", table="messages", filter="id=in.(2,3)"),
            )
            await sql(
                database,
                "insert into messages values (1, 4, 'no'), (2, 5, 'both'), (3, 4, 'second')",
            )
            both = await next_change(client)
            second = await next_change(client)
            await sql(database, "delete from messages where id in (1, 2)")
            deleted = await next_change(client)
            await sql(database, "insert into messages values (9, 5, 'last')")
            last = await next_change(client)
    assert (both["ids"], obj(both["data"])["record"]) == (ids, {"id": 2, "room": 5, "body": "both"})
    assert (second["ids"], obj(obj(second["data"])["record"])["id"]) == ([ids[1]], 3)
    assert (deleted["ids"], obj(deleted["data"])["old_record"]) == (
        [ids[0]],
        {"id": 2, "room": 5, "body": "both"},
    )
    assert obj(obj(last["data"])["record"])["id"] == 9


RLS_TABLE = """
create table todos (id int primary key, owner uuid not null, title text);
alter table todos enable row level security;
create policy "own rows" on todos for select to authenticated using (owner = auth.uid());
grant select on todos to authenticated;
alter publication supabase_realtime add table todos;
"""


async def test_db02_rls_two_subscribers_auth_uid(database: str, nursery: trio.Nursery) -> None:
    """DB-02: each subscriber gets only the rows its policy lets it select, under its own
    claims (auth.uid()); a row nobody may see is never sent; anon sees nothing."""
    with trio.fail_after(LIMIT):
        await sql(database, RLS_TABLE)
        async with db_server(database, jwt_secret=JWT_SECRET) as server:
            binding = postgres_binding("INSERT", schema="public", table="todos")
            token_a = make_token(JWT_SECRET, sub=USER_A)
            token_b = make_token(JWT_SECRET, sub=USER_B)
            alice, _ = await subscribe(server, nursery, binding, token=token_a)
            bob, _ = await subscribe(server, nursery, binding, token=token_b, vsn="2.0.0")
            anon, _ = await subscribe(server, nursery, binding)
            await sql(
                database,
                "insert into todos values (1, %s, 'a1'), (2, %s, 'b1'), "
                "(3, '00000000-0000-0000-0000-000000000000', 'nobody'), (4, %s, 'a2')",
                USER_A,
                USER_B,
                USER_A,
            )
            seen_a = [obj(obj((await next_change(alice))["data"])["record"])["id"] for _ in "ab"]
            seen_b = obj(obj((await next_change(bob))["data"])["record"])["id"]
            # A marker row everyone may see proves nothing else was queued before it.
            await sql(
                database,
                "create policy marker on todos for select to anon, authenticated using (id = 99);"
                "grant select on todos to anon;",
            )
            await sql(database, "insert into todos values (99, %s, 'marker')", USER_B)
            marker_a = obj(obj((await next_change(alice))["data"])["record"])["id"]
            marker_b = obj(obj((await next_change(bob))["data"])["record"])["id"]
            marker_anon = obj(obj((await next_change(anon))["data"])["record"])["id"]
    assert seen_a == [1, 4]
    assert seen_b == 2
    assert (marker_a, marker_b, marker_anon) == (99, 99, 99)


async def test_db02_column_privileges_and_delete_on_rls_table(
    database: str, nursery: trio.Nursery
) -> None:
    """DB-02: columns the role may not select are left out; a DELETE on an RLS table carries
    the primary key only, and reaches every subscriber (a deleted row cannot be checked)."""
    with trio.fail_after(LIMIT):
        await sql(
            database,
            "create table profiles (id int primary key, name text, secret text);"
            "alter table profiles replica identity full;"
            "alter table profiles enable row level security;"
            "create policy everyone on profiles for select to authenticated using (true);"
            "revoke all on profiles from authenticated;"
            "grant select (id, name) on profiles to authenticated;"
            "alter publication supabase_realtime add table profiles;",
        )
        async with db_server(database, jwt_secret=JWT_SECRET) as server:
            client, _ = await subscribe(
                server,
                nursery,
                postgres_binding("*", schema="public", table="profiles"),
                token=make_token(JWT_SECRET, sub=USER_A),
            )
            await sql(database, "insert into profiles values (1, 'ann', 'hidden')")
            insert = obj((await next_change(client))["data"])
            await sql(database, "delete from profiles where id = 1")
            delete = obj((await next_change(client))["data"])
    assert insert["columns"] == [{"name": "id", "type": "int4"}, {"name": "name", "type": "text"}]
    assert insert["record"] == {"id": 1, "name": "ann"}
    assert delete["old_record"] == {"id": 1}


async def test_db02_no_primary_key_and_unauthorized(database: str, nursery: trio.Nursery) -> None:
    """DB-02: a table without a primary key gives Error 400; a role that may not select the
    key gives Error 401, with no record."""
    with trio.fail_after(LIMIT):
        await sql(
            database,
            "create table loose (body text);"
            "create table locked (id int primary key, body text);"
            "revoke all on locked from anon;"
            "alter publication supabase_realtime add table loose, locked;",
        )
        async with db_server(database, jwt_secret=JWT_SECRET) as server:
            client, _ = await subscribe(
                server, nursery, postgres_binding("INSERT", schema="public", table="*")
            )
            await sql(database, "insert into loose values ('x')")
            loose = obj((await next_change(client))["data"])
            await sql(database, "insert into locked values (1, 'x')")
            locked = obj((await next_change(client))["data"])
    assert loose["errors"] == ["Error 400: Bad Request, no primary key"]
    assert locked["errors"] == ["Error 401: Unauthorized"]
    assert locked["record"] == {}


async def test_db03_jwt_errors_at_connect_and_join(database: str, nursery: trio.Nursery) -> None:
    """DB-03: with jwt_secret, bad tokens are refused with the server's strings."""
    with trio.fail_after(LIMIT):
        async with db_server(database, jwt_secret=JWT_SECRET) as server:
            client = await connect(server, "1.0.0", nursery, apikey=make_token(JWT_SECRET))
            cases = {
                "not-a-jwt": "MalformedJWT: The token provided is not a valid JWT",
                make_token(OTHER_SECRET): "JwtSignatureError: Failed to validate JWT signature",
                make_token(JWT_SECRET, expires_in=-10): (
                    "InvalidJWTToken: Token has expired 10 seconds ago"
                ),
                make_token(JWT_SECRET, algorithm="HS384"): "",
            }
            for token, reason in cases.items():
                reply = await client.join("db", config=channel_config(), access_token=token)
                status, response = reply_status(reply)
                if reason:
                    assert (status, response) == ("error", {"reason": reason})
                else:
                    assert status == "ok"
            from trio_realtime import RealtimeConnectionError

            with pytest.raises(RealtimeConnectionError) as refused:
                await connect(server, "1.0.0", nursery, apikey=make_token(OTHER_SECRET))
    assert refused.value.status_code == 401
    assert refused.value.server_message == "Failed to validate JWT signature"


async def test_db03_subscription_errors(database: str, nursery: trio.Nursery) -> None:
    """DB-03: a table outside the publication, or a filter on a missing column, is reported
    as a postgres_changes system error, as the server words it; the channel stays joined."""
    with trio.fail_after(LIMIT):
        await sql(
            database,
            "create table t (id int primary key); alter publication supabase_realtime add table t;",
        )
        async with db_server(database) as server:
            client = await connect(server, "1.0.0", nursery)
            await client.join("a", bindings=[postgres_binding("*", schema="public", table="nope")])
            missing = obj((await client.receive()).payload)
            binding = postgres_binding("*", schema="public", table="t", filter="notacolumn=eq.1")
            await client.join("b", bindings=[binding])
            column = obj((await client.receive()).payload)
    assert (missing["status"], missing["message"]) == (
        "error",
        "Unable to subscribe to changes with given parameters. Please check Realtime is enabled"
        " for the given connect parameters: [event: *, schema: public, table: nope, filters: [],"
        " select: nil]",
    )
    assert column["message"] == (
        "Unable to subscribe to changes with given parameters. An exception happened so please"
        " check your connect parameters: [event: *, schema: public, table: t, filters:"
        ' [{"notacolumn", "eq", "1"}], select: nil]. Exception: ERROR P0001 (raise_exception)'
        " invalid column for filter notacolumn"
    )


async def test_db04_clear_errors_before_serving(
    database: str, postgres_cluster: PostgresCluster
) -> None:
    """DB-04: a table not in the publication, a user without slot permission, and wal_level
    below logical each stop the server before it serves, saying what to change."""
    with trio.fail_after(LIMIT):
        await sql(database, "create table outside (id int primary key)")
        with pytest.raises(DatabaseSetupError, match=r"ADD TABLE public\.outside"):
            async with db_server(database, database_tables=["outside"]):
                pytest.fail("served")
        await sql(
            database,
            "do $$ begin if not exists (select 1 from pg_roles where rolname = 'plain') then "
            "create role plain login; end if; end $$",
        )
        plain = database.replace("postgres@", "plain@")
        with pytest.raises(DatabaseSetupError, match="ALTER ROLE plain WITH REPLICATION"):
            async with db_server(plain):
                pytest.fail("served")


def test_db04_wal_level_and_db06_cluster_helper() -> None:
    """DB-04, DB-06: the cluster helper runs a loopback cluster in a temporary directory; a
    cluster without logical WAL is refused with what to change."""
    with start_postgres(settings={"wal_level": "replica"}) as cluster:
        data_dir = cluster.data_dir
        assert cluster.host == "127.0.0.1"
        assert "wal_level \n-----------\n replica" in cluster.psql("show wal_level").replace(
            "wal_level\n", "wal_level \n"
        )

        async def main() -> None:
            with pytest.raises(DatabaseSetupError, match="wal_level = logical"):
                async with db_server(cluster.url()):
                    pytest.fail("served")

        trio.run(main)
    assert not data_dir.exists()


def test_db04_an_untrusted_output_plugin_is_refused_with_what_to_change() -> None:
    """DB-04, DB-06: where PostgreSQL lists the trusted output plugins (15.20 and later), the
    cluster helper admits wal2json, and a server whose list leaves it out is refused with
    PostgreSQL's hint naming the setting."""
    from trio_realtime.testing._cluster import find_postgres_bin, plugin_settings

    setting = plugin_settings(find_postgres_bin())
    if not setting:
        pytest.skip("this PostgreSQL has no output_plugin_libraries setting")
    assert "wal2json" in setting["output_plugin_libraries"].split(", ")
    with start_postgres(settings={"output_plugin_libraries": "pgoutput"}) as cluster:

        async def main() -> None:
            with trio.fail_after(60):
                with pytest.raises(DatabaseSetupError, match="output_plugin_libraries"):
                    async with db_server(cluster.url()):
                        pytest.fail("served")

        trio.run(main)


async def test_db05_slot_dropped_on_exit(database: str) -> None:
    """DB-05/DB-06: each server has its own temporary slot, gone when it stops."""
    with trio.fail_after(LIMIT):
        async with db_server(database) as first, db_server(database) as second:
            assert first.database is not None
            assert second.database is not None
            slots = {first.database.slot_name, second.database.slot_name}
            rows = await sql(database, "select slot_name from pg_replication_slots")
            assert slots <= {row[0] for row in rows}
        rows = await sql(database, "select slot_name from pg_replication_slots")
    assert not slots & {row[0] for row in rows}


async def test_db05_reconnecting_client_and_restarted_server(
    database: str, nursery: trio.Nursery
) -> None:
    """DB-05: after the client is dropped and subscribes again, and after the server restarts,
    every change made once it is subscribed again arrives."""
    binding = postgres_binding("INSERT", schema="public", table="events")
    with trio.fail_after(LIMIT):
        await sql(
            database,
            "create table events (id int primary key);"
            "alter publication supabase_realtime add table events;",
        )
        async with db_server(database) as server:
            client, _ = await subscribe(server, nursery, binding)
            await sql(database, "insert into events values (1)")
            assert obj(obj((await next_change(client))["data"])["record"]) == {"id": 1}
            await server.drop_connections()
            again, _ = await subscribe(server, nursery, binding)
            await sql(database, "insert into events values (2)")
            assert obj(obj((await next_change(again))["data"])["record"]) == {"id": 2}
        async with db_server(database) as restarted:
            client, _ = await subscribe(restarted, nursery, binding)
            await sql(database, "insert into events select generate_series(3, 12)")
            ids = [obj(obj((await next_change(client))["data"])["record"])["id"] for _ in range(10)]
    assert ids == list(range(3, 13))


def test_db06_psycopg_is_imported_only_for_a_database() -> None:
    """DB-06: psycopg is an optional extra: importing the local server does not load it."""
    import subprocess
    import sys

    code = "import sys, trio_realtime.testing; print('psycopg' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"


async def test_db01_unchanged_toast_and_payload_too_large(
    database: str, nursery: trio.Nursery
) -> None:
    """DB-01: an UPDATE that leaves a TOASTed value alone still carries it (from the old row,
    with REPLICA IDENTITY FULL); a change over max_record_bytes says Error 413 and keeps only
    the values of at most 64 bytes."""
    with trio.fail_after(LIMIT):
        await sql(
            database,
            "create table docs (id int primary key, title text, body text);"
            "alter table docs replica identity full;"
            "alter table docs alter column body set storage external;"
            "alter publication supabase_realtime add table docs;",
        )
        async with db_server(database) as server:
            client, _ = await subscribe(
                server, nursery, postgres_binding("UPDATE", schema="public", table="docs")
            )
            await sql(database, "insert into docs values (1, 'a', repeat('x', 1500000))")
            await sql(database, "update docs set title = 'b' where id = 1")
            data = obj((await next_change(client))["data"])
    assert data["errors"] == ["Error 413: Payload Too Large"]
    assert data["record"] == {"id": 1, "title": "b"}
    assert data["old_record"] == {"id": 1, "title": "a"}


async def test_db02_a_policy_that_raises_gives_error_500(
    database: str, nursery: trio.Nursery
) -> None:
    """DB-02: when the policy raises under a subscriber's claims, that subscriber gets
    Error 500 without the record; others are unaffected."""
    with trio.fail_after(LIMIT):
        await sql(
            database,
            "create table picky (id int primary key, owner uuid);"
            "alter table picky enable row level security;"
            "create policy strict on picky for select to authenticated"
            " using (owner = (auth.jwt() ->> 'owner')::uuid);"
            "grant select on picky to authenticated;"
            "alter publication supabase_realtime add table picky;",
        )
        async with db_server(database, jwt_secret=JWT_SECRET) as server:
            binding = postgres_binding("INSERT", schema="public", table="picky")
            broken, _ = await subscribe(
                server, nursery, binding, token=make_token(JWT_SECRET, owner="not-a-uuid")
            )
            fine_token = make_token(JWT_SECRET, owner=USER_A)
            fine, _ = await subscribe(server, nursery, binding, token=fine_token)
            await sql(database, "insert into picky values (1, %s)", USER_A)
            error = obj((await next_change(broken))["data"])
            seen = obj((await next_change(fine))["data"])
    assert error["errors"] == ["Error 500: Internal Server Error, RLS policy evaluation failed"]
    assert error["record"] == {}
    assert seen["record"] == {"id": 1, "owner": USER_A}


async def test_db05_a_lost_database_connection_is_reopened(
    database: str, nursery: trio.Nursery
) -> None:
    """DB-05: when the poll connection dies, the failure is logged and counted, and the server
    re-opens it with a new slot; changes made once it is back arrive."""
    with trio.fail_after(LIMIT):
        await sql(
            database,
            "create table pings (id int primary key);"
            "alter publication supabase_realtime add table pings;",
        )
        async with db_server(database) as server:
            assert server.database is not None
            client, _ = await subscribe(
                server, nursery, postgres_binding("INSERT", schema="public", table="pings")
            )
            first_slot = server.database.slot_name
            await sql(
                database,
                "select pg_terminate_backend(active_pid) from pg_replication_slots"
                " where slot_name = %s",
                first_slot,
            )
            await server.database.wait_until(lambda stats: stats.reconnects == 1)
            await sql(database, "insert into pings values (1)")
            record = obj((await next_change(client))["data"])["record"]
            stats = server.database.statistics()
    assert record == {"id": 1}
    assert stats.poll_errors >= 1
    assert server.database.slot_name != first_slot


def test_db04_serve_command_reports_database_errors(capsys: pytest.CaptureFixture[str]) -> None:
    """DB-04: ``trio-realtime serve --database-url`` says what is wrong and exits 1."""
    from trio_realtime._cli import main

    status = main(["serve", "--port", "0", "--database-url", "postgresql://postgres@127.0.0.1:1/x"])
    assert status == 1
    error = capsys.readouterr().err
    assert error.startswith("trio-realtime serve: cannot connect to the database:")


async def test_db05_the_client_reconnects_and_misses_nothing_after(
    database: str, nursery: trio.Nursery
) -> None:
    """DB-05: trio_realtime's own client, dropped by the server, reconnects and rejoins; every
    change made once its binding streams again arrives, in order."""
    from trio_realtime import backoff, open_realtime

    with trio.fail_after(LIMIT):
        await sql(
            database,
            "create table events (id int primary key);"
            "alter publication supabase_realtime add table events;",
        )
        async with db_server(database, jwt_secret=JWT_SECRET) as server:
            database_side = server.database
            assert database_side is not None
            token = make_token(JWT_SECRET, role="anon")
            quick = backoff((0.05,), jitter=0)
            async with open_realtime(server.url, apikey=token, reconnect=quick) as client:
                channel = client.channel("db")
                inserts = channel.postgres_changes("INSERT", table="events")
                async with channel:
                    await channel.wait_postgres_ready()
                    await sql(database, "insert into events values (1)")
                    first = (await inserts.receive()).new
                    await server.drop_connections()
                    await database_side.wait_until(lambda stats: stats.subscribed_channels == 1)
                    await sql(database, "insert into events values (2), (3)")
                    after = [(await inserts.receive()).new for _ in range(2)]
    assert first == {"id": 1}
    assert after == [{"id": 2}, {"id": 3}]


async def test_db01_select_keeps_the_asked_columns_and_the_key(
    database: str, nursery: trio.Nursery
) -> None:
    """DB-01 (PG-10): a binding's ``select`` keeps those columns plus the primary key, in
    columns, record and old_record; bindings with different selections get a message each."""
    with trio.fail_after(LIMIT):
        await sql(
            database,
            "create table posts (id int primary key, title text, body text);"
            "alter table posts replica identity full;"
            "alter publication supabase_realtime add table posts;",
        )
        async with db_server(database) as server:
            client, ids = await subscribe(
                server,
                nursery,
                {"event": "UPDATE", "schema": "public", "table": "posts", "select": ["title"]},
                {"event": "*", "schema": "public", "table": "posts"},
            )
            await sql(database, "insert into posts values (1, 'a', 'long')")
            insert = await next_change(client)
            await sql(database, "update posts set title = 'b'")
            updates = [await next_change(client) for _ in range(2)]
    assert insert["ids"] == [ids[1]]
    by_ids = {tuple(message["ids"]): obj(message["data"]) for message in updates}  # type: ignore[arg-type]
    selected = by_ids[(ids[0],)]
    assert selected["columns"] == [
        {"name": "id", "type": "int4"},
        {"name": "title", "type": "text"},
    ]
    assert (selected["record"], selected["old_record"]) == (
        {"id": 1, "title": "b"},
        {"id": 1, "title": "a"},
    )
    assert by_ids[(ids[1],)]["record"] == {"id": 1, "title": "b", "body": "long"}


async def test_db05_a_lost_control_connection_is_reopened_for_the_next_join(
    database: str, nursery: trio.Nursery
) -> None:
    """DB-05: the connection that checks subscriptions is re-opened when it was lost, so the
    next join subscribes as usual."""
    with trio.fail_after(LIMIT):
        await sql(
            database,
            "create table pongs (id int primary key);"
            "alter publication supabase_realtime add table pongs;",
        )
        async with db_server(database) as server:
            await sql(
                database,
                "select pg_terminate_backend(pid) from pg_stat_activity"
                " where application_name = 'trio_realtime' and datname = current_database()"
                " and pid not in (select active_pid from pg_replication_slots"
                " where active_pid is not null)",
            )
            client, _ = await subscribe(
                server, nursery, postgres_binding("INSERT", schema="public", table="pongs")
            )
            await sql(database, "insert into pongs values (1)")
            record = obj((await next_change(client))["data"])["record"]
    assert record == {"id": 1}


FILTER_CASES = [
    ("n=eq.5", [5]),
    ("n=neq.5", [1, 9]),
    ("n=lt.5", [1]),
    ("n=lte.5", [1, 5]),
    ("n=gt.5", [9]),
    ("n=gte.5", [5, 9]),
    ("n=in.(1,9)", [1, 9]),
    ("n=not.in.(1,9)", [5]),
    ("tag=eq.b", [5]),
    ("tag=not.eq.b", [1, 9]),
    ("price=gt.2.5", [9]),
    ("ok=eq.true", [1, 9]),
]


async def test_db01_filter_operators_on_database_rows(database: str, nursery: trio.Nursery) -> None:
    """DB-01: each filter operator picks the rows the real server would, on values decoded
    from the database (int, text, numeric, bool); a NULL never matches."""
    with trio.fail_after(LIMIT):
        await sql(
            database,
            "create table items (id int primary key, n int, tag text, price numeric, ok bool);"
            "alter publication supabase_realtime add table items;",
        )
        async with db_server(database) as server:
            client = await connect(server, "1.0.0", nursery)
            topics = {f"f{index}": text for index, (text, _) in enumerate(FILTER_CASES)}
            for topic, text in [*topics.items(), ("all", "")]:
                binding = postgres_binding(
                    "INSERT", schema="public", table="items", filter=text or None
                )
                reply = await client.join(topic, bindings=[binding])
                assert reply_status(reply)[0] == "ok"
                system = await client.receive()
                assert obj(system.payload)["message"] == "Subscribed to PostgreSQL"
            await sql(
                database,
                "insert into items values (1, 1, 'a', 1.5, true), (5, 5, 'b', 2.5, false),"
                " (9, 9, 'c', 3.75, true), (100, null, null, null, null)",
            )
            seen: dict[str, list[object]] = {}
            while seen.get("realtime:all", [])[-1:] != [100]:
                frame = await client.receive()
                assert frame.event == "postgres_changes", frame
                record = obj(obj(obj(frame.payload)["data"])["record"])
                seen.setdefault(frame.topic, []).append(record["id"])
    for index, (text, expected) in enumerate(FILTER_CASES):
        assert seen.get(f"realtime:f{index}", []) == expected, text
