"""REST broadcast from the client: ``channel.http_send`` and ``client.http_broadcast`` (RB-01..03).

Subscribers are trio_realtime clients on the local server's in-memory socket, and the REST
requests go through ``server.http_transport`` (in memory too), all under the autojump clock.
Responses the local server cannot produce (5xx, timeouts) come from an ``httpx.MockTransport``
answering with the real server's words.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
from _realtime import connect, drain, settle
from conftest import APIKEY, SECRET_MARKER, TOKEN, exception_text

from trio_realtime import (
    Broadcast,
    BroadcastMessage,
    ChannelStateError,
    PushTimeout,
    RealtimeClient,
    RealtimeConnectionError,
    RestError,
    RestPayloadTooLarge,
    RestRateLimited,
    RestServerError,
    RestUnauthorized,
    open_realtime,
)
from trio_realtime._rest import broadcast_url
from trio_realtime._url import websocket_url
from trio_realtime.testing import RealtimeServer, serve_realtime

VSNS = ("1.0.0", "2.0.0")


@asynccontextmanager
async def rest_client(
    server: RealtimeServer,
    *,
    http_transport: httpx.AsyncBaseTransport | None = None,
    **options: Any,
) -> AsyncIterator[RealtimeClient]:
    """A client whose socket and REST requests both stay in memory."""
    async with connect(
        server, http_transport=http_transport or server.http_transport, **options
    ) as client:
        yield client


class Recorder(httpx.AsyncBaseTransport):
    """Records every request, then forwards it (to the local server by default)."""

    def __init__(
        self,
        forward: httpx.AsyncBaseTransport | None = None,
        answer: Callable[[httpx.Request], httpx.Response] | None = None,
    ) -> None:
        self.requests: list[httpx.Request] = []
        self._forward = forward
        self._answer = answer

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        if self._answer is not None:
            await trio.lowlevel.checkpoint()
            return self._answer(request)
        assert self._forward is not None
        return await self._forward.handle_async_request(request)


async def _subscribe(
    server: RealtimeServer, client: RealtimeClient, topic: str, *, private: bool = False
) -> Any:
    channel = client.channel(topic, private=private)
    messages = channel.broadcasts()
    await channel.join()
    return messages


# -- RB-01 --------------------------------------------------------------------------------------


@pytest.mark.parametrize("vsn", VSNS)
async def test_rb01_http_send_json_reaches_subscribers_without_joining(
    vsn: str, autojump_clock: trio.testing.MockClock
) -> None:
    """RB-01: ``http_send`` posts one JSON message; the sender never joins."""
    async with serve_realtime() as server:
        async with connect(server, vsn=vsn) as listener, rest_client(server) as sender:
            messages = await _subscribe(server, listener, "room:rest")
            channel = sender.channel("room:rest")
            await channel.http_send("chat", {"text": "hi", "n": [1, 2]})
            await settle()
            assert drain(messages) == [
                Broadcast("chat", {"text": "hi", "n": [1, 2]}, "realtime:room:rest")
            ]
            assert not channel.joined
            assert server.statistics().channels_joined == 1
            assert trio.current_time() == 0


@pytest.mark.parametrize("vsn", VSNS)
async def test_rb01_http_send_bytes_as_octet_stream(
    vsn: str, autojump_clock: trio.testing.MockClock
) -> None:
    """RB-01: bytes go as ``application/octet-stream``; V2 gets them, V1 nothing (as the server
    does)."""
    async with serve_realtime() as server:
        recorder = Recorder(server.http_transport)
        async with (
            connect(server, vsn=vsn) as listener,
            rest_client(server, http_transport=recorder) as sender,
        ):
            messages = await _subscribe(server, listener, "room:bin")
            await sender.channel("room:bin").http_send("blob", b"\x00\x01binary")
            await settle()
            expected = [Broadcast("blob", b"\x00\x01binary", "realtime:room:bin")]
            assert drain(messages) == (expected if vsn == "2.0.0" else [])
        (request,) = recorder.requests
        assert request.headers["content-type"] == "application/octet-stream"
        assert request.content == b"\x00\x01binary"
        assert request.url.raw_path == b"/realtime/v1/api/broadcast/room%3Abin/events/blob"


async def test_rb01_http_send_honours_private(autojump_clock: trio.testing.MockClock) -> None:
    """RB-01: a private channel sends ``?private=true``: only the private room receives it."""
    async with serve_realtime() as server:
        recorder = Recorder(server.http_transport)
        async with (
            connect(server) as listener,
            connect(server) as other,
            rest_client(server, http_transport=recorder) as sender,
        ):
            private = await _subscribe(server, listener, "room:p", private=True)
            public = await _subscribe(server, other, "room:p")
            await sender.channel("room:p", private=True).http_send("secret", {"a": 1})
            await settle()
            assert [m.payload for m in drain(private)] == [{"a": 1}]
            assert drain(public) == []
        assert recorder.requests[0].url.params["private"] == "true"


async def test_rb01_http_send_refuses_bad_input_before_sending(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RB-01: an empty event or a payload that is neither a mapping nor bytes is refused locally."""
    async with serve_realtime() as server:
        async with rest_client(server) as client:
            channel = client.channel("room:x")
            with pytest.raises(ValueError, match="event"):
                await channel.http_send("", {})
            with pytest.raises(TypeError, match="mapping"):
                await channel.http_send("e", [1, 2])  # type: ignore[arg-type]
            assert server.rest_requests == 0


