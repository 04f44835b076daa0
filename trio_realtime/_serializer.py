"""Encode and parse Phoenix frames for vsn 1.0.0 and 2.0.0, and classify server events.

Theory of operation
-------------------
V1 (``vsn=1.0.0``) carries one JSON object per text frame. Client frames have the keys
``topic, event, payload, ref`` and ``join_ref`` when the frame belongs to a channel; server frames
never carry ``join_ref``.

V2 (``vsn=2.0.0``) carries ``[join_ref, ref, topic, event, payload]`` arrays in text frames, plus
binary frames whose first byte is a kind. A client sends user
broadcasts as kind 3 and receives them as kind 4; both hold a user event, optional JSON metadata
and a payload that is either JSON text (encoding 1) or raw bytes (encoding 0).

Both directions live here, so the local server in ``trio_realtime.testing`` reuses exactly these
codecs: :func:`encode` and :func:`parse_frame` are the client's view, while
:func:`encode_server_frame` and :func:`parse_client_frame` are the server's.

A text frame is passed around as ``str`` and a binary frame as ``bytes``; that distinction is
what tells the V2 decoder which format it is looking at. Nothing but :class:`ProtocolError` ever
escapes a parser.

The module is longer than the project's usual 500 lines because it holds both vsns' codecs for
both sides of the wire: the hot-path parsers are written out here beside the general parsers they
fall back to and the refusals they share, so that the two can be checked against each other.
"""

from __future__ import annotations

import enum
from typing import Final, Literal

import orjson

from ._exceptions import ProtocolError
from ._frames import (
    BROADCAST,
    PHOENIX_TOPIC,
    PHX_REPLY,
    Frame,
    JSONObject,
    JSONValue,
    Payload,
    broadcast_frame,
    make_frame,
)

Vsn = Literal["1.0.0", "2.0.0"]
VSN_1: Final = "1.0.0"
VSN_2: Final = "2.0.0"
SUPPORTED_VSNS: Final = (VSN_1, VSN_2)

WireData = str | bytes | bytearray | memoryview

# Binary kinds of the Realtime V2 serializer.
KIND_PUSH: Final = 0
KIND_REPLY: Final = 1
KIND_BROADCAST: Final = 2
KIND_USER_BROADCAST_PUSH: Final = 3
KIND_USER_BROADCAST: Final = 4

ENCODING_BINARY: Final = 0
ENCODING_JSON: Final = 1

_MAX_FIELD = 255

_loads = orjson.loads
_dumps = orjson.dumps
_JSONDecodeError = orjson.JSONDecodeError


class EventKind(enum.Enum):
    """What a server frame means to a client."""

    PHX_REPLY = "phx_reply"
    PHX_CLOSE = "phx_close"
    PHX_ERROR = "phx_error"
    POSTGRES_CHANGES = "postgres_changes"
    BROADCAST = "broadcast"
    PRESENCE_STATE = "presence_state"
    PRESENCE_DIFF = "presence_diff"
    SYSTEM = "system"
    HEARTBEAT_REPLY = "heartbeat_reply"
    UNKNOWN = "unknown"


_KIND_BY_EVENT: Final[dict[str, EventKind]] = {
    kind.value: kind
    for kind in EventKind
    if kind not in (EventKind.HEARTBEAT_REPLY, EventKind.UNKNOWN)
}


def event_kind(frame: Frame) -> EventKind:
    """Classify a server frame.

    A ``phx_reply`` on topic ``phoenix`` is a heartbeat reply; any event the protocol does not
    define is :attr:`EventKind.UNKNOWN`, which callers log and ignore.
    """
    kind = _KIND_BY_EVENT.get(frame.event, EventKind.UNKNOWN)
    if kind is EventKind.PHX_REPLY and frame.topic == PHOENIX_TOPIC:
        return EventKind.HEARTBEAT_REPLY
    return kind


