"""realtime-js against the database-backed local server (DB-07).

Node runs as a separate process on real sockets and the real clock; ``trio.fail_after(GUARD)``
only guards against a hang. Skipped without node and npm or without PostgreSQL and wal2json,
except under CI (see ``tests/_node.py`` and ``tests/db_support.py``).
"""

from __future__ import annotations

import trio
from _node import realtime_js
from db_support import JWT_SECRET, sql

from trio_realtime.testing import make_token, serve_realtime

GUARD = 60.0

LISTEN = r"""
const { RealtimeClient } = require('@supabase/realtime-js');
const WebSocket = require('ws');
const [url, apikey] = process.argv.slice(2);
const out = (value) => process.stdout.write(JSON.stringify(value) + '\n');
const client = new RealtimeClient(url, { params: { apikey }, transport: WebSocket });
const channel = client.channel('db-node');
channel.on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'messages' },
  (payload) => {
    out({ received: payload });
    client.disconnect();
    setTimeout(() => process.exit(0), 10);
  });
channel.on('system', {}, (payload) => out({ system: payload.message }));
channel.subscribe((status, error) => out({ status, error: error ? String(error) : null }));
"""


async def test_db07_realtime_js_receives_an_insert(database: str) -> None:
    """DB-07: realtime-js subscribes through the database-backed server and gets an INSERT made
    with SQL, converted by its own payload code (eventType, new, old)."""
    node = realtime_js()
    token = make_token(JWT_SECRET, role="authenticated", sub="00000000-0000-0000-0000-000000000001")
    with trio.fail_after(GUARD):
        await sql(
            database,
            "create table messages (id int8 primary key, body text, tags int4[], meta jsonb,"
            " sent timestamp, ok bool);"
            "alter table messages enable row level security;"
            "create policy mine on messages for select to authenticated"
            " using (auth.uid() = '00000000-0000-0000-0000-000000000001');"
            "alter publication supabase_realtime add table messages;",
        )
        async with serve_realtime(database_url=database, jwt_secret=JWT_SECRET) as server:
            base = "ws" + server.url.removeprefix("http") + "/realtime/v1"
            async with node.start("db_listen.js", LISTEN, base, token) as (process, lines):
                assert await lines.next() == {"status": "SUBSCRIBED", "error": None}
                # Sent once the server streams the binding's changes.
                assert await lines.next() == {"system": "Subscribed to PostgreSQL"}
                await sql(
                    database,
                    "insert into messages values (7, 'hi', '{1,2}', '{\"k\": true}',"
                    " '2026-08-21 12:00:00', true)",
                )
                received = await lines.next()
                assert await process.wait() == 0
    assert isinstance(received, dict)
    payload = received["received"]
    assert payload["eventType"] == "INSERT"
    assert (payload["schema"], payload["table"], payload["errors"]) == ("public", "messages", None)
    assert payload["new"] == {
        "id": 7,
        "body": "hi",
        "tags": [1, 2],
        "meta": {"k": True},
        "sent": "2026-08-21T12:00:00",
        "ok": True,
    }
    assert payload["old"] == {}


PRIVATE = r"""
const { RealtimeClient } = require('@supabase/realtime-js');
const WebSocket = require('ws');
const [url, apikey] = process.argv.slice(2);
const out = (value) => process.stdout.write(JSON.stringify(value) + '\n');
const client = new RealtimeClient(url, { params: { apikey }, transport: WebSocket });
client.setAuth(apikey);
const channel = client.channel('lobby', { config: { private: true } });
channel.on('broadcast', { event: 'note' }, (message) => {
  out({ received: message });
  client.disconnect();
  setTimeout(() => process.exit(0), 10);
});
channel.subscribe((status, error) => out({ status, error: error ? String(error) : null }));
"""


async def test_bd01_realtime_js_receives_realtime_send(database: str) -> None:
    """BD-01: realtime-js, joined to a private channel its policy allows, receives a message
    sent with realtime.send() from SQL, with meta.id."""
    node = realtime_js()
    token = make_token(JWT_SECRET, role="authenticated", sub="00000000-0000-0000-0000-000000000001")
    with trio.fail_after(GUARD):
        await sql(
            database,
            "create policy lobby on realtime.messages for select to authenticated"
            " using (realtime.topic() = 'lobby');",
        )
        async with serve_realtime(database_url=database, jwt_secret=JWT_SECRET) as server:
            base = "ws" + server.url.removeprefix("http") + "/realtime/v1"
            async with node.start("db_private.js", PRIVATE, base, token) as (process, lines):
                assert await lines.next() == {"status": "SUBSCRIBED", "error": None}
                await sql(database, """select realtime.send('{"n": 1}', 'note', 'lobby')""")
                received = await lines.next()
                assert await process.wait() == 0
    assert isinstance(received, dict)
    message = received["received"]
    assert (message["event"], message["payload"], message["type"]) == (
        "note",
        {"n": 1},
        "broadcast",
    )
    assert isinstance(message["meta"]["id"], str)