async def test_rb01_send_broadcast_does_not_fall_back_to_http(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RB-01: ``send_broadcast`` on an unjoined channel never goes over HTTP; it fails at once
    and says to use ``http_send`` (RS-10)."""
    async with serve_realtime() as server:
        async with rest_client(server, timeout=3.0) as client:
            with pytest.raises(ChannelStateError, match=r"http_send\(\)"):
                await client.channel("room:nojoin").send_broadcast("e", {"a": 1})
            assert trio.current_time() == 0.0
            assert server.rest_requests == 0


# -- RB-02 --------------------------------------------------------------------------------------


@pytest.mark.parametrize("vsn", VSNS)
async def test_rb02_http_broadcast_batch_topics_private_and_id(
    vsn: str, autojump_clock: trio.testing.MockClock
) -> None:
    """RB-02: one request, per-message topics, the private flag, and ``id`` as ``meta.id``."""
    async with serve_realtime() as server:
        async with connect(server, vsn=vsn) as listener, rest_client(server) as sender:
            first = await _subscribe(server, listener, "room:a")
            second = await _subscribe(server, listener, "room:b")
            private = await _subscribe(server, listener, "room:c", private=True)
            sent = await sender.http_broadcast(
                [
                    BroadcastMessage("room:a", "e1", {"n": 1}),
                    BroadcastMessage("realtime:room:b", "e2", {"n": 2}, id="id-2"),
                    BroadcastMessage("room:c", "e3", {"n": 3}, private=True, id="id-3"),
                    BroadcastMessage("room:a", "e4", {"n": 4}),
                ]
            )
            await settle()
            assert sent == 4
            assert server.rest_requests == 1
            assert drain(first) == [
                Broadcast("e1", {"n": 1}, "realtime:room:a"),
                Broadcast("e4", {"n": 4}, "realtime:room:a"),
            ]
            assert drain(second) == [
                Broadcast("e2", {"n": 2}, "realtime:room:b", meta={"id": "id-2"})
            ]
            assert drain(private) == [
                Broadcast("e3", {"n": 3}, "realtime:room:c", meta={"id": "id-3"})
            ]


async def test_rb02_batch_body_is_what_the_server_takes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RB-02: the body names sub-topics (no ``realtime:``) and sends ``id`` only when given."""
    async with serve_realtime() as server:
        recorder = Recorder(server.http_transport)
        async with rest_client(server, http_transport=recorder) as sender:
            await sender.http_broadcast(
                [
                    BroadcastMessage("realtime:room:a", "e", {"n": 1}),
                    BroadcastMessage("room:b", "e", {}, private=True, id="x"),
                ]
            )
        (request,) = recorder.requests
        assert request.url.path == "/realtime/v1/api/broadcast"
        assert httpx.Response(200, content=request.content).json() == {
            "messages": [
                {"topic": "room:a", "event": "e", "payload": {"n": 1}, "private": False},
                {"topic": "room:b", "event": "e", "payload": {}, "private": True, "id": "x"},
            ]
        }


def test_rb02_broadcast_message_checks_its_fields() -> None:
    """RB-02: BroadcastMessage refuses what the batch endpoint would refuse."""
    with pytest.raises(ValueError, match="topic"):
        BroadcastMessage("", "e", {})
    with pytest.raises(ValueError, match="topic"):
        BroadcastMessage("realtime:", "e", {})
    with pytest.raises(ValueError, match="event"):
        BroadcastMessage("t", "", {})
    with pytest.raises(TypeError, match="mapping"):
        BroadcastMessage("t", "e", [1])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="id"):
        BroadcastMessage("t", "e", {}, id=5)  # type: ignore[arg-type]


