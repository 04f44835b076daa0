"""The local server behaves like the real one where the client depends on it: a stopped server
refuses memory connections (RS-09), channel tokens expire (RS-13).

Time is virtual (trio's MockClock with autojump), so every timing assertion is exact.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from _realtime import connect

from trio_realtime import (
    Disconnected,
    RealtimeConnectionError,
    Reconnecting,
    backoff,
)
from trio_realtime.testing import RealtimeServer, serve_realtime

EXACT = backoff(jitter=0)


async def _serve_until(
    stop: trio.Event, *, task_status: trio.TaskStatus[RealtimeServer] = trio.TASK_STATUS_IGNORED
) -> None:
    async with serve_realtime() as server:
        task_status.started(server)
        await stop.wait()


async def test_rs09_memory_transport_of_a_stopped_server_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RS-09: connecting in memory to a server that has exited fails like a refused TCP
    connection: a RealtimeConnectionError without a status, not a RuntimeError."""
    with trio.fail_after(5):
        async with serve_realtime() as server:
            pass
        with pytest.raises(RealtimeConnectionError, match="Connection refused") as info:
            async with connect(server):
                pass  # pragma: no cover
        assert info.value.status_code is None
        assert server.statistics().connections_accepted == 0


async def test_rs09_a_reconnecting_client_survives_its_server_exiting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RS-09: when the server exits under a connected client, each reconnect attempt fails as
    refused and the client goes on backing off (1, 2, 5 s) instead of dying."""
    stop = trio.Event()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(_serve_until, stop)
            async with connect(server, reconnect=EXACT) as client:
                events = client.connection_events()
                start = trio.current_time()
                stop.set()
                seen: list[tuple[float, object]] = []
                while len(seen) < 4:
                    event = await events.receive()
                    seen.append((trio.current_time() - start, event))
                assert isinstance(seen[0][1], Disconnected)
                assert seen[0][1].will_reconnect
                assert [(at, event) for at, event in seen[1:]] == [
                    (0.0, Reconnecting(1, 1.0)),
                    (1.0, Reconnecting(2, 2.0)),
                    (3.0, Reconnecting(3, 5.0)),
                ]
                assert not client.connected
