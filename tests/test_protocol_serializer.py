"""Golden frames for the serializer: every server frame of PROTOCOL.md sections 2 to 8.

Each server frame is written twice, as a V1 object (no ``join_ref``; pushes carry ``ref: null``;
``phx_close`` / ``phx_error`` carry the join ref as ``ref``) and as the V2 array of PROTOCOL.md
section 2.2, and must parse and classify the same way under both. The binary vectors are the
byte-exact ones of PROTOCOL.md section 2.3 (from the server's ``v2_serializer_test.exs``).

Scenarios: SR-02 (V1 decode), SR-04 (V2 decode), SR-05 (kind 3), SR-06 (kind 4), SR-07 (field
limits), SR-10 (event_kind), BC-05 / BC-06 (binary and non-object payloads).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, cast

import orjson
import pytest

from trio_realtime.protocol import (
    EventKind,
    Frame,
    JSONObject,
    ProtocolError,
    broadcast_frame,
    check_vsn,
    encode,
    encode_server_frame,
    encode_wire,
    event_kind,
    parse_client_frame,
    parse_frame,
)

V1 = "1.0.0"
V2 = "2.0.0"
VSNS = (V1, V2)


@dataclass(frozen=True)
class ServerCase:
    """One server frame of PROTOCOL.md, in both serializations.

    ``expected`` is the frame as parsed from the V2 form; the V1 form parses to the same frame
    without ``join_ref``.
    """

    name: str
    section: str
    v1: str
    v2: str
    expected: Frame
    kind: EventKind


T = "realtime:room1"
PRESENCE_STATE_PAYLOAD: JSONObject = {
    "u1": {"metas": [{"phx_ref": "GEy9P7s0zaEQ7wBh", "name": "alice"}]},
    "u2": {"metas": [{"phx_ref": "GEy9QAbcd1234xyz", "name": "bob"}]},
}
PRESENCE_DIFF_PAYLOAD: JSONObject = {
    "joins": {
        "u1": {
            "metas": [{"phx_ref": "GEy9R...", "phx_ref_prev": "GEy9P7s0zaEQ7wBh", "name": "alice2"}]
        }
    },
    "leaves": {"u1": {"metas": [{"phx_ref": "GEy9P7s0zaEQ7wBh", "name": "alice"}]}},
}
POSTGRES_CHANGE_PAYLOAD: JSONObject = {
    "ids": [38791245],
    "data": {
        "schema": "public",
        "table": "messages",
        "commit_timestamp": "2026-08-21T12:00:00.123Z",
        "type": "INSERT",
        "errors": None,
        "columns": [{"name": "id", "type": "int4"}, {"name": "body", "type": "text"}],
        "record": {"id": 1, "body": "hi"},
    },
}
_PRESENCE_STATE_JSON = orjson.dumps(PRESENCE_STATE_PAYLOAD).decode()
_PRESENCE_DIFF_JSON = orjson.dumps(PRESENCE_DIFF_PAYLOAD).decode()
_POSTGRES_JSON = orjson.dumps(POSTGRES_CHANGE_PAYLOAD).decode()

SERVER_CASES = [
    ServerCase(
        "heartbeat reply",
        "3.1",
        '{"event":"phx_reply","payload":{"response":{},"status":"ok"},"ref":"7","topic":"phoenix"}',
        '[null,"7","phoenix","phx_reply",{"response":{},"status":"ok"}]',
        Frame("phoenix", "phx_reply", {"response": {}, "status": "ok"}, "7", None),
        EventKind.HEARTBEAT_REPLY,
    ),
    ServerCase(
        "join reply ok with postgres_changes ids",
        "4.2",
        '{"event":"phx_reply","payload":{"response":{"postgres_changes":[{"id":38791245,'
        '"event":"INSERT","schema":"public","table":"messages"}]},"status":"ok"},"ref":"1",'
        '"topic":"realtime:room1"}',
        '["1","1","realtime:room1","phx_reply",{"response":{"postgres_changes":[{"id":38791245,'
        '"event":"INSERT","schema":"public","table":"messages"}]},"status":"ok"}]',
        Frame(
            T,
            "phx_reply",
            {
                "response": {
                    "postgres_changes": [
                        {
                            "id": 38791245,
                            "event": "INSERT",
                            "schema": "public",
                            "table": "messages",
                        }
                    ]
                },
                "status": "ok",
            },
            "1",
            "1",
        ),
        EventKind.PHX_REPLY,
    ),
    ServerCase(
        "join reply ok without bindings",
        "4.2",
        '{"event":"phx_reply","payload":{"response":{"postgres_changes":[]},"status":"ok"},'
        '"ref":"6","topic":"realtime:room1"}',
        '["6","6","realtime:room1","phx_reply",{"response":{"postgres_changes":[]},"status":"ok"}]',
        Frame(T, "phx_reply", {"response": {"postgres_changes": []}, "status": "ok"}, "6", "6"),
        EventKind.PHX_REPLY,
    ),
    ServerCase(
        "join reply error",
        "4.3",
        '{"event":"phx_reply","payload":{"response":{"reason":"Unauthorized: You do not have '
        'permissions to read from this Channel topic: room1"},"status":"error"},"ref":"1",'
        '"topic":"realtime:room1"}',
        '["1","1","realtime:room1","phx_reply",{"response":{"reason":"Unauthorized: You do not '
        'have permissions to read from this Channel topic: room1"},"status":"error"}]',
        Frame(
            T,
            "phx_reply",
            {
                "response": {
                    "reason": "Unauthorized: You do not have permissions to read from this "
                    "Channel topic: room1"
                },
                "status": "error",
            },
            "1",
            "1",
        ),
        EventKind.PHX_REPLY,
    ),
    ServerCase(
        "unmatched topic reply",
        "3.2",
        '{"event":"phx_reply","payload":{"response":{"reason":"unmatched topic"},'
        '"status":"error"},"ref":"3","topic":"room1"}',
        '[null,"3","room1","phx_reply",{"response":{"reason":"unmatched topic"},"status":"error"}]',
        Frame(
            "room1",
            "phx_reply",
            {"response": {"reason": "unmatched topic"}, "status": "error"},
            "3",
            None,
        ),
        EventKind.PHX_REPLY,
    ),
    ServerCase(
        "broadcast ack error with a bare string response",
        "5.3",
        '{"event":"phx_reply","payload":{"response":"payload_size_exceeded","status":"error"},'
        '"ref":"4","topic":"realtime:room1"}',
        '["1","4","realtime:room1","phx_reply",{"response":"payload_size_exceeded",'
        '"status":"error"}]',
        Frame(T, "phx_reply", {"response": "payload_size_exceeded", "status": "error"}, "4", "1"),
        EventKind.PHX_REPLY,
    ),
    ServerCase(
        "presence track error reply",
        "6.1",
        '{"event":"phx_reply","payload":{"response":{"reason":"Presence track payload must be '
        'a map"},"status":"error"},"ref":"12","topic":"realtime:room1"}',
        '["1","12","realtime:room1","phx_reply",{"response":{"reason":"Presence track payload '
        'must be a map"},"status":"error"}]',
        Frame(
            T,
            "phx_reply",
            {"response": {"reason": "Presence track payload must be a map"}, "status": "error"},
            "12",
            "1",
        ),
        EventKind.PHX_REPLY,
    ),
    ServerCase(
        "presence error reply with an empty response",
        "6.1",
        '{"event":"phx_reply","payload":{"response":{},"status":"error"},"ref":"13",'
        '"topic":"realtime:room1"}',
        '["1","13","realtime:room1","phx_reply",{"response":{},"status":"error"}]',
        Frame(T, "phx_reply", {"response": {}, "status": "error"}, "13", "1"),
        EventKind.PHX_REPLY,
    ),
    ServerCase(
        "leave reply",
        "3.4",
        '{"event":"phx_reply","payload":{"response":{},"status":"ok"},"ref":"20",'
        '"topic":"realtime:room1"}',
        '["1","20","realtime:room1","phx_reply",{"response":{},"status":"ok"}]',
        Frame(T, "phx_reply", {"response": {}, "status": "ok"}, "20", "1"),
        EventKind.PHX_REPLY,
    ),
    ServerCase(
        "phx_close",
        "2.2, 3.5",
        '{"event":"phx_close","payload":{},"ref":"1","topic":"realtime:room1"}',
        '["1","1","realtime:room1","phx_close",{}]',
        Frame(T, "phx_close", {}, "1", "1"),
        EventKind.PHX_CLOSE,
    ),
    ServerCase(
        "phx_error",
        "2.2, 3.5",
        '{"event":"phx_error","payload":{"reason":"channel_crash"},"ref":"1",'
        '"topic":"realtime:room1"}',
        '["1","1","realtime:room1","phx_error",{"reason":"channel_crash"}]',
        Frame(T, "phx_error", {"reason": "channel_crash"}, "1", "1"),
        EventKind.PHX_ERROR,
    ),
    ServerCase(
        "system error before phx_close (token expired)",
        "4.4",
        '{"event":"system","payload":{"channel":"room1","extension":"system","message":"Token '
        'has expired 0 seconds ago","status":"error"},"ref":null,"topic":"realtime:room1"}',
        '["1",null,"realtime:room1","system",{"channel":"room1","extension":"system",'
        '"message":"Token has expired 0 seconds ago","status":"error"}]',
        Frame(
            T,
            "system",
            {
                "channel": "room1",
                "extension": "system",
                "message": "Token has expired 0 seconds ago",
                "status": "error",
            },
            None,
            "1",
        ),
        EventKind.SYSTEM,
    ),
    ServerCase(
        "system server requested disconnect (fan-out, no channel key)",
        "3.6",
        '{"event":"system","payload":{"extension":"system","message":"Server requested '
        'disconnect","status":"ok"},"ref":null,"topic":"realtime:room1"}',
        '[null,null,"realtime:room1","system",{"extension":"system","message":"Server requested '
        'disconnect","status":"ok"}]',
        Frame(
            T,
            "system",
            {"extension": "system", "message": "Server requested disconnect", "status": "ok"},
        ),
        EventKind.SYSTEM,
    ),
    ServerCase(
        "system subscribed to PostgreSQL",
        "4.4",
        '{"event":"system","payload":{"channel":"room1","extension":"postgres_changes",'
        '"message":"Subscribed to PostgreSQL","status":"ok"},"ref":null,"topic":"realtime:room1"}',
        '["1",null,"realtime:room1","system",{"channel":"room1","extension":"postgres_changes",'
        '"message":"Subscribed to PostgreSQL","status":"ok"}]',
        Frame(
            T,
            "system",
            {
                "channel": "room1",
                "extension": "postgres_changes",
                "message": "Subscribed to PostgreSQL",
                "status": "ok",
            },
            None,
            "1",
        ),
        EventKind.SYSTEM,
    ),
    ServerCase(
        "system postgres_changes filter error",
        "7.3",
        r'{"event":"system","payload":{"channel":"room1","extension":"postgres_changes",'
        r'"message":"Error parsing `filter` params: [\"wrong\"]","status":"error"},"ref":null,'
        r'"topic":"realtime:room1"}',
        r'["1",null,"realtime:room1","system",{"channel":"room1","extension":"postgres_changes",'
        r'"message":"Error parsing `filter` params: [\"wrong\"]","status":"error"}]',
        Frame(
            T,
            "system",
            {
                "channel": "room1",
                "extension": "postgres_changes",
                "message": 'Error parsing `filter` params: ["wrong"]',
                "status": "error",
            },
            None,
            "1",
        ),
        EventKind.SYSTEM,
    ),
    ServerCase(
        "system replication connection established",
        "4.4",
        '{"event":"system","payload":{"channel":"room1","extension":"system","message":'
        '"Replication connection established","status":"ok"},"ref":null,'
        '"topic":"realtime:room1"}',
        '["1",null,"realtime:room1","system",{"channel":"room1","extension":"system",'
        '"message":"Replication connection established","status":"ok"}]',
        Frame(
            T,
            "system",
            {
                "channel": "room1",
                "extension": "system",
                "message": "Replication connection established",
                "status": "ok",
            },
            None,
            "1",
        ),
        EventKind.SYSTEM,
    ),
    ServerCase(
        "broadcast (text)",
        "5.2",
        '{"event":"broadcast","payload":{"event":"msg","payload":{"n":1},"type":"broadcast"},'
        '"ref":null,"topic":"realtime:room1"}',
        '[null,null,"realtime:room1","broadcast",{"event":"msg","payload":{"n":1},'
        '"type":"broadcast"}]',
        Frame(T, "broadcast", {"event": "msg", "payload": {"n": 1}, "type": "broadcast"}),
        EventKind.BROADCAST,
    ),
    ServerCase(
        "broadcast from the V1 serializer test",
        "2.1",
        '{"event":"broadcast","payload":{"event":"msg","payload":{"n":1},"type":"broadcast"},'
        '"ref":null,"topic":"realtime:room2"}',
        '[null,null,"realtime:room2","broadcast",{"event":"msg","payload":{"n":1},'
        '"type":"broadcast"}]',
        Frame(
            "realtime:room2",
            "broadcast",
            {"event": "msg", "payload": {"n": 1}, "type": "broadcast"},
        ),
        EventKind.BROADCAST,
    ),
    ServerCase(
        "replayed broadcast (channel push, with meta)",
        "5.4",
        '{"event":"broadcast","payload":{"event":"msg","meta":{"id":"7f1c2b4e","replayed":true},'
        '"payload":{"n":1},"type":"broadcast"},"ref":null,"topic":"realtime:room1"}',
        '["1",null,"realtime:room1","broadcast",{"event":"msg","meta":{"id":"7f1c2b4e",'
        '"replayed":true},"payload":{"n":1},"type":"broadcast"}]',
        Frame(
            T,
            "broadcast",
            {
                "event": "msg",
                "meta": {"id": "7f1c2b4e", "replayed": True},
                "payload": {"n": 1},
                "type": "broadcast",
            },
            None,
            "1",
        ),
        EventKind.BROADCAST,
    ),
    ServerCase(
        "REST broadcast with an id",
        "9.1",
        '{"event":"broadcast","payload":{"event":"msg","meta":{"id":"7f1c2b4e"},"payload":'
        '{"n":2},"type":"broadcast"},"ref":null,"topic":"realtime:room1"}',
        '[null,null,"realtime:room1","broadcast",{"event":"msg","meta":{"id":"7f1c2b4e"},'
        '"payload":{"n":2},"type":"broadcast"}]',
        Frame(
            T,
            "broadcast",
            {"event": "msg", "meta": {"id": "7f1c2b4e"}, "payload": {"n": 2}, "type": "broadcast"},
        ),
        EventKind.BROADCAST,
    ),
    ServerCase(
        "broadcast with a non-object payload",
        "5.1",
        '{"event":"broadcast","payload":{"event":"msg","payload":[1,"two",null],'
        '"type":"broadcast"},"ref":null,"topic":"realtime:room1"}',
        '[null,null,"realtime:room1","broadcast",{"event":"msg","payload":[1,"two",null],'
        '"type":"broadcast"}]',
        Frame(T, "broadcast", {"event": "msg", "payload": [1, "two", None], "type": "broadcast"}),
        EventKind.BROADCAST,
    ),
    ServerCase(
        "presence_state",
        "6.2",
        '{"event":"presence_state","payload":' + _PRESENCE_STATE_JSON + ',"ref":null,'
        '"topic":"realtime:room1"}',
        '["1",null,"realtime:room1","presence_state",' + _PRESENCE_STATE_JSON + "]",
        Frame(T, "presence_state", PRESENCE_STATE_PAYLOAD, None, "1"),
        EventKind.PRESENCE_STATE,
    ),
    ServerCase(
        "presence_diff",
        "6.2",
        '{"event":"presence_diff","payload":' + _PRESENCE_DIFF_JSON + ',"ref":null,'
        '"topic":"realtime:room1"}',
        '[null,null,"realtime:room1","presence_diff",' + _PRESENCE_DIFF_JSON + "]",
        Frame(T, "presence_diff", PRESENCE_DIFF_PAYLOAD),
        EventKind.PRESENCE_DIFF,
    ),
    ServerCase(
        "postgres_changes",
        "7.4",
        '{"event":"postgres_changes","payload":' + _POSTGRES_JSON + ',"ref":null,'
        '"topic":"realtime:room1"}',
        '[null,null,"realtime:room1","postgres_changes",' + _POSTGRES_JSON + "]",
        Frame(T, "postgres_changes", POSTGRES_CHANGE_PAYLOAD),
        EventKind.POSTGRES_CHANGES,
    ),
    ServerCase(
        "legacy postgres change (no config at join)",
        "4.1",
        '{"event":"INSERT","payload":{"record":{"id":1}},"ref":null,"topic":"realtime:public"}',
        '[null,null,"realtime:public","INSERT",{"record":{"id":1}}]',
        Frame("realtime:public", "INSERT", {"record": {"id": 1}}),
        EventKind.UNKNOWN,
    ),
]


def _ids(cases: list[ServerCase]) -> list[str]:
    return [f"{case.section} {case.name}" for case in cases]


def with_bytes(payload: dict[str, object]) -> JSONObject:
    """A payload holding ``bytes`` inside, as binary frames decode to (JSONValue has no bytes)."""
    return cast("JSONObject", payload)


def _v1(frame: Frame) -> Frame:
    """The frame a V1 client sees: V1 server frames never carry join_ref."""
    return dataclasses.replace(frame, join_ref=None)


@pytest.mark.parametrize("case", SERVER_CASES, ids=_ids(SERVER_CASES))
def test_sr02_v1_server_frames_parse_and_classify(case: ServerCase) -> None:
    """SR-02, SR-10: the V1 form parses (text or binary opcode) to the frame minus join_ref."""
    expected = _v1(case.expected)
    assert parse_frame(case.v1, V1) == expected
    assert parse_frame(case.v1.encode(), V1) == expected  # V1 decodes a binary frame as JSON
    assert parse_frame(case.v1, V1).join_ref is None
    assert event_kind(parse_frame(case.v1, V1)) is case.kind


@pytest.mark.parametrize("case", SERVER_CASES, ids=_ids(SERVER_CASES))
def test_sr04_v2_server_frames_parse_and_classify(case: ServerCase) -> None:
    """SR-04, SR-10: the V2 array form parses to the frame, join_ref included."""
    frame = parse_frame(case.v2, V2)
    assert frame == case.expected
    assert event_kind(frame) is case.kind


@pytest.mark.parametrize("case", SERVER_CASES, ids=_ids(SERVER_CASES))
def test_server_encoder_reproduces_the_protocol_examples(case: ServerCase) -> None:
    """SR-02, SR-04: the server-side encoder writes exactly these JSON values (local server)."""
    data, binary = encode_server_frame(case.expected, V1)
    assert not binary
    assert orjson.loads(data) == orjson.loads(case.v1)
    assert sorted(orjson.loads(data)) == ["event", "payload", "ref", "topic"]
    data, binary = encode_server_frame(case.expected, V2)
    assert not binary
    assert orjson.loads(data) == orjson.loads(case.v2)


def test_sr02_v1_pushes_have_ref_null_and_no_join_ref() -> None:
    """SR-02: a V1 push has ``ref: null`` and no join_ref; key order does not matter."""
    text = (
        '{"topic":"realtime:room1","ref":null,"payload":{"event":"msg","payload":{},'
        '"type":"broadcast"},"event":"broadcast"}'
    )
    frame = parse_frame(text, V1)
    assert (frame.ref, frame.join_ref) == (None, None)
    assert frame.payload == {"event": "msg", "payload": {}, "type": "broadcast"}


def test_sr02_v1_tolerates_missing_ref_and_integer_refs() -> None:
    """SR-02: a server frame without ``ref`` parses with ref None; integer refs become text."""
    assert parse_frame('{"topic":"t","event":"e","payload":{}}', V1).ref is None
    frame = parse_frame('{"topic":"t","event":"e","payload":{},"ref":7,"join_ref":3}', V1)
    assert (frame.ref, frame.join_ref) == ("7", "3")
    frame = parse_frame('[3,7,"t","e",{}]', V2)
    assert (frame.ref, frame.join_ref) == ("7", "3")


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        '"text"',
        "null",
        "42",
        "{}",
        "not json",
        "",
        '{"topic":"t","event":"e"}',
        '{"event":"e","payload":{},"ref":null}',
        '{"topic":"t","payload":{},"ref":null}',
        '{"topic":1,"event":"e","payload":{},"ref":null}',
        '{"topic":"t","event":null,"payload":{},"ref":null}',
        '{"topic":"t","event":"e","payload":{},"ref":1.5}',
        '{"topic":"t","event":"e","payload":{},"ref":true}',
        '{"topic":"t","event":"e","payload":{},"ref":{"a":1}}',
        '{"topic":"t","event":"e","payload":{},"ref":"1","join_ref":[1]}',
        '[null,"1","t","e",{}]',
    ],
)
def test_sr02_malformed_v1_frames_raise_protocol_error(text: str) -> None:
    """SR-02, SR-09: V1 needs an object with string topic/event, a payload, text refs."""
    with pytest.raises(ProtocolError):
        parse_frame(text, V1)


def test_sr04_v2_extra_elements_are_ignored() -> None:
    """SR-04: an array longer than 5 parses; elements after the payload are ignored."""
    frame = parse_frame('[null,"7","phoenix","phx_reply",{"response":{},"status":"ok"},"x",7]', V2)
    assert frame == Frame("phoenix", "phx_reply", {"response": {}, "status": "ok"}, "7")
    frame, binary = parse_client_frame('["1","2","realtime:a","phx_leave",{},null]', V2)
    assert frame == Frame("realtime:a", "phx_leave", {}, "2", "1")
    assert not binary


@pytest.mark.parametrize(
    "text",
    [
        "{}",
        '{"topic":"t","event":"e","payload":{},"ref":null}',
        '"text"',
        "[]",
        '[null,null,"t","e"]',
        '[null,null,1,"e",{}]',
        '[null,null,"t",null,{}]',
        '[null,1.5,"t","e",{}]',
        '[false,null,"t","e",{}]',
        "[1,2,3",
        "",
    ],
)
def test_sr04_malformed_v2_text_frames_raise_protocol_error(text: str) -> None:
    """SR-04, SR-09: V2 text needs an array of at least 5 with string topic and event."""
    with pytest.raises(ProtocolError):
        parse_frame(text, V2)
    with pytest.raises(ProtocolError):
        parse_client_frame(text, V2)


# ---------------------------------------------------------------------------------------------
# Binary frames (PROTOCOL.md 2.3 vectors).


@dataclass(frozen=True)
class BinaryCase:
    name: str
    hex: str
    expected: Frame
    payload_len: int  # trailing bytes that are payload (a shorter payload is still a frame)


SERVER_BINARY = [
    BinaryCase(
        "kind 0 push",
        "00 02 05 05 31 32 74 6f 70 69 63 65 76 65 6e 74 65 66 67",
        Frame("topic", "event", b"efg", None, "12"),
        3,
    ),
    BinaryCase(
        "kind 1 reply",
        "01 02 03 05 02 31 32 31 32 33 74 6f 70 69 63 6f 6b 65 66 67",
        Frame("topic", "phx_reply", with_bytes({"response": b"efg", "status": "ok"}), "123", "12"),
        3,
    ),
    BinaryCase(
        "kind 2 broadcast",
        "02 05 05 74 6f 70 69 63 65 76 65 6e 74 65 66 67",
        Frame("topic", "event", b"efg"),
        3,
    ),
    BinaryCase(
        "kind 4 binary payload with metadata",
        "04 05 0a 11 00 74 6f 70 69 63 75 73 65 72 5f 65 76 65 6e 74 7b 22 72 65 70 6c 61 79 65 64"
        " 22 3a 74 72 75 65 7d 65 66 67",
        Frame(
            "topic",
            "broadcast",
            with_bytes(
                {
                    "type": "broadcast",
                    "event": "user_event",
                    "payload": b"efg",
                    "meta": {"replayed": True},
                }
            ),
        ),
        3,
    ),
    BinaryCase(
        "kind 4 JSON payload without metadata",
        "04 05 0a 00 01 74 6f 70 69 63 75 73 65 72 5f 65 76 65 6e 74 7b 22 61 22 3a 22 62 22 7d",
        Frame(
            "topic",
            "broadcast",
            {"type": "broadcast", "event": "user_event", "payload": {"a": "b"}},
        ),
        9,  # JSON: any truncation is an error, checked separately
    ),
]
SERVER_BINARY_KINDS = {
    "kind 0 push": EventKind.UNKNOWN,  # event "event"
    "kind 1 reply": EventKind.PHX_REPLY,
    "kind 2 broadcast": EventKind.UNKNOWN,  # event "event"
    "kind 4 binary payload with metadata": EventKind.BROADCAST,
    "kind 4 JSON payload without metadata": EventKind.BROADCAST,
}

CLIENT_BINARY = [
    BinaryCase(
        "kind 0 push",
        "00 02 03 05 05 31 32 31 32 33 74 6f 70 69 63 65 76 65 6e 74 65 66 67",
        Frame("topic", "event", b"efg", "123", "12"),
        3,
    ),
    BinaryCase(
        "kind 3 binary payload with metadata",
        "03 02 03 05 0a 0e 00 31 32 31 32 33 74 6f 70 69 63 75 73 65 72 5f 65 76 65 6e 74"
        " 7b 22 73 74 6f 72 65 22 3a 74 72 75 65 7d 65 66 67",
        Frame(
            "topic",
            "broadcast",
            with_bytes(
                {
                    "type": "broadcast",
                    "event": "user_event",
                    "payload": b"efg",
                    "meta": {"store": True},
                }
            ),
            "123",
            "12",
        ),
        3,
    ),
    BinaryCase(
        "kind 3 JSON payload without metadata",
        "03 02 03 05 0a 00 01 31 32 31 32 33 74 6f 70 69 63 75 73 65 72 5f 65 76 65 6e 74"
        " 7b 22 61 22 3a 22 62 22 7d",
        Frame(
            "topic",
            "broadcast",
            {"type": "broadcast", "event": "user_event", "payload": {"a": "b"}},
            "123",
            "12",
        ),
        9,
    ),
]


def _names(cases: list[BinaryCase]) -> list[str]:
    return [case.name for case in cases]


@pytest.mark.parametrize("case", SERVER_BINARY, ids=_names(SERVER_BINARY))
def test_sr06_server_binary_vectors_parse_and_classify(case: BinaryCase) -> None:
    """SR-06, SR-10: kinds 0, 1, 2 and 4 from the server, as bytes, bytearray or memoryview."""
    data = bytes.fromhex(case.hex)
    for wire in (data, bytearray(data), memoryview(data)):
        frame = parse_frame(wire, V2)
        assert frame == case.expected
        assert event_kind(frame) is SERVER_BINARY_KINDS[case.name]


@pytest.mark.parametrize("case", SERVER_BINARY, ids=_names(SERVER_BINARY))
def test_sr02_v1_client_rejects_binary_vectors(case: BinaryCase) -> None:
    """SR-02: V1 sockets never get binary payloads; under V1 they are not JSON -> error."""
    with pytest.raises(ProtocolError):
        parse_frame(bytes.fromhex(case.hex), V1)


@pytest.mark.parametrize("case", CLIENT_BINARY, ids=_names(CLIENT_BINARY))
def test_sr05_client_binary_vectors_parse_on_the_server_side(case: BinaryCase) -> None:
    """SR-05: kinds 0 and 3 from a client; kind 3 is flagged as a user broadcast."""
    frame, user_broadcast = parse_client_frame(bytes.fromhex(case.hex), V2)
    assert frame == case.expected
    assert user_broadcast is case.name.startswith("kind 3")


def test_sr05_kind3_encode_reproduces_the_vectors_exactly() -> None:
    """SR-05: encoding 0 (raw bytes, with metadata) and 1 (JSON, no metadata), byte for byte."""
    binary = Frame(
        "topic",
        "broadcast",
        with_bytes({"type": "broadcast", "event": "user_event", "payload": b"efg", "store": True}),
        "123",
        "12",
    )
    assert encode(binary, V2) == bytes.fromhex(CLIENT_BINARY[1].hex)
    json_frame = Frame(
        "topic",
        "broadcast",
        {"type": "broadcast", "event": "user_event", "payload": {"a": "b"}},
        "123",
        "12",
    )
    assert encode(json_frame, V2) == bytes.fromhex(CLIENT_BINARY[2].hex)
    assert encode_wire(json_frame, V2) == (bytes.fromhex(CLIENT_BINARY[2].hex), True)


def test_sr06_kind4_encode_reproduces_the_vectors_exactly() -> None:
    """SR-06 (local server): encode_server_frame writes the two kind-4 vectors byte for byte."""
    for case in SERVER_BINARY[3:]:
        data, binary = encode_server_frame(case.expected, V2, user_broadcast=True)
        assert binary
        assert data == bytes.fromhex(case.hex), case.name


def test_sr06_kind4_decodes_to_the_text_broadcast_shape() -> None:
    """SR-06: a kind-4 frame gives the payload a text broadcast has; ``meta`` only if sent."""
    text = parse_frame(
        '[null,null,"topic","broadcast",{"event":"user_event","payload":{"a":"b"},'
        '"type":"broadcast"}]',
        V2,
    )
    binary = parse_frame(bytes.fromhex(SERVER_BINARY[4].hex), V2)
    assert binary == text
    assert isinstance(binary.payload, dict)
    assert "meta" not in binary.payload
    with_meta = parse_frame(bytes.fromhex(SERVER_BINARY[3].hex), V2)
    assert isinstance(with_meta.payload, dict)
    assert with_meta.payload["meta"] == {"replayed": True}


def test_sr06_kind4_from_the_database_with_id_metadata() -> None:
    """SR-06: ``realtime.send`` broadcasts carry ``{"id": ...}`` metadata, JSON encoding."""
    meta = b'{"id":"5f0c"}'
    body = b'{"text":"hi"}'
    data = bytes((4, 14, 3, len(meta), 1)) + b"realtime:room1" + b"msg" + meta + body
    frame = parse_frame(data, V2)
    assert frame == Frame(
        "realtime:room1",
        "broadcast",
        {"type": "broadcast", "event": "msg", "payload": {"text": "hi"}, "meta": {"id": "5f0c"}},
    )
    assert event_kind(frame) is EventKind.BROADCAST


def test_sr06_any_nonzero_encoding_byte_means_json() -> None:
    """SR-06: like the server, a non-zero encoding byte is read as JSON."""
    data = bytearray(bytes.fromhex(SERVER_BINARY[4].hex))
    data[4] = 7
    assert parse_frame(bytes(data), V2) == SERVER_BINARY[4].expected


def test_bc05_kind4_raw_payload_is_bytes_and_may_be_empty() -> None:
    """BC-05: encoding 0 delivers the payload as bytes, verbatim, even when empty or not UTF-8."""
    data = bytes((4, 5, 1, 0, 0)) + b"topic" + b"e" + b"\xff\x00\xfe"
    assert parse_frame(data, V2).payload == {
        "type": "broadcast",
        "event": "e",
        "payload": b"\xff\x00\xfe",
    }
    data = bytes((4, 5, 1, 0, 0)) + b"topic" + b"e"
    assert parse_frame(data, V2).payload == {"type": "broadcast", "event": "e", "payload": b""}


@pytest.mark.parametrize("case", SERVER_BINARY, ids=_names(SERVER_BINARY))
def test_sr09_truncated_server_binary_frames_raise(case: BinaryCase) -> None:
    """SR-09: a frame cut inside its header or fields is a ProtocolError, not a short frame."""
    data = bytes.fromhex(case.hex)
    cut_limit = len(data) if "JSON" in case.name else len(data) - case.payload_len
    for size in range(cut_limit):
        with pytest.raises(ProtocolError):
            parse_frame(data[:size], V2)


@pytest.mark.parametrize("case", CLIENT_BINARY, ids=_names(CLIENT_BINARY))
def test_sr09_truncated_client_binary_frames_raise(case: BinaryCase) -> None:
    """SR-09: the same for client frames on the server side."""
    data = bytes.fromhex(case.hex)
    cut_limit = len(data) if "JSON" in case.name else len(data) - case.payload_len
    for size in range(cut_limit):
        with pytest.raises(ProtocolError):
            parse_client_frame(data[:size], V2)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x03" + bytes.fromhex(CLIENT_BINARY[1].hex)[1:],  # kind 3 comes from clients only
        b"\x05\x01\x01te",
        b"\xff",
        bytes((2, 2, 1)) + b"\xff\xfe" + b"e",  # topic is not UTF-8
        bytes((4, 1, 1, 2, 1)) + b"te" + b"{x" + b"{}",  # metadata is not JSON
        bytes((4, 1, 1, 0, 1)) + b"te" + b"{",  # JSON payload is not JSON
    ],
)
def test_sr09_bad_server_binary_frames_raise(data: bytes) -> None:
    """SR-09: unknown kinds, wrong direction, bad UTF-8 or JSON: ProtocolError."""
    with pytest.raises(ProtocolError):
        parse_frame(data, V2)


@pytest.mark.parametrize("case", SERVER_BINARY[1:], ids=_names(SERVER_BINARY[1:]))
def test_sr09_server_only_kinds_are_rejected_from_a_client(case: BinaryCase) -> None:
    """SR-09: kinds 1, 2 and 4 never come from a client."""
    with pytest.raises(ProtocolError, match="from a client"):
        parse_client_frame(bytes.fromhex(case.hex), V2)


@pytest.mark.parametrize("vsn", VSNS)
@pytest.mark.parametrize("data", [None, 42, 1.5, ["x"], {"a": 1}])
def test_sr09_wrong_python_types_raise_protocol_error(vsn: str, data: Any) -> None:
    """SR-09: even data of the wrong Python type gives ProtocolError, nothing else."""
    with pytest.raises(ProtocolError):
        parse_frame(data, vsn)
    with pytest.raises(ProtocolError):
        parse_client_frame(data, vsn)


# ---------------------------------------------------------------------------------------------
# Encoding for the wire (client side).


def test_sr05_broadcast_push_is_kind3_json_or_raw_under_v2() -> None:
    """SR-05: a V2 broadcast push goes out as kind 3, encoding 1 for JSON, 0 for bytes."""
    json_push = encode(broadcast_frame("11", "10", "room2", "msg", {"n": 1}), V2)
    assert isinstance(json_push, bytes)
    assert json_push[0] == 3
    assert json_push[6] == 1
    assert json_push.endswith(b'{"n":1}')
    raw_push = encode(broadcast_frame("11", "10", "room2", "msg", b"\x00\xff"), V2)
    assert isinstance(raw_push, bytes)
    assert raw_push[0] == 3
    assert raw_push[6] == 0
    assert raw_push.endswith(b"\x00\xff")
    assert raw_push == bytes((3, 2, 2, 14, 3, 0, 0)) + b"1011realtime:room2msg\x00\xff"


@pytest.mark.parametrize("payload", [[1, 2], "text", 3, None, True])
def test_bc06_non_object_broadcast_payloads_round_trip(payload: Any) -> None:
    """BC-06: lists, strings, numbers and null survive as broadcast payloads, both vsns."""
    frame = broadcast_frame("1", "1", "room", "e", payload)
    for vsn in VSNS:
        parsed, _ = parse_client_frame(encode(frame, vsn), vsn)
        assert parsed == frame


def test_sr05_bytes_payloads_cannot_go_out_under_v1_or_outside_broadcasts() -> None:
    """SR-05: bytes need V2 and a broadcast; anything else is a clear ProtocolError."""
    with pytest.raises(ProtocolError):
        encode(broadcast_frame("1", "1", "room", "e", b"raw"), V1)
    with pytest.raises(ProtocolError, match="broadcast"):
        encode(Frame("realtime:room", "presence", b"raw", "1", "1"), V2)
    with pytest.raises(ProtocolError):
        encode_server_frame(
            Frame("realtime:room", "broadcast", with_bytes({"event": "e", "payload": b"raw"})), V1
        )


def test_sr05_broadcast_without_user_event_goes_out_as_text() -> None:
    """SR-05: a ``broadcast`` whose payload has no string ``event`` stays a V2 text frame."""
    frame = Frame("realtime:room", "broadcast", {"payload": 1}, "1", "1")
    data = encode(frame, V2)
    assert isinstance(data, str)
    assert orjson.loads(data) == ["1", "1", "realtime:room", "broadcast", {"payload": 1}]


def test_sr05_extra_broadcast_keys_travel_as_metadata() -> None:
    """SR-05: keys beside type/event/payload are kind-3 metadata; the server sees them as meta."""
    frame = broadcast_frame("1", "1", "room", "e", {"x": 1})
    assert isinstance(frame.payload, dict)
    frame.payload["store"] = True
    parsed, user_broadcast = parse_client_frame(encode(frame, V2), V2)
    assert user_broadcast
    assert parsed.payload == {
        "type": "broadcast",
        "event": "e",
        "payload": {"x": 1},
        "meta": {"store": True},
    }


@pytest.mark.parametrize(
    ("field", "frame"),
    [
        ("join_ref", broadcast_frame("1", "j" * 256, "room", "e", {})),
        ("ref", broadcast_frame("r" * 256, "1", "room", "e", {})),
        ("topic", broadcast_frame("1", "1", "t" * 247, "e", {})),
        ("topic", broadcast_frame("1", "1", "é" * 124, "e", {})),  # 9 + 248 bytes
        ("event", broadcast_frame("1", "1", "room", "e" * 256, {})),
        ("event", broadcast_frame("1", "1", "room", "€" * 86, {})),  # 258 bytes
        (
            "metadata",
            Frame(
                "realtime:room",
                "broadcast",
                {"type": "broadcast", "event": "e", "payload": {}, "m": "x" * 250},
                "1",
                "1",
            ),
        ),
    ],
)
def test_sr07_binary_fields_over_255_bytes_are_a_clear_error(field: str, frame: Frame) -> None:
    """SR-07: a field over 255 bytes (UTF-8) raises ProtocolError naming it and the limit."""
    with pytest.raises(ProtocolError, match=rf"{field} is \d+ bytes; the limit is 255"):
        encode(frame, V2)


def test_sr07_fields_of_exactly_255_bytes_are_fine() -> None:
    """SR-07: 255 bytes is the largest field, and it round-trips."""
    frame = broadcast_frame("r" * 255, "j" * 255, "t" * 246, "e" * 255, {"k": 1})
    data = encode(frame, V2)
    assert isinstance(data, bytes)
    assert parse_client_frame(data, V2) == (frame, True)


@pytest.mark.parametrize(
    ("field", "payload", "topic"),
    [
        ("topic", {"event": "e", "payload": {}}, "t" * 256),
        ("event", {"event": "e" * 256, "payload": {}}, "t"),
        ("metadata", {"event": "e", "payload": {}, "meta": {"id": "x" * 250}}, "t"),
    ],
)
def test_sr07_server_kind4_fields_over_255_bytes(
    field: str, payload: dict[str, Any], topic: str
) -> None:
    """SR-07: the same limit when the local server writes kind 4."""
    with pytest.raises(ProtocolError, match=rf"{field} is \d+ bytes"):
        encode_server_frame(Frame(topic, "broadcast", payload), V2, user_broadcast=True)


def test_encode_server_user_broadcast_needs_a_user_event() -> None:
    """SR-06 (local server): a kind-4 frame needs a payload with a string ``event``."""
    with pytest.raises(ProtocolError):
        encode_server_frame(Frame("t", "broadcast", {"payload": 1}), V2, user_broadcast=True)
    with pytest.raises(ProtocolError):
        encode_server_frame(Frame("t", "broadcast", [1]), V2, user_broadcast=True)


@pytest.mark.parametrize("vsn", VSNS)
def test_unencodable_values_raise_protocol_error(vsn: str) -> None:
    """SR-01, SR-03: values JSON cannot hold (64+ bit ints, non-string keys): ProtocolError."""
    with pytest.raises(ProtocolError):
        encode(Frame("t", "e", {"n": 2**64}, "1"), vsn)
    with pytest.raises(ProtocolError):
        encode(Frame("t", "e", {1: "x"}, "1"), vsn)  # type: ignore[dict-item]
    with pytest.raises(ProtocolError):
        encode_server_frame(Frame("t", "e", {"n": 2**64}), vsn)


def test_unsupported_vsn() -> None:
    """CL-06 (protocol side): only 1.0.0 and 2.0.0; everything else is refused."""
    frame = Frame("phoenix", "heartbeat", {}, "1")
    for function in (encode, encode_wire):
        with pytest.raises(ProtocolError, match="vsn"):
            function(frame, "3.0.0")
    with pytest.raises(ProtocolError, match="vsn"):
        encode_server_frame(frame, "1.0")
    with pytest.raises(ProtocolError, match="vsn"):
        parse_frame("{}", "2.0")
    with pytest.raises(ProtocolError, match="vsn"):
        parse_client_frame("{}", "")
    assert check_vsn("1.0.0") == V1
    assert check_vsn("2.0.0") == V2
    for bad in ("1.0", "2.0.1", "", "v2"):
        with pytest.raises(ValueError, match="vsn"):
            check_vsn(bad)


# ---------------------------------------------------------------------------------------------
# event_kind (SR-10).


@pytest.mark.parametrize(
    ("topic", "event", "kind"),
    [
        ("phoenix", "phx_reply", EventKind.HEARTBEAT_REPLY),
        ("realtime:room1", "phx_reply", EventKind.PHX_REPLY),
        ("room1", "phx_reply", EventKind.PHX_REPLY),
        ("realtime:room1", "phx_close", EventKind.PHX_CLOSE),
        ("phoenix", "phx_close", EventKind.PHX_CLOSE),
        ("realtime:room1", "phx_error", EventKind.PHX_ERROR),
        ("realtime:room1", "postgres_changes", EventKind.POSTGRES_CHANGES),
        ("realtime:room1", "broadcast", EventKind.BROADCAST),
        ("realtime:room1", "presence_state", EventKind.PRESENCE_STATE),
        ("realtime:room1", "presence_diff", EventKind.PRESENCE_DIFF),
        ("realtime:room1", "system", EventKind.SYSTEM),
        ("realtime:room1", "INSERT", EventKind.UNKNOWN),
        ("realtime:room1", "BROADCAST", EventKind.UNKNOWN),
        ("realtime:room1", "phx_join", EventKind.UNKNOWN),
        ("realtime:room1", "phx_leave", EventKind.UNKNOWN),
        ("phoenix", "heartbeat", EventKind.UNKNOWN),
        ("realtime:room1", "presence", EventKind.UNKNOWN),
        ("realtime:room1", "access_token", EventKind.UNKNOWN),
        ("realtime:room1", "heartbeat_reply", EventKind.UNKNOWN),
        ("realtime:room1", "unknown", EventKind.UNKNOWN),
        ("realtime:room1", "", EventKind.UNKNOWN),
    ],
)
def test_sr10_event_kind_maps_every_server_event(topic: str, event: str, kind: EventKind) -> None:
    """SR-10: each protocol event has its kind; a phx_reply on ``phoenix`` is a heartbeat reply."""
    assert event_kind(Frame(topic, event, {})) is kind


# ---------------------------------------------------------------------------------------------
# SR-09: every refusal says exactly what is wrong.


class _Text(str):
    """A ``str`` subclass, as a caller's own string type."""


