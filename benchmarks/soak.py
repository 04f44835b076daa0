"""Soak: several clients under random faults for a few minutes; nothing promised may be lost.

``python -m benchmarks.soak --duration 120`` (or ``nox -s soak``) starts the local server on
loopback and ``--clients`` clients over real sockets, alternating the two transports and the two
serializers. Every client joins ``--channels`` channels with ``broadcast_self`` and
``broadcast_ack``, tracks its presence, and sends acked broadcasts (``--rate`` per second)
while consumer tasks count everything that arrives. Every ``--fault-interval`` seconds on
average, the server injects a random fault on a random connection: a TCP drop, a close with
1000, 1001 or 1012 (after "Server requested disconnect"), ``phx_error`` on a channel, a channel
closed for an expired token (the client joins it again), replies held back, heartbeats left
unanswered (half-open), or malformed frames. The clients reach the server through a TCP proxy
(:class:`FaultProxy`) that adds two faults of the byte stream: a frame with a reserved bit set,
cut inside its payload where a valid broadcast hides (the client must fail the connection with
1002 and never deliver the hidden message), and a few seconds of re-chunking, in which the
proxy cuts the server's bytes into random small writes.

The promises checked at the end, when every push has finished:

* **lost = 0**: every acked push started either was acknowledged or raised (raises are
  counted by kind: a push in flight when the connection dropped raises ``ConnectionClosed``
  rather than risk being delivered twice);
* every acknowledged push came back to its sender (``broadcast_self``: the server fans out
  before it acknowledges), and no client received any message twice;
* every client is connected and joined again, with the server's presence state;
* no message hidden in a bad frame is ever delivered (smuggled = 0);
* RSS, open file descriptors and trio tasks level off: each is sampled ten times over the run
  and reported at the start, the middle and the end (a leak keeps growing from the middle to
  the end).

The exit status is 1 when a promise is broken. ``--json PATH`` writes the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import trio
import trio.lowlevel

from trio_realtime import (
    Broadcast,
    Channel,
    ChannelClosed,
    ChannelState,
    ConnectionClosed,
    PresenceEvent,
    PushError,
    PushTimeout,
    RealtimeClient,
    RealtimeError,
    Subscription,
    backoff,
    open_realtime,
)
from trio_realtime.testing import RealtimeServer, serve_realtime

from ._common import rss_kib

APIKEY = "soak-apikey"
TRANSPORTS = ("websockets", "trio-websocket")
VSNS = ("1.0.0", "2.0.0")
FAULTS = (
    "drop",
    "close-1000",
    "close-1001",
    "request-disconnect-1012",
    "phx-error",
    "token-expired",
    "delay-replies",
    "stop-heartbeats",
    "malformed",
    "rsv-frame",
    "rechunk",
)
SMUGGLER = "smuggler"
JUNK: tuple[str | bytes, ...] = (
    "not json",
    "[1, 2",
    '{"topic": 5}',
    b"\x04\xff\xff\xff",
    '{"event":"mystery","payload":{},"ref":null,"topic":"realtime:soak0"}',
    '[null,null,"realtime:soak0","mystery",{}]',
)


@dataclass
class Figures:
    """What one client did and saw."""

    name: str
    transport: str
    vsn: str
    started: int = 0
    acked: int = 0
    raised: Counter[str] = field(default_factory=Counter)
    received: int = 0
    duplicates: int = 0
    smuggled: int = 0
    acked_not_echoed: int = 0
    reconnects: int = 0
    rejoins_after_close: int = 0
    rejoin_errors: Counter[str] = field(default_factory=Counter)
    presence_converged: bool = False
    presence_events: int = 0


@dataclass
class Soak:
    """The run's settings and shared state."""

    duration: float
    clients: int
    channels: int
    rate: float
    fault_interval: float
    heartbeat_interval: float
    rng: random.Random
    faults: Counter[str] = field(default_factory=Counter)
    figures: list[Figures] = field(default_factory=list)
    stop_sending: trio.Event = field(default_factory=trio.Event)
    finished: trio.Event = field(default_factory=trio.Event)

    def topics(self) -> list[str]:
        return [f"soak{index}" for index in range(self.channels)]


