"""Memory: a stalled consumer under a large flood, and reconnect cycles.

* **Stalled consumer.** The client joins ``realtime:flood:<n>:0`` with one broadcast
  subscription (default buffer of 4,096, default overflow policy ``"error"``) that it never
  reads, while the peer sends ``n`` (1,000,000 in full mode) messages at full speed. RSS is
  sampled every 100 ms until every message has been either buffered or dropped. RSS must stay
  flat: bounded by the subscription buffer, whatever ``n`` is. Heartbeats (every second here)
  must keep being answered, so the connection is not lost.
* **Reconnect cycles.** The client joins ``realtime:drop:<ms>``: the peer answers the join and
  then drops the TCP connection, so the client reconnects (policy ``lambda attempt: 0.01``),
  rejoins, and is dropped again. RSS and the number of live Python objects (``gc``) are taken
  after a warm-up of 10 cycles and again 100 cycles later; neither may grow.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable, Sequence

import trio

from ._common import JSON, WorkerError, emit, fmt, module_main, pin, rss_kib, run_worker, table


async def stalled_consumer(port: int, *, n: int, vsn: str, transport: str) -> JSON:
    """Flood ``n`` messages into a subscription nobody reads; sample RSS."""
    from trio_realtime import HeartbeatEvent, open_realtime
    from trio_realtime.protocol import check_vsn

    samples: list[tuple[float, int]] = []
    heartbeats = 0
    async with (
        open_realtime(
            f"http://127.0.0.1:{port}",
            apikey="bench",
            vsn=check_vsn(vsn),
            transport=transport,
            heartbeat_interval=1.0,
        ) as client,
        trio.open_nursery() as nursery,
    ):
        events = client.connection_events(overflow="drop_oldest")

        async def count_heartbeats() -> None:
            nonlocal heartbeats
            async for event in events:
                if isinstance(event, HeartbeatEvent) and event.status == "ok":
                    heartbeats += 1

        nursery.start_soon(count_heartbeats)
        rss_before = rss_kib()
        channel = client.channel(f"flood:{n}:0")
        sub = channel.broadcasts("msg")  # never read
        await channel.join()
        rss_joined = rss_kib()
        t0 = time.perf_counter()
        while True:
            stats = sub.statistics()
            samples.append((time.perf_counter() - t0, rss_kib()))
            if stats.delivered + stats.dropped >= n:
                break
            await trio.sleep(0.1)
        seconds = time.perf_counter() - t0
        await trio.sleep(2.5)  # let at least two more heartbeats go round
        final = sub.statistics()
        client_stats = client.statistics()
        nursery.cancel_scope.cancel()
    values = [rss for _, rss in samples]
    return {
        "n": n,
        "seconds": seconds,
        "rss_before_kib": rss_before,
        "rss_joined_kib": rss_joined,
        "rss_max_kib": max(values),
        "rss_end_kib": values[-1],
        "rss_growth_kib": max(values) - rss_joined,
        "rss_samples": samples[:: max(1, len(samples) // 50)],
        "buffered": final.buffered,
        "buffer": final.buffer,
        "delivered": final.delivered,
        "dropped": final.dropped,
        "heartbeats_ok": heartbeats,
        "reconnects": client_stats.reconnects,
    }


async def reconnect_cycles(
    port: int, *, cycles: int, warmup: int, vsn: str, transport: str, drop_ms: int
) -> JSON:
    """Let the peer drop the connection ``warmup + cycles`` times; compare RSS and objects."""
    from trio_realtime import Connected, open_realtime
    from trio_realtime.protocol import check_vsn

    marks: dict[str, JSON] = {}
    connects = 0
    t0 = time.perf_counter()
    async with open_realtime(
        f"http://127.0.0.1:{port}",
        apikey="bench",
        vsn=check_vsn(vsn),
        transport=transport,
        reconnect=lambda attempt: 0.01,
    ) as client:
        events = client.connection_events(overflow="drop_oldest")
        channel = client.channel(f"drop:{drop_ms}")
        sub = channel.broadcasts()  # kept across reconnects, as an application would
        await channel.join()
        async for event in events:
            if not isinstance(event, Connected):
                continue
            connects += 1
            if connects in (warmup, warmup + cycles):
                gc.collect()
                marks[str(connects)] = {"rss_kib": rss_kib(), "objects": len(gc.get_objects())}
            if connects >= warmup + cycles:
                break
        stats = client.statistics()
        alive = not sub.statistics().closed
    seconds = time.perf_counter() - t0
    start, end = marks[str(warmup)], marks[str(warmup + cycles)]
    return {
        "cycles": cycles,
        "seconds": seconds,
        "rss_start_kib": start["rss_kib"],
        "rss_end_kib": end["rss_kib"],
        "rss_growth_kib": end["rss_kib"] - start["rss_kib"],
        "objects_start": start["objects"],
        "objects_end": end["objects"],
        "objects_growth": end["objects"] - start["objects"],
        "reconnects": stats.reconnects,
        "subscription_alive": alive,
    }


def measure(
    port: int,
    *,
    flood_n: int,
    cycles: int,
    cpu: int | None,
    log: Callable[[str], None],
) -> JSON:
    """Run both memory measurements once each (they are not timing measurements)."""
    out: JSON = {"errors": {}}
    base = ["-m", "benchmarks.memory", "worker", "--port", str(port)]
    jobs = {
        "stalled_consumer": [*base, "stalled", "--n", str(flood_n)],
        "reconnect_cycles": [*base, "reconnect", "--cycles", str(cycles)],
    }
    for name, args in jobs.items():
        try:
            out[name] = run_worker(args, cpu=cpu, timeout=300.0)
        except WorkerError as exc:
            out["errors"][name] = str(exc)
            log(f"  ! {name}: {exc}")
        log(f"  memory: {name} done")
    return out


def report(results: JSON) -> str:
    """Two small tables."""
    parts = []
    stalled = results.get("stalled_consumer")
    if stalled:
        rows = [
            [
                f"{stalled['n']:,} msgs into an unread subscription",
                fmt(stalled["rss_joined_kib"] / 1024, ".1f"),
                fmt(stalled["rss_max_kib"] / 1024, ".1f"),
                fmt(stalled["rss_growth_kib"] / 1024, ".1f"),
                f"{stalled['buffered']:,}/{stalled['buffer']:,}",
                f"{stalled['dropped']:,}",
                str(stalled["heartbeats_ok"]),
                str(stalled["reconnects"]),
            ]
        ]
        headers = ["stalled consumer", "RSS joined MiB", "RSS max MiB", "growth MiB"]
        headers += ["buffered", "dropped", "heartbeats ok", "reconnects"]
        parts.append(table(headers, rows))
    cycles = results.get("reconnect_cycles")
    if cycles:
        rows = [
            [
                f"{cycles['cycles']} reconnect cycles (peer drops TCP)",
                fmt(cycles["rss_start_kib"] / 1024, ".1f"),
                fmt(cycles["rss_end_kib"] / 1024, ".1f"),
                fmt(cycles["rss_growth_kib"], ",.0f"),
                f"{cycles['objects_growth']:+,}",
                fmt(cycles["seconds"], ".1f"),
                "yes" if cycles["subscription_alive"] else "NO",
            ]
        ]
        headers = ["reconnects", "RSS start MiB", "RSS end MiB", "growth KiB", "objects"]
        headers += ["seconds", "subscription alive"]
        parts.append(table(headers, rows))
    return "\n\n".join(parts)


def worker_main(argv: Sequence[str]) -> None:
    """``worker --port P stalled --n N`` or ``worker --port P reconnect --cycles C``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("what", choices=["stalled", "reconnect"])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--drop-ms", type=int, default=5)
    parser.add_argument("--vsn", default="1.0.0")
    parser.add_argument("--transport", default="websockets")
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=240.0)
    args = parser.parse_args(argv)
    pin(args.cpu)

    async def run() -> JSON:
        with trio.fail_after(args.timeout):
            if args.what == "stalled":
                return await stalled_consumer(
                    args.port, n=args.n, vsn=args.vsn, transport=args.transport
                )
            return await reconnect_cycles(
                args.port,
                cycles=args.cycles,
                warmup=args.warmup,
                vsn=args.vsn,
                transport=args.transport,
                drop_ms=args.drop_ms,
            )

    emit(trio.run(run))


def main(argv: Sequence[str] | None = None) -> None:
    """Run the memory measurements alone (see ``python -m benchmarks``)."""
    module_main("memory", worker_main, argv)


if __name__ == "__main__":
    main()
