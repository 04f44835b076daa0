"""Property tests of the serializer (SR-09 and round trips of SR-01, SR-03, SR-05, SR-06).

* SR-09: whatever arrives, ``parse_frame`` and ``parse_client_frame`` return a Frame or raise
  :class:`ProtocolError`, under both vsn values: random text and bytes, arbitrary JSON in objects
  and arrays with wrong types or missing keys, huge integers, deep nesting, binary frames with
  plausible kind bytes and random sizes.
* Round trips: client ``encode`` -> ``parse_client_frame`` and server ``encode_server_frame`` ->
  ``parse_frame`` give the frame back (V1 server frames drop ``join_ref``).

Example counts are moderate and the runs derandomized, so CI sees the same examples every time;
``nox -s fuzz`` runs the SR-09 tests at length.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from _fuzzing import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_realtime.protocol import (
    Frame,
    JSONValue,
    Payload,
    ProtocolError,
    broadcast_frame,
    encode,
    encode_broadcast_push,
    encode_server_frame,
    encode_wire,
    parse_client_frame,
    parse_frame,
)

V1 = "1.0.0"
V2 = "2.0.0"
VSNS = st.sampled_from([V1, V2])

# The rest comes from the hypothesis profile: derandomized in CI, random under ``nox -s fuzz``,
# which also multiplies the count (see conftest.py and _fuzzing.py).
FUZZ = settings(max_examples=examples(250))
ROUND_TRIP = settings(
    max_examples=200,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def parses_or_protocol_error(data: str | bytes, vsn: str) -> None:
    """Feed ``data`` to both parsers; only a Frame or ProtocolError may come out."""
    try:
        frame = parse_frame(data, vsn)
    except ProtocolError:
        pass
    else:
        assert isinstance(frame, Frame)
        assert isinstance(frame.topic, str)
        assert isinstance(frame.event, str)
        assert frame.ref is None or isinstance(frame.ref, str)
        assert frame.join_ref is None or isinstance(frame.join_ref, str)
    try:
        frame, binary = parse_client_frame(data, vsn)
    except ProtocolError:
        pass
    else:
        assert isinstance(frame, Frame)
        assert isinstance(binary, bool)


# ---------------------------------------------------------------------------------------------
# SR-09: anything in, Frame or ProtocolError out.

# Any JSON, including integers beyond 64 bits and NaN/Infinity tokens (written by the stdlib
# encoder, which orjson then has to refuse).
ANY_JSON: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**64 - 2, max_value=2**200)
    | st.integers(min_value=-(2**200), max_value=-(2**63) + 1)
    | st.floats()
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=12,
)
REF_LIKE: st.SearchStrategy[Any] = st.one_of(
    st.none(), st.text(max_size=5), st.integers(), st.floats(), st.booleans(), ANY_JSON
)
KEYS = ("topic", "event", "payload", "ref", "join_ref")


@st.composite
def frame_like_objects(draw: st.DrawFn) -> Any:
    """Objects with some of the V1 keys, each holding a right or wrong type."""
    obj: dict[str, Any] = {}
    for key in KEYS:
        if draw(st.booleans()):
            obj[key] = draw(
                st.one_of(st.text(max_size=10), REF_LIKE) if key != "payload" else ANY_JSON
            )
    if draw(st.booleans()):
        obj.update(draw(st.dictionaries(st.text(max_size=5), ANY_JSON, max_size=3)))
    return obj


@st.composite
def frame_like_arrays(draw: st.DrawFn) -> Any:
    """Arrays of 0 to 8 elements, mixing plausible and wrong values in each position."""
    size = draw(st.integers(min_value=0, max_value=8))
    return [draw(st.one_of(st.text(max_size=10), REF_LIKE)) for _ in range(size)]


def deep(depth: int, inner: str) -> str:
    return "[" * depth + inner + "]" * depth


@FUZZ
@given(data=st.text(), vsn=VSNS)
def test_sr09_random_text(data: str, vsn: str) -> None:
    """SR-09: arbitrary text."""
    parses_or_protocol_error(data, vsn)


@FUZZ
@given(data=st.binary(max_size=300), vsn=VSNS)
def test_sr09_random_bytes(data: bytes, vsn: str) -> None:
    """SR-09: arbitrary bytes (binary frames under V2, JSON under V1)."""
    parses_or_protocol_error(data, vsn)


@FUZZ
@given(
    kind=st.integers(min_value=0, max_value=5),
    sizes=st.lists(st.integers(min_value=0, max_value=255), min_size=0, max_size=6),
    body=st.binary(max_size=60),
    encoding=st.integers(min_value=0, max_value=2),
)
def test_sr09_plausible_binary_headers(
    kind: int, sizes: list[int], body: bytes, encoding: int
) -> None:
    """SR-09: a real kind byte with header sizes that may lie about the rest."""
    parses_or_protocol_error(bytes([kind, *sizes]) + body, V2)
    parses_or_protocol_error(bytes([kind, *sizes, encoding]) + body, V2)


@FUZZ
@given(
    kind=st.sampled_from([0, 1, 2, 3, 4]),
    fields=st.lists(st.binary(max_size=12), min_size=6, max_size=6),
    meta=st.one_of(
        st.just(b""), st.binary(max_size=12), st.builds(json.dumps, ANY_JSON).map(str.encode)
    ),
    body=st.one_of(st.binary(max_size=30), st.builds(json.dumps, ANY_JSON).map(str.encode)),
    encoding=st.integers(min_value=0, max_value=2),
)
def test_sr09_well_sized_binary_frames_with_junk_fields(
    kind: int, fields: list[bytes], meta: bytes, body: bytes, encoding: int
) -> None:
    """SR-09: headers that match their fields, whose content is junk (bad UTF-8, bad JSON)."""
    meta = meta[:255]
    if kind in (3, 4):
        count = 3 if kind == 3 else 2
        used = fields[:count]
        header = [len(field) for field in used] + [len(meta), encoding]
        data = bytes([kind, *header]) + b"".join(used) + meta + body
    else:
        count = {0: 4, 1: 4, 2: 2}[kind]
        used = fields[:count]
        data = bytes([kind, *(len(field) for field in used)]) + b"".join(used) + body
    parses_or_protocol_error(data, V2)


@FUZZ
@given(obj=st.one_of(frame_like_objects(), frame_like_arrays(), ANY_JSON), vsn=VSNS)
def test_sr09_json_of_the_wrong_shape(obj: Any, vsn: str) -> None:
    """SR-09: JSON objects and arrays with wrong types, missing keys and huge numbers."""
    text = json.dumps(obj)
    parses_or_protocol_error(text, vsn)
    parses_or_protocol_error(text.encode(), vsn)


@FUZZ
@given(
    depth=st.integers(min_value=1, max_value=5000),
    inner=st.sampled_from(["", "1", '"x"', "{}", '{"a":[]}']),
    vsn=VSNS,
)
def test_sr09_deep_nesting(depth: int, inner: str, vsn: str) -> None:
    """SR-09: deeply nested payloads, as a whole frame and inside a frame's payload."""
    parses_or_protocol_error(deep(depth, inner), vsn)
    nested = deep(depth, inner)
    parses_or_protocol_error(f'{{"topic":"t","event":"e","payload":{nested},"ref":null}}', vsn)
    parses_or_protocol_error(f'[null,null,"t","e",{nested}]', vsn)


