"""Fuzzing: the parser, the V2 binary decoder, presence sync and the live reader loop.

* SR-09 by mutation: valid server frames of every shape (V1 objects, V2 arrays, binary kinds 0,
  1, 2 and 4), with bytes flipped, inserted, deleted, duplicated and cut, fed to
  ``parse_frame`` as bytes and as text: a Frame or ProtocolError, nothing else.
  (``test_protocol_properties`` covers random and wrong-shape input.)
* SR-06: a kind-4 frame whose header sizes match its fields decodes to exactly the documented
  broadcast shape, or ProtocolError when a JSON part is not JSON.
* PR-02..PR-04: presence sync against a model of the server: random joins, leaves, rejoins
  (diffs arriving before the new join's state are held) and states; whenever the state of the
  current join has been applied, the tracker holds exactly the server's presences.
* HD-02, differentially: random WebSocket frames (every opcode, reserved bits, masks, 7-, 16-
  and 64-bit lengths, lengths that lie, invalid UTF-8, junk) cut at random read boundaries go
  through the default transport's frame splitter and through websockets' own parser: both
  deliver the same messages and end with the same close code.
* BI-01 in the live client: random frames, valid and invalid, text and binary, for the joined
  topic, others and ``phoenix``, go through the local server's ``send_raw`` into a client;
  the reader never dies and never fails to handle a parsed frame (no error logged), the client
  stays connected, and a good frame sent afterwards is delivered.

Counts are modest and derandomized in CI; ``nox -s fuzz`` multiplies them (``tests/_fuzzing``).
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import random
from typing import Any

import orjson
import trio
import trio.testing
from _fuzzing import examples, tried
from _realtime import connect
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)
from websockets.client import ClientProtocol
from websockets.frames import Frame as WSFrame
from websockets.frames import Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from trio_realtime import ChannelState
from trio_realtime._frames import make_frame
from trio_realtime._presence import PresenceTracker, transform_state
from trio_realtime._transport import Message
from trio_realtime._ws_sansio import SansIOWebSocket
from trio_realtime.protocol import (
    Frame,
    ProtocolError,
    encode_server_frame,
    event_kind,
    parse_frame,
)
from trio_realtime.testing import serve_realtime

VSNS = st.sampled_from(["1.0.0", "2.0.0"])

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
KEYS = st.sampled_from(
    [
        "event",
        "payload",
        "type",
        "joins",
        "leaves",
        "metas",
        "phx_ref",
        "phx_ref_prev",
        "ids",
        "data",
        "status",
        "response",
        "reason",
        "message",
        "extension",
        "channel",
        "record",
        "old_record",
        "columns",
        "schema",
        "table",
        "commit_timestamp",
        "errors",
        "meta",
        "name",
    ]
) | st.text(max_size=6)
JSON: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=12,
)


def dumps(value: Any) -> bytes:
    """JSON text of ``value`` (the stdlib writes integers beyond 64 bits, orjson refuses)."""
    return json.dumps(value).encode()


TOPICS = st.sampled_from(
    ["realtime:fuzz", "realtime:fuzz", "realtime:other", "phoenix", "realtime:", ""]
) | st.text(max_size=12).filter(lambda topic: topic != "realtime:sentinel")
EVENTS = st.sampled_from(
    [
        "broadcast",
        "presence_state",
        "presence_diff",
        "postgres_changes",
        "system",
        "phx_reply",
        "phx_close",
        "phx_error",
        "phx_join",
        "heartbeat",
        "access_token",
    ]
) | st.text(max_size=10)
REFS = st.none() | st.sampled_from(["1", "2", "3", "4", "999"]) | st.text(max_size=4)

META = st.dictionaries(st.sampled_from(["phx_ref", "phx_ref_prev", "name", "x"]), JSON, max_size=3)
PRESENCE_MAP = st.dictionaries(
    st.text(max_size=5),
    st.fixed_dictionaries({"metas": st.lists(META, max_size=3)}) | JSON,
    max_size=3,
)
COLUMN_TYPES = st.sampled_from(
    [
        "int4",
        "int8",
        "float8",
        "numeric",
        "bool",
        "json",
        "jsonb",
        "text",
        "_int4",
        "_text",
        "timestamp",
        "timestamptz",
        "oid",
    ]
) | st.text(max_size=6)
COLUMN = st.fixed_dictionaries({"name": st.sampled_from(["id", "a", "b"]), "type": COLUMN_TYPES})
ROW = st.dictionaries(st.sampled_from(["id", "a", "b", "c"]), SCALARS | JSON, max_size=4)
POSTGRES = st.fixed_dictionaries(
    {
        "ids": st.lists(st.integers(0, 3) | JSON, max_size=3) | JSON,
        "data": st.fixed_dictionaries(
            {
                "type": st.sampled_from(["INSERT", "UPDATE", "DELETE", "insert", "x"]) | JSON,
                "schema": st.sampled_from(["public"]) | JSON,
                "table": st.sampled_from(["t"]) | JSON,
                "record": ROW | JSON,
                "old_record": ROW | JSON,
                "columns": st.lists(COLUMN | JSON, max_size=4) | JSON,
                "commit_timestamp": st.text(max_size=8) | JSON,
                "errors": JSON,
            }
        )
        | JSON,
    }
)
PAYLOADS = (
    JSON
    | st.fixed_dictionaries(
        {"event": st.text(max_size=5), "payload": JSON, "type": st.just("broadcast")}
    )
    | st.fixed_dictionaries({"joins": PRESENCE_MAP | JSON, "leaves": PRESENCE_MAP | JSON})
    | PRESENCE_MAP
    | POSTGRES
    | st.fixed_dictionaries(
        {
            "extension": st.sampled_from(["system", "postgres_changes"]) | JSON,
            "status": st.sampled_from(["ok", "error"]) | JSON,
            "message": st.text(max_size=8) | JSON,
            "channel": st.text(max_size=5) | JSON,
        }
    )
    | st.fixed_dictionaries({"status": st.sampled_from(["ok", "error"]) | JSON, "response": JSON})
)


@st.composite
def server_frames(draw: st.DrawFn) -> Frame:
    """Frames a server could send (and many it never would), with their refs."""
    payload: Any = draw(PAYLOADS)
    return make_frame(draw(TOPICS), draw(EVENTS), payload, draw(REFS), draw(REFS))


def _short(value: str) -> bytes:
    return value.encode()[:255]


@st.composite
def binary_frames(draw: st.DrawFn) -> bytes:
    """V2 binary frames of kinds 0, 1, 2 and 4 with consistent headers."""
    kind = draw(st.sampled_from([0, 1, 2, 4]))
    fields = [_short(draw(st.text(max_size=10))) for _ in range(4)]
    body = draw(st.binary(max_size=40) | JSON.map(dumps))
    if kind == 0:  # join_ref, topic, event
        header = fields[:3]
    elif kind == 1:  # join_ref, ref, topic, status
        header = fields
    elif kind == 2:  # topic, event
        header = fields[:2]
    else:  # topic, user event, meta, encoding
        meta = draw(st.just(b"") | JSON.map(dumps) | st.binary(max_size=10))[:255]
        encoding = draw(st.sampled_from([0, 1, 2]))
        sizes = bytes([len(fields[0]), len(fields[1]), len(meta), encoding])
        return bytes([kind]) + sizes + fields[0] + fields[1] + meta + body
    return bytes([kind, *(len(field) for field in header)]) + b"".join(header) + body


def encoded(frame: Frame, vsn: str, user_broadcast: bool) -> bytes | None:
    try:
        data, _ = encode_server_frame(frame, vsn, user_broadcast=user_broadcast)
    except (ProtocolError, TypeError, orjson.JSONEncodeError):
        return None
    return bytes(data)


@st.composite
def valid_messages(draw: st.DrawFn) -> tuple[str, bytes]:
    """``(vsn, message)``: a server frame as the server encodes it, or a binary frame."""
    vsn = draw(VSNS)
    if vsn == "2.0.0" and draw(st.booleans()):
        return vsn, draw(binary_frames())
    frame = draw(server_frames())
    user_broadcast = vsn == "2.0.0" and draw(st.booleans())
    data = encoded(frame, vsn, user_broadcast) or encoded(frame, vsn, False)
    if data is None:  # a payload orjson refuses (an integer beyond 64 bits, say)
        data = encoded(
            make_frame(frame.topic, frame.event, {}, frame.ref, frame.join_ref), vsn, False
        )
    assert data is not None
    return vsn, data


@st.composite
def mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few bytes flipped, inserted, deleted or duplicated, or cut short."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        operation = draw(st.sampled_from(["flip", "insert", "delete", "duplicate", "truncate"]))
        position = draw(st.integers(0, len(out)))
        if operation == "flip" and position < len(out):
            out[position] ^= 1 << draw(st.integers(0, 7))
        elif operation == "insert":
            out[position:position] = draw(st.binary(min_size=1, max_size=4))
        elif operation == "delete":
            del out[position : position + draw(st.integers(1, 4))]
        elif operation == "duplicate":
            out[position:position] = out[position : position + draw(st.integers(1, 8))]
        else:
            del out[position:]
    return bytes(out)


def parses_or_refuses(data: str | bytes, vsn: str) -> Frame | None:
    """``parse_frame``: a well-typed Frame, or ProtocolError; nothing else may come out."""
    try:
        frame = parse_frame(data, vsn)
    except ProtocolError:
        return None
    assert isinstance(frame, Frame)
    assert isinstance(frame.topic, str)
    assert isinstance(frame.event, str)
    assert frame.ref is None or isinstance(frame.ref, str)
    assert frame.join_ref is None or isinstance(frame.join_ref, str)
    event_kind(frame)
    return frame


# -- parse_frame and the binary decoder ---------------------------------------------------------


@settings(max_examples=examples(200))
@given(data=st.data())
def test_sr09_mutated_valid_frames_parse_or_raise_protocol_error(data: st.DataObject) -> None:
    """SR-09: valid frames with a few bytes changed: a Frame or ProtocolError, as bytes and as
    text, under the frame's vsn and the other one."""
    vsn, message = data.draw(valid_messages())
    assert parses_or_refuses(message, vsn) is not None or vsn == "2.0.0"
    mutants = [data.draw(mutations(message))]
    rng = random.Random(data.draw(st.integers(0, 2**32 - 1)))
    mutants += [_mutate(rng, message) for _ in range(MUTANTS)]
    for mutated in mutants:
        for any_vsn in ("1.0.0", "2.0.0"):
            parses_or_refuses(mutated, any_vsn)
            parses_or_refuses(mutated.decode("utf-8", "replace"), any_vsn)
            parses_or_refuses(mutated.decode("latin-1"), any_vsn)
    tried(len(mutants))