def check_vsn(vsn: str) -> Vsn:
    """Return ``vsn`` if it is a supported serializer version.

    Raises:
        ValueError: for anything but ``"1.0.0"`` and ``"2.0.0"``.
    """
    if vsn == VSN_1:
        return VSN_1
    if vsn == VSN_2:
        return VSN_2
    raise ValueError(f"unsupported vsn {vsn!r}; use '1.0.0' or '2.0.0'")


# ---------------------------------------------------------------------------------------------
# Client side: encode what a client sends, parse what a server sends.


def encode(frame: Frame, vsn: str = VSN_1) -> str | bytes:
    """Encode a client frame for the wire.

    Returns:
        ``str`` for a text frame. ``bytes`` for a binary frame, which happens only under vsn
        2.0.0 for a ``broadcast`` push: it goes out as binary kind 3, with JSON encoding, or raw
        encoding when its inner payload is ``bytes``.

    Raises:
        ProtocolError: when the frame cannot be encoded, for example a bytes payload under vsn
            1.0.0, a value JSON cannot hold, or a binary field longer than 255 bytes.
    """
    data, binary = encode_wire(frame, vsn)
    return data if binary else data.decode()


def encode_wire(frame: Frame, vsn: str = VSN_1) -> tuple[bytes, bool]:
    """Like :func:`encode`, but return UTF-8 bytes and whether they form a binary frame.

    This is the form WebSocket protocol objects take, without a decode and re-encode.
    """
    if vsn == VSN_1:
        return _v1_text(frame.topic, frame.event, frame.payload, frame.ref, frame.join_ref), False
    if vsn == VSN_2:
        payload = frame.payload
        if (
            frame.event == BROADCAST
            and isinstance(payload, dict)
            and isinstance(payload.get("event"), str)
            and "payload" in payload
        ):
            return _encode_user_broadcast_push(frame, payload), True
        if isinstance(payload, bytes | bytearray | memoryview):
            raise ProtocolError(
                f"a bytes payload can only be sent as a broadcast, not as {frame.event!r}"
            )
        return _dump([frame.join_ref, frame.ref, frame.topic, frame.event, payload]), False
    raise ProtocolError(f"unsupported vsn {vsn!r}")


def encode_broadcast_push(
    ref: str | None,
    join_ref: str | None,
    topic: str,
    event: str,
    payload: Payload,
    *,
    vsn: str = VSN_1,
) -> tuple[bytes, bool]:
    """:func:`encode_wire` of ``broadcast_frame(ref, join_ref, topic, event, payload)``, the
    same bytes, without building the frame; ``topic`` is a full ``realtime:`` topic.

    SPEED: every ``send_broadcast`` encodes one, and the frame, its body built twice and the
    calls between were about a tenth of a push's CPU (``benchmarks/sends.py``).

    Raises:
        ProtocolError: as :func:`encode_wire`.
    """
    if vsn == VSN_1:
        body = {"type": BROADCAST, "event": event, "payload": payload}
        return _v1_text(topic, BROADCAST, body, ref, join_ref), False  # type: ignore[arg-type]
    if vsn == VSN_2 and isinstance(event, str):
        return _user_broadcast_push(join_ref, ref, topic, event, payload), True
    # A user event that is not a string (the type says it is): as encode_wire does, a text
    # frame under 2.0.0; and the same error for an unsupported vsn.
    return encode_wire(broadcast_frame(ref, join_ref, topic, event, payload), vsn)


def _v1_text(
    topic: str, event: str, payload: Payload, ref: str | None, join_ref: str | None
) -> bytes:
    """A V1 frame's JSON object, with ``join_ref`` only when there is one."""
    obj: JSONObject = {
        "topic": topic,
        "event": event,
        "payload": payload,  # type: ignore[dict-item]
        "ref": ref,
    }
    if join_ref is not None:
        obj["join_ref"] = join_ref
    return _dump(obj)


