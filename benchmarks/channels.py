"""Channel scaling: flood throughput with 1, 100 and 1,000 joined channels; join time; RSS.

The client joins ``k - 1`` idle channels (each with one broadcast subscription, as an
application would have), concurrently, then one more channel on which the peer floods ``n``
messages at full speed. Reported per ``k``: the time to join the idle channels, the RSS they
added per channel, and the flood's msg/s and CPU µs/msg as seen by an ``async for`` loop (its
subscription buffer holds the whole flood, so nothing is dropped; see throughput.py). Only the
flooded channel receives anything, so the ratio to ``k = 1`` is the cost of having the others.

realtime-py joins the same way (``asyncio.gather`` over ``subscribe()``), with an
``on_broadcast`` callback on each channel.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

import trio

from ._common import (
    JSON,
    REALTIME_PY_WORKER,
    WorkerError,
    emit,
    fmt,
    module_main,
    pin,
    rss_kib,
    run_worker,
    summary,
    table,
)


async def trio_realtime_channels(port: int, *, k: int, n: int, vsn: str, transport: str) -> JSON:
    """Join ``k - 1`` idle channels, then measure a flood on the ``k``-th."""
    from trio_realtime import open_realtime
    from trio_realtime.protocol import check_vsn

    async with open_realtime(
        f"http://127.0.0.1:{port}", apikey="bench", vsn=check_vsn(vsn), transport=transport
    ) as client:
        rss0 = rss_kib()
        idle = [client.channel(f"idle-{i}") for i in range(k - 1)]
        subs = [channel.broadcasts() for channel in idle]
        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for channel in idle:
                nursery.start_soon(channel.join)
        join_s = time.perf_counter() - t0
        rss1 = rss_kib()
        flood = client.channel(f"flood:{n}:0:k{k}")
        sub = flood.broadcasts("msg", buffer=n)
        count = 0
        async with flood, sub:
            t1, c1 = time.perf_counter(), time.process_time()
            async for _message in sub:
                count += 1
                if count >= n:
                    break
            t2, c2 = time.perf_counter(), time.process_time()
        del subs
    return {
        "channels": k,
        "join_s": join_s,
        "rss_per_channel_kib": (rss1 - rss0) / (k - 1) if k > 1 else None,
        "rate": count / (t2 - t1),
        "cpu_us": (c2 - c1) / count * 1e6,
    }


def measure(
    port: int,
    *,
    counts: Sequence[int],
    n: int,
    repeats: int,
    cpu: int | None,
    realtime_py_python: str | None,
    log: Callable[[str], None],
) -> JSON:
    """Run each channel count for each client, ``repeats`` times, interleaved."""
    clients = ["trio_realtime websockets 1.0.0"]
    if realtime_py_python is not None:
        clients.append("realtime-py 2.x (1.0.0)")
    runs: dict[str, list[JSON]] = {}
    errors: dict[str, str] = {}
    for repeat in range(repeats):
        for client in clients:
            for k in counts:
                key = f"{client} | {k}"
                if key in errors:
                    continue
                if client.startswith("realtime-py"):
                    assert realtime_py_python is not None
                    python = realtime_py_python
                    args = [str(REALTIME_PY_WORKER), "channels", "--port", str(port)]
                else:
                    python = sys.executable
                    args = ["-m", "benchmarks.channels", "worker", "--port", str(port)]
                args += ["--channels", str(k), "--n", str(n)]
                try:
                    runs.setdefault(key, []).append(run_worker(args, python=python, cpu=cpu))
                except WorkerError as exc:
                    errors[key] = str(exc)
                    log(f"  ! {key}: {exc}")
        log(f"  channels: repeat {repeat + 1}/{repeats} done")
    out: JSON = {"n": n, "repeats": repeats, "cases": {}, "errors": errors}
    for key, results in runs.items():
        per_channel = [r["rss_per_channel_kib"] for r in results if r["rss_per_channel_kib"]]
        out["cases"][key] = {
            "rate": summary([r["rate"] for r in results]),
            "cpu_us": summary([r["cpu_us"] for r in results]),
            "join_s": summary([r["join_s"] for r in results]),
            "rss_per_channel_kib": summary(per_channel),
        }
    return out


def report(results: JSON) -> str:
    """The channel-scaling table, each count compared with one channel."""
    cases: dict[str, JSON] = results["cases"]
    rows = []
    for key, row in cases.items():
        client, k = key.split(" | ")
        one = cases.get(f"{client} | 1")
        base = one["rate"]["median"] if one else None
        rate = row["rate"]
        joins = row["join_s"]["median"] if int(k) > 1 else None
        rows.append(
            [
                f"{client}, {k} channel{'s' if k != '1' else ''}",
                fmt(rate["median"]),
                f"{fmt(rate['min'])}-{fmt(rate['max'])}",
                fmt(row["cpu_us"]["median"], ".2f"),
                f"{rate['median'] / base:.0%}" if base else "-",
                fmt(joins * 1000 if joins is not None else None, ",.0f"),
                fmt(row["rss_per_channel_kib"]["median"], ".2f"),
            ]
        )
    headers = ["client, joined channels", "msg/s", "range", "CPU µs/msg", "vs 1 channel"]
    headers += ["join ms (k-1)", "RSS KiB/channel"]
    return table(headers, rows)


def worker_main(argv: Sequence[str]) -> None:
    """``worker --port P --channels K --n N [--vsn V] [--transport T]``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--channels", type=int, required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--vsn", default="1.0.0")
    parser.add_argument("--transport", default="websockets")
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=150.0)
    args = parser.parse_args(argv)
    pin(args.cpu)

    async def run() -> JSON:
        with trio.fail_after(args.timeout):
            return await trio_realtime_channels(
                args.port, k=args.channels, n=args.n, vsn=args.vsn, transport=args.transport
            )

    emit(trio.run(run))


def main(argv: Sequence[str] | None = None) -> None:
    """Run the channel-scaling measurement alone (see ``python -m benchmarks``)."""
    module_main("channels", worker_main, argv)


if __name__ == "__main__":
    main()
