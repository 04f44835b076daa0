"""``parse_incoming``: ``parse_frame`` without a frame object for text broadcasts (SR-09).

The reader's hot path parses with :func:`parse_incoming`, which returns a text ``broadcast``
frame as its ``(topic, payload, ref, join_ref)`` tuple and everything else as
:func:`parse_frame` does. These tests pin that the two agree on every input, well-formed or
not, under both vsns, and that the session gives the same item for the parts as for the frame.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from _fuzzing import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_realtime.protocol import (
    Frame,
    JSONObject,
    ProtocolError,
    Session,
    encode_server_frame,
    parse_frame,
    parse_incoming,
)

TOPIC = "realtime:room"

FRAMES = [
    Frame(TOPIC, "broadcast", {"type": "broadcast", "event": "m", "payload": {"n": 1}}),
    Frame(TOPIC, "broadcast", {"type": "broadcast", "event": "m", "payload": [1]}, "5", "1"),
    Frame(TOPIC, "broadcast", "not an object"),
    Frame(TOPIC, "phx_reply", {"status": "ok", "response": {}}, "3", "1"),
    Frame(TOPIC, "presence_diff", {"joins": {}, "leaves": {}}),
    Frame("phoenix", "phx_reply", {"status": "ok", "response": {}}, "7"),
]


def _agree(data: Any, vsn: str) -> None:
    """parse_incoming and parse_frame return the same frame, or raise the same error."""
    try:
        expected: Frame | None = parse_frame(data, vsn)
        error = None
    except ProtocolError as exc:
        expected, error = None, str(exc)
    if error is not None:
        with pytest.raises(ProtocolError) as refused:
            parse_incoming(data, vsn)
        assert str(refused.value) == error
        return
    parsed = parse_incoming(data, vsn)
    assert expected is not None
    if isinstance(parsed, tuple):
        assert expected.event == "broadcast"
        assert parsed == (expected.topic, expected.payload, expected.ref, expected.join_ref)
        assert isinstance(data, str) or vsn == "1.0.0"  # binary broadcasts keep their frame
    else:
        assert parsed == expected


@pytest.mark.parametrize("vsn", ["1.0.0", "2.0.0"])
@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: f"{f.event}-{f.ref}")
def test_sr09_parse_incoming_agrees_with_parse_frame(frame: Frame, vsn: str) -> None:
    """SR-09: every server frame shape, as the server encodes it, parses the same both ways;
    a text broadcast comes back as its parts."""
    data, binary = encode_server_frame(frame, vsn)
    message: bytes | str = data if binary else data.decode()
    _agree(message, vsn)
    parsed = parse_incoming(message, vsn)
    assert isinstance(parsed, tuple) == (frame.event == "broadcast")


def test_sr09_a_binary_broadcast_keeps_its_frame() -> None:
    """SR-09: a kind-4 binary broadcast (vsn 2.0.0) comes back as the frame parse_frame builds."""
    inner: Any = b"\x00\x01"
    frame = Frame(TOPIC, "broadcast", {"type": "broadcast", "event": "m", "payload": inner})
    data, binary = encode_server_frame(frame, "2.0.0", user_broadcast=True)
    assert binary
    assert parse_incoming(data, "2.0.0") == parse_frame(data, "2.0.0")


@pytest.mark.parametrize(
    "data",
    [
        b"{",
        b"[]",
        b'{"topic": "t", "event": "broadcast"}',
        b'{"topic": 1, "event": "broadcast", "payload": {}}',
        b'{"topic": "t", "event": "broadcast", "payload": {}, "ref": 5}',
        b'{"topic": "t", "event": "broadcast", "payload": {}, "join_ref": []}',
        '["1", "2", "t", "broadcast"]',
        '[1, "2", "t", "broadcast", {}]',
        '["1", "2", "t", null, {}]',
        b"\x04\x01",
        12,
    ],
)
@pytest.mark.parametrize("vsn", ["1.0.0", "2.0.0"])
def test_sr09_malformed_frames_are_refused_alike(data: Any, vsn: str) -> None:
    """SR-09: what parse_frame refuses, parse_incoming refuses with the same words."""
    _agree(data, vsn)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "topic": st.sampled_from([TOPIC, 1, None]),
        "event": st.sampled_from(["broadcast", "phx_reply", 2]),
        "payload": JSON,
        "ref": st.sampled_from(["1", None, 3]),
        "join_ref": st.sampled_from(["1", None, [1]]),
    },
)


@settings(max_examples=examples(200))
@given(fields=FIELDS, as_array=st.booleans())
def test_sr09_parse_incoming_agrees_on_random_frames(
    fields: dict[str, Any], as_array: bool
) -> None:
    """SR-09: random objects and arrays with every field present or not, right or wrong."""
    if as_array:
        keys = ("join_ref", "ref", "topic", "event", "payload")
        text = orjson.dumps([fields.get(k) for k in keys if k in fields]).decode()
        _agree(text, "2.0.0")
    else:
        _agree(orjson.dumps(fields), "1.0.0")


def test_sr09_the_session_gives_the_same_item_for_parts_as_for_the_frame() -> None:
    """SR-09: Session.receive_broadcast_parts is receive_broadcast without the frame, and
    counts a broadcast to a topic it does not know as unroutable, as receive does."""
    session = Session()
    session.add_channel(TOPIC)
    payload: JSONObject = {
        "type": "broadcast",
        "event": "m",
        "payload": {"n": 1},
        "meta": {"id": "x"},
    }
    frame = Frame(TOPIC, "broadcast", payload)
    assert session.receive_broadcast_parts(TOPIC, payload) == session.receive_broadcast(frame)
    assert session.receive_broadcast_parts(TOPIC, "not an object") is None
    assert session.receive_broadcast_parts("realtime:other", payload) is None
    assert session.unroutable_frames == 1
