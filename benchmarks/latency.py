"""Broadcast round-trip latency: self-broadcast with ack, idle and under a background flood.

The client joins ``realtime:echo`` with ``broadcast_self`` and ``broadcast_ack``, then sends
``m`` broadcasts one after the other. A round trip is the time from the start of
``send_broadcast`` until both the server's ack has returned (``send_broadcast`` returns) and the
echoed message has been received from the subscription by user code. The first ``warmup``
round trips are not counted.

Under flood, the same connection has also joined ``realtime:flood:0:<rate>``, on which the peer
sends ``rate`` messages per second (in 1 ms bursts) for as long as the test runs, and a second
task consumes them with ``async for``. The measured background rate is reported to show the
flood was really there.

realtime-py runs the same protocol with its callbacks (``channel.push`` + ``push.receive("ok")``
for the ack, an ``on_broadcast`` callback for the echo).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from functools import partial

import trio

from ._common import (
    JSON,
    REALTIME_PY_WORKER,
    emit,
    fmt,
    interleaved,
    module_main,
    percentile,
    pin,
    run_trio_worker,
    run_worker,
    summary,
    table,
    worker_parser,
)


async def trio_realtime_latency(
    port: int, *, m: int, warmup: int, vsn: str, transport: str, flood_rate: float
) -> JSON:
    """Run the round trips with trio_realtime; return percentiles in µs."""
    from trio_realtime import open_realtime

    samples: list[float] = []
    background = 0
    async with (
        open_realtime(
            f"http://127.0.0.1:{port}", apikey="bench", vsn=vsn, transport=transport
        ) as client,
        trio.open_nursery() as nursery,
    ):
        if flood_rate:
            flood = client.channel(f"flood:0:{int(flood_rate)}")
            flood_sub = flood.broadcasts("msg")
            await flood.join()

            async def consume() -> None:
                nonlocal background
                async for _message in flood_sub:
                    background += 1

            nursery.start_soon(consume)
        echo = client.channel("echo", broadcast_self=True, broadcast_ack=True)
        pings = echo.broadcasts("ping")
        async with echo:
            background_start = background
            t_start = time.perf_counter()
            for i in range(warmup + m):
                t0 = time.perf_counter()
                await echo.send_broadcast("ping", {"i": i})
                message = await pings.receive()
                elapsed = time.perf_counter() - t0
                if message.payload != {"i": i}:
                    raise RuntimeError(f"echo {i} came back as {message.payload!r}")
                if i >= warmup:
                    samples.append(elapsed)
            wall = time.perf_counter() - t_start
            received = background - background_start
        nursery.cancel_scope.cancel()
    return _percentiles(samples, received / wall if flood_rate else 0.0)


def raw_floor_latency(port: int, *, m: int, warmup: int, flood_rate: float) -> JSON:
    """The floor: a blocking socket plus the websockets sans-I/O protocol, no runtime at all.

    Same frames and same peer, so what is left is the peer's and the kernel's share.
    """
    import socket

    import orjson
    from websockets.client import ClientProtocol
    from websockets.frames import Frame as WSFrame
    from websockets.uri import parse_uri

    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/socket/websocket?vsn=1.0.0"))
    protocol.send_request(protocol.connect())
    sock.sendall(b"".join(protocol.data_to_send()))
    while not protocol.events_received():
        protocol.receive_data(sock.recv(65536))

    def send(obj: object) -> None:
        protocol.send_text(orjson.dumps(obj))
        sock.sendall(b"".join(protocol.data_to_send()))

    background = 0

    def wait_for(wanted: int) -> None:
        nonlocal background
        got = 0
        while got < wanted:
            protocol.receive_data(sock.recv(262144))
            for event in protocol.events_received():
                if type(event) is WSFrame:
                    message = orjson.loads(event.data)
                    if message["topic"] == "realtime:echo":
                        got += 1
                    else:
                        background += 1

    config = {"config": {"broadcast": {"self": True, "ack": True}}}
    if flood_rate:
        topic = f"realtime:flood:0:{int(flood_rate)}"
        send({"topic": topic, "event": "phx_join", "payload": {}, "ref": "f", "join_ref": "f"})
    send({"topic": "realtime:echo", "event": "phx_join", "payload": config, "ref": "1"})
    wait_for(1)
    samples: list[float] = []
    background_start = background
    t_start = time.perf_counter()
    for i in range(warmup + m):
        t0 = time.perf_counter()
        inner = {"type": "broadcast", "event": "ping", "payload": {"i": i}}
        send(
            {
                "topic": "realtime:echo",
                "event": "broadcast",
                "payload": inner,
                "ref": str(i + 2),
                "join_ref": "1",
            }
        )
        wait_for(2)  # the echo and the ack
        if i >= warmup:
            samples.append(time.perf_counter() - t0)
    wall = time.perf_counter() - t_start
    sock.close()
    return _percentiles(samples, (background - background_start) / wall if flood_rate else 0.0)


def _percentiles(samples: list[float], background_rate: float) -> JSON:
    samples.sort()
    return {
        "n": len(samples),
        "p50_us": percentile(samples, 0.50) * 1e6,
        "p99_us": percentile(samples, 0.99) * 1e6,
        "max_us": samples[-1] * 1e6,
        "mean_us": sum(samples) / len(samples) * 1e6,
        "background_rate": background_rate,
    }


CASES: tuple[tuple[str, str, str, str], ...] = (
    # (name, client, vsn, transport)
    ("floor: blocking socket + sans-I/O, no runtime", "raw", "1.0.0", ""),
    ("trio_realtime websockets 1.0.0", "trio_realtime", "1.0.0", "websockets"),
    ("trio_realtime websockets 2.0.0", "trio_realtime", "2.0.0", "websockets"),
    ("trio_realtime trio-websocket 1.0.0", "trio_realtime", "1.0.0", "trio-websocket"),
    ("realtime-py 2.x (1.0.0)", "realtime-py", "1.0.0", ""),
)


def measure(
    port: int,
    *,
    m: int,
    repeats: int,
    flood_rate: float,
    cpu: int | None,
    realtime_py_python: str | None,
    log: Callable[[str], None],
) -> JSON:
    """Run every case idle and under flood, ``repeats`` times, interleaved."""
    keys: dict[str, tuple[str, str, str, float]] = {}
    for name, client, vsn, transport in CASES:
        if client == "realtime-py" and realtime_py_python is None:
            continue
        for rate in (0.0, flood_rate):
            key = f"{name} | {'flood ' + format(rate, ',.0f') + '/s' if rate else 'idle'}"
            keys[key] = (client, vsn, transport, rate)

    def run(key: str) -> JSON:
        client, vsn, transport, rate = keys[key]
        if client == "realtime-py":
            assert realtime_py_python is not None
            python = realtime_py_python
            args = [str(REALTIME_PY_WORKER), "latency", "--port", str(port)]
        else:
            python = sys.executable
            args = ["-m", "benchmarks.latency", "worker", "--port", str(port)]
            args += ["--vsn", vsn, "--transport", transport or "raw"]
        args += ["--m", str(m), "--flood-rate", str(rate)]
        return run_worker(args, python=python, cpu=cpu)

    runs, errors = interleaved(list(keys), repeats, run, label="latency", log=log)
    out: JSON = {"m": m, "repeats": repeats, "flood_rate": flood_rate, "cases": {}}
    out["errors"] = errors
    for key, results in runs.items():
        out["cases"][key] = {
            field: summary([r[field] for r in results])
            for field in ("p50_us", "p99_us", "max_us", "mean_us", "background_rate")
        }
    return out


def report(results: JSON) -> str:
    """The latency table (medians over repeats, with min-max of the p99)."""
    rows = []
    baseline: dict[str, float] = {}
    for key, row in results["cases"].items():
        if key.startswith("realtime-py"):
            baseline[key.split(" | ")[1]] = row["p99_us"]["median"]
    for key, row in results["cases"].items():
        name, condition = key.split(" | ")
        p99 = row["p99_us"]
        base = baseline.get(condition)
        rows.append(
            [
                f"{name}, {condition}",
                fmt(row["p50_us"]["median"]),
                fmt(p99["median"]),
                f"{fmt(p99['min'])}-{fmt(p99['max'])}",
                fmt(row["max_us"]["median"]),
                f"{base / p99['median']:.1f}x" if base and p99["median"] else "-",
                fmt(row["background_rate"]["median"]),
            ]
        )
    headers = ["client, condition", "p50 µs", "p99 µs", "p99 range", "max µs", "rt-py/ours p99"]
    headers.append("bg msg/s")
    return table(headers, rows)


def worker_main(argv: Sequence[str]) -> None:
    """``worker --port P [--m M] [--vsn V] [--transport T] [--flood-rate R]``."""
    parser = worker_parser(timeout=150.0)
    parser.add_argument("--m", type=int, default=5_000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--flood-rate", type=float, default=0.0)
    args = parser.parse_args(argv)
    pin(args.cpu)
    if args.transport == "raw":
        emit(raw_floor_latency(args.port, m=args.m, warmup=args.warmup, flood_rate=args.flood_rate))
        return
    run_trio_worker(
        partial(
            trio_realtime_latency,
            args.port,
            m=args.m,
            warmup=args.warmup,
            vsn=args.vsn,
            transport=args.transport,
            flood_rate=args.flood_rate,
        ),
        timeout=args.timeout,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Run the latency measurement alone (see ``python -m benchmarks`` for the suite)."""
    module_main("latency", worker_main, argv)


if __name__ == "__main__":
    main()
