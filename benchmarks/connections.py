"""Many connections in one process: connect + join rate, RSS per connection and channel, idle CPU.

One worker process opens ``count`` clients (1,000 and 10,000), 64 connection attempts in
flight at a time, each with a 15 s heartbeat; then joins one channel on each (again 64 at a
time, with one broadcast subscription each, as an application would); then sits idle for
``idle_seconds``. The worker raises its ``RLIMIT_NOFILE`` soft limit towards the hard limit
first (one descriptor per connection), and so does the peer.

Reported: connections/s, joins/s, and connect + join together (``count`` over both phases);
the RSS the connections added, per connection (after ``gc.collect()``), and what the joined
channel added on top, per connection; and the CPU the idle process used, in % of one core,
over the idle window (heartbeats every 15 s on every connection).

Each trio_realtime client is one ``open_realtime`` block. The ``trio_realtime`` row holds
them as the other clients are held, without a task apiece: 64 tasks each enter their share
of the blocks into an ``AsyncExitStack``, one after the other (64 connects, then 64 joins, in
flight). The ``trio_realtime (task each)`` row gives every block a task of its own, the
usual shape of an application with one task per connection; the difference between the rows
is that task's cost. realtime-py holds ``AsyncRealtimeClient`` objects (``hb_interval=15``)
in a list, realtime-js ``RealtimeClient`` objects (``heartbeatIntervalMs: 15000``).
The ceiling row is a bare trio client (TCP, the websockets sans-I/O handshake, a ``phx_join``
and its reply, then nothing), which shows how fast the peer itself accepts and joins.

    python -m benchmarks.connections [--quick] [--repeats 3]
"""

from __future__ import annotations

import contextlib
import gc
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import trio

from ._common import (
    JSON,
    REALTIME_PY_WORKER,
    emit,
    fmt,
    interleaved,
    module_main,
    pin,
    rss_kib,
    run_worker,
    summary,
    table,
    worker_parser,
)
from ._node import NodeRunner

HEARTBEAT = 15
CONCURRENCY = 64
CONNECT_TIMEOUT = 60.0
TASK_EACH = "trio_realtime (task each)"


def raise_file_limit(count: int) -> None:
    """Raise the soft ``RLIMIT_NOFILE`` so that ``count`` sockets fit (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 1024
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if wanted > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


class _Phases:
    """Times and RSS at the phase boundaries, shared by the workers.

    ``gc.collect()`` and the RSS readings happen between the phases, outside their clocks.
    Progress goes to stderr (``connected``, ``joined``, ``idle``), for a profiler to attach.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        gc.collect()
        self.rss0 = rss_kib()
        self.connect_s = self.join_s = 0.0
        self.rss1 = self.rss2 = 0
        self.t0 = time.perf_counter()

    def connected(self) -> None:
        self.connect_s = time.perf_counter() - self.t0
        gc.collect()
        self.rss1 = rss_kib()
        print(f"connected {self.count} in {self.connect_s:.1f} s", file=sys.stderr, flush=True)
        self.t1 = time.perf_counter()

    def joined(self) -> None:
        self.join_s = time.perf_counter() - self.t1
        gc.collect()
        self.rss2 = rss_kib()
        print(f"joined {self.count} in {self.join_s:.1f} s", file=sys.stderr, flush=True)

    async def idle(self, seconds: float) -> JSON:
        print(f"idle for {seconds:.0f} s", file=sys.stderr, flush=True)
        c0, w0 = time.process_time(), time.perf_counter()
        await trio.sleep(seconds)
        c1, w1 = time.process_time(), time.perf_counter()
        count = self.count
        return {
            "count": count,
            "connect_s": self.connect_s,
            "join_s": self.join_s,
            "connect_rate": count / self.connect_s,
            "join_rate": count / self.join_s,
            "connect_join_rate": count / (self.connect_s + self.join_s),
            "rss_per_connection_kib": (self.rss1 - self.rss0) / count,
            "rss_per_channel_kib": (self.rss2 - self.rss1) / count,
            "idle_cpu_pct": (c1 - c0) / (w1 - w0) * 100,
            "rss_kib": self.rss2,
        }


class _Gate:
    """Counts tasks through a phase; ``wait`` returns when all ``count`` have passed."""

    def __init__(self, count: int) -> None:
        self.left = count
        self.done = trio.Event()

    def passed(self) -> None:
        self.left -= 1
        if self.left == 0:
            self.done.set()


