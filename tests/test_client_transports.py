"""Both real transports pass the same end-to-end tests over loopback sockets.

These use real sockets on 127.0.0.1, so they run on trio's real clock; they never sleep, and
each wait is guarded by ``trio.fail_after`` only so that a bug fails fast instead of hanging.
"""

from __future__ import annotations

import contextlib
import functools
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from conftest import APIKEY
from websockets.client import ClientProtocol
from websockets.protocol import State
from websockets.uri import parse_uri
from websockets.utils import accept_key

from trio_realtime import (
    Connected,
    Disconnected,
    RealtimeClient,
    RealtimeConnectionError,
    open_realtime,
)
from trio_realtime._transport import Transport, TransportOptions
from trio_realtime._url import Endpoint, websocket_url
from trio_realtime._ws_sansio import SansIOWebSocket, _ip_family
from trio_realtime._ws_trio_websocket import run_trio_websocket
from trio_realtime.testing import RealtimeServer, serve_realtime

TRANSPORTS = ["websockets", "trio-websocket"]
GUARD = 10.0


@asynccontextmanager
async def connect_socket(
    server: RealtimeServer, transport: str, **options: Any
) -> AsyncIterator[RealtimeClient]:
    options.setdefault("apikey", APIKEY)
    options.setdefault("reconnect", lambda attempt: 0.0)
    async with open_realtime(server.url, transport=transport, **options) as client:
        yield client


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("vsn", ["1.0.0", "2.0.0"])
async def test_end_to_end_over_sockets(transport: str, vsn: str) -> None:
    """LS-01/BC-01..03/PR-01 over real sockets: join, ack'd self broadcast, presence, leave."""
    with trio.fail_after(GUARD):
        async with serve_realtime() as server:
            async with connect_socket(server, transport, vsn=vsn) as client:
                channel = client.channel(
                    "room", broadcast_self=True, broadcast_ack=True, presence_key="alice"
                )
                messages = channel.broadcasts("msg")
                presence = channel.presence_events()
                async with channel:
                    await channel.send_broadcast("msg", {"n": 1})
                    assert (await messages.receive()).payload == {"n": 1}
                    if vsn == "2.0.0":
                        await channel.send_broadcast("msg", b"\x00raw")
                        assert (await messages.receive()).payload == b"\x00raw"
                    await channel.track({"online": True})
                    while True:
                        event = await presence.receive()
                        if event.event == "join":
                            assert event.key == "alice"
                            break
                connection = server.connections[0]
            await connection.wait_finished()
            assert connection.close_code == 1000


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_drop_reconnect_rejoin_over_sockets(transport: str) -> None:
    """RC-04/RC-05 over real sockets: a TCP drop reconnects and the channel keeps delivering."""
    with trio.fail_after(GUARD):
        async with serve_realtime() as server, connect_socket(server, transport) as client:
            events = client.connection_events()
            channel = client.channel("room")
            messages = channel.broadcasts()
            await channel.join()
            await server.drop_connections()
            assert isinstance(await events.receive(), Disconnected)
            while not isinstance(await events.receive(), Connected):
                pass
            await server.wait_until_joined("room")
            while not channel.joined:
                await trio.lowlevel.checkpoint()
            await server.broadcast("room", "msg", {"after": "drop"})
            assert (await messages.receive()).payload == {"after": "drop"}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("code", [1001, 1012])
async def test_server_close_codes_reconnect_over_sockets(transport: str, code: int) -> None:
    """RC-05 over real sockets: close 1001 and 1012 lead to a reconnect."""
    with trio.fail_after(GUARD):
        async with serve_realtime() as server, connect_socket(server, transport) as client:
            events = client.connection_events()
            if code == 1012:
                await server.request_disconnect()
            else:
                await server.close_connections(code, "going away")
            event = await events.receive()
            assert isinstance(event, Disconnected)
            assert event.code == code
            while not isinstance(await events.receive(), Connected):
                pass


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_http_refusal_over_sockets(transport: str) -> None:
    """CL-07 over real sockets: 401 with a JSON error body, apikey not in the message."""
    with trio.fail_after(GUARD):
        async with serve_realtime(apikey="expected") as server:
            with pytest.raises(RealtimeConnectionError) as info:
                async with connect_socket(server, transport):
                    pass  # pragma: no cover
            assert info.value.status_code == 401
            assert info.value.server_message
            assert APIKEY not in str(info.value)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_oversize_message_over_sockets(transport: str) -> None:
    """BP-03 over real sockets: a message over the cap closes with 1009, then reconnects."""
    with trio.fail_after(GUARD):
        async with (
            serve_realtime() as server,
            connect_socket(server, transport, max_message_size=4096) as client,
        ):
            events = client.connection_events()
            await server.broadcast("room", "x", {"blob": "y" * 10_000})
            await server.send_raw(
                '{"event":"x","payload":"' + "z" * 10_000 + '","ref":null,"topic":"t"}'
            )
            event = await events.receive()
            assert isinstance(event, Disconnected)
            assert event.code == 1009
            while not isinstance(await events.receive(), Connected):
                pass