MUTANTS = 100
"""Mutants of each drawn frame made with a seeded ``random.Random``, beyond the one hypothesis
draws: generating a frame costs far more than parsing it, so each is used many times."""


def _mutate(rng: random.Random, data: bytes) -> bytes:
    """Like :func:`mutations`, from ``rng`` (reproducible from the drawn seed)."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        operation = rng.randrange(5)
        position = rng.randint(0, len(out))
        if operation == 0 and position < len(out):
            out[position] ^= 1 << rng.randrange(8)
        elif operation == 1:
            out[position:position] = rng.randbytes(rng.randint(1, 4))
        elif operation == 2:
            del out[position : position + rng.randint(1, 4)]
        elif operation == 3:
            out[position:position] = out[position : position + rng.randint(1, 8)]
        elif operation == 4:
            del out[position:]
    return bytes(out)


@settings(max_examples=examples(300))
@given(
    topic=st.text(max_size=20),
    user_event=st.text(max_size=20),
    meta=st.just(b"") | JSON.map(dumps) | st.binary(min_size=1, max_size=20),
    encoding=st.integers(0, 255),
    body=st.binary(max_size=50) | JSON.map(dumps),
)
def test_sr06_consistent_kind4_frames_decode_to_the_documented_shape(
    topic: str, user_event: str, meta: bytes, encoding: int, body: bytes
) -> None:
    """SR-06: a kind-4 frame with matching sizes is a ``broadcast`` whose payload holds the
    event, the body (bytes for encoding 0, else JSON) and ``meta`` only when sent; when a JSON
    part is not JSON, ProtocolError."""
    topic_bytes, event_bytes = _short(topic), _short(user_event)
    meta = meta[:255]
    header = bytes([4, len(topic_bytes), len(event_bytes), len(meta), encoding])
    raw = header + topic_bytes + event_bytes + meta + body
    try:
        frame = parse_frame(raw, "2.0.0")
    except ProtocolError:
        texts_ok = _utf8(topic_bytes) and _utf8(event_bytes)
        assert not texts_ok or (encoding != 0 and not _json(body)) or (meta and not _json(meta))
        return
    assert frame.event == "broadcast"
    assert frame.topic == topic_bytes.decode()
    assert frame.ref is None
    assert isinstance(frame.payload, dict)
    expected: dict[str, Any] = {"type": "broadcast", "event": event_bytes.decode()}
    expected["payload"] = body if encoding == 0 else orjson.loads(body)
    if meta:
        expected["meta"] = orjson.loads(meta)
    assert frame.payload == expected


def _utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def _json(data: bytes) -> bool:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True


# -- presence sync against a model of the server ------------------------------------------------


class PresenceSync(RuleBasedStateMachine):
    """PR-02..PR-04: the server's presences change; the client sees them through the frames a
    server sends (a state after each join, diffs after it, diffs racing ahead of a rejoin's
    state); the tracker must end up with exactly the server's presences."""

    refs = Bundle("refs")

    def __init__(self) -> None:
        super().__init__()
        self.server: dict[str, dict[str, dict[str, Any]]] = {}  # key -> phx_ref -> meta
        self.tracker = PresenceTracker()
        self.join_ref = "1"
        self.synced = False
        self.counter = 0

    def _payload(self, entries: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
        return {
            key: {"metas": [{**meta, "phx_ref": ref} for ref, meta in metas.items()]}
            for key, metas in entries.items()
            if metas
        }

    def _diff(self, joins: dict[str, Any], leaves: dict[str, Any]) -> None:
        tried()
        payload = copy.deepcopy({"joins": joins, "leaves": leaves})
        self.tracker.sync_diff(payload, self.join_ref)

    @rule(target=refs, key=st.sampled_from(["alice", "bob", "carol"]), meta=META)
    def join(self, key: str, meta: dict[str, Any]) -> tuple[str, str]:
        self.counter += 1
        ref = f"ref{self.counter}"
        meta = {k: v for k, v in meta.items() if k not in ("phx_ref", "phx_ref_prev")}
        self.server.setdefault(key, {})[ref] = meta
        self._diff(self._payload({key: {ref: meta}}), {})
        return key, ref

    @rule(entry=consumes(refs))
    def leave(self, entry: tuple[str, str]) -> None:
        key, ref = entry
        metas = self.server.get(key, {})
        if ref not in metas:
            return
        meta = metas.pop(ref)
        self._diff({}, self._payload({key: {ref: meta}}))

    @rule()
    def rejoin(self) -> None:
        """The channel rejoins: diffs for the new join_ref may arrive before its state."""
        self.join_ref = str(int(self.join_ref) + 1)
        self.synced = False

    @rule()
    def state(self) -> None:
        tried()
        self.tracker.sync_state(copy.deepcopy(self._payload(self.server)), self.join_ref)
        self.synced = True

    @rule(payload=JSON, as_state=st.booleans())
    def junk(self, payload: Any, as_state: bool) -> None:
        """Malformed payloads raise ProtocolError and change nothing."""
        tried()
        before = self.tracker.snapshot()
        try:
            if as_state:
                self.tracker.sync_state(payload, self.join_ref)
                self.synced = False  # a valid junk state replaces the server's
                self.state()
            else:
                self.tracker.sync_diff(payload, "stale")
        except ProtocolError:
            assert self.tracker.snapshot() == before

    @precondition(lambda self: self.synced)
    @invariant()
    def matches_the_server(self) -> None:
        # The order of a key's metas carries no meaning (realtime-js keeps the ones it had
        # first, then the new ones, as the tracker does); compare them as sets.
        assert _by_ref(self.tracker.snapshot()) == _by_ref(
            transform_state(self._payload(self.server))
        )


def _by_ref(state: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    return {
        key: sorted(metas, key=lambda meta: str(meta.get("presence_ref")))
        for key, metas in state.items()
    }


PresenceSync.TestCase.settings = settings(
    max_examples=examples(60), stateful_step_count=30, deadline=None
)
test_pr02_pr04_presence_sync_matches_the_server = PresenceSync.TestCase


# -- HD-02: the frame splitter against websockets' parser -------------------------------------

WS_OPCODES = st.sampled_from([1, 1, 1, 2, 2, 0, 8, 9, 10]) | st.integers(0, 15)
SIMPLE_FRAMES = st.lists(
    st.tuples(st.sampled_from([0x81, 0x82]), st.binary(max_size=8)).map(
        lambda item: bytes([item[0], len(item[1])]) + item[1]
    ),
    min_size=1,
    max_size=3,
).map(b"".join)
WS_PAYLOADS = (
    st.text(max_size=40).map(str.encode)
    | st.binary(max_size=40)
    | st.tuples(st.binary(max_size=4), SIMPLE_FRAMES).map(b"".join)  # frames hidden inside
    | st.sampled_from([125, 126, 127, 200, 65_535, 65_536, 70_000]).map(lambda n: b"p" * n)
)


@st.composite
def ws_frame(draw: st.DrawFn) -> bytes:
    """One frame as a server might send it, often valid, sometimes subtly not, or junk."""
    if draw(st.integers(0, 19)) == 0:
        return draw(st.binary(max_size=12))
    fin = draw(st.integers(0, 5)) > 0
    rsv = draw(st.sampled_from([0] * 12 + [0x10, 0x20, 0x40, 0x70]))
    opcode = draw(WS_OPCODES)
    masked = draw(st.integers(0, 19)) == 0
    payload = draw(WS_PAYLOADS)
    if opcode == 8 and draw(st.booleans()):
        code = draw(st.sampled_from([1000, 1001, 1002, 1011, 1012, 4000, 999, 5000]))
        payload = code.to_bytes(2, "big") + payload[:20]
    length = len(payload)
    if draw(st.integers(0, 9)) == 0:  # a length that lies
        length = max(0, length + draw(st.integers(-3, 3)))
    width = draw(st.sampled_from(["minimal"] * 6 + ["16", "64"]))
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    mask_bit = 0x80 if masked else 0
    if width == "64" or length >= 2**16:
        head += bytes([mask_bit | 127]) + length.to_bytes(8, "big")
    elif width == "16" or length >= 126:
        head += bytes([mask_bit | 126]) + length.to_bytes(2, "big")
    else:
        head += bytes([mask_bit | length])
    if masked:
        head += b"\x00\x00\x00\x00"
    return head + payload


@st.composite
def ws_reads(draw: st.DrawFn) -> list[bytes]:
    """A server's byte stream (frames, mostly simple ones), cut into reads anywhere."""
    stream = b"".join(draw(st.lists(ws_frame(), min_size=1, max_size=8)))
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(stream) - 1)), max_size=6))))
    if draw(st.integers(0, 4)) == 0:  # a run of one-byte reads somewhere
        first = draw(st.integers(0, max(0, len(stream) - 1)))
        cuts = sorted(set(cuts) | set(range(first, min(len(stream), first + 24))))
    bounds = [0, *(cut for cut in cuts if 0 < cut < len(stream)), len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def _client_protocol(max_size: int) -> ClientProtocol:
    protocol = ClientProtocol(parse_uri("ws://h/"), state=State.OPEN, max_size=max_size)
    protocol.debug = False  # its DEBUG log of every frame would be most of the cost
    return protocol


def _close_code(protocol: ClientProtocol) -> int:
    if protocol.close_rcvd is not None:
        return protocol.close_rcvd.code
    if protocol.close_sent is not None:
        return protocol.close_sent.code
    return 1006


def _websockets_alone(reads: list[bytes], max_size: int) -> tuple[list[Message], int]:
    """What websockets' parser makes of ``reads``: each message once complete, text decoded
    strictly (invalid UTF-8 fails with 1007); nothing after a close or a failure, the first
    violation deciding the code."""
    protocol = _client_protocol(max_size)
    messages: list[Message] = []
    parts: list[bytes] = []
    text = False
    for data in [*reads, b""]:
        if data:
            protocol.receive_data(data)
        else:
            protocol.receive_eof()
        for event in protocol.events_received():
            assert isinstance(event, WSFrame)
            if event.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                if event.opcode is not Opcode.CONT:
                    parts, text = [], event.opcode is Opcode.TEXT
                parts.append(bytes(event.data))
                if not event.fin:
                    continue
                whole = b"".join(parts)
                if not text:
                    messages.append(whole)
                    continue
                try:
                    messages.append(whole.decode())
                except UnicodeDecodeError:
                    # This message came before anything websockets failed on in this read.
                    return messages, 1007
        if protocol.state is not State.OPEN:
            break
    return messages, _close_code(protocol)


def _splitter(reads: list[bytes], max_size: int, leftover: bool) -> tuple[list[Message], int]:
    """What the default transport makes of ``reads`` (the first one arriving with the
    handshake response when ``leftover``)."""
    protocol = _client_protocol(max_size)
    stream, _ = trio.testing.memory_stream_pair()
    leftover = leftover and bool(reads)
    first = reads[0] if leftover else b""
    transport = SansIOWebSocket(
        stream, protocol, pending=first, split_frames=True, max_message_size=max_size
    )
    messages: list[Message] = []
    if leftover:
        messages.extend(transport._split(b""))
        reads = reads[1:]
    for data in [*reads, b""]:
        if protocol.state is not State.OPEN:
            break
        messages.extend(transport._receive_data(data))
    return messages, _close_code(protocol)


@settings(max_examples=examples(100))
@given(
    reads=ws_reads(),
    max_size=st.sampled_from([1 << 20, 1 << 20, 70_000, 1000, 100]),
    leftover=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_hd02_splitter_matches_websockets_parser(
    reads: list[bytes], max_size: int, leftover: bool, seed: int
) -> None:
    """HD-02: whatever the frames and wherever the reads cut them, the splitter delivers
    exactly the messages websockets' own parser does, and fails or closes the connection with
    the same code (1002 for every protocol violation, 1009 for size, 1007 for bad UTF-8)."""
    assert _splitter(reads, max_size, leftover) == _websockets_alone(reads, max_size)
    stream = b"".join(reads)
    rng = random.Random(seed)
    for _ in range(RECUTS if len(stream) > 1 else 0):
        cuts = sorted(rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randint(1, 6))))
        again = [stream[a:b] for a, b in itertools.pairwise([0, *cuts, len(stream)])]
        assert _splitter(again, max_size, leftover) == _websockets_alone(again, max_size), again
    tried(1 + RECUTS)


