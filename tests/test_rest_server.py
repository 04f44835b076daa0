"""The local server's REST endpoints, checked on the wire (RB-04).

Requests are plain httpx requests (to ``server.http_transport`` in memory, or over loopback TCP),
and subscribers are raw-frame clients: what they receive is compared with PROTOCOL.md section 9
byte for byte, V1 text and V2 binary kind 4 for single messages, text for batches.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import orjson
import pytest
import trio
from server_support import APIKEY, TOKEN, RawClient, config, connect, obj, reply_status

from trio_realtime.testing import RealtimeServer, serve_realtime

VSNS = ("1.0.0", "2.0.0")


@asynccontextmanager
async def http(server: RealtimeServer) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the server's in-memory transport."""
    async with httpx.AsyncClient(
        transport=server.http_transport, base_url="http://realtime.local"
    ) as client:
        yield client


AUTH = {"apikey": APIKEY}


async def _joined(
    server: RealtimeServer, vsn: str, nursery: trio.Nursery, topic: str, *, private: bool = False
) -> RawClient:
    client = await connect(server, vsn, nursery)
    reply = await client.join(topic, config=config(private=private))
    assert reply_status(reply)[0] == "ok"
    return client


async def test_rb04_single_json_v1_text_and_v2_kind_4(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """RB-04: a single JSON message: V1 gets the text broadcast, V2 binary kind 4 (encoding 1,
    no metadata), byte for byte."""
    async with serve_realtime(apikey=APIKEY) as server:
        v1 = await _joined(server, "1.0.0", nursery, "realtime:room1")
        v2 = await _joined(server, "2.0.0", nursery, "realtime:room1")
        async with http(server) as client:
            response = await client.post(
                "/api/broadcast/room1/events/msg", json={"a": "b"}, headers=AUTH
            )
        assert (response.status_code, response.content) == (202, b"")
        data = await v1.receive_raw()
        assert isinstance(data, str)
        assert orjson.loads(data) == {
            "event": "broadcast",
            "payload": {"event": "msg", "payload": {"a": "b"}, "type": "broadcast"},
            "ref": None,
            "topic": "realtime:room1",
        }
        data = await v2.receive_raw()
        header = bytes([4, len("realtime:room1"), 3, 0, 1]) + b"realtime:room1msg"
        assert data == header + b'{"a":"b"}'


async def test_rb04_single_bytes_kind_4_raw_and_nothing_for_v1(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """RB-04: an octet-stream body: V2 gets kind 4 encoding 0 with the bytes; V1 nothing."""
    async with serve_realtime() as server:
        v1 = await _joined(server, "1.0.0", nursery, "realtime:r")
        v2 = await _joined(server, "2.0.0", nursery, "realtime:r")
        async with http(server) as client:
            response = await client.post(
                "/realtime/v1/api/broadcast/r/events/e",
                content=b"\x00\xffraw",
                headers={**AUTH, "content-type": "application/octet-stream"},
            )
        assert response.status_code == 202
        data = await v2.receive_raw()
        assert data == bytes([4, 10, 1, 0, 0]) + b"realtime:re" + b"\x00\xffraw"
        await v1.assert_silent()


@pytest.mark.parametrize("vsn", VSNS)
async def test_rb04_batch_is_text_with_meta_id(
    vsn: str, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """RB-04: batch messages arrive as text ``broadcast`` frames, ``meta.id`` when given."""
    async with serve_realtime() as server:
        sub = await _joined(server, vsn, nursery, "realtime:room1")
        async with http(server) as client:
            response = await client.post(
                "/api/broadcast",
                json={
                    "messages": [
                        {"topic": "room1", "event": "a", "payload": {"n": 1}},
                        {"topic": "room1", "event": "b", "payload": {"n": 2}, "id": "m-2"},
                        {"topic": "room2", "event": "c", "payload": {"n": 3}},
                    ]
                },
                headers=AUTH,
            )
        assert response.status_code == 202
        first = await sub.receive()
        second = await sub.receive()
        assert (first.event, first.join_ref, first.ref) == ("broadcast", None, None)
        assert first.payload == {"event": "a", "payload": {"n": 1}, "type": "broadcast"}
        assert second.payload == {
            "event": "b",
            "payload": {"n": 2},
            "type": "broadcast",
            "meta": {"id": "m-2"},
        }
        await sub.assert_silent()


async def test_rb04_private_rooms_and_authorization(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """RB-04: private messages reach only the private room, and only when ``authorize`` allows
    writing; a private join needs read (refused with the server's reason)."""
    allowed = {("room:ok", "read"), ("room:ok", "write"), ("room:ro", "read")}

    def authorize(topic: str, token: str | None, action: str) -> bool:
        return (topic, action) in allowed

    async with serve_realtime(authorize=authorize) as server:
        private = await _joined(server, "1.0.0", nursery, "realtime:room:ok", private=True)
        public = await _joined(server, "1.0.0", nursery, "realtime:room:ok")
        read_only = await _joined(server, "1.0.0", nursery, "realtime:room:ro", private=True)
        refused = await connect(server, "1.0.0", nursery)
        reply = await refused.join("realtime:room:no", config=config(private=True))
        assert reply_status(reply) == (
            "error",
            {
                "reason": "Unauthorized: You do not have permissions to read from this "
                "Channel topic: room:no"
            },
        )
        async with http(server) as client:
            ok = await client.post(
                "/api/broadcast/room:ok/events/e?private=true", json={"n": 1}, headers=AUTH
            )
            denied = await client.post(
                "/api/broadcast/room:ro/events/e?private=true", json={"n": 2}, headers=AUTH
            )
            batch = await client.post(
                "/api/broadcast",
                json={
                    "messages": [
                        {"topic": "room:ro", "event": "e", "payload": {"n": 3}, "private": True},
                        {"topic": "room:ok", "event": "e", "payload": {"n": 4}, "private": True},
                    ]
                },
                headers=AUTH,
            )
        assert (ok.status_code, denied.status_code, batch.status_code) == (202, 403, 202)
        assert denied.json() == {"message": "Unauthorized"}
        assert [obj((await private.receive()).payload)["payload"] for _ in range(2)] == [
            {"n": 1},
            {"n": 4},
        ]
        await public.assert_silent()
        await read_only.assert_silent()


async def test_rb04_socket_broadcast_on_private_channel_needs_write(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """RB-04: over the socket too, a private broadcast without write is dropped with no ack."""

    def authorize(topic: str, token: str | None, action: str) -> bool:
        return action == "read"

    async with serve_realtime(authorize=authorize) as server:
        sender = await connect(server, "1.0.0", nursery)
        join = await sender.join(
            "realtime:room:x", config=config(private=True, broadcast_ack=True, broadcast_self=True)
        )
        from trio_realtime.protocol import broadcast_frame

        await sender.send(
            broadcast_frame(sender.next_ref(), join.ref, "realtime:room:x", "e", {"a": 1})
        )
        await sender.assert_silent()


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/broadcast", 404),
        ("POST", "/api/nope", 404),
        ("POST", "/api/broadcast/room/events", 404),
        ("POST", "/api/broadcast/room/events/e/extra", 404),
        ("PUT", "/realtime/v1/api/broadcast", 404),
    ],
)
async def test_rb04_unknown_routes_are_404(
    method: str, path: str, status: int, autojump_clock: trio.testing.MockClock
) -> None:
    """RB-04: only the two POST routes exist (with or without ``/realtime/v1``)."""
    async with serve_realtime() as server, http(server) as client:
        response = await client.request(method, path, headers=AUTH, json={})
        assert response.status_code == status
        assert response.json() == {"errors": {"detail": "Not Found"}}


async def test_rb04_validation_errors_as_the_server_words_them(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RB-04: 422 with one error object per message, 415 for another content type, 400 for
    malformed JSON, 401 without a token."""
    async with serve_realtime(apikey=APIKEY) as server, http(server) as client:
        invalid = await client.post(
            "/api/broadcast",
            json={
                "messages": [
                    {"topic": "topic"},
                    {"payload": {"data": "data"}},
                    {"topic": "topic", "payload": {"data": "data"}, "event": "event"},
                ]
            },
            headers=AUTH,
        )
        assert invalid.status_code == 422
        assert invalid.json() == {
            "errors": {
                "messages": [
                    {"payload": ["can't be blank"], "event": ["can't be blank"]},
                    {"topic": ["can't be blank"], "event": ["can't be blank"]},
                    {},
                ]
            }
        }
        text = await client.post(
            "/api/broadcast/t/events/e",
            content=b"hi",
            headers={**AUTH, "content-type": "text/plain"},
        )
        assert text.status_code == 415
        assert text.json() == {
            "error": "Unsupported Media Type. Use application/json or application/octet-stream"
        }
        malformed = await client.post(
            "/api/broadcast",
            content=b"{not json",
            headers={**AUTH, "content-type": "application/json"},
        )
        assert malformed.status_code == 400
        missing = await client.post("/api/broadcast/t/events/e", json={})
        assert (missing.status_code, missing.json()) == (401, {"message": "Unauthorized"})
        wrong = await client.post(
            "/api/broadcast/t/events/e", json={}, headers={"apikey": "anon-SECRET-other"}
        )
        assert wrong.status_code == 401
        bearer = await client.post(
            "/api/broadcast/t/events/e",
            json={},
            headers={"apikey": APIKEY, "authorization": f"Bearer {TOKEN}"},
        )
        assert bearer.status_code == 202
        assert bearer.headers["x-rate-limit"] == "100"


async def test_rb04_over_tcp_keep_alive_and_upgrades_share_the_port() -> None:
    """RB-04: over loopback TCP, several requests on one kept-alive connection, while
    WebSocket upgrades on the same port still work."""
    with trio.fail_after(30):
        async with serve_realtime(apikey=APIKEY) as server:
            async with trio.open_nursery() as nursery:
                from server_support import connect_socket

                sub = await connect_socket(server, "2.0.0", nursery)
                await sub.join("realtime:tcp")
                async with httpx.AsyncClient(base_url=server.url) as client:
                    for n in range(3):
                        response = await client.post(
                            "/realtime/v1/api/broadcast",
                            json={
                                "messages": [{"topic": "tcp", "event": "e", "payload": {"n": n}}]
                            },
                            headers=AUTH,
                        )
                        assert response.status_code == 202
                    too_big = await client.post(
                        "/api/broadcast/tcp/events/e",
                        content=b"x" * 8_000_001,
                        headers={**AUTH, "content-type": "application/octet-stream"},
                    )
                    assert too_big.status_code == 413
                for n in range(3):
                    frame = await sub.receive()
                    assert obj(frame.payload)["payload"] == {"n": n}
                assert server.rest_requests == 4
                nursery.cancel_scope.cancel()


async def test_rb04_a_failure_inside_the_server_is_a_500_not_a_crash(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RB-04: an exception while deciding a request (here from ``authorize``) answers 500 and
    the server keeps serving."""

    def authorize(topic: str, token: str | None, action: str) -> bool:
        raise RuntimeError("policy bug")

    async with serve_realtime(authorize=authorize) as server, http(server) as client:
        broken = await client.post("/api/broadcast/t/events/e?private=true", json={}, headers=AUTH)
        fine = await client.post("/api/broadcast/t/events/e", json={}, headers=AUTH)
    assert (broken.status_code, broken.json()) == (500, {"message": "Internal Server Error"})
    assert fine.status_code == 202


async def test_rb04_keep_alive_outlives_the_upgrade_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RB-04: an idle kept-alive HTTP connection stays open past the WebSocket handshake
    timeout (10 s), up to the keep-alive timeout (60 s); both requests share it. (Loopback TCP
    under the autojump clock: the waits are virtual.)"""
    from trio_realtime.testing._gate import HANDSHAKE_TIMEOUT
    from trio_realtime.testing._rest import KEEPALIVE_TIMEOUT

    async with serve_realtime() as server:
        rest = server._rest
        async with httpx.AsyncClient(base_url=server.url) as client:
            first = await client.post("/api/broadcast/t/events/e", json={}, headers=AUTH)
            await trio.sleep(HANDSHAKE_TIMEOUT * 3)
            second = await client.post("/api/broadcast/t/events/e", json={}, headers=AUTH)
            assert (first.status_code, second.status_code) == (202, 202)
            assert rest.connections == 1
            await trio.sleep(KEEPALIVE_TIMEOUT + 1)
            third = await client.post("/api/broadcast/t/events/e", json={}, headers=AUTH)
            assert third.status_code == 202
            assert rest.connections == 2  # the idle one was closed; httpx opened another
