"""LS-03, RS-14: Postgres change emission routed by bindings and filters (PROTOCOL.md section 7)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
import trio
from server_support import VSNS, RawClient, connect, obj, reply_status

from trio_realtime.protocol import Frame, JSONValue, broadcast_frame, postgres_binding
from trio_realtime.testing import RealtimeServer, serve_realtime

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


async def _subscribe(
    server: RealtimeServer, vsn: str, nursery: trio.Nursery, *bindings: dict[str, JSONValue]
) -> tuple[RawClient, list[int]]:
    client = await connect(server, vsn, nursery)
    reply = await client.join("db", bindings=bindings)
    status, response = reply_status(reply)
    assert status == "ok"
    ids = [entry["id"] for entry in obj(response)["postgres_changes"]]
    system = await client.receive()
    assert system.event == "system"
    return client, ids


def _ids(frame: Frame) -> object:
    assert frame.event == "postgres_changes", frame
    return obj(frame.payload)["ids"]


@pytest.mark.parametrize("vsn", VSNS)
async def test_ls03_change_message_shape(vsn: str, nursery: trio.Nursery) -> None:
    """LS-03: the message is a fan-out frame with ids and data exactly as section 7.4."""
    async with serve_realtime() as server:
        client, ids = await _subscribe(
            server, vsn, nursery, postgres_binding("*", schema="public", table="messages")
        )
        columns = [{"name": "id", "type": "int4"}, {"name": "body", "type": "text"}]
        delivered = await server.emit_postgres_change(
            "public",
            "messages",
            "INSERT",
            record={"id": 1, "body": "hi"},
            columns=columns,
            commit_timestamp="2026-08-21T12:00:00.123Z",
        )
        assert delivered == 1
        frame = await client.receive()
        assert (frame.topic, frame.event, frame.ref, frame.join_ref) == (
            "realtime:db",
            "postgres_changes",
            None,
            None,
        )
        assert frame.payload == {
            "ids": ids,
            "data": {
                "schema": "public",
                "table": "messages",
                "commit_timestamp": "2026-08-21T12:00:00.123Z",
                "type": "INSERT",
                "errors": None,
                "columns": columns,
                "record": {"id": 1, "body": "hi"},
            },
        }

        await server.emit_postgres_change(
            "public", "messages", "update", record={"id": 1, "ok": True}, old_record={"id": 1}
        )
        data = obj(obj((await client.receive()).payload)["data"])
        assert data["type"] == "UPDATE"
        assert TIMESTAMP.fullmatch(data["commit_timestamp"])
        assert data["columns"] == [{"name": "id", "type": "int8"}, {"name": "ok", "type": "bool"}]
        assert (data["record"], data["old_record"]) == ({"id": 1, "ok": True}, {"id": 1})

        moment = datetime(2026, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)
        await server.emit_postgres_change(
            "public",
            "messages",
            "DELETE",
            old_record={"id": 1},
            commit_timestamp=moment,
            errors=["Error 401: Unauthorized"],
        )
        data = obj(obj((await client.receive()).payload)["data"])
        assert "record" not in data
        assert data["old_record"] == {"id": 1}
        assert data["commit_timestamp"] == "2026-01-02T03:04:05.678Z"
        assert data["errors"] == ["Error 401: Unauthorized"]


@pytest.mark.parametrize("vsn", VSNS)
async def test_ls03_routing_by_event_schema_and_table(vsn: str, nursery: trio.Nursery) -> None:
    """LS-03: ids hold exactly the bindings of the channel the change matches."""
    async with serve_realtime() as server:
        client, (insert, update, star, other, schema_only, table_only) = await _subscribe(
            server,
            vsn,
            nursery,
            postgres_binding("INSERT", table="messages"),
            postgres_binding("update", table="messages"),
            postgres_binding("*", table="messages"),
            postgres_binding("*", table="other"),
            {"event": "DELETE", "schema": "audit"},
            {"event": "*", "table": "messages"},
        )
        await server.emit_postgres_change("public", "messages", "INSERT", record={"id": 1})
        assert _ids(await client.receive()) == [insert, star, table_only]
        await server.emit_postgres_change("public", "messages", "UPDATE", record={"id": 1})
        assert _ids(await client.receive()) == [update, star, table_only]
        await server.emit_postgres_change("public", "other", "DELETE", old_record={"id": 1})
        assert _ids(await client.receive()) == [other]
        await server.emit_postgres_change("audit", "log", "DELETE", old_record={"id": 1})
        assert _ids(await client.receive()) == [schema_only]
        assert await server.emit_postgres_change("private", "x", "INSERT", record={}) == 0
        assert await server.emit_postgres_change("audit", "log", "INSERT", record={}) == 0


@pytest.mark.parametrize(
    ("filter_text", "value", "matches"),
    [
        ("room_id=eq.5", 5, True),
        ("room_id=eq.5", 6, False),
        ("room_id=neq.5", 6, True),
        ("room_id=neq.5", 5, False),
        ("room_id=lt.5", 4, True),
        ("room_id=lt.5", 5, False),
        ("room_id=lte.5", 5, True),
        ("room_id=lte.5", 6, False),
        ("room_id=gt.5", 6, True),
        ("room_id=gt.5", 5, False),
        ("room_id=gte.5", 5, True),
        ("room_id=gte.5", 4, False),
        ("room_id=in.(1,5,9)", 5, True),
        ("room_id=in.(1,9)", 5, False),
        ("room_id=not.eq.5", 5, False),
        ("room_id=eq.5,room_id=lt.9", 5, True),
        ("room_id=eq.5,room_id=gt.9", 5, False),
        ("room_id=eq.abc", "abc", True),
        ('room_id=in.(abc,"d,e")', "d,e", True),
    ],
)
async def test_ls03_filters(
    filter_text: str, value: JSONValue, matches: bool, nursery: trio.Nursery
) -> None:
    """LS-03: filters eq neq lt lte gt gte in (and not., and AND-ed lists) route changes."""
    async with serve_realtime() as server:
        binding = postgres_binding("*", table="messages", filter=filter_text)
        client, (binding_id,) = await _subscribe(server, "2.0.0", nursery, binding)
        delivered = await server.emit_postgres_change(
            "public", "messages", "INSERT", record={"room_id": value}
        )
        assert delivered == int(matches)
        if matches:
            assert _ids(await client.receive()) == [binding_id]


@pytest.mark.parametrize("vsn", VSNS)
async def test_ls03_delete_filters_on_old_record(vsn: str, nursery: trio.Nursery) -> None:
    """LS-03: on DELETE the filter is evaluated against old_record."""
    async with serve_realtime() as server:
        binding = postgres_binding("*", table="messages", filter="room_id=eq.5")
        client, (binding_id,) = await _subscribe(server, vsn, nursery, binding)
        assert (
            await server.emit_postgres_change(
                "public", "messages", "DELETE", old_record={"room_id": 6}
            )
            == 0
        )
        await server.emit_postgres_change("public", "messages", "DELETE", old_record={"room_id": 5})
        assert _ids(await client.receive()) == [binding_id]
        # UPDATE and INSERT use the new record.
        assert (
            await server.emit_postgres_change(
                "public", "messages", "UPDATE", record={"room_id": 6}, old_record={"room_id": 5}
            )
            == 0
        )


@pytest.mark.parametrize("vsn", VSNS)
async def test_ls03_each_channel_gets_its_own_ids(vsn: str, nursery: trio.Nursery) -> None:
    """LS-03: two channels with different filters each get the ids of their own bindings."""
    async with serve_realtime() as server:
        five, (five_id,) = await _subscribe(
            server, vsn, nursery, postgres_binding("INSERT", table="m", filter="room=eq.5")
        )
        many, (many_id, all_id) = await _subscribe(
            server,
            vsn,
            nursery,
            postgres_binding("INSERT", table="m", filter="room=in.(5,6)"),
            postgres_binding("INSERT", table="m"),
        )
        assert await server.emit_postgres_change("public", "m", "INSERT", record={"room": 5}) == 2
        assert _ids(await five.receive()) == [five_id]
        assert _ids(await many.receive()) == [many_id, all_id]
        assert await server.emit_postgres_change("public", "m", "INSERT", record={"room": 7}) == 1
        assert _ids(await many.receive()) == [all_id]


@pytest.mark.parametrize("vsn", VSNS)
async def test_ls03_filter_error_keeps_the_channel(vsn: str, nursery: trio.Nursery) -> None:
    """LS-03: a filter that does not parse gives a system error; the channel stays joined."""
    async with serve_realtime() as server:
        client = await connect(server, vsn, nursery)
        bad = postgres_binding("*", table="messages", filter="room_id=in.5")
        joined = await client.join("db", bindings=[bad])
        assert reply_status(joined)[0] == "ok"
        system = await client.receive()
        assert system.event == "system"
        assert system.payload == {
            "channel": "db",
            "extension": "postgres_changes",
            "message": (
                "Error parsing `filter` params: `in` filter value must be wrapped by parentheses"
            ),
            "status": "error",
        }
        assert await server.emit_postgres_change("public", "messages", "INSERT", record={}) == 0
        await client.send(broadcast_frame("9", joined.ref, "db", "still", {}))
        await server.broadcast("db", "here", {})
        assert (await client.receive()).event == "broadcast"

        other = await connect(server, vsn, nursery)
        await other.join("db2", bindings=[{"event": "INSERT"}])
        system = await other.receive()
        assert obj(system.payload)["message"] == (
            "No subscription params provided. Please provide at least a `schema` or `table` "
            'to subscribe to: %{"event" => "INSERT"}'
        )


async def test_ls03_emit_rejects_unknown_types() -> None:
    """LS-03: only INSERT, UPDATE and DELETE can be emitted."""
    async with serve_realtime() as server:
        with pytest.raises(ValueError, match="TRUNCATE"):
            await server.emit_postgres_change("public", "m", "TRUNCATE")


@pytest.mark.parametrize(
    ("filter_text", "record", "matches"),
    [
        ("body=ilike.%urgent%", {"body": "An URGENT note"}, True),
        ("body=like.%urgent%", {"body": "An URGENT note"}, False),
        ("body=match.^An", {"body": "An URGENT note"}, True),
        ("body=imatch.note$", {"body": "An URGENT NOTE"}, True),
        ("done=is.true", {"done": True}, True),
        ("done_at=is.null", {"done_at": None}, True),
        ("done_at=not.is.null", {"done_at": None}, False),
        ("owner=isdistinct.bob", {"owner": None}, True),
        ("owner=not.isdistinct.bob", {"owner": "bob"}, True),
        (
            "room=eq.5,body=ilike.%hi%,done_at=is.null",
            {"room": 5, "body": "Hi!", "done_at": None},
            True,
        ),
        (
            "room=eq.5,body=ilike.%hi%,done_at=is.null",
            {"room": 5, "body": "Hi!", "done_at": 1},
            False,
        ),
    ],
)
async def test_rs14_server_routes_by_every_operator(
    filter_text: str, record: dict[str, JSONValue], matches: bool, nursery: trio.Nursery
) -> None:
    """RS-14: the local server routes by like ilike match imatch is isdistinct (with not.) and
    by several conditions, all of which must hold."""
    async with serve_realtime() as server:
        binding = postgres_binding("*", table="messages", filter=filter_text)
        client, (binding_id,) = await _subscribe(server, "1.0.0", nursery, binding)
        delivered = await server.emit_postgres_change("public", "messages", "INSERT", record=record)
        assert delivered == int(matches)
        if matches:
            assert _ids(await client.receive()) == [binding_id]


_UNABLE = (
    "Unable to subscribe to changes with given parameters. An exception happened so please "
    "check your connect parameters: [event: *, schema: public, table: messages, "
    "filters: {filters}, select: nil]. Exception: ERROR P0001 (raise_exception) {error}"
)


@pytest.mark.parametrize(
    ("filter_text", "message"),
    [
        ("id=fts.x", 'Error parsing `filter` params: ["fts", "x"]'),
        ("id=not.wrong", 'Error parsing `filter` params: ["wrong"]'),
        (
            "done=is.maybe",
            _UNABLE.format(
                filters='[{"done", "is", "maybe", false}]',
                error="invalid value for is filter: must be null, true, false, or unknown",
            ),
        ),
        (
            "id=eq.1,body=not.match.(a",
            _UNABLE.format(
                filters='[{"id", "eq", "1", false}, {"body", "match", "(a", true}]',
                error="invalid regular expression for match filter: invalid regular expression: "
                "missing ), unterminated subpattern",
            ),
        ),
        (
            "id=in.(" + ",".join(str(n) for n in range(101)) + ")",
            _UNABLE.format(
                filters='[{"id", "in", "{' + ",".join(str(n) for n in range(101)) + '}", false}]',
                error="too many values for `in` filter. Maximum 100",
            ),
        ),
    ],
)
async def test_rs14_bad_filters_get_the_servers_error_strings(
    filter_text: str, message: str, nursery: trio.Nursery
) -> None:
    """RS-14: a filter the server cannot parse, or whose values its subscription trigger
    refuses, is a ``postgres_changes`` system error with the server's text; the channel stays."""
    async with serve_realtime() as server:
        client = await connect(server, "1.0.0", nursery)
        binding = postgres_binding("*", schema="public", table="messages", filter=filter_text)
        joined = await client.join("db", bindings=[binding])
        assert reply_status(joined)[0] == "ok"
        system = await client.receive()
        assert system.payload == {
            "channel": "db",
            "extension": "postgres_changes",
            "message": message,
            "status": "error",
        }
        assert await server.emit_postgres_change("public", "messages", "INSERT", record={}) == 0
        assert server.statistics().channels_joined == 1