# ---------------------------------------------------------------------------------------------
# Round trips.

# JSON that survives orjson exactly: 64-bit integers, finite floats, any text (no surrogates).
JSON: st.SearchStrategy[JSONValue] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
REFS = st.one_of(st.none(), st.text(max_size=10))
# Binary fields cannot tell "" from null, so binary frames use None or non-empty refs.
BINARY_REFS = st.one_of(st.none(), st.text(min_size=1, max_size=10))
TOPICS = st.text(max_size=30)
EVENTS = st.one_of(
    st.sampled_from(
        [
            "phx_join",
            "phx_leave",
            "heartbeat",
            "presence",
            "access_token",
            "phx_reply",
            "phx_close",
            "system",
        ]
    ),
    st.text(max_size=20).filter(lambda event: event != "broadcast"),
)
BROADCAST_PAYLOADS: st.SearchStrategy[Payload] = st.one_of(JSON, st.binary(max_size=50))


@st.composite
def client_frames(draw: st.DrawFn) -> Frame:
    """Any client text frame (not a broadcast, which V2 sends as binary)."""
    return Frame(draw(TOPICS), draw(EVENTS), draw(JSON), draw(REFS), draw(REFS))


@ROUND_TRIP
@given(frame=client_frames(), vsn=VSNS)
def test_sr01_sr03_client_text_frames_round_trip(frame: Frame, vsn: str) -> None:
    """SR-01, SR-03: encode then parse on the server side gives the same frame back."""
    data = encode(frame, vsn)
    assert isinstance(data, str)
    assert parse_client_frame(data, vsn) == (frame, False)


@ROUND_TRIP
@given(
    ref=BINARY_REFS,
    join_ref=BINARY_REFS,
    topic=st.text(max_size=40),
    event=st.text(max_size=40),
    payload=BROADCAST_PAYLOADS,
)
def test_sr05_binary_broadcast_push_round_trips(
    ref: str | None, join_ref: str | None, topic: str, event: str, payload: Payload
) -> None:
    """SR-05: V2 broadcasts go out as kind 3 (JSON or raw bytes) and parse back unchanged."""
    if topic in ("", "realtime:"):
        topic = "room"
    frame = broadcast_frame(ref, join_ref, topic, event, payload)
    data = encode(frame, V2)
    assert isinstance(data, bytes)
    assert data[0] == 3
    assert data[6] == (0 if isinstance(payload, bytes) else 1)
    assert parse_client_frame(data, V2) == (frame, True)