_REFUSALS: list[tuple[str, Any, str, str]] = [
    ("server", "{", V1, "frame is not valid JSON: .+"),
    ("server", 5, V1, "frame data must be str or bytes, not int"),
    ("server", "[", V2, "frame is not valid JSON: .+"),
    ("server", _Text("["), V2, "frame is not valid JSON: .+"),
    ("server", 5, V2, "binary frame data must be bytes, not int"),
    ("server", "[1]", V1, "V1 frame must be a JSON object, not list"),
    (
        "server",
        '{"topic":"t","event":1,"payload":{}}',
        V1,
        "V1 frame needs string 'topic' and 'event'",
    ),
    ("server", '{"topic":"t","event":"e"}', V1, "V1 frame has no 'payload'"),
    (
        "server",
        '{"topic":"t","event":"e","payload":{},"ref":1.5}',
        V1,
        "frame ref must be a string or null, not float",
    ),
    (
        "server",
        '{"topic":"t","event":"e","payload":{},"join_ref":[]}',
        V1,
        "frame join_ref must be a string or null, not list",
    ),
    ("server", '{"a":1}', V2, "V2 text frame must be a JSON array of at least 5 elements"),
    ("server", '[null,null,"t",1,{}]', V2, "V2 frame needs string topic and event"),
    ("server", '[null,1.5,"t","e",{}]', V2, "frame ref must be a string or null, not float"),
    ("server", '[true,null,"t","e",{}]', V2, "frame join_ref must be a string or null, not bool"),
    ("server", b"", V2, "binary frame is empty"),
    ("server", b"\x04\x00", V2, "binary frame is truncated in its header"),
    ("server", b"\x04\x05\x00\x00\x00ab", V2, "binary frame is shorter than its header says"),
    ("server", b"\x04\x01\x00\x00\x00\xff", V2, "binary frame field is not valid UTF-8"),
    ("server", bytearray(b"\x04\x00"), V2, "binary frame is truncated in its header"),
    ("server", b"\x00\x00", V2, "binary frame is truncated in its header"),
    ("server", b"\x00\x05\x00\x00", V2, "binary frame is shorter than its header says"),
    ("server", b"\x00\x01\x00\x00\xff", V2, "binary frame field is not valid UTF-8"),
    ("server", b"\x09", V2, "unexpected binary frame kind 9 from a server"),
    ("client", "{", V1, "frame is not valid JSON: .+"),
    ("client", 5, V1, "frame data must be str or bytes, not int"),
    ("client", '{"topic":"t","event":"e","payload":{}}', V1, "V1 client frame has no 'ref'"),
    ("client", b"\x09", V2, "unexpected binary frame kind 9 from a client"),
]


