"""Both real transports pass the same end-to-end tests over loopback sockets.

These use real sockets on 127.0.0.1, so they run on trio's real clock; they never sleep, and
each wait is guarded by ``trio.fail_after`` only so that a bug fails fast instead of hanging.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.lowlevel
from conftest import APIKEY

from trio_realtime import (
    Connected,
    Disconnected,
    RealtimeClient,
    RealtimeConnectionError,
    open_realtime,
)
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
