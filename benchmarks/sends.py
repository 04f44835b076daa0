"""Send rates: sequential and concurrent ``send_broadcast``, acknowledged and not.

The client joins ``realtime:send`` (``broadcast.self`` off, ``broadcast.ack`` on or off) and
sends ``n`` small broadcasts (event ``m``, payload ``{"n": i, "text": "hello"}``), after a
warm-up of ``n / 10`` (at most 1,000) that is not counted:

* **sequential, no ack**: one task, ``await channel.send_broadcast(...)`` in a loop;
* **64 senders, no ack** and **64 senders, acked**: 64 tasks sharing ``n`` between them; with
  ack every send waits for the server's reply, and p50/p99 of that wait are reported.

The rate is ``n`` over the time until the last send returned, so each client is measured by its
own promise of what a returned send means (trio_realtime: queued behind every earlier frame on
the connection, see ``Channel.send_broadcast``; realtime-py: handed to its websockets
connection; realtime-js: ``channel.send`` resolves at once without ack). The peer answers
``ok`` to every acknowledged broadcast.

Beside trio_realtime: realtime-py (``realtime`` 2.x in its own virtualenv; the acked case awaits
``push.receive("ok")`` through a future), realtime-js on node where node and npm are present,
and a ceiling row, a blocking socket sending ``n`` pre-encoded acked frames in one go and then
counting the replies, which shows how many pushes a second the peer itself can take.

    python -m benchmarks.sends [--quick] [--repeats 5]
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import orjson
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
from ._node import NodeRunner

TOPIC = "realtime:send"
SENDERS = 64


def _warmup(n: int) -> int:
    return min(1000, n // 10)


async def trio_realtime_sends(
    port: int, *, n: int, senders: int, ack: bool, vsn: str, transport: str
) -> JSON:
    """``n`` broadcasts from ``senders`` tasks through one trio_realtime channel."""
    from trio_realtime import open_realtime

    latencies: list[float] = []
    per_sender = n // senders
    async with open_realtime(
        f"http://127.0.0.1:{port}", apikey="bench", vsn=vsn, transport=transport
    ) as client:
        channel = client.channel("send", broadcast_ack=ack)
        async with channel:
            for i in range(_warmup(n)):
                await channel.send_broadcast("m", {"n": i, "text": "hello"})
            send = channel.send_broadcast

            async def sender(s: int) -> None:
                base = s * per_sender
                for i in range(base, base + per_sender):
                    if ack:
                        started = time.perf_counter()
                        await send("m", {"n": i, "text": "hello"})
                        latencies.append(time.perf_counter() - started)
                    else:
                        await send("m", {"n": i, "text": "hello"})

            t0, c0 = time.perf_counter(), time.process_time()
            if senders == 1:
                await sender(0)
            else:
                async with trio.open_nursery() as nursery:
                    for s in range(senders):
                        nursery.start_soon(sender, s)
            t1, c1 = time.perf_counter(), time.process_time()
    return _result(per_sender * senders, t1 - t0, c1 - c0, latencies)


def _result(sent: int, seconds: float, cpu: float, latencies: list[float]) -> JSON:
    latencies.sort()
    return {
        "messages": sent,
        "seconds": seconds,
        "rate": sent / seconds,
        "cpu_us": cpu / sent * 1e6,
        "p50_us": percentile(latencies, 0.50) * 1e6 if latencies else None,
        "p99_us": percentile(latencies, 0.99) * 1e6 if latencies else None,
    }


def raw_ceiling_sends(port: int, *, n: int) -> JSON:
    """Pre-encoded acked pushes from a blocking socket, all at once: the peer's ceiling."""
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

    def wait_for(wanted: int) -> None:
        got = 0
        while got < wanted:
            protocol.receive_data(sock.recv(262144))
            got += sum(1 for event in protocol.events_received() if type(event) is WSFrame)

    config = {"config": {"broadcast": {"self": False, "ack": True}}}
    join = {"topic": TOPIC, "event": "phx_join", "payload": config, "ref": "1", "join_ref": "1"}
    protocol.send_text(orjson.dumps(join))
    sock.sendall(b"".join(protocol.data_to_send()))
    wait_for(1)
    frames = []
    for i in range(n):
        push = {
            "topic": TOPIC,
            "event": "broadcast",
            "payload": {"type": "broadcast", "event": "m", "payload": {"n": i, "text": "hello"}},
            "ref": str(i + 2),
            "join_ref": "1",
        }
        protocol.send_text(orjson.dumps(push))
        frames.append(b"".join(protocol.data_to_send()))
    t0, c0 = time.perf_counter(), time.process_time()
    # Everything at once, then every reply: the node peer buffers what it cannot write yet.
    sock.sendall(b"".join(frames))
    wait_for(n)
    t1, c1 = time.perf_counter(), time.process_time()
    sock.close()
    return _result(n, t1 - t0, c1 - c0, [])


