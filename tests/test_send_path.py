"""The send path: a push writes its own frame when the connection has nothing else to write.

PS-01's fast path (``Connection.send``): with nothing queued or being written, the pushing task
writes its frame itself; frames sent meanwhile queue behind it. These tests pin what that must
not change, under the local server's in-memory transport and the autojump clock:

* frames from several tasks all arrive, once, each task's in its own order;
* a push cancelled while its frame is being written lets the write finish (a frame cut in half
  would break the connection), then raises ``Cancelled``; the connection stays up;
* a write still blocked when the push's timeout passes is cut, the push raises
  ``PushTimeout`` at exactly that virtual time, and the connection, whose stream cannot be
  trusted after half a frame, is dropped: the client reconnects and rejoins.

A transport wrapper holds the client's writes at a gate to make a write slow.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio
import trio.testing
from _realtime import connect, drain, settle

from trio_realtime import ChannelState, PushTimeout
from trio_realtime._transport import Message, OutgoingMessage, Transport, TransportOptions
from trio_realtime._url import Endpoint
from trio_realtime.testing import RealtimeServer, serve_realtime

GUARD = 600.0  # virtual seconds


class GatedTransport(Transport):
    """The server's memory transport, with writes that wait while ``gate`` is closed."""

    def __init__(self, inner: Transport, gate: Gate) -> None:
        self.inner = inner
        self.gate = gate

    async def send_messages(self, messages: Sequence[OutgoingMessage]) -> None:
        self.gate.writes += 1
        await self.gate.opened()
        await self.inner.send_messages(messages)

    async def receive_messages(self) -> list[Message]:
        return await self.inner.receive_messages()

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await self.inner.aclose(code, reason)

    async def abort(self) -> None:
        await self.inner.abort()

    @property
    def closed(self) -> bool:
        return self.inner.closed


class Gate:
    """Open unless closed; ``opened`` waits while closed."""

    def __init__(self, server: RealtimeServer) -> None:
        self.server = server
        self._open = trio.Event()
        self._open.set()
        self.writes = 0
        self.connections = 0

    def close(self) -> None:
        self._open = trio.Event()

    def open(self) -> None:
        self._open.set()

    async def opened(self) -> None:
        await self._open.wait()

    async def factory(
        self, endpoint: Endpoint, options: TransportOptions, nursery: trio.Nursery
    ) -> Transport:
        self.connections += 1
        return GatedTransport(await self.server.memory_transport(endpoint, options, nursery), self)


async def test_ps01_frames_from_many_tasks_arrive_once_each_in_its_tasks_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(GUARD):
        async with serve_realtime() as server, connect(server) as client:
            channel = client.channel("room", broadcast_self=True)
            echoes = channel.broadcasts("msg", buffer=10_000)
            await channel.join()

            async def sender(task: int) -> None:
                for i in range(200):
                    await channel.send_broadcast("msg", {"task": task, "i": i})

            async with trio.open_nursery() as nursery:
                for task in range(4):
                    nursery.start_soon(sender, task)
            await settle()
            payloads = [item.payload for item in drain(echoes)]
    assert len(payloads) == 800
    for task in range(4):
        mine = [p["i"] for p in payloads if isinstance(p, dict) and p["task"] == task]
        assert mine == list(range(200))


async def test_ps01_a_push_cancelled_mid_write_finishes_the_write_then_raises(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(GUARD):
        async with serve_realtime() as server:
            gate = Gate(server)
            async with connect(server, transport=gate.factory) as client:
                channel = client.channel("room", broadcast_self=True)
                echoes = channel.broadcasts("msg")
                await channel.join()
                await settle()
                gate.close()
                writes = gate.writes
                outcome: list[str] = []

                async def push(scope: trio.CancelScope) -> None:
                    with scope:
                        await channel.send_broadcast("msg", {"n": 1})
                        outcome.append("returned")
                    if scope.cancelled_caught:
                        outcome.append("cancelled")

                scope = trio.CancelScope()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(push, scope)
                    await settle()
                    assert gate.writes == writes + 1  # the push's own write, held at the gate
                    scope.cancel()
                    await settle()
                    assert outcome == []  # still writing
                    gate.open()
                assert outcome == ["cancelled"]
                await settle()
                assert [item.payload for item in drain(echoes)] == [{"n": 1}]
                assert client.connected
                assert channel.state is ChannelState.JOINED
                assert gate.connections == 1


async def test_ps01_a_write_past_the_push_timeout_drops_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(GUARD):
        async with serve_realtime() as server:
            gate = Gate(server)
            options = {"transport": gate.factory, "timeout": 3.0, "reconnect": lambda _: 0.5}
            async with connect(server, **options) as client:
                channel = client.channel("room")
                await channel.join()
                await settle()
                gate.close()
                started = trio.current_time()
                with pytest.raises(PushTimeout):
                    await channel.send_broadcast("msg", {"n": 1})
                assert trio.current_time() - started == 3.0
                gate.open()
                await client.wait_connected()
                await channel.join()
                assert channel.state is ChannelState.JOINED
                assert gate.connections == 2
