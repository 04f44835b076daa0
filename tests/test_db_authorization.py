"""Realtime Authorization and Broadcast from Database on the database-backed server.

AZ-01..03: private channels checked against RLS policies on ``realtime.messages`` (SELECT to
receive, INSERT to send), with ``realtime.topic()`` and the ``extension`` column, under the
user's claims. BD-01..02: ``realtime.send()`` and ``realtime.broadcast_changes()`` reach the
topic's subscribers. Real PostgreSQL, real clock (see ``test_db_changes``); nothing sleeps: a
message that must not arrive is checked by what arrives instead, in order.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import trio
from db_support import JWT_SECRET, sql
from server_support import RawClient, connect, obj, reply_status

from trio_realtime.protocol import (
    Frame,
    access_token_frame,
    broadcast_frame,
    channel_config,
    heartbeat_frame,
    presence_track_frame,
)
from trio_realtime.testing import RealtimeServer, make_token, serve_realtime

LIMIT = 20.0
"""Seconds any one test may take."""

ALICE = "00000000-0000-0000-0000-0000000000a1"
BOB = "00000000-0000-0000-0000-0000000000b0"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

POLICIES = """
-- Everyone signed in may read the rooms they belong to (room:<their id>) and "lobby".
create policy "read own room" on realtime.messages for select to authenticated using (
  realtime.topic() in ('room:' || auth.uid()::text, 'lobby')
  and realtime.messages.extension in ('broadcast', 'presence')
);
-- Only users whose token says so may send there.
create policy "writers send" on realtime.messages for insert to authenticated with check (
  realtime.topic() in ('room:' || auth.uid()::text, 'lobby')
  and coalesce((auth.jwt() ->> 'writer')::boolean, false)
);
"""


@asynccontextmanager
async def db_server(url: str) -> AsyncIterator[RealtimeServer]:
    """A server on ``url`` with ``jwt_secret``, polling every 20 ms."""
    async with serve_realtime(database_url=url, jwt_secret=JWT_SECRET, poll_interval=0.02) as s:
        yield s


def token(user: str, *, writer: bool = False) -> str:
    """A signed token for ``user``, with the ``writer`` claim when asked."""
    if writer:
        return make_token(JWT_SECRET, role="authenticated", sub=user, writer=True)
    return make_token(JWT_SECRET, role="authenticated", sub=user)


async def join_private(
    server: RealtimeServer,
    nursery: trio.Nursery,
    topic: str,
    user_token: str,
    *,
    vsn: str = "1.0.0",
    ack: bool = False,
) -> tuple[RawClient, Frame]:
    """Connect with ``user_token`` and join ``topic`` as a private channel; return the reply."""
    client = await connect(server, vsn, nursery, apikey=user_token)
    config = channel_config(private=True, broadcast_ack=ack, presence_enabled=True)
    reply = await client.join(topic, config=config, access_token=user_token)
    return client, reply


async def test_az01_private_joins_follow_the_read_policy(
    database: str, nursery: trio.Nursery
) -> None:
    """AZ-01: a private join needs a read policy that passes for the topic (realtime.topic(),
    auth.uid()); else it is refused with the server's reason. The public room is not checked."""
    with trio.fail_after(LIMIT):
        await sql(database, POLICIES)
        async with db_server(database) as server:
            _, own = await join_private(server, nursery, f"room:{ALICE}", token(ALICE))
            _, other = await join_private(server, nursery, f"room:{BOB}", token(ALICE))
            client = await connect(server, "1.0.0", nursery, apikey=token(ALICE))
            public = await client.join(f"room:{BOB}", config=channel_config())
    assert reply_status(own)[0] == "ok"
    assert reply_status(other) == (
        "error",
        {
            "reason": "Unauthorized: You do not have permissions to read from this Channel topic: "
            f"room:{BOB}"
        },
    )
    assert reply_status(public)[0] == "ok"