class Member:
    """One client: its channels, its sender and its consumers."""

    def __init__(self, soak: Soak, client: RealtimeClient, figures: Figures) -> None:
        self.soak = soak
        self.client = client
        self.figures = figures
        # Bounded bookkeeping, so that RSS shows the library's memory and not the soak's: the
        # last number seen per (sender, topic) (one sender's pushes on one topic are in
        # order, so a number not above it is a duplicate), and own pushes acknowledged before
        # their echo was taken from the subscription, or echoed before their ack returned.
        self.last: dict[tuple[str, str], int] = {}
        self.acked_first: set[int] = set()
        self.echoed_first: set[int] = set()
        self.sent_all = trio.Event()
        self.channels: dict[str, Channel] = {}

    async def join(self, topic: str, nursery: trio.Nursery) -> None:
        """Join ``topic`` with a consumer for its broadcasts and presence, and track."""
        channel = self.client.channel(
            topic, broadcast_self=True, broadcast_ack=True, presence_key=self.figures.name
        )
        self.channels[topic] = channel
        nursery.start_soon(self.consume, channel.broadcasts(buffer=100_000))
        # Read, not just created: an unread subscription holds up to its buffer (4,096 sync
        # events, each with a copy of the state), which would show as RSS growing all run.
        nursery.start_soon(self.consume_presence, channel.presence_events(overflow="drop_oldest"))
        await channel.join()
        await channel.track({"name": self.figures.name})

    async def consume(self, subscription: Subscription[Broadcast]) -> None:
        async with subscription:
            try:
                async for item in subscription:
                    self.receive(item)
            except ChannelClosed:
                pass

    async def consume_presence(self, subscription: Subscription[PresenceEvent]) -> None:
        async with subscription:
            try:
                async for _ in subscription:
                    self.figures.presence_events += 1
            except ChannelClosed:
                pass

    def receive(self, item: Broadcast) -> None:
        payload = item.payload
        if not isinstance(payload, dict):
            return
        sender, number = payload.get("c"), payload.get("n")
        if sender == SMUGGLER:
            self.figures.smuggled += 1
            return
        if not isinstance(sender, str) or not isinstance(number, int):
            return
        self.figures.received += 1
        key = (sender, item.topic)
        if number <= self.last.get(key, 0):
            self.figures.duplicates += 1
        self.last[key] = number
        if sender == self.figures.name:
            if number in self.acked_first:
                self.acked_first.discard(number)
            else:
                self.echoed_first.add(number)

    def acked(self, number: int) -> None:
        self.figures.acked += 1
        if number in self.echoed_first:
            self.echoed_first.discard(number)
        else:
            self.acked_first.add(number)

    async def send(self, nursery: trio.Nursery) -> None:
        """Send acked broadcasts at the configured rate until told to stop."""
        topics = self.soak.topics()
        period = 1.0 / self.soak.rate
        number = 0
        while not self.soak.stop_sending.is_set():
            await trio.sleep(period)
            number += 1
            topic = topics[number % len(topics)]
            if self.channels[topic].state is ChannelState.CLOSED:
                # The server closed the channel (an expired token): join again, with fresh
                # subscriptions, and track again.
                self.figures.rejoins_after_close += 1
                try:
                    await self.join(topic, nursery)
                except RealtimeError as exc:
                    self.figures.rejoin_errors[type(exc).__name__] += 1
                    continue
            self.figures.started += 1
            try:
                await self.channels[topic].send_broadcast(
                    "msg", {"c": self.figures.name, "n": number}
                )
            except (ChannelClosed, PushTimeout, PushError, ConnectionClosed) as exc:
                self.figures.raised[type(exc).__name__] += 1
            else:
                self.acked(number)

    def finish(self, server: RealtimeServer) -> None:
        self.figures.acked_not_echoed = len(self.acked_first)
        self.figures.reconnects = self.client.statistics().reconnects
        self.figures.presence_converged = all(
            sorted(channel.presence_state()) == sorted(server.presence_state(topic))
            for topic, channel in self.channels.items()
        )