RECUTS = 12
"""The same byte stream cut again at random (seeded) read boundaries, per drawn example."""


# -- the live reader ------------------------------------------------------------------------------


@st.composite
def wire_messages(draw: st.DrawFn, vsn: str) -> str | bytes:
    """What a server might put on the wire: frames of this vsn or the other, binary frames,
    mutated frames and plain junk."""
    choice = draw(st.integers(0, 5))
    if choice <= 2:
        frame = draw(server_frames())
        which = vsn if choice < 2 else draw(VSNS)
        data = encoded(frame, which, False)
        if data is not None:
            return data.decode()
    if choice == 3 and vsn == "2.0.0":
        return draw(binary_frames())
    if choice == 4:
        _, message = draw(valid_messages())
        return draw(mutations(message))
    return draw(st.text(max_size=30) | st.binary(max_size=30))


async def _feed(vsn: str, messages: list[str | bytes]) -> None:
    errors: list[logging.LogRecord] = []

    class Errors(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            errors.append(record)

    handler = Errors(level=logging.ERROR)
    logging.getLogger("trio_realtime").addHandler(handler)
    try:
        async with serve_realtime() as server, connect(server, vsn=vsn) as client:
            fuzz = client.channel("fuzz", presence_key="me")
            for subscription in (
                fuzz.broadcasts(overflow="drop_oldest"),
                fuzz.presence_events(overflow="drop_oldest"),
                fuzz.postgres_changes("*", table="t", overflow="drop_oldest"),
                fuzz.system_events(overflow="drop_oldest"),
                fuzz.channel_events(overflow="drop_oldest"),
            ):
                del subscription  # registered; items are dropped oldest-first
            sentinel = client.channel("sentinel")
            alive = sentinel.broadcasts()
            await fuzz.join()
            await sentinel.join()
            for message in messages:
                await server.send_raw(message)
            await server.broadcast("sentinel", "after", {"still": "alive"})
            with trio.fail_after(30):
                assert (await alive.receive()).payload == {"still": "alive"}
            assert client.statistics().connects == 1
            assert isinstance(fuzz.state, ChannelState)
    finally:
        logging.getLogger("trio_realtime").removeHandler(handler)
    assert not errors, [record.getMessage() for record in errors]


@settings(max_examples=examples(60))
@given(data=st.data(), vsn=VSNS)
def test_bi01_reader_survives_any_frames(data: st.DataObject, vsn: str) -> None:
    """BI-01: whatever the server sends (frames valid and invalid, text and binary, for the
    joined topic, another or ``phoenix``), the reader handles it without error, the client
    stays connected, and a good frame sent afterwards is delivered."""
    messages = data.draw(st.lists(wire_messages(vsn), min_size=1, max_size=25))
    trio.run(_feed, vsn, messages, clock=trio.testing.MockClock(autojump_threshold=0))
    tried(len(messages))
