"""The realtime-py side of the benchmarks; runs only inside realtime-py's own virtualenv.

realtime-py (``realtime`` 2.x on PyPI) is never a dependency of this project: the suite creates
``benchmarks/.venv-realtime-py`` and runs this script with that interpreter, against the same
peer as trio_realtime, in the same run. It imports nothing from this project (trio_realtime is
not installed there), and is left out of the type check for that reason.

    python realtime_py_worker.py throughput --port P --n N [--cpu C]
    python realtime_py_worker.py latency --port P --m M [--flood-rate R] [--cpu C]
    python realtime_py_worker.py channels --port P --channels K --n N [--cpu C]
    python realtime_py_worker.py sends --port P --n N [--senders S] [--ack] [--cpu C]
    python realtime_py_worker.py connections --port P --count K [--idle-seconds W] [--cpu C]

Each prints one JSON object as its last line, in the shape the trio_realtime workers use.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import logging
import os
import resource
import sys
import time
from typing import Any

from realtime import AsyncRealtimeClient
from realtime import __version__ as realtime_version


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def _settle(future: asyncio.Future[None], *_args: Any) -> None:
    if not future.done():
        future.set_result(None)


def _config(self_: bool, ack: bool) -> dict[str, Any]:
    return {
        "config": {
            "broadcast": {"self": self_, "ack": ack},
            "presence": {"key": "", "enabled": False},
            "private": False,
        }
    }


async def _client(port: int, hb_interval: int = 25) -> Any:
    client = AsyncRealtimeClient(
        f"ws://127.0.0.1:{port}/socket",
        token="bench",
        auto_reconnect=False,
        hb_interval=hb_interval,
    )
    await client.connect()
    return client


async def throughput(port: int, n: int) -> dict[str, Any]:
    """Count ``n`` flood messages in an ``on_broadcast`` callback."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    count = 0

    def on_message(_payload: Any) -> None:
        nonlocal count
        count += 1
        if count >= n and not done.done():
            done.set_result(None)

    client = await _client(port)
    channel = client.channel(f"flood:{n}:0")
    channel.on_broadcast("msg", on_message)
    t0, c0 = time.perf_counter(), time.process_time()
    await channel.subscribe()
    await done
    t1, c1 = time.perf_counter(), time.process_time()
    await client.close()
    return {
        "messages": count,
        "seconds": t1 - t0,
        "rate": count / (t1 - t0),
        "cpu_us": (c1 - c0) / count * 1e6,
        "version": realtime_version,
    }


async def latency(port: int, m: int, warmup: int, flood_rate: float) -> dict[str, Any]:
    """Round trips of self-broadcasts with ack: send, then wait for the echo and the ack."""
    loop = asyncio.get_running_loop()
    client = await _client(port)
    background = 0

    def on_flood(_payload: Any) -> None:
        nonlocal background
        background += 1

    if flood_rate:
        flood = client.channel(f"flood:0:{int(flood_rate)}")
        flood.on_broadcast("msg", on_flood)
        await flood.subscribe()
    echo_waiter: list[asyncio.Future[None]] = []

    def on_echo(_payload: Any) -> None:
        if echo_waiter and not echo_waiter[0].done():
            echo_waiter[0].set_result(None)

    channel = client.channel("echo", _config(True, True))
    channel.on_broadcast("ping", on_echo)
    await channel.subscribe()
    samples: list[float] = []
    background_start = background
    t_start = time.perf_counter()
    for i in range(warmup + m):
        echo: asyncio.Future[None] = loop.create_future()
        ack: asyncio.Future[None] = loop.create_future()
        echo_waiter[:] = [echo]
        t0 = time.perf_counter()
        push = await channel.push(
            "broadcast", {"type": "broadcast", "event": "ping", "payload": {"i": i}}
        )
        push.receive("ok", functools.partial(_settle, ack))
        await asyncio.wait_for(asyncio.gather(echo, ack), 10)
        if i >= warmup:
            samples.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - t_start
    received = background - background_start
    await client.close()
    samples.sort()
    return {
        "n": len(samples),
        "p50_us": _percentile(samples, 0.50) * 1e6,
        "p99_us": _percentile(samples, 0.99) * 1e6,
        "max_us": samples[-1] * 1e6,
        "mean_us": sum(samples) / len(samples) * 1e6,
        "background_rate": received / elapsed if flood_rate else 0.0,
    }


async def channels(port: int, k: int, n: int) -> dict[str, Any]:
    """Join ``k`` channels (one of them flooded): join time, RSS per channel, throughput."""
    client = await _client(port)
    rss0 = _rss_kib()
    idle = [client.channel(f"idle-{i}") for i in range(k - 1)]
    for channel in idle:
        channel.on_broadcast("msg", lambda _payload: None)
    t0 = time.perf_counter()
    await asyncio.gather(*(channel.subscribe() for channel in idle))
    join_s = time.perf_counter() - t0
    rss1 = _rss_kib()
    result = await _flood_on(client, n)
    await client.close()
    return {
        "channels": k,
        "join_s": join_s,
        "rss_per_channel_kib": (rss1 - rss0) / (k - 1) if k > 1 else None,
        **result,
    }