async def run_member(
    soak: Soak,
    server: RealtimeServer,
    url: str,
    index: int,
    *,
    task_status: trio.TaskStatus[Member] = trio.TASK_STATUS_IGNORED,
) -> None:
    transport = TRANSPORTS[index % len(TRANSPORTS)]
    vsn = VSNS[(index // len(TRANSPORTS)) % len(VSNS)]
    figures = Figures(f"client{index}", transport, vsn)
    soak.figures.append(figures)
    async with (
        open_realtime(
            url,
            apikey=APIKEY,
            vsn=vsn,
            transport=transport,
            heartbeat_interval=soak.heartbeat_interval,
            timeout=5.0,
            reconnect=backoff((0.05, 0.1, 0.25, 0.5), jitter=0.2),
            rejoin=backoff((0.05, 0.1, 0.25, 0.5), jitter=0.2),
        ) as client,
        trio.open_nursery() as nursery,
    ):
        member = Member(soak, client, figures)
        for topic in soak.topics():
            await member.join(topic, nursery)
        task_status.started(member)
        await member.send(nursery)
        member.sent_all.set()
        await soak.finished.wait()
        nursery.cancel_scope.cancel()


def _hidden_broadcast_frame(topic: str) -> bytes:
    """A server frame with RSV1 set, whose payload hides a whole broadcast frame."""
    message = orjson.dumps(
        {
            "event": "broadcast",
            "payload": {"event": "msg", "payload": {"c": SMUGGLER, "n": 1}, "type": "broadcast"},
            "ref": None,
            "topic": f"realtime:{topic}",
        }
    )
    hidden = _frame_head(0x81, len(message)) + message
    payload = b"pad!" + hidden
    return _frame_head(0xC1, len(payload)) + payload  # FIN, RSV1, text


def _frame_head(first: int, length: int) -> bytes:
    if length < 126:
        return bytes([first, length])
    if length < 2**16:
        return bytes([first, 126]) + length.to_bytes(2, "big")
    return bytes([first, 127]) + length.to_bytes(8, "big")


def _frame_end(data: bytes | bytearray, pos: int) -> int | None:
    """Where the (unmasked, server) frame starting at ``pos`` ends, if it is all in ``data``."""
    if len(data) - pos < 2:
        return None
    length = data[pos + 1] & 0x7F
    start = pos + 2
    if length == 126:
        start = pos + 4
        length = int.from_bytes(data[pos + 2 : start], "big")
    elif length == 127:
        start = pos + 10
        length = int.from_bytes(data[pos + 2 : start], "big")
    end = start + length
    return end if start <= len(data) and end <= len(data) else None


class ProxiedConnection:
    """One client's connection through the proxy, with the byte-stream faults it can suffer."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.rechunk_until = 0.0
        self.inject: list[bytes] = []  # frames to write at the next frame boundary
        self.closed = False


class FaultProxy:
    """A loopback TCP proxy in front of the local server that can corrupt the server's bytes.

    Server-to-client bytes are forwarded whole frames at a time (after the HTTP response), so
    a frame can be injected between two of them; the client-to-server side is copied as is.
    """

    def __init__(self, target_port: int, rng: random.Random) -> None:
        self.target_port = target_port
        self.rng = rng
        self.connections: list[ProxiedConnection] = []
        self.port = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        connection = ProxiedConnection(self.rng)
        try:
            server = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        except OSError:
            await client.aclose()
            return
        self.connections.append(connection)
        try:
            async with client, server, trio.open_nursery() as nursery:
                nursery.start_soon(self._copy, client, server, nursery.cancel_scope)
                await self._frames(server, client, connection)
                nursery.cancel_scope.cancel()
        finally:
            connection.closed = True
            self.connections.remove(connection)

    async def _copy(
        self, source: trio.SocketStream, sink: trio.SocketStream, scope: trio.CancelScope
    ) -> None:
        try:
            while data := await source.receive_some(65536):
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        scope.cancel()

    async def _frames(
        self, source: trio.SocketStream, sink: trio.SocketStream, connection: ProxiedConnection
    ) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await self._forward_frames(source, sink, connection)

    async def _forward_frames(
        self, source: trio.SocketStream, sink: trio.SocketStream, connection: ProxiedConnection
    ) -> None:
        buffer = bytearray()
        head_done = False
        while data := await source.receive_some(65536):
            buffer += data
            if not head_done:
                head_end = buffer.find(b"\r\n\r\n")
                if head_end < 0:
                    continue
                head_done = True
                await sink.send_all(bytes(buffer[: head_end + 4]))
                del buffer[: head_end + 4]
            pos = 0
            while (frame_end := _frame_end(buffer, pos)) is not None:
                pos = frame_end
            if pos:
                await self._write(sink, bytes(buffer[:pos]), connection)
                del buffer[:pos]
            while connection.inject:
                frame = connection.inject.pop(0)
                cut = frame.index(b"pad!") + 4  # the second write starts with the hidden frame
                await sink.send_all(frame[:cut])
                await trio.sleep(0.05)  # so that the client reads the two halves apart
                await sink.send_all(frame[cut:])

    async def _write(
        self, sink: trio.SocketStream, data: bytes, connection: ProxiedConnection
    ) -> None:
        if trio.current_time() >= connection.rechunk_until:
            await sink.send_all(data)
            return
        rng = connection.rng
        pos = 0
        while pos < len(data):
            size = rng.randint(1, 64)
            await sink.send_all(data[pos : pos + size])
            pos += size
            if rng.random() < 0.1:
                await trio.sleep(0.001)


async def inject_faults(soak: Soak, server: RealtimeServer, proxy: FaultProxy) -> None:
    """Every ``fault_interval`` seconds on average, one random fault on one connection."""
    rng = soak.rng
    while True:
        await trio.sleep(rng.expovariate(1.0 / soak.fault_interval))
        connections = server.connections
        if not connections:
            continue
        target = rng.choice(connections)
        fault = rng.choice(FAULTS)
        if fault in ("rsv-frame", "rechunk"):
            proxied = [c for c in proxy.connections if not c.closed]
            if not proxied:
                continue
            soak.faults[fault] += 1
            victim = rng.choice(proxied)
            if fault == "rsv-frame":
                victim.inject.append(_hidden_broadcast_frame(rng.choice(soak.topics())))
            else:
                victim.rechunk_until = trio.current_time() + rng.uniform(1.0, 5.0)
            continue
        soak.faults[fault] += 1
        if fault == "drop":
            await server.drop_connections(connection=target)
        elif fault.startswith("close-"):
            await server.close_connections(int(fault[-4:]), "soak", connection=target)
        elif fault == "request-disconnect-1012":
            await server.request_disconnect(connection=target)
        elif fault == "phx-error":
            await server.push_error(rng.choice(soak.topics()), connection=target)
        elif fault == "token-expired":
            topic = rng.choice(soak.topics())
            await server.system_close(topic, "Token has expired 0 seconds ago", connection=target)
        elif fault == "delay-replies":
            target.reply_delay = rng.uniform(0.1, 1.0)
            await trio.sleep(rng.uniform(0.5, 2.0))
            target.reply_delay = None
        elif fault == "stop-heartbeats":
            target.answer_heartbeats = False  # the client drops it within two intervals
        else:
            for junk in JUNK:
                await server.send_raw(junk, connection=target)


async def soak_run(soak: Soak) -> dict[str, Any]:
    async with serve_realtime(idle_timeout=None) as server, trio.open_nursery() as proxying:
        proxy = FaultProxy(server.port, soak.rng)
        await proxying.start(proxy.run)
        result = await _soak_through(soak, server, proxy)
        proxying.cancel_scope.cancel()
    return result


async def _soak_through(soak: Soak, server: RealtimeServer, proxy: FaultProxy) -> dict[str, Any]:
    members: list[Member] = []
    url = f"http://127.0.0.1:{proxy.port}"
    async with trio.open_nursery() as nursery:
        for index in range(soak.clients):
            members.append(await nursery.start(run_member, soak, server, url, index))
        samples = [_sample()]
        started = time.monotonic()

        async def sample() -> None:
            while True:
                await trio.sleep(soak.duration / 10)
                samples.append(_sample())

        with trio.move_on_after(soak.duration):
            async with trio.open_nursery() as faults:
                faults.start_soon(sample)
                await inject_faults(soak, server, proxy)
        # Wind down: stop sending and let every push finish (each is bounded by the client
        # timeout); lift the faults that persist; let everyone reconnect, rejoin and settle.
        soak.stop_sending.set()
        for member in members:
            await member.sent_all.wait()
        for connection in server.connections:
            connection.reply_delay = None
            connection.answer_heartbeats = None
        for proxied in proxy.connections:
            proxied.rechunk_until = 0.0
        # A heartbeat already left unanswered still ends its connection at the next tick.
        await trio.sleep(2.5 * soak.heartbeat_interval)
        with trio.move_on_after(30):
            for member in members:
                await member.client.wait_connected()
            for topic in soak.topics():
                await server.wait_until_joined(topic, soak.clients)
            await trio.sleep(1.0)
        elapsed = time.monotonic() - started
        for member in members:
            member.finish(server)
        samples.append(_sample())
        soak.finished.set()
    return report(soak, elapsed, samples)


def _open_fds() -> int:
    """How many file descriptors this process has open (Linux ``/proc``; -1 elsewhere)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


def _task_count() -> int:
    """How many trio tasks exist in this run."""
    root = trio.lowlevel.current_root_task()
    stack = [root] if root is not None else []
    count = 0
    while stack:
        task = stack.pop()
        count += 1
        for child_nursery in task.child_nurseries:
            stack.extend(child_nursery.child_tasks)
    return count


def _sample() -> tuple[int, int, int]:
    """RSS (KiB), open file descriptors and trio tasks, now."""
    return rss_kib(), _open_fds(), _task_count()


def report(soak: Soak, elapsed: float, samples: list[tuple[int, int, int]]) -> dict[str, Any]:
    """The run's figures; ``samples`` holds (RSS KiB, fds, tasks) from start to end."""
    rss = [sample[0] for sample in samples]
    fds = [sample[1] for sample in samples]
    tasks = [sample[2] for sample in samples]
    totals: Counter[str] = Counter()
    raised: Counter[str] = Counter()
    for figures in soak.figures:
        totals.update(
            started=figures.started,
            acked=figures.acked,
            received=figures.received,
            duplicates=figures.duplicates,
            smuggled=figures.smuggled,
            acked_not_echoed=figures.acked_not_echoed,
            reconnects=figures.reconnects,
        )
        raised.update(figures.raised)
    lost = totals["started"] - totals["acked"] - sum(raised.values())
    return {
        "duration_s": round(elapsed, 1),
        "clients": [
            {
                "name": f.name,
                "transport": f.transport,
                "vsn": f.vsn,
                "sent": f.started,
                "acked": f.acked,
                "raised": dict(f.raised),
                "received": f.received,
                "reconnects": f.reconnects,
                "rejoins_after_close": f.rejoins_after_close,
                "rejoin_errors": dict(f.rejoin_errors),
                "presence_converged": f.presence_converged,
                "presence_events": f.presence_events,
            }
            for f in soak.figures
        ],
        "sent": totals["started"],
        "acked": totals["acked"],
        "raised": dict(raised),
        "lost": lost,
        "received": totals["received"],
        "duplicates": totals["duplicates"],
        "smuggled": totals["smuggled"],
        "acked_not_echoed": totals["acked_not_echoed"],
        "reconnects": totals["reconnects"],
        "faults": dict(soak.faults),
        "presence_converged": all(f.presence_converged for f in soak.figures),
        "rss_start_kib": rss[0],
        "rss_mid_kib": rss[len(rss) // 2],
        "rss_end_kib": rss[-1],
        "rss_max_kib": max(rss),
        "fds_start": fds[0],
        "fds_mid": fds[len(fds) // 2],
        "fds_end": fds[-1],
        "tasks_start": tasks[0],
        "tasks_mid": tasks[len(tasks) // 2],
        "tasks_end": tasks[-1],
    }


def broken_promises(result: dict[str, Any]) -> list[str]:
    broken = []
    if result["lost"]:
        broken.append(f"{result['lost']} acked push(es) neither acknowledged nor raised")
    if result["duplicates"]:
        broken.append(f"{result['duplicates']} message(s) received twice")
    if result["smuggled"]:
        broken.append(f"{result['smuggled']} message(s) hidden in a bad frame delivered")
    if result["acked_not_echoed"]:
        broken.append(f"{result['acked_not_echoed']} acknowledged push(es) never came back")
    if not result["presence_converged"]:
        broken.append("presence did not converge to the server's state")
    return broken


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds (%(default)s)")
    parser.add_argument("--clients", type=int, default=4, help="clients (%(default)s)")
    parser.add_argument("--channels", type=int, default=3, help="channels each (%(default)s)")
    parser.add_argument("--rate", type=float, default=100.0, help="pushes/s each (%(default)s)")
    parser.add_argument(
        "--fault-interval", type=float, default=2.0, help="mean seconds between faults"
    )
    parser.add_argument("--heartbeat-interval", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=None, help="for a reproducible fault plan")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    soak = Soak(
        duration=args.duration,
        clients=args.clients,
        channels=args.channels,
        rate=args.rate,
        fault_interval=args.fault_interval,
        heartbeat_interval=args.heartbeat_interval,
        rng=random.Random(seed),
    )
    result = {"seed": seed, **trio.run(soak_run, soak)}
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(result, out, indent=2)
    broken = broken_promises(result)
    for promise in broken:
        print(f"BROKEN: {promise}", file=sys.stderr)
    sys.exit(1 if broken else 0)


if __name__ == "__main__":
    main()
