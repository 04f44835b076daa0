"""Faults end to end: the fault matrix, and regressions it found.

Regressions first: each is a race or an edge that a fault in the matrix ran into.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from _realtime import drain
from conftest import APIKEY

from trio_realtime import (
    ChannelClosed,
    ChannelJoined,
    ChannelState,
    ConnectionEvent,
    RealtimeClient,
    Subscription,
    backoff,
    open_realtime,
)
from trio_realtime.testing import RealtimeServer, serve_realtime

VSNS = ["1.0.0", "2.0.0"]
TRANSPORTS = ["websockets", "trio-websocket"]
EXACT = backoff(jitter=0)
GUARD = 10.0


@asynccontextmanager
async def connect_socket(
    server: RealtimeServer, transport: str = "websockets", **options: Any
) -> AsyncIterator[RealtimeClient]:
    """A client over a loopback socket, reconnecting and rejoining at once."""
    options.setdefault("apikey", APIKEY)
    options.setdefault("reconnect", lambda attempt: 0.0)
    options.setdefault("rejoin", lambda attempt: 0.0)
    async with open_realtime(server.url, transport=transport, **options) as client:
        yield client


async def next_of(events: Subscription[ConnectionEvent], kind: type[Any]) -> Any:
    """Skip connection events until one of ``kind`` arrives."""
    while True:
        event = await events.receive()
        if isinstance(event, kind):
            return event


# -- regressions ------------------------------------------------------------------------------


@pytest.mark.parametrize("vsn", VSNS)
async def test_ch06_server_close_read_with_the_join_reply(vsn: str) -> None:
    """CH-06: a ``system`` error and ``phx_close`` read in the same batch as the join reply
    close the channel (the join raises ChannelClosed with the server's message). The join task,
    resumed after them, used to set JOINED on a closed channel: an illegal transition that
    killed the whole client. The default transport hands over a whole read at once, and the
    server writes the delayed reply and the frames queued behind it in one write."""
    with trio.fail_after(GUARD):
        async with serve_realtime() as server, connect_socket(server, vsn=vsn) as client:
            channel = client.channel("room")
            messages = channel.broadcasts()
            server.reply_delay = 0.05

            async def close_once_joined() -> None:
                await server.wait_until_joined("room")
                await server.system_close("room", "Token has expired 0 seconds ago")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(close_once_joined)
                with pytest.raises(ChannelClosed) as info:
                    await channel.join()
            assert info.value.reason == "Token has expired 0 seconds ago"
            with pytest.raises(ChannelClosed):
                await messages.receive()
            assert channel.state is ChannelState.CLOSED
            server.reply_delay = 0.0
            await channel.join()
            assert client.statistics().connects == 1


@pytest.mark.parametrize("vsn", VSNS)
async def test_ch05_phx_error_read_with_the_join_reply(vsn: str) -> None:
    """CH-05: a ``phx_error`` read in the same batch as the join reply makes the channel rejoin;
    the user's join returns once that rejoin is done, and the client lives on."""
    with trio.fail_after(GUARD):
        async with serve_realtime() as server, connect_socket(server, vsn=vsn) as client:
            channel = client.channel("room")
            joins = channel.channel_events()
            server.reply_delay = 0.05

            async def crash_once_joined() -> None:
                await server.wait_until_joined("room")
                await server.push_error("room")
                server.reply_delay = 0.0

            async with trio.open_nursery() as nursery:
                nursery.start_soon(crash_once_joined)
                await channel.join()
            assert channel.joined
            assert [type(event) for event in drain(joins)] == [ChannelJoined]
            assert client.statistics().connects == 1