async def test_az02_sending_and_tracking_need_the_write_policy(
    database: str, nursery: trio.Nursery
) -> None:
    """AZ-02: without the insert policy a broadcast is dropped silently (no ack even with
    ack: true) and a track gets an error reply; a writer's broadcast reaches every reader."""
    with trio.fail_after(LIMIT):
        await sql(database, POLICIES)
        async with db_server(database) as server:
            reader, _ = await join_private(server, nursery, "lobby", token(BOB), ack=True)
            writer, _ = await join_private(server, nursery, "lobby", token(ALICE, writer=True))
            for client in (reader, writer):  # each one's own presence_state
                assert (await client.receive()).event == "presence_state"

            await reader.send(broadcast_frame("9", "1", "lobby", "msg", {"from": "reader"}))
            await reader.send(heartbeat_frame("10"))
            after_refused = await reader.receive()
            await reader.send(presence_track_frame("11", "1", "lobby", {"online": True}))
            track = await reader.receive()

            await writer.send(broadcast_frame("5", "1", "lobby", "msg", {"from": "writer"}))
            received = await reader.receive()
            await writer.send(presence_track_frame("6", "1", "lobby", {"online": True}))
            writer_track = await writer.receive()
    assert (after_refused.event, after_refused.ref) == ("phx_reply", "10")  # no ack came first
    assert (track.ref, reply_status(track)) == ("11", ("error", {}))
    assert received.event == "broadcast"
    assert obj(received.payload)["payload"] == {"from": "writer"}
    assert (writer_track.ref, reply_status(writer_track)) == ("6", ("ok", {}))


async def test_az03_a_token_without_read_access_closes_the_channel(
    database: str, nursery: trio.Nursery
) -> None:
    """AZ-03: after access_token, the policies are evaluated again; when read access is gone
    the channel closes with the server's message."""
    topic = f"room:{ALICE}"
    with trio.fail_after(LIMIT):
        await sql(database, POLICIES)
        async with db_server(database) as server:
            client, reply = await join_private(server, nursery, topic, token(ALICE))
            assert reply_status(reply)[0] == "ok"
            assert (await client.receive()).event == "presence_state"
            await client.send(access_token_frame("2", "1", topic, token(ALICE, writer=True)))
            await client.send(heartbeat_frame("3"))
            still_joined = await client.receive()
            await client.send(access_token_frame("4", "1", topic, token(BOB)))
            system = await client.receive()
            close = await client.receive()
    assert (still_joined.event, still_joined.ref) == ("phx_reply", "3")
    assert system.event == "system"
    assert system.payload == {
        "channel": topic,
        "extension": "system",
        "message": f"You no longer have permission to read from this Channel topic: {topic}",
        "status": "error",
    }
    assert close.event == "phx_close"


async def test_bd01_realtime_send_reaches_v1_and_v2_subscribers(
    database: str, nursery: trio.Nursery
) -> None:
    """BD-01: realtime.send() from SQL reaches the topic with meta.id: V1 as a text broadcast,
    V2 as binary kind 4; a private message goes only to the (authorized) private room, a
    public one only to the public room."""
    with trio.fail_after(LIMIT):
        await sql(database, POLICIES)
        async with db_server(database) as server:
            v1, _ = await join_private(server, nursery, "lobby", token(BOB))
            v2, _ = await join_private(server, nursery, "lobby", token(BOB), vsn="2.0.0")
            public = await connect(server, "2.0.0", nursery, apikey=token(BOB))
            await public.join("lobby", config=channel_config())
            for client in (v1, v2):
                assert (await client.receive()).event == "presence_state"
            await sql(database, """select realtime.send('{"n": 1}', 'note', 'lobby', true)""")
            text = await v1.receive()
            raw = await v2.receive_raw()
            await sql(database, """select realtime.send('{"n": 2}', 'note', 'lobby', false)""")
            public_note = await public.receive()
            stored = await sql(database, "select id::text, private from realtime.messages")
    message_id = obj(obj(text.payload)["meta"])["id"]
    assert UUID.fullmatch(str(message_id))
    assert (text.event, text.ref) == ("broadcast", None)
    assert text.payload == {
        "event": "note",
        "payload": {"n": 1},
        "type": "broadcast",
        "meta": {"id": message_id},
    }
    assert isinstance(raw, bytes)  # a binary frame
    meta = b'{"id":"' + str(message_id).encode() + b'"}'
    assert raw == (
        bytes((4, len("realtime:lobby"), len("note"), len(meta), 1))
        + b"realtime:lobby"
        + b"note"
        + meta
        + b'{"n":1}'
    )
    assert obj(public_note.payload)["payload"] == {"n": 2}
    assert sorted(bool(private) for _id, private in stored) == [False, True]