async def trio_realtime_connections(
    port: int, *, count: int, idle_seconds: float, vsn: str, transport: str, task_each: bool
) -> JSON:
    """``count`` open_realtime blocks with one joined channel each.

    Held by ``CONCURRENCY`` tasks, each with the blocks of its share entered in an
    ``AsyncExitStack`` one after the other (as an application that keeps many clients without
    a task apiece, like the other clients' lists), or with ``task_each`` one task per block.
    """
    from trio_realtime import RealtimeClient, open_realtime
    from trio_realtime.protocol import check_vsn

    limit = trio.CapacityLimiter(CONCURRENCY)
    connected, joined = _Gate(count), _Gate(count)
    start_joining, stop = trio.Event(), trio.Event()
    subs: list[Any] = []

    def client_block() -> contextlib.AbstractAsyncContextManager[RealtimeClient]:
        return open_realtime(
            f"http://127.0.0.1:{port}",
            apikey="bench",
            vsn=check_vsn(vsn),
            transport=transport,
            heartbeat_interval=HEARTBEAT,
            # 64 handshakes in flight in a process holding thousands of connections: the
            # default 10 s is too short on a loaded machine.
            connect_timeout=CONNECT_TIMEOUT,
        )

    async def join(i: int, client: RealtimeClient) -> None:
        channel = client.channel(f"conn-{i}")
        subs.append(channel.broadcasts("msg"))
        await channel.join()
        joined.passed()

    async def hold(i: int) -> None:
        async with contextlib.AsyncExitStack() as stack:
            async with limit:
                client = await stack.enter_async_context(client_block())
            connected.passed()
            await start_joining.wait()
            async with limit:
                await join(i, client)
            await stop.wait()

    async def hold_share(first: int) -> None:
        async with contextlib.AsyncExitStack() as stack:
            clients = []
            for i in range(first, count, CONCURRENCY):
                clients.append((i, await stack.enter_async_context(client_block())))
                connected.passed()
            await start_joining.wait()
            for i, client in clients:
                await join(i, client)
            await stop.wait()

    phases = _Phases(count)
    async with trio.open_nursery() as nursery:
        if task_each:
            for i in range(count):
                nursery.start_soon(hold, i)
        else:
            for first in range(min(CONCURRENCY, count)):
                nursery.start_soon(hold_share, first)
        await connected.done.wait()
        phases.connected()
        start_joining.set()
        await joined.done.wait()
        phases.joined()
        result = await phases.idle(idle_seconds)
        # Thousands of open clients: exit without closing each one (the peer does not mind).
        emit(result)
        os._exit(0)
    raise AssertionError("unreachable")


async def raw_ceiling_connections(port: int, *, count: int, idle_seconds: float) -> JSON:
    """A bare client per connection: TCP, handshake, one join and its reply; then idle."""
    from websockets.client import ClientProtocol
    from websockets.uri import parse_uri

    limit = trio.CapacityLimiter(CONCURRENCY)
    uri = parse_uri(f"ws://127.0.0.1:{port}/socket/websocket?vsn=1.0.0&apikey=bench")
    streams: list[tuple[trio.SocketStream, ClientProtocol]] = []

    async def receive_one(stream: trio.SocketStream, protocol: ClientProtocol) -> None:
        while not protocol.events_received():
            data = await stream.receive_some(65536)
            if not data:
                raise RuntimeError("the peer closed the connection")
            protocol.receive_data(data)

    async def connect() -> None:
        async with limit:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            protocol = ClientProtocol(uri)
            protocol.send_request(protocol.connect())
            await stream.send_all(b"".join(protocol.data_to_send()))
            await receive_one(stream, protocol)
            streams.append((stream, protocol))

    async def join(i: int, stream: trio.SocketStream, protocol: ClientProtocol) -> None:
        async with limit:
            frame = {"topic": f"realtime:conn-{i}", "event": "phx_join", "payload": {}}
            protocol.send_text(orjson.dumps({**frame, "ref": "1", "join_ref": "1"}))
            await stream.send_all(b"".join(protocol.data_to_send()))
            await receive_one(stream, protocol)

    phases = _Phases(count)
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(connect)
    phases.connected()
    async with trio.open_nursery() as nursery:
        for i, (stream, protocol) in enumerate(streams):
            nursery.start_soon(join, i, stream, protocol)
    phases.joined()
    result = await phases.idle(idle_seconds)
    for stream, _protocol in streams:
        with contextlib.suppress(OSError):
            stream.socket.close()
    return result


@dataclass(frozen=True)
class Case:
    """One row: a client and a number of connections."""

    client: str  # ceiling, trio_realtime, trio_realtime (task each), realtime-py, realtime-js
    count: int

    @property
    def name(self) -> str:
        return f"{self.client}, {self.count:,} connections"


