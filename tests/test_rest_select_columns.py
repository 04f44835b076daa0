"""``postgres_changes(..., select=[...])``: the binding's columns (PG-10).

Clients on the local server's in-memory transport under the autojump clock; raw-frame clients
where the server's words are checked.
"""

from __future__ import annotations

import pytest
import trio
from _realtime import connect, drain, settle
from server_support import connect as raw_connect
from server_support import obj

from trio_realtime.protocol import JSONValue
from trio_realtime.testing import RealtimeServer, serve_realtime

ROW: dict[str, JSONValue] = {"id": 7, "body": "hello", "author": "ann", "blob": "x" * 100}
COLUMNS: list[dict[str, JSONValue]] = [
    {"name": "id", "type": "int4"},
    {"name": "body", "type": "text"},
    {"name": "author", "type": "text"},
    {"name": "blob", "type": "text"},
]


def _bindings(server: RealtimeServer) -> list[object]:
    joins = [
        frame
        for connection in server.connections
        for frame in connection.received_frames
        if frame.event == "phx_join"
    ]
    return list(obj(obj(joins[-1].payload)["config"])["postgres_changes"])


@pytest.mark.parametrize("vsn", ["1.0.0", "2.0.0"])
async def test_pg10_select_is_sent_and_changes_carry_only_those_columns(
    vsn: str, autojump_clock: trio.testing.MockClock
) -> None:
    """PG-10: ``select`` travels in the binding; ``new``, ``old`` and ``columns`` keep only the
    selected columns and the primary key."""
    async with serve_realtime() as server, connect(server, vsn=vsn) as client:
        channel = client.channel("room:pg")
        narrow = channel.postgres_changes("*", table="messages", select=["body"])
        wide = channel.postgres_changes("INSERT", table="messages")
        await channel.join()
        assert _bindings(server) == [
            {"event": "*", "schema": "public", "table": "messages", "select": ["body"]},
            {"event": "INSERT", "schema": "public", "table": "messages"},
        ]
        await server.emit_postgres_change(
            "public", "messages", "INSERT", record=ROW, columns=COLUMNS
        )
        await server.emit_postgres_change(
            "public",
            "messages",
            "UPDATE",
            record={**ROW, "body": "edited"},
            old_record=ROW,
            columns=COLUMNS,
        )
        await settle()
        inserted, updated = drain(narrow)
        assert inserted.new == {"id": 7, "body": "hello"}
        assert [c["name"] for c in inserted.columns] == ["id", "body"]
        assert updated.new == {"id": 7, "body": "edited"}
        assert updated.old == {"id": 7, "body": "hello"}
        (full,) = drain(wide)
        assert full.new == ROW


async def test_pg10_primary_key_given_explicitly(autojump_clock: trio.testing.MockClock) -> None:
    """PG-10: the server keeps the table's primary key, whatever its name."""
    async with serve_realtime() as server, connect(server) as client:
        channel = client.channel("room:pk")
        changes = channel.postgres_changes("INSERT", table="t", select=["body"])
        await channel.join()
        await server.emit_postgres_change(
            "public", "t", "INSERT", record={"uid": "u", "body": "b", "x": 1}, primary_key=["uid"]
        )
        await settle()
        (change,) = drain(changes)
        assert change.new == {"uid": "u", "body": "b"}


async def test_pg10_bad_select_is_refused_at_the_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """PG-10: a string, an empty list or a select without a table raise before any join."""
    async with serve_realtime() as server, connect(server) as client:
        channel = client.channel("room:bad")
        with pytest.raises(TypeError, match="list of column names"):
            channel.postgres_changes(table="t", select="id,body")
        with pytest.raises(ValueError, match="at least one"):
            channel.postgres_changes(table="t", select=[])
        with pytest.raises(ValueError, match="wildcard"):
            channel.postgres_changes(select=["id"])
        assert server.statistics().joins == 0


async def test_pg10_server_words_for_invalid_select(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """PG-10: the local server answers an invalid ``select`` as the real one does, with a
    ``system`` error after the join."""
    async with serve_realtime() as server:
        raw = await raw_connect(server, "1.0.0", nursery)
        await raw.join(
            "realtime:s",
            bindings=[{"event": "*", "schema": "public", "table": "t", "select": "id"}],
        )
        error = await raw.receive_event("system")
        assert obj(error.payload)["message"] == (
            "Error parsing `select` params: expected a list of column name strings, "
            'e.g. select: ["col1", "col2"]'
        )
        await raw.join(
            "realtime:w", bindings=[{"event": "*", "schema": "public", "select": ["id"]}]
        )
        error = await raw.receive_event("system")
        assert obj(error.payload)["message"] == (
            "Column selection is not supported for wildcard subscriptions. "
            "Provide an explicit schema and table name."
        )


async def test_pg10_two_selects_on_one_channel_two_messages(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """PG-10: bindings with different ``select`` matching one change: one message per column
    set, each with its bindings' ids, as the server serves subscribers per ``select``."""
    async with serve_realtime() as server:
        raw = await raw_connect(server, "2.0.0", nursery)
        reply = await raw.join(
            "realtime:two",
            bindings=[
                {"event": "INSERT", "schema": "public", "table": "t", "select": ["body"]},
                {"event": "*", "schema": "public", "table": "t", "select": ["author"]},
            ],
        )
        ids = [entry["id"] for entry in obj(obj(reply.payload)["response"])["postgres_changes"]]
        await raw.receive_event("system")
        await server.emit_postgres_change("public", "t", "INSERT", record=ROW, columns=COLUMNS)
        first = obj((await raw.receive()).payload)
        second = obj((await raw.receive()).payload)
        assert (first["ids"], obj(first["data"])["record"]) == (
            [ids[0]],
            {"id": 7, "body": "hello"},
        )
        assert (second["ids"], obj(second["data"])["record"]) == (
            [ids[1]],
            {"id": 7, "author": "ann"},
        )