@pytest.mark.parametrize(("side", "data", "vsn", "message"), _REFUSALS)
def test_sr09_refusals_name_the_fault_exactly(side: str, data: Any, vsn: str, message: str) -> None:
    """SR-09: each malformed input raises ProtocolError with its own message, nothing else."""
    parse = parse_frame if side == "server" else parse_client_frame
    with pytest.raises(ProtocolError, match=f"^{message}$"):
        parse(data, vsn)


def test_sr09_encode_refusals_name_the_fault_exactly() -> None:
    """SR-09, SR-06: an unencodable value and a user broadcast without an event are explained."""
    with pytest.raises(ProtocolError, match=r"^cannot encode frame as JSON: .+$"):
        encode(Frame("realtime:room", "broadcast", {"x": {1, 2}}), V1)  # type: ignore[dict-item]
    with pytest.raises(
        ProtocolError, match=r"^a user broadcast needs a payload with a string 'event'$"
    ):
        encode_server_frame(Frame("realtime:room", "broadcast", {"x": 1}), V2, user_broadcast=True)


def test_sr02_v1_frames_keep_a_join_ref_and_convert_integer_refs() -> None:
    """SR-02: a join_ref is kept; an integer ref or join_ref becomes a string, the other stays."""
    assert parse_frame('{"topic":"t","event":"e","payload":{},"ref":"1","join_ref":"2"}') == Frame(
        "t", "e", {}, "1", "2"
    )
    assert parse_frame('{"topic":"t","event":"e","payload":{},"join_ref":5}') == Frame(
        "t", "e", {}, None, "5"
    )
    assert parse_frame('{"topic":"t","event":"e","payload":{},"ref":"1","join_ref":5}') == Frame(
        "t", "e", {}, "1", "5"
    )
    assert parse_frame('{"topic":"t","event":"e","payload":{},"ref":5,"join_ref":"2"}') == Frame(
        "t", "e", {}, "5", "2"
    )
    assert parse_frame('[null,"1","t","e",{}]', V2) == Frame("t", "e", {}, "1", None)
    assert parse_frame('[5,"1","t","e",{}]', V2) == Frame("t", "e", {}, "1", "5")