@ROUND_TRIP
@given(
    ref=REFS,
    join_ref=REFS,
    topic=st.text(min_size=1, max_size=40),
    event=st.text(max_size=40),
    payload=JSON,
)
def test_sr01_v1_broadcast_push_round_trips(
    ref: str | None, join_ref: str | None, topic: str, event: str, payload: JSONValue
) -> None:
    """SR-01: V1 broadcasts are text objects and parse back unchanged."""
    if topic == "realtime:":
        topic = "room"
    frame = broadcast_frame(ref, join_ref, topic, event, payload)
    data = encode(frame, V1)
    assert isinstance(data, str)
    assert parse_client_frame(data, V1) == (frame, False)


BROADCAST_PARTS = st.tuples(
    BINARY_REFS, BINARY_REFS, st.text(min_size=1, max_size=40), st.text(max_size=40)
)


@ROUND_TRIP
@given(parts=BROADCAST_PARTS, payload=BROADCAST_PAYLOADS, vsn=VSNS)
def test_sr01_sr05_broadcast_encoded_from_its_parts_is_the_frames_encoding(
    parts: tuple[str | None, str | None, str, str], payload: Payload, vsn: str
) -> None:
    """SR-01, SR-05, BC-01: encode_broadcast_push gives encode_wire's bytes for the broadcast frame,
    or the same error (bytes under V1)."""
    ref, join_ref, sub_topic, event = parts
    topic = "realtime:" + sub_topic
    frame = broadcast_frame(ref, join_ref, topic, event, payload)
    error: str | None = None
    try:
        expected = encode_wire(frame, vsn)
    except ProtocolError as exc:
        error = str(exc)
    if error is None:
        assert encode_broadcast_push(ref, join_ref, topic, event, payload, vsn=vsn) == expected
    else:
        with pytest.raises(ProtocolError) as info:
            encode_broadcast_push(ref, join_ref, topic, event, payload, vsn=vsn)
        assert str(info.value) == error


def test_sr05_broadcast_from_its_parts_refuses_what_encode_wire_refuses() -> None:
    """SR-05: a field over 255 bytes under V2, and an unknown vsn, are refused alike; an event
    that is not a string is encoded alike."""
    long_event = "e" * 256
    frame = broadcast_frame("1", "1", "realtime:room", long_event, {})
    for vsn in (V2, "3.0.0"):
        with pytest.raises(ProtocolError) as expected:
            encode_wire(frame, vsn)
        with pytest.raises(ProtocolError) as info:
            encode_broadcast_push("1", "1", "realtime:room", long_event, {}, vsn=vsn)
        assert str(info.value) == str(expected.value)
    odd_event: Any = 5  # not a string, against the type: a text frame under 2.0.0
    odd = encode_wire(broadcast_frame("1", "1", "realtime:room", odd_event, {}), V2)
    assert encode_broadcast_push("1", "1", "realtime:room", odd_event, {}, vsn=V2) == odd


@st.composite
def server_frames(draw: st.DrawFn) -> Frame:
    """Any server text frame."""
    event = draw(st.one_of(EVENTS, st.just("broadcast")))
    return Frame(draw(TOPICS), event, draw(JSON), draw(REFS), draw(REFS))


@ROUND_TRIP
@given(frame=server_frames())
def test_sr02_v1_server_frames_round_trip_without_join_ref(frame: Frame) -> None:
    """SR-02: the server's V1 frames carry no join_ref, so it comes back as None."""
    data, binary = encode_server_frame(frame, V1)
    assert not binary
    assert parse_frame(data, V1) == dataclasses.replace(frame, join_ref=None)
    assert parse_frame(data.decode(), V1) == dataclasses.replace(frame, join_ref=None)


@ROUND_TRIP
@given(frame=server_frames())
def test_sr04_v2_server_text_frames_round_trip(frame: Frame) -> None:
    """SR-04: V2 arrays carry every field."""
    data, binary = encode_server_frame(frame, V2)
    assert not binary
    assert parse_frame(data.decode(), V2) == frame


@ROUND_TRIP
@given(
    topic=st.text(max_size=40),
    event=st.text(max_size=40),
    payload=BROADCAST_PAYLOADS,
    meta=st.one_of(
        st.none(),
        st.dictionaries(st.text(max_size=8), JSON, min_size=1, max_size=3).filter(
            lambda meta: len(json.dumps(meta, ensure_ascii=False).encode()) < 200
        ),
    ),
)
def test_sr06_kind4_user_broadcasts_round_trip(
    topic: str, event: str, payload: Payload, meta: dict[str, JSONValue] | None
) -> None:
    """SR-06: kind 4 (JSON or raw bytes, with or without metadata) parses back unchanged."""
    body: dict[str, Any] = {"type": "broadcast", "event": event, "payload": payload}
    if meta is not None:
        body["meta"] = meta
    frame = Frame(topic, "broadcast", body)
    data, binary = encode_server_frame(frame, V2, user_broadcast=True)
    assert binary
    assert data[0] == 4
    assert parse_frame(data, V2) == frame
