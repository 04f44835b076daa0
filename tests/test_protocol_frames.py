"""Frames, refs, topics and the client frame builders (SR-01, SR-03, SR-11, SE-01).

The golden client frames are the ones PROTOCOL.md shows the client sending (sections 3.1, 3.4,
4.2, 5.1, 6.1, 8), in both serializations.
"""

from __future__ import annotations

import dataclasses

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_realtime.protocol import (
    Frame,
    JSONValue,
    Payload,
    ProtocolError,
    RefCounter,
    access_token_frame,
    broadcast_frame,
    channel_config,
    encode,
    heartbeat_frame,
    join_frame,
    leave_frame,
    next_ref,
    parse_client_frame,
    postgres_binding,
    presence_track_frame,
    presence_untrack_frame,
    realtime_topic,
    ref_counter,
    sub_topic,
)

V1 = "1.0.0"
V2 = "2.0.0"


def wire_json(frame: Frame, vsn: str) -> JSONValue:
    """The JSON value of a client text frame."""
    data = encode(frame, vsn)
    assert isinstance(data, str)
    value: JSONValue = orjson.loads(data)
    return value


# ---------------------------------------------------------------------------------------------
# SR-01 / SR-03: the wire shape of client frames.


def test_sr01_v1_heartbeat_has_no_join_ref_key() -> None:
    """SR-01: PROTOCOL.md 3.1; the heartbeat is on ``phoenix`` and has no join_ref key."""
    value = wire_json(heartbeat_frame("7"), V1)
    assert value == {"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "7"}
    assert isinstance(value, dict)
    assert "join_ref" not in value


def test_sr03_v2_heartbeat_array() -> None:
    """SR-03: PROTOCOL.md 3.1, ``[null,"7","phoenix","heartbeat",{}]``."""
    assert encode(heartbeat_frame("7"), V2) == '[null,"7","phoenix","heartbeat",{}]'


def _protocol_join() -> Frame:
    config = channel_config(
        broadcast_self=True, broadcast_ack=True, presence_key="u1", presence_enabled=True
    )
    return join_frame(
        "1",
        "room1",
        config,
        [postgres_binding("INSERT", schema="public", table="messages")],
        access_token="<jwt>",
    )


_JOIN_PAYLOAD: JSONValue = {
    "config": {
        "broadcast": {"self": True, "ack": True},
        "presence": {"enabled": True, "key": "u1"},
        "postgres_changes": [{"event": "INSERT", "schema": "public", "table": "messages"}],
        "private": False,
    },
    "access_token": "<jwt>",
}


def test_sr03_v2_join_matches_protocol_example() -> None:
    """SR-03: PROTOCOL.md 4.2, ``["1","1","realtime:room1","phx_join",{...}]``."""
    assert wire_json(_protocol_join(), V2) == [
        "1",
        "1",
        "realtime:room1",
        "phx_join",
        _JOIN_PAYLOAD,
    ]


def test_sr01_v1_join_is_an_object_with_join_ref() -> None:
    """SR-01: a channel-bound V1 frame has ``topic, event, payload, ref, join_ref``."""
    assert wire_json(_protocol_join(), V1) == {
        "topic": "realtime:room1",
        "event": "phx_join",
        "payload": _JOIN_PAYLOAD,
        "ref": "1",
        "join_ref": "1",
    }


@pytest.mark.parametrize(
    ("frame", "v2"),
    [
        (leave_frame("20", "10", "room2"), ["10", "20", "realtime:room2", "phx_leave", {}]),
        (
            presence_track_frame("12", "10", "room2", {"name": "alice"}),
            [
                "10",
                "12",
                "realtime:room2",
                "presence",
                {"type": "presence", "event": "track", "payload": {"name": "alice"}},
            ],
        ),
        (
            presence_untrack_frame("13", "10", "room2"),
            ["10", "13", "realtime:room2", "presence", {"type": "presence", "event": "untrack"}],
        ),
        (
            access_token_frame("14", "6", "room1", "new-token"),
            ["6", "14", "realtime:room1", "access_token", {"access_token": "new-token"}],
        ),
    ],
)
def test_sr01_sr03_channel_frames_in_both_serializers(frame: Frame, v2: list[JSONValue]) -> None:
    """SR-01, SR-03: the same frame as a V1 object and as a V2 array."""
    assert wire_json(frame, V2) == v2
    join_ref, ref, topic, event, payload = v2
    assert wire_json(frame, V1) == {
        "topic": topic,
        "event": event,
        "payload": payload,
        "ref": ref,
        "join_ref": join_ref,
    }


def test_sr01_v1_broadcast_push_is_text() -> None:
    """SR-01: V1 broadcasts are text objects (PROTOCOL.md 5.1), never binary."""
    assert wire_json(broadcast_frame("11", "10", "room2", "msg", {"n": 1}), V1) == {
        "topic": "realtime:room2",
        "event": "broadcast",
        "payload": {"type": "broadcast", "event": "msg", "payload": {"n": 1}},
        "ref": "11",
        "join_ref": "10",
    }


def test_sr01_v1_frame_without_join_ref_omits_the_key_and_keeps_null_ref() -> None:
    """SR-01: ``ref`` is always present (maybe null); ``join_ref`` only when set."""
    value = wire_json(Frame("realtime:a", "broadcast", {"x": 1}), V1)
    assert value == {"topic": "realtime:a", "event": "broadcast", "payload": {"x": 1}, "ref": None}
    frame, binary = parse_client_frame(encode(Frame("realtime:a", "e", {}), V1), V1)
    assert frame == Frame("realtime:a", "e", {})
    assert not binary


def test_sr01_v1_client_frames_need_a_ref_key_on_the_server_side() -> None:
    """SR-01 / LS-01: the server requires ``ref`` (null allowed); ``join_ref`` is optional."""
    with pytest.raises(ProtocolError, match="ref"):
        parse_client_frame('{"topic":"phoenix","event":"heartbeat","payload":{}}', V1)
    frame, _ = parse_client_frame(
        '{"topic":"phoenix","event":"heartbeat","payload":{},"ref":null}', V1
    )
    assert frame == Frame("phoenix", "heartbeat", {}, None, None)


# ---------------------------------------------------------------------------------------------
# Builders.


def test_join_frame_shape() -> None:
    """CH-02 (protocol side): the join carries the full config; its join_ref is its ref."""
    frame = join_frame("5", "realtime:room", channel_config())
    assert frame == Frame(
        "realtime:room",
        "phx_join",
        {
            "config": {
                "broadcast": {"ack": False, "self": False},
                "presence": {"key": "", "enabled": False},
                "private": False,
                "postgres_changes": [],
            }
        },
        "5",
        "5",
    )
    with_version = join_frame("5", "room", channel_config(), version="realtime-js/2.119.1")
    assert isinstance(with_version.payload, dict)
    assert with_version.payload["version"] == "realtime-js/2.119.1"
    assert "access_token" not in with_version.payload


def test_join_frame_copies_its_inputs() -> None:
    """CH-02 (protocol side): the frame does not alias the caller's config or bindings."""
    config = channel_config()
    bindings = [postgres_binding(table="t")]
    frame = join_frame("1", "room", config, bindings)
    config["private"] = True
    bindings[0]["table"] = "changed"
    bindings.append(postgres_binding(table="other"))
    assert isinstance(frame.payload, dict)
    assert frame.payload["config"] == {
        "broadcast": {"ack": False, "self": False},
        "presence": {"key": "", "enabled": False},
        "private": False,
        "postgres_changes": [{"event": "*", "schema": "public", "table": "t"}],
    }


def test_postgres_binding_shapes_and_validation() -> None:
    """PG-01 (protocol side): bindings are ``{event, schema[, table][, filter]}``."""
    assert postgres_binding() == {"event": "*", "schema": "public"}
    assert postgres_binding("insert", schema="s", table="t", filter="id=eq.1") == {
        "event": "INSERT",
        "schema": "s",
        "table": "t",
        "filter": "id=eq.1",
    }
    for event in ("*", "insert", "Update", "delete"):
        assert postgres_binding(event, table="t") == {
            "event": event.upper(),
            "schema": "public",
            "table": "t",
        }
    with pytest.raises(ValueError, match="event"):
        postgres_binding("TRUNCATE")
    with pytest.raises(ValueError, match=r"^a postgres_changes filter needs a table$"):
        postgres_binding(filter="id=eq.1")


def test_broadcast_and_presence_builders() -> None:
    """BC-01, PR-01 (protocol side): payload shapes realtime-js sends."""
    assert broadcast_frame(None, None, "room", "e", b"raw") == Frame(
        "realtime:room",
        "broadcast",
        {"type": "broadcast", "event": "e", "payload": b"raw"},  # type: ignore[dict-item]
    )
    assert broadcast_frame("2", "1", "realtime:room", "e", 1).topic == "realtime:room"
    for empty in ("", "realtime:"):
        with pytest.raises(ValueError, match=r"^topic must not be empty$"):
            broadcast_frame("2", "1", empty, "e", 1)
    state: dict[str, JSONValue] = {"status": "online"}
    frame = presence_track_frame("2", "1", "room", state)
    state["status"] = "away"
    assert frame.payload == {"type": "presence", "event": "track", "payload": {"status": "online"}}


# ---------------------------------------------------------------------------------------------
# SR-11: topics and refs.


def test_sr11_realtime_topic_adds_the_prefix_once() -> None:
    """SR-11: ``realtime_topic`` is idempotent; ``sub_topic`` removes the prefix."""
    assert realtime_topic("room1") == "realtime:room1"
    assert realtime_topic("realtime:room1") == "realtime:room1"
    assert realtime_topic(realtime_topic("room:lobby")) == "realtime:room:lobby"
    assert sub_topic("realtime:room:lobby") == "room:lobby"
    assert sub_topic("phoenix") == "phoenix"


def test_sr11_realtime_topic_rejects_empty_and_non_strings() -> None:
    """SR-11: an empty sub-topic (the server's TopicNameRequired) and non-strings are refused."""
    for topic in ("", "realtime:"):
        with pytest.raises(ValueError, match=r"^topic must not be empty$"):
            realtime_topic(topic)
    with pytest.raises(TypeError, match=r"^topic must be a string, not int$"):
        realtime_topic(5)  # type: ignore[arg-type]


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(topic=st.text(min_size=1))
def test_sr11_realtime_topic_is_idempotent(topic: str) -> None:
    """SR-11: applying ``realtime_topic`` twice is applying it once."""
    if topic == "realtime:":
        return
    once = realtime_topic(topic)
    assert realtime_topic(once) == once
    assert once.startswith("realtime:")
    assert realtime_topic(sub_topic(once)) == once


def test_sr11_next_ref_is_monotonic_strings() -> None:
    """SR-11: refs are ``"1"``, ``"2"``, ...; counters are independent."""
    counter = ref_counter()
    refs = [next_ref(counter) for _ in range(1000)]
    assert refs[:3] == ["1", "2", "3"]
    assert [int(ref) for ref in refs] == list(range(1, 1001))
    other = ref_counter(start=41)
    assert next_ref(other) == "42"
    assert next_ref(counter) == "1001"


def test_sr11_counter_wraps_around_safely() -> None:
    """SR-11: past its limit the counter restarts at ``"1"``: never 0, negative or too big."""
    counter = ref_counter(start=2, limit=3)
    assert [next_ref(counter) for _ in range(5)] == ["3", "1", "2", "3", "1"]
    default = ref_counter(start=2**53 - 2)
    assert next_ref(default) == str(2**53 - 1)
    assert next_ref(default) == "1"
    refusal = r"^need 0 <= start <= limit and limit >= 1$"
    with pytest.raises(ValueError, match=refusal):
        ref_counter(start=-1)
    with pytest.raises(ValueError, match=refusal):
        ref_counter(start=5, limit=4)
    with pytest.raises(ValueError, match=refusal):
        ref_counter(limit=0)


def test_sr11_counter_bounds_are_inclusive() -> None:
    """SR-11: a counter may start at its limit, and a limit of 1 is allowed (every ref "1")."""
    at_limit = ref_counter(start=3, limit=3)
    assert [next_ref(at_limit) for _ in range(2)] == ["1", "2"]
    single = ref_counter(limit=1)
    assert [next_ref(single) for _ in range(3)] == ["1", "1", "1"]
    direct = RefCounter()
    assert (direct.value, direct.limit) == (0, 2**53 - 1)
    assert next_ref(direct) == "1"


# ---------------------------------------------------------------------------------------------
# Frame itself, and SE-01.


def test_frame_is_a_frozen_dataclass_with_the_wire_fields() -> None:
    """SR-01, SR-03: the frame both serializers write has one field per wire field, frozen."""
    assert [field.name for field in dataclasses.fields(Frame)] == [
        "topic",
        "event",
        "payload",
        "ref",
        "join_ref",
    ]
    frame = heartbeat_frame("1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        frame.ref = "2"  # type: ignore[misc]
    assert dataclasses.replace(frame, ref="2") == Frame("phoenix", "heartbeat", {}, "2", None)


@pytest.mark.parametrize("key", ["access_token", "user_token", "apikey"])
def test_se01_frame_repr_redacts_tokens(key: str) -> None:
    """SE-01: reprs (and so str, f-strings, logs of frames) never show a token."""
    secret = "eyJhbGciOiJIUzI1NiJ9.secret-token-value"
    frame = Frame("realtime:room", "phx_join", {key: secret, "config": {"private": True}}, "1", "1")
    for text in (repr(frame), str(frame), f"{frame}", repr([frame])):
        assert secret not in text
        assert "<redacted>" in text
        assert "'private': True" in text
    assert frame.payload == {key: secret, "config": {"private": True}}  # not modified


def test_se01_builders_and_parsed_frames_redact_tokens() -> None:
    """SE-01: join and access_token frames, built or parsed, do not show the token."""
    secret = "super-secret-jwt"
    frames = [
        join_frame("1", "room", channel_config(), access_token=secret),
        access_token_frame("2", "1", "room", secret),
    ]
    for frame in list(frames):
        for vsn in (V1, V2):
            data = encode(frame, vsn)
            assert isinstance(data, str)
            assert secret in data  # the wire carries it
            frames.append(parse_client_frame(data, vsn)[0])
    for frame in frames:
        assert secret not in repr(frame)


def test_frame_repr_shows_ordinary_payloads() -> None:
    """SE-01: reprs stay useful; everything but secrets is shown."""
    frame = broadcast_frame("3", "1", "room", "msg", {"n": 1})
    assert repr(frame) == (
        "Frame(topic='realtime:room', event='broadcast', payload={'type': 'broadcast', "
        "'event': 'msg', 'payload': {'n': 1}}, ref='3', join_ref='1')"
    )


def test_se01_frame_repr_shows_the_redaction_exactly() -> None:
    """SE-01: a secret's value is replaced by ``<redacted>``; the other keys stay as they are."""
    frame = Frame("realtime:room", "access_token", {"access_token": "t", "n": 1}, "2", "1")
    assert repr(frame) == (
        "Frame(topic='realtime:room', event='access_token', "
        "payload={'access_token': '<redacted>', 'n': 1}, ref='2', join_ref='1')"
    )


def test_frame_repr_of_payloads_that_are_not_objects() -> None:
    """SE-01: only an object's keys are secret; lists, strings, bytes and null show as they are."""
    payloads: list[Payload] = [None, ["access_token", "apikey"], "apikey", b"apikey", 5]
    for payload in payloads:
        frame = Frame("realtime:room", "broadcast", payload)
        assert repr(frame) == (
            f"Frame(topic='realtime:room', event='broadcast', payload={payload!r}, "
            "ref=None, join_ref=None)"
        )


def test_frame_repr_of_a_payload_nested_deeper_than_repr_goes() -> None:
    """SE-01, SR-09: a payload nested deeper than ``repr`` goes is named, not shown."""
    nested: JSONValue = []
    for _ in range(100_000):
        nested = [nested]
    frame = Frame("realtime:room", "broadcast", nested)
    assert repr(frame) == (
        "Frame(topic='realtime:room', event='broadcast', payload=<list nested too deep to show>, "
        "ref=None, join_ref=None)"
    )


def test_bc01_a_broadcast_to_a_full_topic_skips_the_topic_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """BC-01, SR-11: every send builds a broadcast, and the session's topics are full already:
    those are used as they are, without going through ``realtime_topic``."""
    from trio_realtime import _frames

    def refuse(topic: str) -> str:
        raise AssertionError("realtime_topic ran")

    monkeypatch.setattr(_frames, "realtime_topic", refuse)
    assert broadcast_frame("2", "1", "realtime:room", "e", 1) == Frame(
        "realtime:room", "broadcast", {"type": "broadcast", "event": "e", "payload": 1}, "2", "1"
    )
