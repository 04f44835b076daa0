"""The fault matrix's harness: servers that can restart, peers, a client with three rooms.

A :class:`Harness` runs the local server in a background task, so that a test can stop it and
start another one (on the same port for sockets, behind the same transport factory in memory)
while the client lives on. It gives the client a :class:`Gate`, a transport factory that can
refuse connections like a server that is down, wrapping either the server's in-memory transport
or one of the two real transports over loopback.

A :class:`World` is what every scenario starts from: peers tracking presence in three rooms and
the client joined to all of them with broadcast (self, ack), presence and postgres_changes, each
subscription drained into a :class:`Sink` by a consumer task. A :class:`Ledger` runs acked
pushes and accounts for every one of them.

Timing differs by harness: in memory (MockClock) the protocol's own defaults hold, so virtual
times are exact; over sockets (real clock) the same scenarios run with short intervals and
immediate reconnects, and their times are only measured.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import trio
import trio.testing
from _realtime import expected_presence, task_count
from conftest import APIKEY

from trio_realtime import (
    Broadcast,
    Channel,
    ChannelClosed,
    ChannelEvent,
    ChannelJoined,
    ChannelState,
    ConnectionClosed,
    ConnectionEvent,
    PostgresChange,
    PresenceEvent,
    PushError,
    PushTimeout,
    RealtimeClient,
    RealtimeConnectionError,
    RealtimeError,
    Subscription,
    Transport,
    TransportOptions,
    backoff,
    open_realtime,
)
from trio_realtime._url import Endpoint
from trio_realtime._ws_sansio import connect_sansio
from trio_realtime._ws_trio_websocket import connect_trio_websocket
from trio_realtime.protocol import check_vsn
from trio_realtime.testing import RealtimeServer, ServerConnection, serve_realtime

T = TypeVar("T")

ROOMS = ("room0", "room1", "room2")
PEER = "peer"
MAX_MESSAGE_SIZE = 1_000_000


class Sink(Generic[T]):
    """Everything one subscription delivered, collected by a consumer task; waitable."""

    def __init__(self, subscription: Subscription[T]) -> None:
        self.subscription = subscription
        self.items: list[T] = []
        self.error: BaseException | None = None
        self.ended = False
        self._changed = trio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def consume(self) -> None:
        """Receive until the subscription ends (cleanly or with an error)."""
        try:
            async for item in self.subscription:
                self.items.append(item)
                self._notify()
        except RealtimeError as exc:
            self.error = exc
        self.ended = True
        self._notify()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds (checked after each item)."""
        while not predicate():
            await self._changed.wait()

    async def wait_ended(self) -> None:
        """Wait until the subscription has ended."""
        await self.wait_for(lambda: self.ended)


@dataclass
class Room:
    """One of the client's channels and the sinks of its subscriptions."""

    name: str
    channel: Channel
    messages: Sink[Broadcast]
    changes: Sink[PostgresChange]
    presence: Sink[PresenceEvent]
    joins: Sink[ChannelEvent]

    @property
    def sinks(self) -> list[Sink[Any]]:
        return [self.messages, self.changes, self.presence, self.joins]

    def rejoins(self) -> int:
        return sum(1 for e in self.joins.items if isinstance(e, ChannelJoined) and e.rejoin)

    def events(self, event: str) -> list[Any]:
        """Payloads of the broadcasts of ``event`` received so far."""
        return [item.payload for item in self.messages.items if item.event == event]

    async def wait_rejoins(self, count: int) -> None:
        """Wait until the room has rejoined ``count`` times in all."""
        await self.joins.wait_for(lambda: self.rejoins() >= count)

    async def wait_event(self, event: str, payload: object) -> None:
        """Wait until a broadcast of ``event`` with ``payload`` has arrived."""
        await self.messages.wait_for(lambda: payload in self.events(event))

    async def wait_change(self, new: object) -> None:
        """Wait until a Postgres change with ``new`` as its new row has arrived."""
        await self.changes.wait_for(lambda: any(c.new == new for c in self.changes.items))