async def _flood_on(client: Any, n: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    count = 0

    def on_message(_payload: Any) -> None:
        nonlocal count
        count += 1
        if count >= n and not done.done():
            done.set_result(None)

    channel = client.channel(f"flood:{n}:0:k")
    channel.on_broadcast("msg", on_message)
    t0, c0 = time.perf_counter(), time.process_time()
    await channel.subscribe()
    await done
    t1, c1 = time.perf_counter(), time.process_time()
    return {"rate": count / (t1 - t0), "cpu_us": (c1 - c0) / count * 1e6}


def _send_result(sent: int, seconds: float, cpu: float, latencies: list[float]) -> dict[str, Any]:
    latencies.sort()
    return {
        "messages": sent,
        "seconds": seconds,
        "rate": sent / seconds,
        "cpu_us": cpu / sent * 1e6,
        "p50_us": _percentile(latencies, 0.50) * 1e6 if latencies else None,
        "p99_us": _percentile(latencies, 0.99) * 1e6 if latencies else None,
        "version": realtime_version,
    }


async def sends(port: int, n: int, senders: int, ack: bool) -> dict[str, Any]:
    """``n`` broadcasts from ``senders`` tasks; with ``ack``, each awaits the server's ok."""
    loop = asyncio.get_running_loop()
    client = await _client(port)
    channel = client.channel("send", _config(False, ack))
    await channel.subscribe()
    latencies: list[float] = []
    per_sender = n // senders

    async def send_acked(i: int) -> None:
        ok: asyncio.Future[None] = loop.create_future()
        push = await channel.push(
            "broadcast", {"type": "broadcast", "event": "m", "payload": {"n": i, "text": "hello"}}
        )
        push.receive("ok", functools.partial(_settle, ok))
        await asyncio.wait_for(ok, 10)

    async def sender(s: int) -> None:
        for i in range(s * per_sender, (s + 1) * per_sender):
            if ack:
                started = time.perf_counter()
                await send_acked(i)
                latencies.append(time.perf_counter() - started)
            else:
                await channel.send_broadcast("m", {"n": i, "text": "hello"})

    for i in range(min(1000, n // 10)):
        if ack:
            await send_acked(i)
        else:
            await channel.send_broadcast("m", {"n": i, "text": "hello"})
    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(sender(s) for s in range(senders)))
    t1, c1 = time.perf_counter(), time.process_time()
    return _send_result(per_sender * senders, t1 - t0, c1 - c0, latencies)


async def connections(
    port: int, count: int, idle_seconds: float, hb_interval: int, concurrency: int
) -> dict[str, Any]:
    """Open ``count`` clients, join one channel on each, then sit idle: rates, RSS, idle CPU."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, count + 1024)), hard))
    limit = asyncio.Semaphore(concurrency)
    clients: list[Any] = [None] * count
    channels: list[Any] = [None] * count

    async def connect(i: int) -> None:
        async with limit:
            clients[i] = await _client(port, hb_interval)

    async def join(i: int) -> None:
        async with limit:
            channel = clients[i].channel(f"conn-{i}", _config(False, False))
            channel.on_broadcast("msg", lambda _payload: None)
            channels[i] = channel
            await channel.subscribe()

    gc.collect()
    rss0 = _rss_kib()
    t0 = time.perf_counter()
    await asyncio.gather(*(connect(i) for i in range(count)))
    connect_s = time.perf_counter() - t0
    gc.collect()
    rss1 = _rss_kib()
    t1 = time.perf_counter()
    await asyncio.gather(*(join(i) for i in range(count)))
    join_s = time.perf_counter() - t1
    gc.collect()
    rss2 = _rss_kib()
    c0, w0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(idle_seconds)
    c1, w1 = time.process_time(), time.perf_counter()
    return {
        "count": count,
        "connect_s": connect_s,
        "join_s": join_s,
        "connect_rate": count / connect_s,
        "join_rate": count / join_s,
        "connect_join_rate": count / (connect_s + join_s),
        "rss_per_connection_kib": (rss1 - rss0) / count,
        "rss_per_channel_kib": (rss2 - rss1) / count,
        "idle_cpu_pct": (c1 - c0) / (w1 - w0) * 100,
        "rss_kib": rss2,
        "version": realtime_version,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "what", choices=["throughput", "latency", "channels", "sends", "connections"]
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--m", type=int, default=5_000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--flood-rate", type=float, default=0.0)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=150.0)
    parser.add_argument("--senders", type=int, default=1)
    parser.add_argument("--ack", action="store_true")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--heartbeat", type=int, default=15)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    logging.basicConfig(level=logging.CRITICAL)
    if args.what == "throughput":
        job = throughput(args.port, args.n)
    elif args.what == "latency":
        job = latency(args.port, args.m, args.warmup, args.flood_rate)
    elif args.what == "channels":
        job = channels(args.port, args.channels, args.n)
    elif args.what == "sends":
        job = sends(args.port, args.n, args.senders, args.ack)
    else:
        job = connections(
            args.port, args.count, args.idle_seconds, args.heartbeat, args.concurrency
        )

    async def bounded() -> dict[str, Any]:
        result = await asyncio.wait_for(job, args.timeout)
        if args.what == "connections":
            # Thousands of open clients: exit without closing each one (the peer does not
            # mind), as the trio_realtime and realtime-js workers do.
            print(json.dumps(result), flush=True)
            os._exit(0)
        return result

    result = asyncio.run(bounded())
    print(json.dumps(result), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
