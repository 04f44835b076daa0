"""LS-01: the HTTP upgrade of the local server (PROTOCOL.md section 1): paths, vsn, apikey."""

from __future__ import annotations

import base64
import os

import pytest
import trio
from server_support import APIKEY, RawClient, connect, connect_socket

from trio_realtime import ConnectionClosed, RealtimeConnectionError
from trio_realtime._transport import TransportOptions
from trio_realtime._url import Endpoint
from trio_realtime._ws_sansio import connect_sansio
from trio_realtime.protocol import Frame
from trio_realtime.testing import RealtimeServer, serve_realtime


def _endpoint(server: RealtimeServer, resource: str) -> Endpoint:
    url = f"ws://127.0.0.1:{server.port}{resource}"
    return Endpoint(url, False, "127.0.0.1", server.port, resource)


REFUSALS = [
    ("/nope/websocket?vsn=1.0.0&apikey=KEY", 404, None),
    ("/socket?vsn=1.0.0&apikey=KEY", 404, None),
    ("/socket/websocket?vsn=3.0.0&apikey=KEY", 403, None),
    ("/socket/websocket?vsn=banana&apikey=KEY", 403, None),
    ("/realtime/v1/websocket?vsn=1.1.0&apikey=KEY", 403, None),
    ("/socket/websocket?vsn=1.0.0", 401, "API key is missing"),
    ("/socket/websocket?vsn=1.0.0&apikey=", 401, "API key is missing"),
    ("/socket/websocket?vsn=2.0.0&apikey=wrong", 401, "The token provided is not a valid JWT"),
    ("/socket/websocket?apikey=a.b.c", 401, "Failed to validate JWT signature"),
]


@pytest.mark.parametrize(("resource", "status", "message"), REFUSALS)
async def test_ls01_upgrade_refusals_over_tcp(
    resource: str, status: int, message: str | None, nursery: trio.Nursery
) -> None:
    """LS-01: unknown path 404, bad vsn 403 with an empty body, bad apikey 401 with JSON."""
    async with serve_realtime(apikey=APIKEY) as server:
        with pytest.raises(RealtimeConnectionError) as caught:
            await connect_sansio(
                _endpoint(server, resource.replace("KEY", APIKEY)), TransportOptions(), nursery
            )
        assert (caught.value.status_code, caught.value.server_message) == (status, message)
        assert APIKEY not in str(caught.value)
        assert server.statistics().connections_refused == 1
        assert server.connections == []


@pytest.mark.parametrize(("resource", "status", "message"), REFUSALS)
async def test_ls01_upgrade_refusals_in_memory(
    resource: str, status: int, message: str | None, nursery: trio.Nursery
) -> None:
    """LS-01: the memory transport runs the same checks and raises the same errors."""
    async with serve_realtime(apikey=APIKEY) as server:
        endpoint = _endpoint(server, resource.replace("KEY", APIKEY))
        with pytest.raises(RealtimeConnectionError) as caught:
            await server.memory_transport(endpoint, TransportOptions(), nursery)
        assert (caught.value.status_code, caught.value.server_message) == (status, message)


@pytest.mark.parametrize(
    ("resource", "vsn"),
    [
        ("/socket/websocket?apikey=KEY", "1.0.0"),  # a missing vsn means 1.0.0
        ("/socket/websocket/?apikey=KEY&vsn=1.0.2", "1.0.0"),  # ~> 1.0.0
        ("/realtime/v1/websocket?apikey=KEY&vsn=2.0.0&log_level=info", "2.0.0"),
    ],
)
async def test_ls01_accepted_upgrades(resource: str, vsn: str, nursery: trio.Nursery) -> None:
    """LS-01: both paths are served; vsn picks the serializer; log_level is accepted."""
    async with serve_realtime(apikey=APIKEY) as server:
        transport = await connect_sansio(
            _endpoint(server, resource.replace("KEY", APIKEY)), TransportOptions(), nursery
        )
        client = RawClient(transport, vsn)
        assert (await client.heartbeat()).event == "phx_reply"
        assert [connection.vsn for connection in server.connections] == [vsn]
        await client.aclose()


async def _raw_upgrade(server: RealtimeServer, query: str, header_key: str | None) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET /socket/websocket?{query} HTTP/1.1",
        f"Host: 127.0.0.1:{server.port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if header_key is not None:
        lines.append(f"x-api-key: {header_key}")
    await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        response += chunk
    await stream.aclose()
    return response.split(b"\r\n", 1)[0]


async def test_ls01_x_api_key_header_wins() -> None:
    """LS-01: the x-api-key header wins over the apikey query parameter."""
    async with serve_realtime(apikey=APIKEY) as server:
        assert b" 101 " in await _raw_upgrade(server, "apikey=wrong&vsn=1.0.0", APIKEY)
        assert b" 401 " in await _raw_upgrade(server, f"apikey={APIKEY}&vsn=1.0.0", "wrong")


async def test_ls01_connect_error_delay(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """LS-01: 401 refusals wait connect_error_delay (exact virtual time); a 403 does not."""
    async with serve_realtime(apikey=APIKEY, connect_error_delay=2.0) as server:
        start = trio.current_time()
        with pytest.raises(RealtimeConnectionError):
            await connect(server, "1.0.0", nursery, apikey="wrong")
        assert trio.current_time() - start == 2.0
        with pytest.raises(RealtimeConnectionError):
            await server.memory_transport(
                _endpoint(server, f"/socket/websocket?vsn=9.0.0&apikey={APIKEY}"),
                TransportOptions(),
                nursery,
            )
        assert trio.current_time() - start == 2.0


@pytest.mark.parametrize("over_tcp", [False, True])
async def test_ls01_oversize_frame_closes_with_1009(over_tcp: bool, nursery: trio.Nursery) -> None:
    """LS-01: a frame above max_message_size closes the connection with 1009."""
    async with serve_realtime(max_message_size=1000) as server:
        client = await (connect_socket if over_tcp else connect)(server, "1.0.0", nursery)
        await client.send(Frame("phoenix", "heartbeat", {"pad": "x" * 2000}, "1"))
        with pytest.raises(ConnectionClosed) as caught:
            await client.receive()
        assert caught.value.code == 1009
