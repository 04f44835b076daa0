"""postgres_changes from a real PostgreSQL: INSERT-to-delivery throughput and latency.

A throwaway cluster (``trio_realtime.testing.start_postgres``) runs PostgreSQL with wal2json; the
local server streams the ``supabase_realtime`` publication from it (``database_url=``), and a
trio_realtime client subscribed over loopback TCP receives the changes.

* **latency**: ``m`` single-row INSERTs, one after the other; each is timed from just before
  the statement is sent until the client's subscription hands the change to user code. The
  server polls the slot every ``poll_interval`` when it is idle (100 ms, as the real server),
  so this mostly measures where in the interval a commit falls.
* **throughput**: ``n`` rows inserted in transactions of ``batch`` rows, as fast as the database
  takes them, on a table without RLS and on a table with an RLS policy that uses ``auth.uid()``
  (one visibility query per change and subscriber). Changes per second from the first INSERT
  to the last delivery.

Run: ``python -m benchmarks.database`` (``--quick`` for a short run, ``--json`` for JSON).
Needs PostgreSQL and wal2json (``apt-get install postgresql-15-wal2json``) and psycopg.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from typing import Any

import trio

from ._common import JSON, fmt, percentile, table

SECRET = "benchmark-jwt-secret-" + "x" * 48
USER = "00000000-0000-0000-0000-000000000001"

SETUP = """
create table plain (id int8 primary key, body text, n int4);
create table guarded (id int8 primary key, owner uuid not null, body text);
alter table guarded enable row level security;
create policy mine on guarded for select to authenticated using (owner = auth.uid());
grant select on plain, guarded to authenticated;
alter publication supabase_realtime add table plain, guarded;
"""


def _execute(url: str, statement: str, params: Sequence[Any] = ()) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement, params)


async def measure(url: str, *, m: int, n: int, batch: int, poll_interval: float) -> JSON:
    """Run both measurements against the database at ``url``; return the figures."""
    import psycopg

    from trio_realtime import open_realtime
    from trio_realtime.testing import make_token, serve_realtime

    token = make_token(SECRET, role="authenticated", sub=USER)
    conn = await trio.to_thread.run_sync(lambda: psycopg.connect(url, autocommit=True))
    results: JSON = {}
    try:
        async with (
            serve_realtime(database_url=url, jwt_secret=SECRET, poll_interval=poll_interval) as srv,
            open_realtime(srv.url, apikey=token) as client,
        ):
            channel = client.channel("bench")
            plain = channel.postgres_changes("INSERT", table="plain", buffer=n + 10)
            guarded = channel.postgres_changes("INSERT", table="guarded", buffer=n + 10)
            async with channel:
                await channel.wait_postgres_ready()

                samples: list[float] = []
                for i in range(m):
                    t0 = time.perf_counter()
                    await trio.to_thread.run_sync(
                        conn.execute, "insert into plain values (%s, 'x', 1)", (i,)
                    )
                    change = await plain.receive()
                    samples.append(time.perf_counter() - t0)
                    if change.new.get("id") != i:
                        raise RuntimeError(f"expected row {i}, got {change.new!r}")
                ordered = sorted(s * 1e3 for s in samples)
                results["latency_ms"] = {
                    "p50": round(percentile(ordered, 0.50), 2),
                    "p99": round(percentile(ordered, 0.99), 2),
                    "mean": round(statistics.fmean(ordered), 2),
                    "max": round(ordered[-1], 2),
                }

                for name, subscription, statement in (
                    (
                        "plain",
                        plain,
                        "insert into plain select g, 'row ' || g, g from generate_series(%s, %s) g",
                    ),
                    (
                        "guarded",
                        guarded,
                        "insert into guarded select g, %s::uuid, 'row ' || g"
                        " from generate_series(%s, %s) g",
                    ),
                ):
                    start_id = 1_000_000
                    t0 = time.perf_counter()

                    def insert_all(
                        statement: str = statement, name: str = name, start_id: int = start_id
                    ) -> None:
                        for first in range(start_id, start_id + n, batch):
                            last = min(first + batch, start_id + n) - 1
                            params: tuple[Any, ...] = (first, last)
                            if name == "guarded":
                                params = (USER, first, last)
                            conn.execute(statement, params)

                    async def writer(insert_all: Any = insert_all) -> None:
                        await trio.to_thread.run_sync(insert_all)

                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(writer)
                        got = 0
                        while got < n:
                            got += len(await subscription.receive_batch())
                    elapsed = time.perf_counter() - t0
                    results[f"throughput_{name}"] = {
                        "rows": n,
                        "seconds": round(elapsed, 3),
                        "changes_per_s": round(n / elapsed, 1),
                    }
            database = srv.database
            assert database is not None
            stats = database.statistics()
            results["server"] = {"polls": stats.polls, "changes_decoded": stats.changes_decoded}
    finally:
        await trio.to_thread.run_sync(conn.close)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    """Run the database benchmark and print its figures."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.database", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run (m=50, n=1000)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--poll-interval", type=float, default=0.1)
    parser.add_argument("--batch", type=int, default=100, help="rows per INSERT transaction")
    args = parser.parse_args(argv)
    m, n = (50, 1000) if args.quick else (300, 10_000)

    from trio_realtime.testing import start_postgres

    with start_postgres() as cluster:
        url = cluster.create_database("bench")
        _execute(url, SETUP)
        results = trio.run(
            lambda: measure(url, m=m, n=n, batch=args.batch, poll_interval=args.poll_interval)
        )
    results["params"] = {"m": m, "n": n, "batch": args.batch, "poll_interval": args.poll_interval}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    lat = results["latency_ms"]
    assert isinstance(lat, dict)
    print(f"INSERT-to-delivery latency over {m} single-row INSERTs, poll {args.poll_interval}s:")
    print(
        table(
            ["p50 ms", "p99 ms", "mean ms", "max ms"],
            [
                [
                    fmt(lat["p50"], ".1f"),
                    fmt(lat["p99"], ".1f"),
                    fmt(lat["mean"], ".1f"),
                    fmt(lat["max"], ".1f"),
                ]
            ],
        )
    )
    print(f"\nThroughput, {n} rows in transactions of {args.batch}:")
    rows = []
    for name in ("plain", "guarded"):
        figures = results[f"throughput_{name}"]
        assert isinstance(figures, dict)
        rows.append([name, fmt(figures["changes_per_s"], ",.0f"), fmt(figures["seconds"], ".2f")])
    print(table(["table", "changes/s", "seconds"], rows))


if __name__ == "__main__":
    main()