@dataclass(frozen=True)
class Case:
    """One row: a client, a number of senders, acked or not."""

    client: str  # ceiling, trio_realtime, realtime-py, realtime-js
    senders: int
    ack: bool

    @property
    def name(self) -> str:
        what = "sequential" if self.senders == 1 else f"{self.senders} senders"
        return f"{self.client}, {what}, {'acked' if self.ack else 'no ack'}"

    @property
    def shape(self) -> str:
        """The row's case without the client: what the ratios compare."""
        return self.name.split(", ", 1)[1]


def cases(realtime_py: bool, realtime_js: bool) -> list[Case]:
    """Every row, in display order."""
    clients = ["trio_realtime"]
    if realtime_py:
        clients.append("realtime-py")
    if realtime_js:
        clients.append("realtime-js")
    rows = [Case("ceiling", SENDERS, True)]
    for senders, ack in ((1, False), (SENDERS, False), (SENDERS, True)):
        rows += [Case(client, senders, ack) for client in clients]
    return rows


def measure(
    port: int,
    *,
    n: int,
    repeats: int,
    cpu: int | None,
    realtime_py_python: str | None,
    node: NodeRunner | None,
    log: Callable[[str], None],
) -> JSON:
    """Run every case ``repeats`` times, interleaved."""
    rows = cases(realtime_py_python is not None, node is not None)
    by_name = {case.name: case for case in rows}

    def run(name: str) -> JSON:
        case = by_name[name]
        if case.client == "realtime-js":
            assert node is not None
            args = ["sends", "--port", str(port), "--n", str(n)]
            args += ["--senders", str(case.senders)] + (["--ack"] if case.ack else [])
            return node.run(args, cpu=cpu)
        if case.client == "realtime-py":
            assert realtime_py_python is not None
            args = [str(REALTIME_PY_WORKER), "sends", "--port", str(port), "--n", str(n)]
            args += ["--senders", str(case.senders)] + (["--ack"] if case.ack else [])
            return run_worker(args, python=realtime_py_python, cpu=cpu)
        args = ["-m", "benchmarks.sends", "worker", case.client, "--port", str(port)]
        args += ["--n", str(n), "--senders", str(case.senders)]
        args += ["--ack"] if case.ack else []
        return run_worker(args, cpu=cpu)

    runs, errors = interleaved(list(by_name), repeats, run, label="sends", log=log)
    out: JSON = {"n": n, "repeats": repeats, "cases": {}, "errors": errors}
    for case in rows:
        results = runs[case.name]
        out["cases"][case.name] = {
            "client": case.client,
            "senders": case.senders,
            "ack": case.ack,
            "runs": len(results),
            **{
                field: summary([r[field] for r in results if r.get(field) is not None])
                for field in ("rate", "cpu_us", "p50_us", "p99_us")
            },
        }
    return out


def report(results: JSON) -> str:
    """The send table, with each row's ratio to realtime-py's and realtime-js's same case."""
    by_name: dict[str, JSON] = results["cases"]

    def median(client: str, shape: str, field: str = "rate") -> float | None:
        row = by_name.get(f"{client}, {shape}")
        value = row[field]["median"] if row else None
        return float(value) if value else None

    rows = []
    for name, row in by_name.items():
        shape = name.split(", ", 1)[1]
        rate = row["rate"]["median"]
        py = median("realtime-py", shape)
        py_unacked = median("realtime-py", shape.replace("acked", "no ack"))
        js = median("realtime-js", shape)
        if row["client"] == "ceiling":
            py = py_unacked = js = None
        rows.append(
            [
                name,
                fmt(rate),
                f"{fmt(row['rate']['min'])}-{fmt(row['rate']['max'])}",
                fmt(row["cpu_us"]["median"], ".1f"),
                fmt(row["p50_us"]["median"]),
                fmt(row["p99_us"]["median"]),
                f"{rate / py:.2f}x" if rate and py else "-",
                f"{rate / py_unacked:.2f}x" if rate and py_unacked and row["ack"] else "-",
                f"{rate / js:.2f}x" if rate and js else "-",
            ]
        )
    headers = ["client, case", "msg/s", "range", "CPU µs/msg", "p50 µs", "p99 µs", "vs rt-py"]
    headers += ["vs rt-py no ack", "vs rt-js"]
    return table(headers, rows)


def worker_main(argv: Sequence[str]) -> None:
    """``worker KIND --port P --n N [--senders S] [--ack] [--vsn V] [--transport T]``."""
    parser = worker_parser(kinds=["trio_realtime", "ceiling"])
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--senders", type=int, default=1)
    parser.add_argument("--ack", action="store_true")
    args = parser.parse_args(argv)
    pin(args.cpu)
    if args.kind == "ceiling":
        emit(raw_ceiling_sends(args.port, n=args.n))
        return
    run_trio_worker(
        partial(
            trio_realtime_sends,
            args.port,
            n=args.n,
            senders=args.senders,
            ack=args.ack,
            vsn=args.vsn,
            transport=args.transport,
        ),
        timeout=args.timeout,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Run the send measurement alone (see ``python -m benchmarks`` for the suite)."""
    module_main("sends", worker_main, argv)


if __name__ == "__main__":
    main()