@dataclass
class Ledger:
    """Acked pushes and their outcomes: every push started must end acked or raised."""

    started: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    acked: dict[str, set[int]] = field(default_factory=dict)
    _next: int = 0

    async def push(self, room: Room) -> None:
        """One acked broadcast ``push`` with a unique ``n``; record how it ended."""
        self._next += 1
        n = self._next
        self.started += 1
        try:
            await room.channel.send_broadcast("push", {"n": n})
        except (PushTimeout, PushError, ConnectionClosed, ChannelClosed) as exc:
            self.outcomes[type(exc).__name__] += 1
        else:
            self.outcomes["acked"] += 1
            self.acked.setdefault(room.name, set()).add(n)

    def check(self, rooms: Iterable[Room]) -> None:
        """None silently dropped: every push ended; every acked one came back exactly once
        (broadcast_self: the server fans out before it acknowledges), and none twice."""
        assert sum(self.outcomes.values()) == self.started, (self.outcomes, self.started)
        for room in rooms:
            echoed = [payload["n"] for payload in room.events("push")]
            assert len(echoed) == len(set(echoed)), f"{room.name}: a push arrived twice"
            assert self.acked.get(room.name, set()) <= set(echoed), room.name


class Gate:
    """A transport factory that refuses connections while closed, as a server that is down."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.open = True
        self.refused = 0

    async def __call__(
        self, endpoint: Endpoint, options: TransportOptions, nursery: trio.Nursery
    ) -> Transport:
        if not self.open:
            self.refused += 1
            await trio.lowlevel.checkpoint()
            raise RealtimeConnectionError("cannot connect: connection refused")
        kind = self.harness.kind
        if kind == "memory":
            return await self.harness.server.memory_transport(endpoint, options, nursery)
        if kind == "websockets":
            return await connect_sansio(endpoint, options, nursery)
        return await connect_trio_websocket(endpoint, options, nursery)


@dataclass
class Timing:
    """Intervals for one harness: the protocol's defaults in virtual time, short ones for
    sockets (real time)."""

    heartbeat_interval: float
    timeout: float
    reply_delay: float


VIRTUAL = Timing(heartbeat_interval=25.0, timeout=10.0, reply_delay=15.0)
REAL = Timing(heartbeat_interval=0.5, timeout=0.5, reply_delay=0.75)


class Harness:
    """Servers, peers and gate for one vsn and one transport (``memory`` or a real one)."""

    def __init__(self, kind: str, vsn: str, nursery: trio.Nursery) -> None:
        self.kind = kind
        self.vsn = vsn
        self.virtual = kind == "memory"
        self.timing = VIRTUAL if self.virtual else REAL
        self.gate = Gate(self)
        self._nursery = nursery
        self._server: RealtimeServer | None = None
        self._stop: trio.Event | None = None
        self._server_done: trio.Event | None = None
        self.peer_connections: set[int] = set()
        self._peer_scopes: list[trio.CancelScope] = []

    # -- policies ---------------------------------------------------------------------------

    def reconnect(self, attempt: int) -> float:
        if self.virtual:
            return backoff(jitter=0)(attempt) or 0.0
        # Immediately, then a few ms apart while the gate is closed (no busy loop).
        return 0.0 if attempt == 1 else 0.005

    def rejoin(self, attempt: int) -> float:
        return (backoff(jitter=0)(attempt) or 0.0) if self.virtual else 0.0

    # -- servers ----------------------------------------------------------------------------

    @property
    def server(self) -> RealtimeServer:
        assert self._server is not None
        return self._server

    async def _serve(
        self,
        port: int,
        *,
        task_status: trio.TaskStatus[tuple[RealtimeServer, trio.Event, trio.Event]],
    ) -> None:
        stop, done = trio.Event(), trio.Event()
        try:
            async with serve_realtime(port=port) as server:
                task_status.started((server, stop, done))
                await stop.wait()
        finally:
            done.set()

    async def start_server(self, port: int = 0) -> RealtimeServer:
        """Start a server (the current one must be stopped) and make it current."""
        self._server, self._stop, self._server_done = await self._nursery.start(self._serve, port)
        return self._server

    async def stop_server(self) -> None:
        """Stop the current server: every connection to it drops."""
        assert self._stop is not None
        assert self._server_done is not None
        self._stop.set()
        await self._server_done.wait()

    async def restart(self) -> tuple[float, RealtimeServer]:
        """Replace the server by a fresh one with another peer; return when the old one stopped
        (the fault's time) and the new server.

        In memory the new server starts first and the gate switches to it; over sockets the
        gate stays closed while the port changes hands, so the client does not spin.
        """
        old = self.server
        self.peer_connections.clear()
        if self.virtual:
            stop, done = self._stop, self._server_done
            assert stop is not None
            assert done is not None
            new = await self.start_server()
            await self.start_peer("newcomer", new)
            fault_time = trio.current_time()
            stop.set()
            await done.wait()
            return fault_time, new
        self.gate.open = False
        await self.stop_server()
        fault_time = trio.current_time()
        new = await self.start_server(old.port)
        await self.start_peer("newcomer", new)
        self.gate.open = True
        return fault_time, new

    # -- peers ------------------------------------------------------------------------------

    async def _peer(
        self, name: str, server: RealtimeServer, *, task_status: trio.TaskStatus[None]
    ) -> None:
        with contextlib.suppress(ConnectionClosed):
            async with open_realtime(
                server.url,
                apikey=APIKEY,
                vsn=check_vsn(self.vsn),
                transport=server.memory_transport if self.virtual else self.kind,
                reconnect=None,
                heartbeat_interval=None,
            ) as peer:
                self.peer_connections.add(server.connections[-1].id)
                for room in ROOMS:
                    channel = peer.channel(room, presence_key=name)
                    await channel.join()
                    await channel.track({"name": name})
                task_status.started()
                await trio.sleep_forever()

    async def start_peer(self, name: str, server: RealtimeServer) -> None:
        """A client that joins every room and tracks presence as ``name``; it ends (quietly)
        when its server goes away."""
        await self._nursery.start(self._peer, name, server)

    # -- the client -------------------------------------------------------------------------

    def client_connection(self) -> ServerConnection:
        """The server's side of the client's current connection."""
        ours = [c for c in self.server.connections if c.id not in self.peer_connections]
        assert ours, "the client is not connected"
        return ours[-1]

    @asynccontextmanager
    async def open_client(self, **options: Any) -> AsyncIterator[RealtimeClient]:
        options.setdefault("heartbeat_interval", self.timing.heartbeat_interval)
        options.setdefault("timeout", self.timing.timeout)
        async with open_realtime(
            self.server.url,
            apikey=APIKEY,
            vsn=check_vsn(self.vsn),
            transport=self.gate,
            reconnect=self.reconnect,
            rejoin=self.rejoin,
            max_message_size=MAX_MESSAGE_SIZE,
            **options,
        ) as client:
            yield client


@asynccontextmanager
async def harness(kind: str, vsn: str) -> AsyncIterator[Harness]:
    """A running harness with its server and one peer; everything stops on exit."""
    async with trio.open_nursery() as nursery:
        h = Harness(kind, vsn, nursery)
        await h.start_server()
        await h.start_peer(PEER, h.server)
        yield h
        nursery.cancel_scope.cancel()


@dataclass
class World:
    """The client, its rooms and everything a scenario checks."""

    harness: Harness
    client: RealtimeClient
    rooms: list[Room]
    connection_events: Sink[ConnectionEvent]
    ledger: Ledger = field(default_factory=Ledger)
    _markers: int = 0

    @property
    def server(self) -> RealtimeServer:
        return self.harness.server

    def room(self, name: str) -> Room:
        return next(room for room in self.rooms if room.name == name)

    def rejoins(self) -> list[int]:
        return [room.rejoins() for room in self.rooms]

    async def wait_rejoined(self, before: list[int], rooms: Iterable[str] = ROOMS) -> None:
        """Wait until each of ``rooms`` has rejoined since ``before`` (from :meth:`rejoins`)."""
        for name in rooms:
            await self.room(name).wait_rejoins(before[ROOMS.index(name)] + 1)

    async def check_healthy(self, alive: Iterable[str] = ROOMS) -> None:
        """Each room in ``alive`` is joined as the server sees it, receives a server broadcast
        and a Postgres change, gets an acked push through, and has the server's presence."""
        self._markers += 1
        marker = self._markers
        for name in alive:
            room = self.room(name)
            index = ROOMS.index(name)
            assert room.channel.state is ChannelState.JOINED, (name, room.channel.state)
            await self.server.wait_until_joined(name, 2)  # the client's and a peer's
            await self.server.broadcast(name, "marker", {"m": marker})
            await room.wait_event("marker", {"m": marker})
            await self.server.emit_postgres_change(
                "public", f"t{index}", "INSERT", record={"id": marker}
            )
            await room.wait_change({"id": marker})
            acked = self.ledger.outcomes["acked"]
            await self.ledger.push(room)
            assert self.ledger.outcomes["acked"] == acked + 1
            assert room.channel.presence_state() == expected_presence(self.server, name)

    def check_bounded(self, *, channels: int = len(ROOMS)) -> None:
        """Nothing accumulates: reply waiters, waiting pushes, subscription buffers, server
        connections and channels."""
        assert self.client.connected
        assert self.client.statistics().pending_replies == 0
        for room in self.rooms:
            assert room.channel.statistics().waiting_pushes == 0
            for sink in room.sinks:
                stats = sink.subscription.statistics()
                assert stats.buffered <= stats.buffer
        server = self.server.statistics()
        peers = len(self.harness.peer_connections)
        assert server.connections_open == 1 + peers
        assert server.channels_joined == channels + peers * len(ROOMS)
        assert server.dropped_slow_connections == 0
        assert self.client.statistics().channels == channels


@asynccontextmanager
async def world(h: Harness, **options: Any) -> AsyncIterator[World]:
    """The client joined to the three rooms with every kind of subscription, tracking
    presence; on exit the client closes and no task, server connection or channel is left."""
    await trio.testing.wait_all_tasks_blocked()
    baseline = task_count()
    connections: list[ServerConnection] = []
    async with h.open_client(**options) as client, trio.open_nursery() as consumers:
        connection_events = Sink(client.connection_events(overflow="drop_oldest"))
        consumers.start_soon(connection_events.consume)
        rooms = []
        for index, name in enumerate(ROOMS):
            channel = client.channel(
                name, broadcast_self=True, broadcast_ack=True, presence_key="client"
            )
            room = Room(
                name,
                channel,
                messages=Sink(channel.broadcasts(buffer=10_000)),
                changes=Sink(channel.postgres_changes("INSERT", table=f"t{index}")),
                presence=Sink(channel.presence_events(overflow="drop_oldest")),
                joins=Sink(channel.channel_events()),
            )
            for sink in room.sinks:
                consumers.start_soon(sink.consume)
            rooms.append(room)
        for room in rooms:
            await room.channel.join()
            await room.channel.track({"name": "client"})
            await room.channel.wait_postgres_ready()
        w = World(h, client, rooms, connection_events)
        connections.append(h.client_connection())
        try:
            yield w
            connections.append(h.client_connection())
        finally:
            consumers.cancel_scope.cancel()
    for connection in connections:
        await connection.wait_finished()
    await trio.testing.wait_all_tasks_blocked()
    assert len(h.server.connections) == len(h.peer_connections)
    assert task_count() == baseline
