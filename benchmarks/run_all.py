"""Run the benchmark suite: ``python -m benchmarks [--quick] [--only a,b] [--no-realtime-py]``.

It starts the flood/echo peer in its own process, creates realtime-py's virtualenv
(``benchmarks/.venv-realtime-py``, ``realtime`` 2.x from PyPI) when it is missing, runs the
chosen measurements, prints their tables and writes every figure to
``benchmarks/results/<date>-<quick|full>.json`` (or ``--json PATH``).

Measurements: ``throughput``, ``latency``, ``channels``, ``memory``, ``blocking`` (the
blocking interface beside the async one), ``sends``, ``connections``. Where node and npm are
present, realtime-js and ``ws`` are installed into a temporary folder (:mod:`benchmarks._node`):
realtime-js gets rows of its own in ``throughput``, ``sends`` and ``connections``, and the last
two measurements run against the node ``ws`` peer (``peer_node.cjs``) rather than the Python
one; without node they use the Python peer and say so. Full mode takes about half an hour on a
two-core machine, ``--quick`` about ten minutes. Benchmarks are not tests: nothing here asserts
a timing; the targets are printed next to the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from . import blocking, channels, connections, latency, memory, sends, throughput
from ._common import (
    JSON,
    REALTIME_PY_REQUIREMENT,
    REALTIME_PY_VENV,
    REPO,
    RESULTS_DIR,
    cpus,
    running_peer,
)
from ._node import node_runner, running_node_peer

MEASUREMENTS = (
    "throughput",
    "latency",
    "channels",
    "memory",
    "blocking",
    "sends",
    "connections",
)


def log(message: str) -> None:
    """Progress goes to stderr, tables to stdout."""
    print(message, file=sys.stderr, flush=True)


def realtime_py_python(create: bool) -> str | None:
    """The interpreter of realtime-py's virtualenv, creating the venv when asked and missing."""
    python = REALTIME_PY_VENV / "bin" / "python"
    if not python.exists():
        if not create:
            return None
        log(f"creating {REALTIME_PY_VENV} with {REALTIME_PY_REQUIREMENT!r} ...")
        base = os.environ.get("BENCH_BASE_PYTHON", sys.executable)
        subprocess.run([base, "-m", "venv", "--clear", str(REALTIME_PY_VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, REALTIME_PY_REQUIREMENT], check=True)
    return str(python)


def _version(python: str, module: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({module!r}))"
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    return done.stdout.strip() or "?"


def source_state() -> JSON:
    """The commit measured, and the package files that differed from it (uncommitted work)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "uncommitted": git("status", "--short", "--", "trio_realtime").splitlines(),
    }


def machine() -> JSON:
    """What the figures were measured on."""
    model = "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            model = next(
                (line.split(":", 1)[1].strip() for line in info if line.startswith("model name")),
                "?",
            )
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


TARGETS = """\
Targets (default transport "websockets"): throughput >= 3x realtime-py and >= 60% of the raw
transport ceiling; CPU <= 10 µs/msg; p99 under a 10k msg/s flood <= 5 ms; 1,000 channels
>= 90% of 1 channel's throughput; flat RSS with a stalled consumer. Sends: sequential without
ack >= realtime-js and >= 2x realtime-py; 64 acked senders >= 2x realtime-py's unacked rate.
Connections (1,000 and 10,000): connect + join >= 1.5x realtime-py; RSS per connection
<= 0.75x realtime-py's; idle CPU <= realtime-py's."""


def main(argv: Sequence[str] | None = None) -> None:
    """Parse flags, run the suite, print tables, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages and repeats")
    parser.add_argument(
        "--only", default=",".join(MEASUREMENTS), help=f"comma-separated: {MEASUREMENTS}"
    )
    parser.add_argument("--repeats", type=int, default=None, help="runs per case (median)")
    parser.add_argument("--no-realtime-py", action="store_true", help="skip realtime-py")
    parser.add_argument(
        "--no-realtime-js", action="store_true", help="skip realtime-js (and the node peer)"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin peer and client")
    parser.add_argument("--json", type=Path, default=None, help="where to write the results")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(chosen) - set(MEASUREMENTS)
    if unknown:
        parser.error(f"unknown measurement(s): {', '.join(sorted(unknown))}")
    quick = args.quick
    repeats = args.repeats or (3 if quick else 5)
    # Latency and channel scaling run many more messages per repeat; three repeats keep the
    # full suite within about a quarter of an hour.
    slow_repeats = args.repeats or 3
    peer_cpu, client_cpu = (None, None) if args.no_pin else cpus()
    rt_python = None if args.no_realtime_py else realtime_py_python(create=True)
    started = time.monotonic()
    results: JSON = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if quick else "full",
        "command": " ".join(["python -m benchmarks", *(argv or sys.argv[1:])]),
        "machine": machine(),
        "source": source_state(),
        "pinning": {"peer_cpu": peer_cpu, "client_cpu": client_cpu},
        "versions": {
            "trio_realtime": _version(sys.executable, "trio-realtime"),
            "trio": _version(sys.executable, "trio"),
            "websockets": _version(sys.executable, "websockets"),
            "trio-websocket": _version(sys.executable, "trio-websocket"),
            "realtime-py": _version(rt_python, "realtime") if rt_python else None,
            "realtime-py websockets": _version(rt_python, "websockets") if rt_python else None,
        },
    }
    tables: list[str] = []
    wants_node = not args.no_realtime_js and bool(
        {"throughput", "sends", "connections"} & set(chosen)
    )
    with (
        running_peer(peer_cpu) as peer,
        node_runner(wants_node) as (node, node_note),
        contextlib.ExitStack() as stack,
    ):
        log(node_note)
        results["realtime_js"] = node_note
        results["versions"]["realtime-js"] = node.version if node else None
        if node is not None:
            send_peer = stack.enter_context(running_node_peer(node, peer_cpu))
            results["send_peer"] = "node ws (benchmarks/peer_node.cjs)"
        else:
            send_peer = peer.port
            results["send_peer"] = "Python (benchmarks/_peer.py)"
        if "throughput" in chosen:
            log("throughput ...")
            n = 30_000 if quick else 100_000
            results["throughput"] = throughput.measure(
                peer.port,
                n=n,
                repeats=repeats,
                cpu=client_cpu,
                realtime_py_python=rt_python,
                log=log,
                node=node,
            )
            tables.append(
                f"THROUGHPUT: {n:,} small broadcasts at full speed, median of {repeats} runs\n"
                + throughput.report(results["throughput"])
            )
        if "latency" in chosen:
            log("latency ...")
            m = 2_000 if quick else 5_000
            results["latency"] = latency.measure(
                peer.port,
                m=m,
                repeats=slow_repeats,
                flood_rate=10_000,
                cpu=client_cpu,
                realtime_py_python=rt_python,
                log=log,
            )
            tables.append(
                f"LATENCY: self-broadcast with ack, {m:,} round trips, median of {slow_repeats} "
                "runs\n" + latency.report(results["latency"])
            )
        if "channels" in chosen:
            log("channels ...")
            n = 30_000 if quick else 100_000
            results["channels"] = channels.measure(
                peer.port,
                counts=(1, 100, 1000),
                n=n,
                repeats=slow_repeats,
                cpu=client_cpu,
                realtime_py_python=rt_python,
                log=log,
            )
            tables.append(
                f"CHANNELS: {n:,}-message flood on one of k joined channels, median of "
                f"{slow_repeats} runs\n" + channels.report(results["channels"])
            )
        if "memory" in chosen:
            log("memory ...")
            results["memory"] = memory.measure(
                peer.port,
                flood_n=200_000 if quick else 1_000_000,
                cycles=100,
                cpu=client_cpu,
                log=log,
            )
            tables.append("MEMORY\n" + memory.report(results["memory"]))
        if "blocking" in chosen:
            log("blocking ...")
            n, m = (20_000, 5_000) if quick else (100_000, 20_000)
            results["blocking"] = blocking.measure(
                peer.port, n=n, m=m, repeats=repeats, cpu=client_cpu, log=log
            )
            tables.append(
                f"BLOCKING INTERFACE (trio_realtime.sync) beside the async API: {n:,}-message "
                f"flood received, {m:,} sequential sends, median of {repeats} runs\n"
                + blocking.report(results["blocking"])
            )
        if "sends" in chosen:
            log("sends ...")
            n = 10_000 if quick else 20_000
            results["sends"] = sends.measure(
                send_peer,
                n=n,
                repeats=repeats,
                cpu=client_cpu,
                realtime_py_python=rt_python,
                node=node,
                log=log,
            )
            tables.append(
                f"SENDS: {n:,} small broadcasts, median of {repeats} runs; peer: "
                f"{results['send_peer']}\n" + sends.report(results["sends"])
            )
        if "connections" in chosen:
            log("connections ...")
            idle = 16.0 if quick else 30.0
            conn_repeats = args.repeats or (1 if quick else 3)
            results["connections"] = connections.measure(
                send_peer,
                counts=(1_000, 10_000),
                idle_seconds=idle,
                repeats=conn_repeats,
                cpu=client_cpu,
                realtime_py_python=rt_python,
                node=node,
                log=log,
            )
            tables.append(
                f"CONNECTIONS: one process, {connections.CONCURRENCY} connects in flight, "
                f"{connections.HEARTBEAT} s heartbeat, {idle:.0f} s idle window, median of "
                f"{conn_repeats} runs; peer: {results['send_peer']}\n"
                + connections.report(results["connections"])
            )
    results["seconds"] = time.monotonic() - started
    info = results["machine"]
    header = (
        f"trio_realtime benchmarks ({results['mode']}), {results['date']}\n"
        f"{info['cpus']} CPUs ({info['cpu_model']}), Python {info['python']}; "
        f"peer on CPU {peer_cpu}, client on CPU {client_cpu}; "
        f"realtime-py {results['versions']['realtime-py'] or 'skipped'}; "
        f"{results['realtime_js']}"
    )
    print("\n\n".join([header, *tables, TARGETS]))
    path = args.json or RESULTS_DIR / f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{results['mode']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    log(f"results written to {path} ({results['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