def parse_frame(data: WireData, vsn: str = VSN_1) -> Frame:
    """Parse one frame sent by a server.

    Under vsn 1.0.0 every frame is a JSON object (a binary frame is decoded as JSON too). Under
    vsn 2.0.0 a ``str`` is a JSON array ``[join_ref, ref, topic, event, payload, ...]`` and
    ``bytes`` are a binary frame of kind 0, 1, 2 or 4. A kind-4 user broadcast comes back as a
    ``broadcast`` frame shaped exactly like a text one, with ``meta`` only when the server sent
    metadata, and the inner payload as ``bytes`` for raw encoding.

    Raises:
        ProtocolError: for anything that is not a well-formed frame. Nothing else escapes.
    """
    parsed = parse_incoming(data, vsn)
    if isinstance(parsed, tuple):
        topic, payload, ref, join_ref = parsed
        return make_frame(topic, BROADCAST, payload, ref, join_ref)
    return parsed


BroadcastParts = tuple[str, Payload, str | None, str | None]
"""A text ``broadcast`` frame as :func:`parse_incoming` returns it: ``(topic, payload, ref,
join_ref)``, the fields of the :class:`Frame` that :func:`parse_frame` would build."""


def parse_incoming(data: WireData, vsn: str = VSN_1) -> Frame | BroadcastParts:
    """:func:`parse_frame` for a reader's hot path: a text ``broadcast`` frame comes back as
    the tuple ``(topic, payload, ref, join_ref)`` (``BroadcastParts``) instead of a
    :class:`Frame`; anything else, binary broadcasts included, as :func:`parse_frame` returns
    it.

    SPEED: a flood of broadcasts is mostly allocation, and the frame object and its attribute
    dictionary are two objects per message that the garbage collector would count too
    (``benchmarks/throughput.py``).

    Raises:
        ProtocolError: as :func:`parse_frame`, for exactly the same data.
    """
    # The V1 case is written out rather than composed from helpers.
    if vsn == VSN_1:
        try:
            obj = _loads(data)
        except _JSONDecodeError:
            obj = _load(data)  # a str subclass, or the error that explains the refusal
        if type(obj) is dict:
            topic = obj.get("topic")
            event = obj.get("event")
            payload = obj.get("payload", _MISSING)
            ref = obj.get("ref")
            join_ref = obj.get("join_ref")
            if (
                type(topic) is str
                and type(event) is str
                and payload is not _MISSING
                and (ref is None or type(ref) is str)
                and (join_ref is None or type(join_ref) is str)
            ):
                if event == BROADCAST:
                    return (topic, payload, ref, join_ref)
                return make_frame(topic, event, payload, ref, join_ref)
        return _parse_object(obj, require_ref=False)
    if vsn == VSN_2:
        if type(data) is str:
            try:
                arr = _loads(data)
            except _JSONDecodeError:
                arr = _load(data)  # raises the error that explains the refusal
            if type(arr) is list and len(arr) >= 5:
                join_ref, ref, topic, event, payload = arr[0], arr[1], arr[2], arr[3], arr[4]
                if (
                    type(topic) is str
                    and type(event) is str
                    and (ref is None or type(ref) is str)
                    and (join_ref is None or type(join_ref) is str)
                ):
                    if event == BROADCAST:
                        return (topic, payload, ref, join_ref)
                    return make_frame(topic, event, payload, ref, join_ref)
            return _parse_array(arr)
        if type(data) is bytes and data[:1] == b"\x04":
            return _parse_user_broadcast(data)
        if isinstance(data, str):
            return _parse_array(_load(data))
        return _parse_binary(data, from_server=True)
    raise ProtocolError(f"unsupported vsn {vsn!r}")


_MISSING: Final = object()