FIELDS = (
    "connect_rate",
    "join_rate",
    "connect_join_rate",
    "rss_per_connection_kib",
    "rss_per_channel_kib",
    "idle_cpu_pct",
)


def measure(
    port: int,
    *,
    counts: Sequence[int],
    idle_seconds: float,
    repeats: int,
    cpu: int | None,
    realtime_py_python: str | None,
    node: NodeRunner | None,
    log: Callable[[str], None],
) -> JSON:
    """Run every case ``repeats`` times, interleaved."""
    clients = ["ceiling", "trio_realtime", TASK_EACH]
    if realtime_py_python is not None:
        clients.append("realtime-py")
    if node is not None:
        clients.append("realtime-js")
    rows = [Case(client, count) for count in counts for client in clients]
    by_name = {case.name: case for case in rows}
    timeout = 120.0 + idle_seconds + max(counts) / 25

    def run(name: str) -> JSON:
        case = by_name[name]
        common = ["--port", str(port), "--count", str(case.count)]
        common += ["--idle-seconds", str(idle_seconds)]
        if case.client == "realtime-js":
            assert node is not None
            args = ["connections", *common, "--heartbeat-ms", str(HEARTBEAT * 1000)]
            return node.run(args, cpu=cpu, timeout=timeout)
        if case.client == "realtime-py":
            assert realtime_py_python is not None
            args = [str(REALTIME_PY_WORKER), "connections", *common]
            args += ["--heartbeat", str(HEARTBEAT), "--timeout", str(timeout)]
            return run_worker(args, python=realtime_py_python, cpu=cpu, timeout=timeout)
        kind = "trio_realtime-task-each" if case.client == TASK_EACH else case.client
        args = ["-m", "benchmarks.connections", "worker", kind, *common]
        return run_worker(args, cpu=cpu, timeout=timeout)

    runs, errors = interleaved(list(by_name), repeats, run, label="connections", log=log)
    out: JSON = {
        "counts": list(counts),
        "idle_seconds": idle_seconds,
        "heartbeat_s": HEARTBEAT,
        "concurrency": CONCURRENCY,
        "repeats": repeats,
        "cases": {},
        "errors": errors,
    }
    for case in rows:
        results = runs[case.name]
        out["cases"][case.name] = {
            "client": case.client,
            "count": case.count,
            "runs": len(results),
            **{field: summary([r[field] for r in results]) for field in FIELDS},
        }
    return out


def report(results: JSON) -> str:
    """The connections table; ratios are to realtime-py's row with the same count."""
    by_name: dict[str, JSON] = results["cases"]
    rows = []
    for name, row in by_name.items():
        base = by_name.get(f"realtime-py, {row['count']:,} connections")

        def ratio(field: str, row: JSON = row, base: JSON | None = base) -> str:
            ours, theirs = row[field]["median"], base[field]["median"] if base else None
            return f"{ours / theirs:.2f}x" if ours and theirs else "-"

        rows.append(
            [
                name,
                fmt(row["connect_rate"]["median"]),
                fmt(row["join_rate"]["median"]),
                fmt(row["connect_join_rate"]["median"]),
                ratio("connect_join_rate"),
                fmt(row["rss_per_connection_kib"]["median"], ".1f"),
                ratio("rss_per_connection_kib"),
                fmt(row["rss_per_channel_kib"]["median"], ".1f"),
                fmt(row["idle_cpu_pct"]["median"], ".2f"),
                ratio("idle_cpu_pct"),
            ]
        )
    headers = ["client, connections", "conn/s", "join/s", "conn+join/s", "vs rt-py"]
    headers += ["KiB/conn", "vs rt-py", "KiB/channel", "idle CPU %", "vs rt-py"]
    return table(headers, rows)


def worker_main(argv: Sequence[str]) -> None:
    """``worker KIND --port P --count K [--idle-seconds W] [--vsn V] [--transport T]``."""
    parser = worker_parser(kinds=["trio_realtime", "trio_realtime-task-each", "ceiling"])
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    pin(args.cpu)
    raise_file_limit(args.count)

    async def run() -> JSON:
        if args.kind == "ceiling":
            return await raw_ceiling_connections(
                args.port, count=args.count, idle_seconds=args.idle_seconds
            )
        return await trio_realtime_connections(
            args.port,
            count=args.count,
            idle_seconds=args.idle_seconds,
            vsn=args.vsn,
            transport=args.transport,
            task_each=args.kind == "trio_realtime-task-each",
        )

    emit(trio.run(run))
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the connections measurement alone (see ``python -m benchmarks`` for the suite)."""
    module_main("connections", worker_main, argv)


if __name__ == "__main__":
    main()
