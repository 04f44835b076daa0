"""LS-01: broadcast through the local server (PROTOCOL.md sections 2.3, 5 and 9.2)."""

from __future__ import annotations

import itertools

import orjson
import pytest
import trio
from server_support import VSNS, RawClient, config, connect, reply_status

from trio_realtime._serializer import encode_server_frame
from trio_realtime.protocol import Frame, JSONValue, broadcast_frame, parse_frame
from trio_realtime.testing import RealtimeServer, serve_realtime

V1, V2 = VSNS


async def _pair(
    server: RealtimeServer,
    nursery: trio.Nursery,
    sender_vsn: str,
    receiver_vsn: str,
    **options: object,
) -> tuple[RawClient, str | None, RawClient]:
    sender = await connect(server, sender_vsn, nursery)
    joined = await sender.join("room1", config=config(**options))
    receiver = await connect(server, receiver_vsn, nursery)
    await receiver.join("room1")
    return sender, joined.ref, receiver


@pytest.mark.parametrize(("sender_vsn", "receiver_vsn"), list(itertools.product(VSNS, VSNS)))
async def test_ls01_broadcast_relay_between_serializers(
    sender_vsn: str, receiver_vsn: str, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """LS-01: text broadcasts relay as text; kind 3 relays as kind 4 (V2) or JSON (V1)."""
    async with serve_realtime() as server:
        sender, join_ref, receiver = await _pair(server, nursery, sender_vsn, receiver_vsn)
        await sender.send(broadcast_frame("5", join_ref, "room1", "msg", {"text": "hi", "n": 1}))
        raw = await receiver.receive_raw()
        binary_relay = sender_vsn == V2 and receiver_vsn == V2
        assert isinstance(raw, bytes) is binary_relay
        if binary_relay:
            assert raw[0] == 4
        received = parse_frame(raw, receiver_vsn)
        assert (received.topic, received.event, received.ref, received.join_ref) == (
            "realtime:room1",
            "broadcast",
            None,
            None,
        )
        assert received.payload == {
            "type": "broadcast",
            "event": "msg",
            "payload": {"text": "hi", "n": 1},
        }
        await sender.assert_silent()  # self is false: the sender gets nothing


@pytest.mark.parametrize("vsn", VSNS)
async def test_ls01_broadcast_self_and_ack(vsn: str, nursery: trio.Nursery) -> None:
    """LS-01: with self, the sender gets its broadcast; with ack, the ok reply comes after it."""
    async with serve_realtime() as server:
        sender, join_ref, receiver = await _pair(
            server, nursery, vsn, vsn, broadcast_self=True, broadcast_ack=True
        )
        await sender.send(broadcast_frame("5", join_ref, "room1", "msg", {"n": 1}))
        own = await sender.receive()
        assert (own.event, own.payload) == (
            "broadcast",
            {"type": "broadcast", "event": "msg", "payload": {"n": 1}},
        )
        ack = await sender.receive()
        assert reply_status(ack) == ("ok", {})
        assert (ack.ref, ack.join_ref) == ("5", join_ref if vsn == V2 else None)
        assert (await receiver.receive()).payload == own.payload


async def test_ls01_kind3_metadata_is_dropped_and_raw_bytes_skip_v1(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """LS-01: kind-3 metadata is not relayed; raw (encoding 0) payloads never reach V1."""
    async with serve_realtime() as server:
        sender = await connect(server, V2, nursery)
        joined = await sender.join("room1")
        v1 = await connect(server, V1, nursery)
        await v1.join("room1")
        v2 = await connect(server, V2, nursery)
        await v2.join("room1")

        await sender.send(broadcast_frame("6", joined.ref, "room1", "blob", b"\x00\x01binary"))
        raw = await v2.receive_raw()
        assert isinstance(raw, bytes)
        # kind 4, topic "realtime:room1", event "blob", no metadata, encoding 0, then the bytes
        assert raw == bytes((4, 14, 4, 0, 0)) + b"realtime:room1blob\x00\x01binary"
        await v1.assert_silent()

        join_ref = (joined.ref or "").encode()
        topic = b"realtime:room1"
        meta = b'{"store":true}'
        push = (
            bytes((3, len(join_ref), 1, len(topic), 2, len(meta), 1))
            + join_ref
            + b"7"
            + topic
            + b"ev"
            + meta
            + b'{"a":"b"}'
        )
        await sender.send_raw(push)
        raw = await v2.receive_raw()
        assert raw == bytes((4, 14, 2, 0, 1)) + b"realtime:room1ev" + b'{"a":"b"}'
        relayed = await v1.receive()
        assert relayed.payload == {"type": "broadcast", "event": "ev", "payload": {"a": "b"}}


@pytest.mark.parametrize("vsn", VSNS)
async def test_ls01_non_object_payloads_are_relayed_unchanged(
    vsn: str, nursery: trio.Nursery
) -> None:
    """LS-01 (BC-06): the server fans a broadcast payload out without inspecting it."""
    async with serve_realtime() as server:
        sender, join_ref, receiver = await _pair(server, nursery, V1, vsn)
        payloads: list[JSONValue] = [[1, 2], "text", 3, None]
        for payload in payloads:
            await sender.send(Frame("realtime:room1", "broadcast", payload, "9", join_ref))
            assert (await receiver.receive()).payload == payload


async def test_ls01_server_broadcast_json_binary_and_bytes(nursery: trio.Nursery) -> None:
    """LS-01: server.broadcast is like REST broadcast: JSON text, or kind 4 when binary."""
    async with serve_realtime() as server:
        v1 = await connect(server, V1, nursery)
        await v1.join("room1")
        v2 = await connect(server, V2, nursery)
        await v2.join("room1")
        expected = {"event": "ev", "payload": {"a": 1}, "type": "broadcast"}

        assert await server.broadcast("room1", "ev", {"a": 1}) == 2
        assert orjson.loads(await v2.receive_raw()) == [
            None,
            None,
            "realtime:room1",
            "broadcast",
            expected,
        ]
        assert (await v1.receive()).payload == expected

        assert await server.broadcast("realtime:room1", "ev", {"a": 1}, binary=True) == 2
        assert await v2.receive_raw() == bytes((4, 14, 2, 0, 1)) + b'realtime:room1ev{"a":1}'
        assert (await v1.receive()).payload == expected

        assert await server.broadcast("room1", "ev", b"\xff") == 1  # V1 gets nothing
        assert await v2.receive_raw() == bytes((4, 14, 2, 0, 0)) + b"realtime:room1ev\xff"
        assert await server.broadcast("room1", "ev", {"a": 2}) == 2
        assert (await v1.receive()).payload == {**expected, "payload": {"a": 2}}

        assert await server.broadcast("nobody-here", "ev", {}) == 0
        assert server.broadcast_nowait("room1", "ev", {}, private=True) == 0


async def test_ls01_public_and_private_rooms_are_separate(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """LS-01: public and private channels with the same name do not hear each other."""
    async with serve_realtime() as server:
        private_sender = await connect(server, V1, nursery)
        joined = await private_sender.join("room1", config=config(private=True))
        private_peer = await connect(server, V1, nursery)
        await private_peer.join("room1", config=config(private=True))
        public_peer = await connect(server, V1, nursery)
        await public_peer.join("room1")

        await private_sender.send(broadcast_frame("3", joined.ref, "room1", "msg", {}))
        assert (await private_peer.receive()).event == "broadcast"
        await public_peer.assert_silent()
        assert await server.broadcast("room1", "x", {}, private=True) == 2
        assert await server.broadcast("room1", "x", {}) == 1


async def test_ls01_fan_out_encodes_once_per_vsn(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LS-01: a fan-out to many subscribers encodes the frame once per serializer version."""
    import trio_realtime.testing._state as state

    calls: list[str] = []

    def counting(
        frame: Frame, vsn: str = V1, *, user_broadcast: bool = False
    ) -> tuple[bytes, bool]:
        calls.append(vsn)
        return encode_server_frame(frame, vsn, user_broadcast=user_broadcast)

    async with serve_realtime() as server:
        clients = []
        for vsn in VSNS * 10:
            client = await connect(server, vsn, nursery)
            await client.join("room1")
            clients.append(client)
        monkeypatch.setattr(state, "encode_server_frame", counting)
        assert await server.broadcast("room1", "ev", {"n": 1}) == 20
        assert sorted(calls) == [V1, V2]
        for client in clients:
            assert (await client.receive()).event == "broadcast"