def _parse_user_broadcast(raw: bytes) -> Frame:
    """Decode a kind-4 frame (the V2 hot path: every binary-origin broadcast is one)."""
    if len(raw) < 5:
        raise ProtocolError("binary frame is truncated in its header")
    topic_end = 5 + raw[1]
    event_end = topic_end + raw[2]
    meta_end = event_end + raw[3]
    if meta_end > len(raw):
        raise ProtocolError("binary frame is shorter than its header says")
    try:
        topic = raw[5:topic_end].decode()
        user_event = raw[topic_end:event_end].decode()
    except UnicodeDecodeError:
        raise ProtocolError("binary frame field is not valid UTF-8") from None
    payload = _user_broadcast(user_event, raw[event_end:meta_end], raw[4], raw[meta_end:])
    return make_frame(topic, BROADCAST, payload)


# ---------------------------------------------------------------------------------------------
# Server side: parse what a client sends, encode what a server sends.


def parse_client_frame(data: WireData, vsn: str = VSN_1) -> tuple[Frame, bool]:
    """Parse one frame sent by a client, as the Realtime server does.

    Returns:
        The frame, and whether it arrived as a binary user broadcast (kind 3). A kind-3 frame is
        returned as a ``broadcast`` frame whose payload is
        ``{"type": "broadcast", "event": ..., "payload": ...}``, with ``meta`` when the client
        sent metadata.

    Raises:
        ProtocolError: for anything that is not a well-formed client frame. V1 requires the keys
            ``topic``, ``event``, ``payload`` and ``ref`` (``ref`` may be null).
    """
    if vsn == VSN_1:
        return _parse_object(_load(data), require_ref=True), False
    if vsn == VSN_2:
        if isinstance(data, str):
            return _parse_array(_load(data)), False
        frame = _parse_binary(data, from_server=False)
        return frame, frame.event == BROADCAST and isinstance(frame.payload, dict)
    raise ProtocolError(f"unsupported vsn {vsn!r}")


def encode_server_frame(
    frame: Frame, vsn: str = VSN_1, *, user_broadcast: bool = False
) -> tuple[bytes, bool]:
    """Encode a frame as the Realtime server sends it; return the bytes and whether binary.

    V1 frames carry only ``event``, ``payload``, ``ref`` and ``topic``. V2 frames are arrays, or
    binary kind 4 when ``user_broadcast`` is set (the frame must then be a ``broadcast`` whose
    payload holds ``event`` and ``payload``, and optionally ``meta``).

    Raises:
        ProtocolError: when the frame cannot be encoded; in particular a binary (bytes) user
            broadcast cannot be sent to a V1 client, which the real server skips.
    """
    if vsn == VSN_1:
        obj: JSONObject = {
            "event": frame.event,
            "payload": frame.payload,  # type: ignore[dict-item]
            "ref": frame.ref,
            "topic": frame.topic,
        }
        return _dump(obj), False
    if vsn == VSN_2:
        payload = frame.payload
        if user_broadcast:
            if not isinstance(payload, dict) or not isinstance(payload.get("event"), str):
                raise ProtocolError("a user broadcast needs a payload with a string 'event'")
            return _encode_user_broadcast(frame.topic, payload), True
        return _dump([frame.join_ref, frame.ref, frame.topic, frame.event, payload]), False
    raise ProtocolError(f"unsupported vsn {vsn!r}")


# ---------------------------------------------------------------------------------------------
# Helpers.


def _load(data: WireData) -> object:
    """Decode JSON text; orjson refuses every type but its own four with a JSONDecodeError."""
    try:
        return _loads(data)
    except _JSONDecodeError as exc:
        if isinstance(data, str) and type(data) is not str:  # orjson takes str itself only
            return _load(str.__str__(data))
        if not isinstance(data, str | bytes | bytearray | memoryview):
            raise ProtocolError(
                f"frame data must be str or bytes, not {type(data).__name__}"
            ) from None
        raise ProtocolError(f"frame is not valid JSON: {exc}") from None


def _dump(value: object) -> bytes:
    try:
        return _dumps(value)
    except (orjson.JSONEncodeError, TypeError) as exc:
        raise ProtocolError(f"cannot encode frame as JSON: {exc}") from None