async def test_rb02_http_broadcast_refuses_empty_and_foreign_items(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RB-02: an empty batch or an item that is not a BroadcastMessage fails before sending."""
    async with serve_realtime() as server:
        async with rest_client(server) as client:
            with pytest.raises(ValueError, match="at least one"):
                await client.http_broadcast([])
            with pytest.raises(TypeError, match="BroadcastMessage"):
                await client.http_broadcast([{"topic": "t"}])  # type: ignore[list-item]
            assert server.rest_requests == 0


# -- RB-03 --------------------------------------------------------------------------------------


async def test_rb03_auth_goes_in_headers_never_in_the_url(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RB-03: ``apikey`` and ``Authorization: Bearer <token>`` headers; the URL holds neither."""
    async with serve_realtime(apikey=APIKEY) as server:
        recorder = Recorder(server.http_transport)
        async with rest_client(server, http_transport=recorder, access_token=TOKEN) as client:
            await client.channel("room:h").http_send("e", {"a": 1})
            await client.http_broadcast([BroadcastMessage("room:h", "e", {"a": 1})])
        for request in recorder.requests:
            assert request.headers["apikey"] == APIKEY
            assert request.headers["authorization"] == f"Bearer {TOKEN}"
            assert SECRET_MARKER not in str(request.url)


async def test_rb03_token_callable_is_used_and_refreshed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RB-03: a token callable is awaited for REST too, like for a join."""
    calls: list[int] = []

    async def token() -> str:
        calls.append(1)
        return TOKEN

    async with serve_realtime() as server:
        recorder = Recorder(server.http_transport)
        async with rest_client(server, http_transport=recorder, access_token=token) as client:
            await client.channel("room:t").http_send("e", {})
        assert calls
        assert recorder.requests[0].headers["authorization"] == f"Bearer {TOKEN}"


async def test_rb03_without_a_token_only_the_apikey_header(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RB-03: no user token: the apikey header alone (the server takes it as the token)."""
    async with serve_realtime(apikey=APIKEY) as server:
        recorder = Recorder(server.http_transport)
        async with rest_client(server, http_transport=recorder) as client:
            await client.channel("room:t").http_send("e", {})
        assert "authorization" not in recorder.requests[0].headers
        assert recorder.requests[0].headers["apikey"] == APIKEY


def _no_leak(error: BaseException) -> None:
    text = exception_text(error)
    assert SECRET_MARKER not in text
    assert "httpx" not in type(error).__module__
    assert error.__cause__ is None


async def test_rb03_401_unauthorized_with_the_server_words(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RB-03: a token the server refuses: RestUnauthorized 401 "Unauthorized"."""

    def check(token: str) -> str | None:
        return None if token == TOKEN else "Token has expired 3 seconds ago"

    async with serve_realtime(token_check=check) as server:
        async with rest_client(server, access_token="user-SECRET-expired") as client:
            with pytest.raises(RestUnauthorized) as caught:
                await client.channel("room:a").http_send("e", {})
            with pytest.raises(RestUnauthorized):
                await client.http_broadcast([BroadcastMessage("room:a", "e", {})])
    error = caught.value
    assert (error.status_code, error.server_message) == (401, "Unauthorized")
    assert error.body == {"message": "Unauthorized"}
    _no_leak(error)


async def test_rb03_403_private_topic_without_write_permission(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RB-03: a private single send the check refuses: 403; in a batch it is skipped (202)."""

    def authorize(topic: str, token: str | None, action: str) -> bool:
        return action == "read" or topic == "room:open"

    async with serve_realtime(authorize=authorize) as server:
        async with connect(server) as listener, rest_client(server) as client:
            messages = await _subscribe(server, listener, "room:closed", private=True)
            with pytest.raises(RestUnauthorized) as caught:
                await client.channel("room:closed", private=True).http_send("e", {})
            assert (caught.value.status_code, caught.value.server_message) == (403, "Unauthorized")
            await client.http_broadcast([BroadcastMessage("room:closed", "e", {}, private=True)])
            await client.channel("room:open", private=True).http_send("e", {})
            await settle()
            assert drain(messages) == []


async def test_rb03_payload_too_large_413_and_422(autojump_clock: trio.testing.MockClock) -> None:
    """RB-03: over the tenant limit: 422 "Payload size exceeds tenant limit"; over the body
    limit: 413. Both raise RestPayloadTooLarge."""
    async with serve_realtime() as server:
        async with rest_client(server) as client:
            with pytest.raises(RestPayloadTooLarge) as tenant_limit:
                await client.channel("room:big").http_send("e", {"blob": "x" * 3_100_000})
            with pytest.raises(RestPayloadTooLarge) as batch_limit:
                await client.http_broadcast(
                    [BroadcastMessage("room:big", "e", {"blob": "x" * 3_100_000})]
                )
            with pytest.raises(RestPayloadTooLarge) as body_limit:
                await client.channel("room:big").http_send("e", b"x" * 8_000_001)
    assert tenant_limit.value.status_code == 422
    assert tenant_limit.value.body == {"errors": {"payload": ["Payload size exceeds tenant limit"]}}
    assert batch_limit.value.status_code == 422
    assert body_limit.value.status_code == 413
    assert body_limit.value.server_message == "Request Entity Too Large"


async def test_rb03_429_carries_the_rate_limit_figures(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RB-03: past the rate limit: RestRateLimited with x-rate-limit, -remaining and rolling."""
    async with serve_realtime(max_events_per_second=3) as server:
        async with rest_client(server) as client:
            with pytest.raises(RestRateLimited) as batch:
                await client.http_broadcast([BroadcastMessage("r", "e", {})] * 4)
            assert batch.value.server_message == (
                "Too many messages to broadcast, please reduce the batch size"
            )
            assert (batch.value.limit, batch.value.remaining, batch.value.rolling) == (3, 3, 0)
            channel = client.channel("r")
            for _ in range(3):
                await channel.http_send("e", {})
            with pytest.raises(RestRateLimited) as single:
                await channel.http_send("e", {})
            assert single.value.status_code == 429
            assert single.value.server_message == "Too many requests"
            assert (single.value.limit, single.value.remaining, single.value.rolling) == (3, 0, 3)
            await trio.sleep(1.0)
            await channel.http_send("e", {})  # the window has moved on


async def test_rb03_5xx_and_other_statuses(autojump_clock: trio.testing.MockClock) -> None:
    """RB-03: 5xx raises RestServerError with the server's message; other 4xx RestError."""
    answers = iter(
        [
            httpx.Response(500, json={"message": "Unable to authorize broadcast"}),
            httpx.Response(503, text="upstream unavailable"),
            httpx.Response(422, json={"message": "RLS policy error"}),
        ]
    )
    recorder = Recorder(answer=lambda request: next(answers))
    async with serve_realtime() as server:
        async with rest_client(server, http_transport=recorder) as client:
            channel = client.channel("room:x", private=True)
            with pytest.raises(RestServerError) as first:
                await channel.http_send("e", {})
            with pytest.raises(RestServerError) as second:
                await channel.http_send("e", {})
            with pytest.raises(RestError) as third:
                await channel.http_send("e", {})
    assert (first.value.status_code, first.value.server_message) == (
        500,
        "Unable to authorize broadcast",
    )
    assert (second.value.status_code, second.value.server_message) == (503, None)
    assert type(third.value) is RestError
    assert third.value.server_message == "RLS policy error"


async def test_rb03_timeout_raises_push_timeout(autojump_clock: trio.testing.MockClock) -> None:
    """RB-03: a request that times out raises PushTimeout; nothing from httpx comes out."""

    def answer(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    async with serve_realtime() as server:
        async with rest_client(server, http_transport=Recorder(answer=answer)) as client:
            with pytest.raises(PushTimeout) as caught:
                await client.channel("room:x").http_send("e", {})
    _no_leak(caught.value)


async def test_rb03_network_failure_raises_connection_error() -> None:
    """RB-03: nothing listening: RealtimeConnectionError (real loopback, no server there)."""
    with trio.fail_after(30):
        async with serve_realtime(apikey=APIKEY) as server:
            port = server.port
            async with open_realtime(
                server.url, apikey=APIKEY, access_token=TOKEN, transport=server.memory_transport
            ) as client:
                # Point REST at a port nothing listens on: the socket stays in memory.
                client._runtime.rest._url = f"http://127.0.0.1:{_closed_port()}/api/broadcast"
                with pytest.raises(RealtimeConnectionError) as caught:
                    await client.channel("room:x").http_send("e", {})
            assert port
    _no_leak(caught.value)


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_rb03_over_tcp_with_the_default_transport() -> None:
    """RB-03: the default httpx transport over loopback TCP: 202, then the server's 401."""
    with trio.fail_after(30):
        async with serve_realtime(apikey=APIKEY) as server:
            async with open_realtime(server.url, apikey=APIKEY) as client:
                channel = client.channel("room:tcp")
                messages = channel.broadcasts()
                async with channel:
                    await channel.http_send("e", {"over": "tcp"})
                    message = await messages.receive()
                    assert message.payload == {"over": "tcp"}
                    await client.http_broadcast([BroadcastMessage("room:tcp", "f", {"n": 2})])
                    message = await messages.receive()
                    assert (message.event, message.payload) == ("f", {"n": 2})
            async with open_realtime(
                server.url, apikey=APIKEY, transport=server.memory_transport
            ) as client:
                client._runtime.rest._apikey = "anon-SECRET-wrong"
                with pytest.raises(RestUnauthorized) as caught:
                    await client.channel("room:tcp").http_send("e", {})
            assert caught.value.status_code == 401
            _no_leak(caught.value)


def test_rb03_broadcast_url_from_the_socket_url() -> None:
    """RB-03: the REST endpoint sits beside the socket, as realtime-js derives it."""
    cases = {
        "https://ref.supabase.co": "https://ref.supabase.co/realtime/v1/api/broadcast",
        "ws://127.0.0.1:4000/socket": "http://127.0.0.1:4000/api/broadcast",
        "ws://h:4000/socket/websocket": "http://h:4000/api/broadcast",
        "wss://h/realtime/v1/websocket?x=1": "https://h/realtime/v1/api/broadcast",
    }
    for url, expected in cases.items():
        endpoint = websocket_url(url, apikey=APIKEY, vsn="1.0.0")
        assert broadcast_url(endpoint) == expected
        assert SECRET_MARKER not in broadcast_url(endpoint)


async def test_rb03_closed_client_refuses_rest(autojump_clock: trio.testing.MockClock) -> None:
    """RB-03: the pooled HTTP client closes with the RealtimeClient."""
    async with serve_realtime() as server:
        async with rest_client(server) as client:
            await client.channel("room:x").http_send("e", {})
            http = client._runtime.rest._client
            assert http is not None
        assert http.is_closed
        with pytest.raises(Exception, match="closed"):
            await client._runtime.rest.send_single("room:x", "e", {}, private=False)