def test_sr04_str_and_bytes_subclasses_parse_like_their_base() -> None:
    """SR-04: a ``str`` subclass is a text frame (orjson itself takes only ``str``), a
    ``bytearray`` a binary one."""
    assert parse_frame(_Text('[null,null,"t","e",{"a":1}]'), V2) == Frame("t", "e", {"a": 1})
    assert parse_frame(_Text('{"topic":"t","event":"e","payload":1}'), V1) == Frame("t", "e", 1)
    assert parse_client_frame(_Text('{"topic":"t","event":"e","payload":1,"ref":"1"}'), V1) == (
        Frame("t", "e", 1, "1"),
        False,
    )
    assert parse_client_frame(_Text('[null,"1","t","e",1]'), V2) == (Frame("t", "e", 1, "1"), False)
    assert parse_frame(bytearray(b"\x04\x01\x01\x00\x00te[1]"), V2) == Frame(
        "t",
        "broadcast",
        {"type": "broadcast", "event": "e", "payload": b"[1]"},  # type: ignore[dict-item]
    )


def test_sr04_binary_frames_with_empty_fields_end_at_their_header() -> None:
    """SR-04, SR-09: a kind-0 push whose fields are all empty is exactly its header."""
    assert parse_frame(b"\x00\x00\x00\x00", V2) == Frame("", "", b"")
    assert parse_client_frame(b"\x00\x00\x00\x00\x00", V2) == (Frame("", "", b""), False)