def _ref(value: object, name: str) -> str | None:
    if value is None or type(value) is str:
        return value
    if type(value) is int:
        return str(value)
    raise ProtocolError(f"frame {name} must be a string or null, not {type(value).__name__}")


def _parse_object(obj: object, *, require_ref: bool) -> Frame:
    if type(obj) is not dict:
        raise ProtocolError(f"V1 frame must be a JSON object, not {type(obj).__name__}")
    topic = obj.get("topic")
    event = obj.get("event")
    if type(topic) is not str or type(event) is not str:
        raise ProtocolError("V1 frame needs string 'topic' and 'event'")
    if "payload" not in obj:
        raise ProtocolError("V1 frame has no 'payload'")
    if require_ref and "ref" not in obj:
        raise ProtocolError("V1 client frame has no 'ref'")
    ref = obj.get("ref")
    join_ref = obj.get("join_ref")
    if (ref is not None and type(ref) is not str) or (
        join_ref is not None and type(join_ref) is not str
    ):
        ref = _ref(ref, "ref")
        join_ref = _ref(join_ref, "join_ref")
    return make_frame(topic, event, obj["payload"], ref, join_ref)


def _parse_array(arr: object) -> Frame:
    if type(arr) is not list or len(arr) < 5:
        raise ProtocolError("V2 text frame must be a JSON array of at least 5 elements")
    join_ref, ref, topic, event, payload = arr[0], arr[1], arr[2], arr[3], arr[4]
    if type(topic) is not str or type(event) is not str:
        raise ProtocolError("V2 frame needs string topic and event")
    if (ref is not None and type(ref) is not str) or (
        join_ref is not None and type(join_ref) is not str
    ):
        ref = _ref(ref, "ref")
        join_ref = _ref(join_ref, "join_ref")
    return make_frame(topic, event, payload, ref, join_ref)


