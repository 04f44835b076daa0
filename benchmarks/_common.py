"""Shared plumbing of the benchmark suite: the peer process, worker processes, statistics.

Every measurement runs its client in a fresh worker process (``python -m benchmarks.<module>
worker ...``) that prints one JSON object on its last line of output, so that CPU time and RSS
are the client's own, and the flood/echo peer (:mod:`benchmarks._peer`) runs in a process of
its own as well. On a machine with at least two CPUs the peer is pinned to the first and the
workers to the second, so that the two never share a core.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO / "benchmarks"
RESULTS_DIR = BENCH_DIR / "results"
REALTIME_PY_VENV = BENCH_DIR / ".venv-realtime-py"
REALTIME_PY_WORKER = BENCH_DIR / "realtime_py_worker.py"
REALTIME_PY_REQUIREMENT = "realtime>=2,<3"

JSON = dict[str, Any]


def cpus() -> tuple[int | None, int | None]:
    """The CPUs for the peer and for the workers, or ``(None, None)`` when not pinning."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None, None
    return available[0], available[1]


def pin(cpu: int | None) -> None:
    """Pin this process to ``cpu`` (no-op for ``None``)."""
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def rss_kib() -> int:
    """The current resident set size of this process, in KiB (Linux ``/proc``)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@dataclass
class Peer:
    """A running peer process."""

    process: subprocess.Popen[str]
    port: int

    @property
    def url(self) -> str:
        """The URL clients are given (the peer ignores the path)."""
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def running_peer(cpu: int | None) -> Iterator[Peer]:
    """Start the peer in its own process; stop it (by closing its stdin) on exit."""
    command = [sys.executable, "-m", "benchmarks._peer", "--port", "0", "--max-seconds", "3600"]
    if cpu is not None:
        command += ["--cpu", str(cpu)]
    process = subprocess.Popen(
        command, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"the peer did not start: {line!r}")
        yield Peer(process, int(line.split()[1]))
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class WorkerError(RuntimeError):
    """A worker process failed or printed no result."""


def run_worker(
    args: Sequence[str], *, python: str = sys.executable, cpu: int | None, timeout: float = 180.0
) -> JSON:
    """Run ``python <args> [--cpu N]``; return the JSON object on its last line.

    Every worker accepts ``--cpu`` and pins itself to that CPU.
    """
    command = [python, *args]
    if cpu is not None:
        command += ["--cpu", str(cpu)]
    started = time.monotonic()
    try:
        done = subprocess.run(
            command, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise WorkerError(f"{' '.join(args)}: timed out after {timeout:.0f} s") from exc
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-15:]
        raise WorkerError(f"{' '.join(args)}: exit {done.returncode}\n" + "\n".join(tail))
    result: JSON = json.loads(lines[-1])
    result.setdefault("wall_s", time.monotonic() - started)
    return result


def summary(values: Sequence[float]) -> JSON:
    """Median, min, max and the samples themselves."""
    if not values:
        return {"median": None, "min": None, "max": None, "samples": []}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "samples": list(values),
    }


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of already sorted values (nearest rank)."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def emit(result: JSON) -> None:
    """Print a worker's result as the last line of its output."""
    print(json.dumps(result), flush=True)


def fmt(value: float | None, spec: str = ",.0f") -> str:
    """Format a number for the tables; ``-`` for a missing one."""
    return "-" if value is None else format(value, spec)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        parts = [first.ljust(widths[0])]
        parts += [cell.rjust(width) for cell, width in zip(rest, widths[1:], strict=True)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def module_main(
    measurement: str, worker_main: Callable[[list[str]], None], argv: Sequence[str] | None
) -> None:
    """Entry point of one measurement module.

    ``worker ...`` runs one client worker (the suite starts them as subprocesses); anything
    else runs the suite for this measurement alone.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "worker":
        worker_main(args[1:])
        return
    from .run_all import main as run_all_main

    run_all_main(["--only", measurement, *args])


def interleaved(
    names: Sequence[str],
    repeats: int,
    run: Callable[[str], JSON],
    *,
    label: str,
    log: Callable[[str], None],
) -> tuple[dict[str, list[JSON]], dict[str, str]]:
    """Run every case ``repeats`` times, one of each per round, so that load spreads evenly.

    ``run(name)`` runs one worker and returns its JSON. A case whose worker fails
    (:class:`WorkerError`) is logged and not run again. Returns the results by case name and
    the error of each case that failed.
    """
    runs: dict[str, list[JSON]] = {name: [] for name in names}
    errors: dict[str, str] = {}
    for repeat in range(repeats):
        for name in names:
            if name in errors:
                continue
            try:
                runs[name].append(run(name))
            except WorkerError as exc:
                errors[name] = str(exc)
                log(f"  ! {name}: {exc}")
        log(f"  {label}: repeat {repeat + 1}/{repeats} done")
    return runs, errors


def worker_parser(
    *, kinds: Sequence[str] | None = None, timeout: float = 120.0
) -> argparse.ArgumentParser:
    """The options every worker takes: ``[KIND] --port P [--vsn V] [--transport T] [--cpu C]
    [--timeout S]``."""
    parser = argparse.ArgumentParser()
    if kinds is not None:
        parser.add_argument("kind", choices=list(kinds))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--vsn", default="1.0.0")
    parser.add_argument("--transport", default="websockets")
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=timeout)
    return parser


def run_trio_worker(measurement: Callable[[], Awaitable[JSON]], *, timeout: float) -> None:
    """Run an async measurement under ``trio.run`` within ``timeout``; print its result."""
    import trio

    async def run() -> JSON:
        with trio.fail_after(timeout):
            return await measurement()

    emit(trio.run(run))
