"""Replay of what ``realtime.send()`` stored, on the database-backed local server (RP-03).

Real PostgreSQL and the real clock (see ``test_db_changes``); ``trio.fail_after`` is only a
guard. Skipped without PostgreSQL, except under CI.
"""

from __future__ import annotations

import trio
from db_support import sql
from server_support import connect, obj, reply_status
from test_db_authorization import ALICE, LIMIT, POLICIES, db_server, join_private, token

from trio_realtime.protocol import channel_config


async def test_rp03_realtime_send_from_sql_is_replayed_to_a_private_join(
    database: str, nursery: trio.Nursery
) -> None:
    """RP-03: a private ``realtime.send()`` from SQL reaches the joined reader with ``meta.id``;
    a private channel joining later with ``replay`` gets it again with ``meta.replayed``."""
    with trio.fail_after(LIMIT):
        await sql(database, POLICIES)
        async with db_server(database) as server:
            live, _ = await join_private(server, nursery, "lobby", token(ALICE))
            assert (await live.receive()).event == "presence_state"
            await sql(database, """select realtime.send('{"n": 1}', 'note', 'lobby', true)""")
            delivered = await live.receive()
            message_id = obj(obj(delivered.payload)["meta"])["id"]
            config = channel_config(private=True)
            obj(config["broadcast"])["replay"] = {"since": 0, "limit": 5}
            late = await connect(server, "1.0.0", nursery, apikey=token(ALICE))
            reply = await late.join("lobby", config=config, access_token=token(ALICE))
            assert reply_status(reply)[0] == "ok"
            replayed = await late.receive_event("broadcast")
    assert obj(replayed.payload) == {
        "event": "note",
        "payload": {"n": 1},
        "type": "broadcast",
        "meta": {"id": message_id, "replayed": True},
    }
