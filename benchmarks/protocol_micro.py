"""Micro-benchmark: parse plus classify one small V1 broadcast frame.

Compares ``parse_frame`` + ``event_kind`` with the floor of ``orjson.loads`` alone, and with
``json.loads`` plus a dict lookup (what a naive client does). Prints the median over repeated
rounds, in microseconds per frame.

    python -m benchmarks.protocol_micro [--rounds 15] [--number 200000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import orjson

from trio_realtime.protocol import event_kind, parse_frame

FRAME = (
    '{"event":"broadcast","payload":{"event":"msg","payload":{"n":1,"text":"hello"},'
    '"type":"broadcast"},"ref":null,"topic":"realtime:room1"}'
)


def _ours() -> object:
    return event_kind(parse_frame(FRAME))


def _orjson_only() -> object:
    return orjson.loads(FRAME)


def _json_lookup() -> object:
    return json.loads(FRAME)["event"]


def _median_us(func: Callable[[], object], rounds: int, number: int) -> tuple[float, float, float]:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(number):
            func()
        samples.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(samples), min(samples), max(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--number", type=int, default=200_000)
    args = parser.parse_args()
    rows = [
        ("parse_frame + event_kind", _ours),
        ("orjson.loads alone", _orjson_only),
        ("json.loads + dict lookup", _json_lookup),
    ]
    results = {name: _median_us(func, args.rounds, args.number) for name, func in rows}
    ours = results["parse_frame + event_kind"][0]
    print(f"{'case':<28} {'median µs':>10} {'min':>7} {'max':>7} {'vs ours':>8}")
    for name, (median, low, high) in results.items():
        print(f"{name:<28} {median:>10.3f} {low:>7.3f} {high:>7.3f} {median / ours:>7.2f}x")


if __name__ == "__main__":
    main()