async def test_bd02_broadcast_changes_from_a_trigger(database: str, nursery: trio.Nursery) -> None:
    """BD-02: a trigger calling realtime.broadcast_changes() broadcasts each row change."""
    with trio.fail_after(LIMIT):
        await sql(
            database,
            POLICIES
            + """
            create table notes (id int primary key, body text);
            create function notes_changed() returns trigger language plpgsql as $$
            begin
              perform realtime.broadcast_changes(
                'lobby', tg_op, tg_op, tg_table_name, tg_table_schema, new, old);
              return null;
            end $$;
            create trigger notes_broadcast after insert or update or delete on notes
              for each row execute function notes_changed();
            """,
        )
        async with db_server(database) as server:
            client, _ = await join_private(server, nursery, "lobby", token(ALICE))
            assert (await client.receive()).event == "presence_state"
            await sql(database, "insert into notes values (1, 'a')")
            insert = await client.receive()
            await sql(database, "update notes set body = 'b'")
            update = await client.receive()
    assert obj(insert.payload)["event"] == "INSERT"
    assert obj(insert.payload)["payload"] == {
        "old_record": None,
        "record": {"id": 1, "body": "a"},
        "operation": "INSERT",
        "table": "notes",
        "schema": "public",
    }
    inner = obj(obj(update.payload)["payload"])
    assert inner["old_record"] == {"id": 1, "body": "a"}
    assert inner["record"] == {"id": 1, "body": "b"}


async def test_az02_rest_broadcasts_to_private_topics_need_the_write_policy(
    database: str, nursery: trio.Nursery
) -> None:
    """AZ-02: REST broadcasts to a private topic are checked against the same insert policy:
    the single endpoint answers 403 without it, the batch endpoint skips the message (202)."""
    with trio.fail_after(LIMIT):
        await sql(database, POLICIES)
        async with db_server(database) as server:
            reader, _ = await join_private(server, nursery, "lobby", token(BOB))
            assert (await reader.receive()).event == "presence_state"
            async with httpx.AsyncClient(
                transport=server.http_transport, base_url=server.url
            ) as http:

                def auth(user_token: str) -> dict[str, str]:
                    return {"authorization": f"Bearer {user_token}", "apikey": user_token}

                single = "/api/broadcast/lobby/events/note?private=true"
                refused = await http.post(single, json={"n": 0}, headers=auth(token(BOB)))
                batch = {
                    "messages": [
                        {"topic": "lobby", "event": "note", "payload": {"n": 1}, "private": True}
                    ]
                }
                skipped = await http.post("/api/broadcast", json=batch, headers=auth(token(BOB)))
                allowed = await http.post(
                    single, json={"n": 2}, headers=auth(token(ALICE, writer=True))
                )
            received = await reader.receive()
    assert (refused.status_code, refused.json()) == (403, {"message": "Unauthorized"})
    assert skipped.status_code == 202
    assert allowed.status_code == 202
    assert obj(received.payload)["payload"] == {"n": 2}


async def test_az01_presence_needs_its_own_read_policy(
    database: str, nursery: trio.Nursery
) -> None:
    """AZ-01: a user whose policy allows reading broadcasts only joins, gets broadcasts, and
    gets no presence_state or presence_diff."""
    with trio.fail_after(LIMIT):
        await sql(
            database,
            POLICIES + "create policy broadcasts_only on realtime.messages for select to anon"
            " using (realtime.topic() = 'lobby' and extension = 'broadcast');",
        )
        async with db_server(database) as server:
            anon = make_token(JWT_SECRET, role="anon")
            watcher, reply = await join_private(server, nursery, "lobby", anon)
            member, _ = await join_private(server, nursery, "lobby", token(ALICE, writer=True))
            assert (await member.receive()).event == "presence_state"
            await member.send(presence_track_frame("2", "1", "lobby", {"online": True}))
            assert reply_status(await member.receive()) == ("ok", {})
            assert (await member.receive()).event == "presence_diff"
            await member.send(broadcast_frame(None, "1", "lobby", "msg", {"n": 1}))
            first = await watcher.receive()
    assert reply_status(reply)[0] == "ok"
    assert first.event == "broadcast"  # no presence_state, no presence_diff before it
    assert obj(first.payload)["payload"] == {"n": 1}