async def test_rs14_one_hundred_in_values_are_accepted(nursery: trio.Nursery) -> None:
    """RS-14: the ``in`` limit is 100 values; 100 subscribe."""
    async with serve_realtime() as server:
        values = ",".join(str(n) for n in range(100))
        binding = postgres_binding("*", table="messages", filter=f"id=in.({values})")
        client, (binding_id,) = await _subscribe(server, "1.0.0", nursery, binding)
        assert (
            await server.emit_postgres_change("public", "messages", "INSERT", record={"id": 99})
            == 1
        )
        assert _ids(await client.receive()) == [binding_id]


@pytest.mark.parametrize(
    ("binding", "shown"),
    [
        ({"event": "*", "schema": "public", "filter": "id=eq.1"}, None),
        ({"event": "*", "table": "t", "filter": "id=eq.1"}, None),
        ({"event": "*", "schema": "public", "table": None}, None),
        ({"schema": "public", "table": "t", "filter": None}, None),
        ({"schema": 1, "user_token": "x"}, "<redacted>"),
    ],
)
async def test_rs14_a_filter_needs_schema_and_table_as_on_the_server(
    binding: dict[str, JSONValue], shown: str | None, nursery: trio.Nursery
) -> None:
    """RS-14: the server accepts schema+table(+filter), schema alone or table alone; anything
    else (a filter without both, a null table) is its "No subscription params" error."""
    async with serve_realtime() as server:
        client = await connect(server, "1.0.0", nursery)
        await client.join("db", bindings=[binding])
        system = await client.receive()
        message = obj(system.payload)["message"]
        assert message.startswith(
            "No subscription params provided. Please provide at least a `schema` or `table` "
            "to subscribe to: "
        )
        if shown is not None:
            assert message.endswith(shown)