def test_sr05_only_a_kind3_push_is_a_user_broadcast() -> None:
    """SR-05: a kind-0 client push named ``broadcast`` carries bytes and is no user broadcast."""
    push = b"\x00\x01\x01\x01\x09" + b"21tbroadcast" + b"raw"
    assert parse_client_frame(push, V2) == (Frame("t", "broadcast", b"raw", "1", "2"), False)


def test_sr09_well_formed_frames_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """SR-02, SR-04, SR-06: well-formed frames are built directly, without the general parsers
    (the reader's hot path); only a frame they refuse or must convert goes through them."""
    from trio_realtime import _serializer

    def refuse(*args: object, **kwargs: object) -> Frame:
        raise AssertionError("the general parser ran")

    for name in ("_load", "_parse_object", "_parse_array", "_parse_binary", "_ref"):
        monkeypatch.setattr(_serializer, name, refuse)
    v1 = '{"topic":"t","event":"e","payload":{"a":1},"ref":"1","join_ref":"2"}'
    assert parse_frame(v1, V1) == Frame("t", "e", {"a": 1}, "1", "2")
    assert parse_frame('{"topic":"t","event":"e","payload":null}', V1) == Frame("t", "e", None)
    assert parse_frame('["2","1","t","e",{"a":1}]', V2) == Frame("t", "e", {"a": 1}, "1", "2")
    assert parse_frame('[null,null,"t","e",{}]', V2) == Frame("t", "e", {})
    assert parse_frame(b"\x04\x01\x01\x00\x00te[1]", V2) == Frame(
        "t",
        "broadcast",
        {"type": "broadcast", "event": "e", "payload": b"[1]"},  # type: ignore[dict-item]
    )
    monkeypatch.undo()
    for name in ("_parse_binary", "_ref"):
        monkeypatch.setattr(_serializer, name, refuse)
    client_v1 = '{"topic":"t","event":"e","payload":{},"ref":null,"join_ref":"2"}'
    assert parse_client_frame(client_v1, V1) == (Frame("t", "e", {}, None, "2"), False)
    assert parse_client_frame('["2",null,"t","e",{}]', V2) == (
        Frame("t", "e", {}, None, "2"),
        False,
    )
    client_v1 = '{"topic":"t","event":"e","payload":{},"ref":"1"}'
    assert parse_client_frame(client_v1, V1) == (Frame("t", "e", {}, "1"), False)
    assert parse_client_frame('[null,"1","t","e",{}]', V2) == (Frame("t", "e", {}, "1"), False)
