"""The blocking interface (``trio_realtime.sync``) beside the async one: receive and send rates.

Each row runs in a fresh process against the flood/echo peer:

* **receive**: the peer floods ``n`` small broadcasts on one channel at full speed, and the
  client counts them in user code: ``async for`` and ``receive_batch()`` of the async API,
  ``for message in sub`` and ``sub.receive_batch()`` of the blocking one. Every subscription
  has room for the whole flood (``buffer=n``), so nothing is dropped and the figure is the
  end-to-end rate. A blocking ``for`` loop makes one round trip to the client's trio thread
  per message; ``receive_batch()`` one per batch.
* **send**: ``m`` broadcasts sent one after the other, each call returning before the next
  starts: without ack (the call returns once the frame is written) and with
  ``broadcast_ack`` (the call returns once the server's ack is in: a round trip).

msg/s is wall-clock rate from the first to the last message, µs/msg the client process's CPU
time (all threads) per message. Runs are interleaved, and each row is the median of
``repeats`` runs. Benchmarks are not tests: nothing here asserts a timing.

    python -m benchmarks.blocking [--quick] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from trio_realtime.protocol import JSONValue

from ._common import JSON, WorkerError, emit, fmt, module_main, pin, run_worker, summary, table
from .throughput import flood_topic

SEND_TOPIC = "realtime:bench:blocking-send"


class _Clock:
    """Wall and CPU clocks between :meth:`start` and :meth:`stop`."""

    def __init__(self) -> None:
        self.t0 = self.c0 = self.t1 = self.c1 = 0.0

    def start(self) -> None:
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def stop(self) -> None:
        self.t1, self.c1 = time.perf_counter(), time.process_time()

    def result(self, count: int) -> JSON:
        seconds = self.t1 - self.t0
        return {
            "messages": count,
            "seconds": seconds,
            "rate": count / seconds if seconds > 0 else None,
            "cpu_us": (self.c1 - self.c0) / count * 1e6 if count else None,
        }


# ---------------------------------------------------------------------------------------------
# Workers (each runs in its own process).


async def async_receive_worker(port: int, *, n: int, mode: str) -> JSON:
    """The async API: ``async for`` (mode ``iter``) or ``receive_batch`` (mode ``batch``)."""
    from trio_realtime import open_realtime

    clock = _Clock()
    count = 0
    async with open_realtime(f"http://127.0.0.1:{port}", apikey="bench") as client:
        channel = client.channel(flood_topic(n, tag="async"))
        sub = channel.broadcasts("msg", buffer=n)
        async with channel, sub:
            clock.start()
            if mode == "iter":
                async for _message in sub:
                    count += 1
                    if count == n:
                        break
            else:
                while count < n:
                    count += len(await sub.receive_batch())
            clock.stop()
    return clock.result(count)


def sync_receive_worker(port: int, *, n: int, mode: str) -> JSON:
    """The blocking API: ``for`` (mode ``iter``) or ``receive_batch`` (mode ``batch``)."""
    from trio_realtime.sync import connect

    clock = _Clock()
    count = 0
    with connect(f"http://127.0.0.1:{port}", apikey="bench") as client:
        channel = client.channel(flood_topic(n, tag="sync"))
        sub = channel.broadcasts("msg", buffer=n)
        with channel, sub:
            clock.start()
            if mode == "iter":
                for _message in sub:
                    count += 1
                    if count == n:
                        break
            else:
                while count < n:
                    count += len(sub.receive_batch())
            clock.stop()
    return clock.result(count)


async def async_send_worker(port: int, *, m: int, ack: bool) -> JSON:
    """The async API: ``m`` sequential ``await channel.send_broadcast(...)``."""
    from trio_realtime import open_realtime

    clock = _Clock()
    async with open_realtime(f"http://127.0.0.1:{port}", apikey="bench") as client:
        channel = client.channel(SEND_TOPIC, broadcast_ack=ack)
        async with channel:
            payload: JSONValue = {"n": 1, "text": "hello"}
            clock.start()
            for _ in range(m):
                await channel.send_broadcast("msg", payload)
            clock.stop()
    return clock.result(m)


def sync_send_worker(port: int, *, m: int, ack: bool) -> JSON:
    """The blocking API: ``m`` sequential ``channel.send_broadcast(...)``."""
    from trio_realtime.sync import connect

    clock = _Clock()
    with connect(f"http://127.0.0.1:{port}", apikey="bench") as client:
        channel = client.channel(SEND_TOPIC, broadcast_ack=ack)
        with channel:
            payload: JSONValue = {"n": 1, "text": "hello"}
            clock.start()
            for _ in range(m):
                channel.send_broadcast("msg", payload)
            clock.stop()
    return clock.result(m)


# ---------------------------------------------------------------------------------------------
# The cases, and the orchestration.


@dataclass(frozen=True)
class Case:
    """One row of the table."""

    name: str
    kind: str  # receive or send
    api: str  # async or sync
    mode: str = "iter"  # receive: iter or batch
    ack: bool = False  # send: with broadcast_ack

    @property
    def group(self) -> str:
        """The rows compared with each other (the async and the blocking twin)."""
        return f"{self.kind} {self.mode} ack={self.ack}"

    def args(self, port: int, n: int, m: int) -> list[str]:
        """Worker command line (for ``python``)."""
        args = ["-m", "benchmarks.blocking", "worker", self.kind, self.api, "--port", str(port)]
        args += ["--n", str(n), "--m", str(m), "--mode", self.mode]
        if self.ack:
            args.append("--ack")
        return args


def cases() -> list[Case]:
    """Every row, the async twin first."""
    rows: list[Case] = []
    for mode, (async_loop, sync_loop) in {
        "iter": ("async for", "for"),
        "batch": ("receive_batch()", "receive_batch()"),
    }.items():
        rows.append(Case(f"receive, async: {async_loop}", "receive", "async", mode))
        rows.append(Case(f"receive, blocking: {sync_loop}", "receive", "sync", mode))
    for ack in (False, True):
        label = "with ack" if ack else "no ack"
        rows.append(Case(f"send {label}, async: await send_broadcast", "send", "async", ack=ack))
        rows.append(Case(f"send {label}, blocking: send_broadcast", "send", "sync", ack=ack))
    return rows


def measure(
    port: int, *, n: int, m: int, repeats: int, cpu: int | None, log: Callable[[str], None]
) -> JSON:
    """Run every case ``repeats`` times, interleaved; return the results by case name."""
    rows = cases()
    samples: dict[str, list[JSON]] = {case.name: [] for case in rows}
    errors: dict[str, str] = {}
    for repeat in range(repeats):
        for case in rows:
            if case.name in errors:
                continue
            try:
                samples[case.name].append(run_worker(case.args(port, n, m), cpu=cpu))
            except WorkerError as exc:
                errors[case.name] = str(exc)
                log(f"  ! {case.name}: {exc}")
        log(f"  blocking: repeat {repeat + 1}/{repeats} done")
    out: JSON = {"n": n, "m": m, "repeats": repeats, "cases": {}, "errors": errors}
    for case in rows:
        runs = samples[case.name]
        out["cases"][case.name] = {
            "kind": case.kind,
            "api": case.api,
            "group": case.group,
            "rate": summary([r["rate"] for r in runs if r.get("rate")]),
            "cpu_us": summary([r["cpu_us"] for r in runs if r.get("cpu_us")]),
            "runs": len(runs),
        }
    return out


def report(results: JSON) -> str:
    """The table, with each blocking row's rate as a share of its async twin's."""
    by_name: dict[str, JSON] = results["cases"]
    async_rates = {
        row["group"]: row["rate"]["median"] for row in by_name.values() if row["api"] == "async"
    }
    rows: list[list[str]] = []
    for name, row in by_name.items():
        rate, cpu_us = row["rate"], row["cpu_us"]
        median = rate["median"]
        twin = async_rates.get(row["group"]) if row["api"] == "sync" else None
        rows.append(
            [
                name,
                fmt(median),
                f"{fmt(rate['min'])}-{fmt(rate['max'])}",
                fmt(cpu_us["median"], ".1f"),
                f"{median / twin:.0%}" if median and twin else "-",
            ]
        )
    return table(["client", "msg/s", "range", "CPU µs/msg", "vs async"], rows)


def worker_main(argv: Sequence[str]) -> None:
    """``worker KIND API --port P --n N --m M [--mode M] [--ack]``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["receive", "send"])
    parser.add_argument("api", choices=["async", "sync"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--m", type=int, required=True)
    parser.add_argument("--mode", default="iter", choices=["iter", "batch"])
    parser.add_argument("--ack", action="store_true")
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args(argv)
    pin(args.cpu)
    result: Any
    if args.kind == "receive":
        if args.api == "async":
            result = trio.run(lambda: async_receive_worker(args.port, n=args.n, mode=args.mode))
        else:
            result = sync_receive_worker(args.port, n=args.n, mode=args.mode)
    elif args.api == "async":
        result = trio.run(lambda: async_send_worker(args.port, m=args.m, ack=args.ack))
    else:
        result = sync_send_worker(args.port, m=args.m, ack=args.ack)
    emit(result)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m benchmarks.blocking [flags]`` runs this measurement alone."""
    module_main("blocking", worker_main, argv)


if __name__ == "__main__":
    main(sys.argv[1:])