class _Reader:
    """Cursor over a binary frame; every read is bounds-checked."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 1  # after the kind byte

    def sizes(self, count: int) -> bytes:
        end = self.pos + count
        if end > len(self.data):
            raise ProtocolError("binary frame is truncated in its header")
        sizes = self.data[self.pos : end]
        self.pos = end
        return sizes

    def raw(self, size: int) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            raise ProtocolError("binary frame is shorter than its header says")
        value = self.data[self.pos : end]
        self.pos = end
        return value

    def text(self, size: int) -> str:
        try:
            return self.raw(size).decode()
        except UnicodeDecodeError:
            raise ProtocolError("binary frame field is not valid UTF-8") from None

    def rest(self) -> bytes:
        return self.data[self.pos :]


def _parse_binary(data: WireData, *, from_server: bool) -> Frame:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError(f"binary frame data must be bytes, not {type(data).__name__}")
    raw = bytes(data)
    if not raw:
        raise ProtocolError("binary frame is empty")
    kind = raw[0]
    reader = _Reader(raw)
    if kind == KIND_USER_BROADCAST and from_server:
        return _parse_user_broadcast(raw)
    if kind == KIND_USER_BROADCAST_PUSH and not from_server:
        join_ref_len, ref_len, topic_len, event_len, meta_len, encoding = reader.sizes(6)
        join_ref = reader.text(join_ref_len) or None
        ref = reader.text(ref_len) or None
        topic = reader.text(topic_len)
        user_event = reader.text(event_len)
        meta = reader.raw(meta_len)
        payload = _user_broadcast(user_event, meta, encoding, reader.rest())
        return make_frame(topic, BROADCAST, payload, ref, join_ref)
    if kind == KIND_PUSH:
        if from_server:
            join_ref_len, topic_len, event_len = reader.sizes(3)
            join_ref = reader.text(join_ref_len) or None
            ref = None
        else:
            join_ref_len, ref_len, topic_len, event_len = reader.sizes(4)
            join_ref = reader.text(join_ref_len) or None
            ref = reader.text(ref_len) or None
        topic = reader.text(topic_len)
        event = reader.text(event_len)
        return make_frame(topic, event, reader.rest(), ref, join_ref)
    if kind == KIND_REPLY and from_server:
        join_ref_len, ref_len, topic_len, status_len = reader.sizes(4)
        join_ref = reader.text(join_ref_len) or None
        ref = reader.text(ref_len) or None
        topic = reader.text(topic_len)
        status = reader.text(status_len)
        reply: dict[str, object] = {"response": reader.rest(), "status": status}
        return make_frame(topic, PHX_REPLY, reply, ref, join_ref)  # type: ignore[arg-type]
    if kind == KIND_BROADCAST and from_server:
        topic_len, event_len = reader.sizes(2)
        topic = reader.text(topic_len)
        event = reader.text(event_len)
        return make_frame(topic, event, reader.rest())
    side = "server" if from_server else "client"
    raise ProtocolError(f"unexpected binary frame kind {kind} from a {side}")


def _user_broadcast(user_event: str, meta: bytes, encoding: int, body: bytes) -> JSONObject:
    payload: JSONObject = {"type": BROADCAST, "event": user_event}
    if encoding == ENCODING_BINARY:
        payload["payload"] = body  # type: ignore[assignment]
    else:
        payload["payload"] = _load(body)  # type: ignore[assignment]
    if meta:
        payload["meta"] = _load(meta)  # type: ignore[assignment]
    return payload


def _field(value: str | None, name: str) -> bytes:
    encoded = b"" if value is None else value.encode()
    if len(encoded) > _MAX_FIELD:
        raise ProtocolError(
            f"binary frame {name} is {len(encoded)} bytes; the limit is {_MAX_FIELD}"
        )
    return encoded


def _body(inner: Payload) -> tuple[int, bytes]:
    if isinstance(inner, bytes | bytearray | memoryview):
        return ENCODING_BINARY, bytes(inner)
    return ENCODING_JSON, _dump(inner)


def _metadata(payload: dict[str, JSONValue], skip: tuple[str, ...]) -> bytes:
    extra = {key: value for key, value in payload.items() if key not in skip}
    return _field(_dump(extra).decode(), "metadata") if extra else b""


def _encode_user_broadcast_push(frame: Frame, payload: dict[str, JSONValue]) -> bytes:
    return _user_broadcast_push(
        frame.join_ref,
        frame.ref,
        frame.topic,
        payload["event"],  # type: ignore[arg-type]
        payload["payload"],
        meta=_metadata(payload, ("type", "event", "payload")),
    )


def _user_broadcast_push(
    join_ref_text: str | None,
    ref_text: str | None,
    topic_text: str,
    event_text: str,
    value: Payload,
    *,
    meta: bytes = b"",
) -> bytes:
    join_ref = _field(join_ref_text, "join_ref")
    ref = _field(ref_text, "ref")
    topic = _field(topic_text, "topic")
    user_event = _field(event_text, "event")
    encoding, body = _body(value)
    header = bytes(
        (
            KIND_USER_BROADCAST_PUSH,
            len(join_ref),
            len(ref),
            len(topic),
            len(user_event),
            len(meta),
            encoding,
        )
    )
    return b"".join((header, join_ref, ref, topic, user_event, meta, body))


def _encode_user_broadcast(topic_text: str, payload: dict[str, JSONValue]) -> bytes:
    topic = _field(topic_text, "topic")
    user_event = _field(payload["event"], "event")  # type: ignore[arg-type]
    meta_value = payload.get("meta")
    meta = _field(_dump(meta_value).decode(), "metadata") if meta_value else b""
    encoding, body = _body(payload.get("payload"))
    header = bytes((KIND_USER_BROADCAST, len(topic), len(user_event), len(meta), encoding))
    return b"".join((header, topic, user_event, meta, body))