def _deep_presence_frame(vsn: str, diff: str, key: str, ref: str, levels: int) -> str:
    """A ``presence_diff`` joining or leaving ``key`` with a meta nested ``levels`` deep."""
    nest = '{"d":' * levels + '"bottom"' + "}" * levels
    metas = f'{{"{key}":{{"metas":[{{"phx_ref":"{ref}","nest":{nest}}}]}}}}'
    payload = f'{{"joins":{metas if diff == "joins" else "{}"},'
    payload += f'"leaves":{metas if diff == "leaves" else "{}"}}}'
    if vsn == "1.0.0":
        return f'{{"topic":"realtime:room","event":"presence_diff","payload":{payload},"ref":null}}'
    return f'[null,null,"realtime:room","presence_diff",{payload}]'


def _depth(value: object) -> int:
    levels = 0
    while isinstance(value, dict):
        value = value["d"]
        levels += 1
    return levels


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("vsn", ["1.0.0", "2.0.0"])
async def test_hd05_deeply_nested_presence_over_sockets(transport: str, vsn: str) -> None:
    """HD-05 over real sockets: a presence meta nested 1,000 levels deep (as deep as the
    parser goes) joins and leaves like any other; events arrive, ``presence_state()`` and
    ``leave()`` work, and the connection stays up."""
    levels = 1000
    with trio.fail_after(GUARD):
        async with serve_realtime() as server, connect_socket(server, transport, vsn=vsn) as client:
            channel = client.channel("room", presence_key="alice")
            events = channel.presence_events()
            await channel.join()
            await channel.track({"online": True})
            while (await events.receive()).key != "alice":
                pass
            await server.send_raw(_deep_presence_frame(vsn, "joins", "deep", "r9", levels))
            while (event := await events.receive()).key != "deep":
                pass
            assert event.event == "join"
            assert _depth(event.presences[0]["nest"]) == levels
            state = channel.presence_state()
            assert sorted(state) == ["alice", "deep"]
            assert _depth(state["deep"][0]["nest"]) == levels
            await server.send_raw(_deep_presence_frame(vsn, "leaves", "deep", "r9", levels))
            while (event := await events.receive()).key != "deep":
                pass
            assert event.event == "leave"
            assert sorted(channel.presence_state()) == ["alice"]
            await server.send_raw(_deep_presence_frame(vsn, "joins", "deep", "r10", levels))
            while (event := await events.receive()).key != "deep":
                pass
            await channel.leave()
            assert channel.presence_state() == {}
            assert client.statistics().connects == 1


# -- close_timeout reaches the transport -----------------------------------------------------------


async def _silent_peer(stream: trio.abc.Stream, *, handshake: bool) -> None:
    """A server that answers the upgrade (when asked to), then never answers anything."""
    if handshake:
        request = b""
        while b"\r\n\r\n" not in request:
            request += await stream.receive_some(4096)
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key")
        )
        await stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(key.decode()).encode() + b"\r\n\r\n"
        )
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        while await stream.receive_some(4096):
            pass


async def _open_on_memory(
    transport: str, stream: trio.abc.Stream, close_timeout: float, nursery: trio.Nursery
) -> Transport:
    options = TransportOptions(close_timeout=close_timeout)
    if transport == "websockets":
        protocol = ClientProtocol(parse_uri("ws://127.0.0.1/socket"), state=State.OPEN)
        return SansIOWebSocket(stream, protocol, split_frames=True, close_timeout=close_timeout)
    endpoint = websocket_url("ws://127.0.0.1:4000/socket", apikey=APIKEY, vsn="1.0.0")
    opened: Transport = await nursery.start(run_trio_websocket, stream, endpoint, options)
    return opened


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_aclose_waits_close_timeout_for_a_silent_peer(
    transport: str, autojump_clock: trio.testing.MockClock
) -> None:
    """A peer that never answers the close frame: ``aclose`` gives up after exactly
    ``close_timeout`` and drops the connection, on both transports."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            functools.partial(_silent_peer, server_stream, handshake=transport != "websockets")
        )
        opened = await _open_on_memory(transport, client_stream, 0.75, nursery)
        assert not opened.closed
        start = trio.current_time()
        await opened.aclose()
        assert trio.current_time() - start == 0.75
        assert opened.closed


async def test_close_timeout_option_reaches_the_transport(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``open_realtime(close_timeout=...)`` is the transport's close timeout too."""
    seen: list[float] = []
    async with serve_realtime() as server:

        async def factory(
            endpoint: Endpoint, options: TransportOptions, nursery: trio.Nursery
        ) -> Transport:
            seen.append(options.close_timeout)
            return await server.memory_transport(endpoint, options, nursery)

        async with open_realtime(server.url, apikey=APIKEY, transport=factory, close_timeout=0.75):
            pass
    assert seen == [0.75]


@pytest.mark.parametrize(
    ("host", "family"),
    [
        ("127.0.0.1", "AF_INET"),
        ("10.1.2.3", "AF_INET"),
        ("::1", "AF_INET6"),
        ("::ffff:1.2.3.4", "AF_INET6"),
        ("2001:db8::5", "AF_INET6"),
        ("localhost", None),
        ("example.com", None),
        ("1.2.3", None),
        ("256.1.1.1", None),
        ("fe80::1%eth0", None),
    ],
)
def test_ip_literal_hosts_connect_without_a_name_lookup(host: str, family: str | None) -> None:
    """An IP address is connected with one socket; anything else goes through the lookup."""
    expected = getattr(socket, family) if family is not None else None
    assert _ip_family(host) == expected
