"""LS-01: replay every client frame realtime-js 2.119.1 sent, and check the server's answers.

The recorded frames (``tests/data``) are sent byte for byte; the expected answers come from
PROTOCOL.md sections 3 to 8. The ``server-phx_error-rejoin`` step is the client rejoining after
the server crashed its channel, so the test crashes it (``push_error``) first.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
from server_support import RawClient, connect, obj, reply_status

from trio_realtime.protocol import Frame
from trio_realtime.testing import RealtimeServer, serve_realtime

VECTORS = Path(__file__).resolve().parent / "data"


def _load(name: str) -> list[dict[str, str]]:
    path = VECTORS / f"realtime-js-2.119.1-client-{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def _ok_reply(client: RawClient, ref: str, join_ref: str | None = None) -> Frame:
    reply = await client.receive()
    assert reply.event == "phx_reply", reply
    assert reply.ref == ref, reply
    assert reply_status(reply)[0] == "ok", reply
    if client.vsn == "2.0.0":
        assert reply.join_ref == join_ref, reply
    return reply


async def _expect_answers(
    server: RealtimeServer, client: RawClient, step: str, frame: dict[str, str]
) -> None:
    """Check what the server answers to one recorded frame."""
    v2 = client.vsn == "2.0.0"
    if step == "subscribe-default":
        reply = await _ok_reply(client, "6", "6")
        assert reply_status(reply)[1] == {"postgres_changes": []}
    elif step == "heartbeat":
        reply = await _ok_reply(client, "7")
        assert reply.topic == "phoenix"
    elif step == "subscribe-configured":
        reply = await _ok_reply(client, "10", "10")
        (binding,) = obj(reply_status(reply)[1])["postgres_changes"]
        assert isinstance(binding["id"], int)
        assert {k: v for k, v in binding.items() if k != "id"} == {
            "event": "INSERT",
            "schema": "public",
            "table": "messages",
            "filter": "room_id=eq.5",
        }
        system = await client.receive()
        assert obj(system.payload)["message"] == "Subscribed to PostgreSQL"
    elif step == "broadcast-send":
        own = await client.receive()  # self: true
        assert (own.topic, own.event) == ("realtime:room2", "broadcast")
        assert own.payload == {
            "type": "broadcast",
            "event": "msg",
            "payload": {"text": "hello", "n": 1},
        }
        await _ok_reply(client, "11", "10")  # ack: true
    elif step == "presence-track":
        await _ok_reply(client, "12", "10")
        diff = await client.receive()
        (meta,) = obj(diff.payload)["joins"]["u1"]["metas"]
        assert {k: v for k, v in meta.items() if k != "phx_ref"} == {
            "name": "alice",
            "online_at": "2025-01-01T00:00:00Z",
        }
    elif step == "presence-untrack":
        await _ok_reply(client, "13", "10")
        diff = await client.receive()
        assert list(obj(diff.payload)["leaves"]) == ["u1"]
    elif step == "setAuth":
        # access_token never gets a reply; on room2, which has postgres_changes bindings, the
        # server subscribes again with the new token and says so (PROTOCOL.md section 4.4).
        if "realtime:room2" in frame["data"]:
            system = await client.receive()
            assert (system.topic, obj(system.payload)["message"]) == (
                "realtime:room2",
                "Subscribed to PostgreSQL",
            )
        await client.assert_silent()
    elif step == "subscribe-private":
        await _ok_reply(client, "18", "18")
        state = await client.receive()
        assert (state.event, state.payload) == ("presence_state", {})
        assert server.connections[0].joined_topics == [
            "realtime:room1",
            "realtime:room2",
            "realtime:room3",
        ]
    elif step == "server-phx_error-rejoin":
        await _ok_reply(client, "19", "19")
    elif step == "unsubscribe":
        await _ok_reply(client, "20", "10")
        close = await client.receive()
        assert (close.event, close.ref) == ("phx_close", "10")
        assert close.join_ref == ("10" if v2 else None)
    else:
        raise AssertionError(f"unknown step {step!r}: {frame}")


@pytest.mark.parametrize(("name", "vsn"), [("v1", "1.0.0"), ("v2", "2.0.0")])
async def test_ls01_replay_realtime_js_vectors(
    name: str, vsn: str, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """LS-01: every recorded realtime-js frame gets the answers the real server gives."""
    vectors = _load(name)
    assert len(vectors) == 11
    async with serve_realtime() as server:
        client = await connect(server, vsn, nursery)
        for vector in vectors:
            if vector["step"] == "server-phx_error-rejoin":
                assert await server.push_error("room1") == 1
                crash = await client.receive()
                assert (crash.event, crash.ref) == ("phx_error", "6")
            data = vector["data"]
            await client.send_raw(bytes.fromhex(data) if vector["kind"] == "binary" else data)
            await _expect_answers(server, client, vector["step"], vector)
        await client.assert_silent()
        statistics = server.statistics()
        assert statistics.frames_received == 11
        assert statistics.malformed_frames == 0
