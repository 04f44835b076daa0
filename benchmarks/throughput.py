"""Broadcast receive throughput and CPU cost per message.

The peer floods ``n`` small broadcast frames on one channel at full speed::

    {"event":"broadcast","payload":{"event":"msg","payload":{"n":1,"text":"hello"},
     "type":"broadcast"},"ref":null,"topic":"realtime:flood:..."}

and each client counts them in user code. Clients, each in a fresh process per run:

* trio_realtime, transports ``websockets`` (the default) and ``trio-websocket``, vsn 1.0.0 and
  2.0.0, consumed with ``async for`` and with ``receive_batch()``;
* the raw transport ceilings: the transport's own receive loop plus ``orjson.loads`` of each
  message, without the runtime (the websockets sans-I/O protocol driven directly over a trio
  stream, and trio-websocket's ``get_message`` loop);
* the peer's own ceiling: a raw socket that only counts bytes, to show the peer is not the
  bottleneck;
* realtime-py (``realtime`` 2.x from PyPI, in its own virtualenv), with an ``on_broadcast``
  callback;
* realtime-js on node (where node and npm are present, see :mod:`benchmarks._node`), with an
  ``on('broadcast')`` callback.

The clock and ``time.process_time()`` start when the flood is requested (the join) and stop at
the last message: msg/s is wall-clock rate, µs/msg the client process's CPU time (user +
system, all threads) per message. Runs are interleaved (each repeat runs every client once) so
that the machine's noise spreads over all of them.

    python -m benchmarks.throughput [--quick] [--repeats 5] [--n 100000]
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import trio

from ._common import (
    JSON,
    emit,
    fmt,
    interleaved,
    module_main,
    pin,
    run_trio_worker,
    run_worker,
    summary,
    table,
    worker_parser,
)
from ._node import NodeRunner
from ._peer import flood_frame


class _Meter:
    """Counts messages; the clock runs from :meth:`start` (the flood is requested) to the
    ``n``-th message.

    Messages a subscription dropped count towards ``n`` (they will not come) but not towards
    the rate, which is messages delivered to user code per second.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.lost = 0
        self.t0 = self.c0 = 0.0
        self.t1 = self.c1 = 0.0

    def start(self) -> None:
        """Start the clocks (wall and process CPU)."""
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def add(self, k: int = 1, lost: int = 0) -> bool:
        """Count ``k`` delivered and ``lost`` dropped messages; True once ``n`` are in."""
        self.count += k
        self.lost += lost
        if self.count + self.lost >= self.n:
            self.t1, self.c1 = time.perf_counter(), time.process_time()
            return True
        return False

    def result(self, **extra: Any) -> JSON:
        measured = self.count
        seconds = self.t1 - self.t0
        cpu = self.c1 - self.c0
        return {
            "messages": measured,
            "lost": self.lost,
            "seconds": seconds,
            "rate": measured / seconds if seconds > 0 else None,
            "cpu_us": cpu / measured * 1e6 if measured else None,
            **extra,
        }


def flood_topic(n: int, binary: bool = False, tag: str = "") -> str:
    """The topic that makes the peer flood ``n`` messages at full speed."""
    return f"realtime:flood:{n}:0" + (":bin" if binary else "") + (f":{tag}" if tag else "")


def join_text(topic: str, vsn: str) -> bytes:
    """A minimal phx_join, for the raw clients."""
    payload = {"config": {"broadcast": {"self": False, "ack": False}}}
    if vsn == "1.0.0":
        frame: object = {"topic": topic, "event": "phx_join", "payload": payload, "ref": "1"}
    else:
        frame = ["1", "1", topic, "phx_join", payload]
    return orjson.dumps(frame)


# ---------------------------------------------------------------------------------------------
# Workers (each runs in its own process).


async def trio_realtime_worker(
    port: int, *, n: int, vsn: str, transport: str, mode: str, binary: bool, buffer: int | None
) -> JSON:
    """trio_realtime, consuming with ``async for`` (mode ``iter``) or ``receive_batch``."""
    from trio_realtime import SubscriptionOverflow, open_realtime

    meter = _Meter(n)
    overflows = 0
    async with open_realtime(
        f"http://127.0.0.1:{port}", apikey="bench", vsn=vsn, transport=transport
    ) as client:
        channel = client.channel(flood_topic(n, binary))
        sub = (
            channel.broadcasts("msg")
            if buffer is None
            else channel.broadcasts("msg", buffer=buffer)
        )
        async with channel, sub:
            meter.start()
            if mode == "iter":
                while True:
                    try:
                        async for _message in sub:
                            if meter.add():
                                break
                        break
                    except SubscriptionOverflow as exc:
                        overflows += 1
                        # What was dropped will not come: count it, so that the loop ends.
                        if meter.add(0, lost=exc.dropped):
                            break
            else:
                while True:
                    try:
                        if meter.add(len(await sub.receive_batch())):
                            break
                    except SubscriptionOverflow as exc:
                        overflows += 1
                        if meter.add(0, lost=exc.dropped):
                            break
            dropped = sub.statistics().dropped
    return meter.result(dropped=dropped, overflows=overflows)


async def raw_sansio_worker(port: int, *, n: int, vsn: str) -> JSON:
    """The websockets sans-I/O ClientProtocol driven directly over a trio stream."""
    from websockets.client import ClientProtocol
    from websockets.frames import Frame as WSFrame
    from websockets.frames import Opcode
    from websockets.uri import parse_uri

    stream = await trio.open_tcp_stream("127.0.0.1", port)
    protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/socket/websocket?vsn={vsn}"))
    protocol.send_request(protocol.connect())
    await stream.send_all(b"".join(protocol.data_to_send()))
    while not protocol.events_received():
        protocol.receive_data(await stream.receive_some(65536))
    protocol.send_text(join_text(flood_topic(n), vsn))
    meter = _Meter(n + 1)  # the join reply counts as one
    meter.start()
    await stream.send_all(b"".join(protocol.data_to_send()))
    loads = orjson.loads
    text, binary = Opcode.TEXT, Opcode.BINARY
    done = False
    while not done:
        data = await stream.receive_some(256 * 1024)
        if not data:
            raise RuntimeError("the peer closed the connection")
        protocol.receive_data(data)
        count = 0
        for event in protocol.events_received():
            if type(event) is WSFrame and (event.opcode is text or event.opcode is binary):
                loads(event.data)
                count += 1
        done = meter.add(count)
    await trio.aclose_forcefully(stream)
    return meter.result()


async def raw_trio_websocket_worker(port: int, *, n: int, vsn: str) -> JSON:
    """trio-websocket's own ``get_message`` loop."""
    import trio_websocket

    url = f"ws://127.0.0.1:{port}/socket/websocket?vsn={vsn}"
    meter = _Meter(n + 1)
    loads = orjson.loads
    async with trio_websocket.open_websocket_url(url, message_queue_size=1024) as ws:
        meter.start()
        await ws.send_message(join_text(flood_topic(n), vsn).decode())
        while True:
            loads(await ws.get_message())
            if meter.add():
                break
    return meter.result()


def raw_socket_worker(port: int, *, n: int, vsn: str) -> JSON:
    """A blocking socket that only counts bytes: how fast the peer can send."""
    from websockets.client import ClientProtocol
    from websockets.uri import parse_uri

    sock = socket.create_connection(("127.0.0.1", port))
    protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/socket/websocket?vsn={vsn}"))
    protocol.send_request(protocol.connect())
    sock.sendall(b"".join(protocol.data_to_send()))
    while not protocol.events_received():
        protocol.receive_data(sock.recv(65536))
    protocol.send_text(join_text(flood_topic(n), vsn))
    frame_size = len(flood_frame(flood_topic(n), vsn, False))
    meter = _Meter(n)
    meter.start()
    sock.sendall(b"".join(protocol.data_to_send()))
    buffer = bytearray(1024 * 1024)
    received = 0
    counted = 0
    while True:
        got = sock.recv_into(buffer)
        if not got:
            break
        received += got
        whole = received // frame_size
        if meter.add(whole - counted):
            break
        counted = whole
    sock.close()
    return meter.result()


# ---------------------------------------------------------------------------------------------
# The cases, and the orchestration.


@dataclass(frozen=True)
class Case:
    """One client configuration: a row of the table."""

    name: str
    kind: str  # trio_realtime, raw-sansio, raw-trio-websocket, raw-socket, realtime-py
    vsn: str = "1.0.0"
    transport: str = "websockets"
    mode: str = "iter"
    binary: bool = False
    big_buffer: bool = False

    def args(self, port: int, n: int) -> list[str]:
        """Worker command line (for ``python``)."""
        if self.kind == "realtime-py":
            from ._common import REALTIME_PY_WORKER

            return [str(REALTIME_PY_WORKER), "throughput", "--port", str(port), "--n", str(n)]
        args = ["-m", "benchmarks.throughput", "worker", self.kind, "--port", str(port)]
        args += ["--n", str(n), "--vsn", self.vsn, "--transport", self.transport]
        args += ["--mode", self.mode]
        if self.binary:
            args.append("--binary")
        if self.big_buffer:
            args += ["--buffer", str(n)]
        return args


def cases(include_realtime_py: bool, include_realtime_js: bool = False) -> list[Case]:
    """Every row of the throughput table, in display order.

    ``buffer=n`` rows give the subscription room for the whole flood, so that nothing is
    dropped and the figure is the end-to-end rate; the default-buffer rows show what a
    full-speed flood does to the default buffer of 4,096 (drops are counted, not delivered).
    """
    rows = [
        Case("peer: raw socket byte count (1.0.0)", "raw-socket"),
        Case("ceiling: websockets sans-I/O + orjson (1.0.0)", "raw-sansio"),
        Case("ceiling: websockets sans-I/O + orjson (2.0.0)", "raw-sansio", vsn="2.0.0"),
        Case("ceiling: trio-websocket + orjson (1.0.0)", "raw-trio-websocket"),
        Case("ceiling: trio-websocket + orjson (2.0.0)", "raw-trio-websocket", vsn="2.0.0"),
    ]
    for transport in ("websockets", "trio-websocket"):
        for vsn in ("1.0.0", "2.0.0"):
            for mode in ("iter", "batch"):
                loop = "async for" if mode == "iter" else "receive_batch"
                name = f"trio_realtime {transport} {vsn} {loop}, buffer=n"
                rows.append(Case(name, "trio_realtime", vsn, transport, mode, big_buffer=True))
    rows.append(
        Case(
            "trio_realtime websockets 2.0.0 binary kind 4, async for, buffer=n",
            "trio_realtime",
            "2.0.0",
            binary=True,
            big_buffer=True,
        )
    )
    for vsn in ("1.0.0", "2.0.0"):
        for mode in ("iter", "batch"):
            loop = "async for" if mode == "iter" else "receive_batch"
            name = f"trio_realtime websockets {vsn} {loop}, default buffer"
            rows.append(Case(name, "trio_realtime", vsn, "websockets", mode))
    if include_realtime_py:
        rows.append(Case("realtime-py 2.x (1.0.0, on_broadcast callback)", "realtime-py"))
    if include_realtime_js:
        rows.append(Case("realtime-js (node, 1.0.0, on('broadcast') callback)", "realtime-js"))
    return rows


def ceiling_for(case: Case) -> str | None:
    """The name of the raw ceiling row that ``case`` is compared with."""
    if case.kind != "trio_realtime":
        return None
    if case.transport == "websockets":
        return f"ceiling: websockets sans-I/O + orjson ({case.vsn})"
    return f"ceiling: trio-websocket + orjson ({case.vsn})"


def measure(
    port: int,
    *,
    n: int,
    repeats: int,
    cpu: int | None,
    realtime_py_python: str | None,
    log: Callable[[str], None],
    node: NodeRunner | None = None,
) -> JSON:
    """Run every case ``repeats`` times, interleaved; return the results by case name."""
    rows = cases(realtime_py_python is not None, node is not None)
    by_name = {case.name: case for case in rows}

    def run(name: str) -> JSON:
        case = by_name[name]
        if case.kind == "realtime-js":
            assert node is not None
            return node.run(["throughput", "--port", str(port), "--n", str(n)], cpu=cpu)
        python = realtime_py_python if case.kind == "realtime-py" else sys.executable
        assert python is not None
        return run_worker(case.args(port, n), python=python, cpu=cpu)

    samples, errors = interleaved(list(by_name), repeats, run, label="throughput", log=log)
    out: JSON = {"n": n, "repeats": repeats, "cases": {}, "errors": errors}
    for case in rows:
        runs = samples[case.name]
        out["cases"][case.name] = {
            "kind": case.kind,
            "vsn": case.vsn,
            "transport": case.transport,
            "mode": case.mode,
            "rate": summary([r["rate"] for r in runs if r.get("rate")]),
            "cpu_us": summary([r["cpu_us"] for r in runs if r.get("cpu_us")]),
            "dropped": sum(r.get("dropped", 0) for r in runs),
            "runs": len(runs),
            "ceiling": ceiling_for(case),
        }
    return out


def report(results: JSON) -> str:
    """The throughput table, with ratios to realtime-py, realtime-js and the raw ceiling."""
    by_name: dict[str, JSON] = results["cases"]
    baseline_row = next((v for k, v in by_name.items() if k.startswith("realtime-py")), None)
    baseline = baseline_row["rate"]["median"] if baseline_row else None
    js_row = next((v for k, v in by_name.items() if k.startswith("realtime-js")), None)
    js = js_row["rate"]["median"] if js_row else None
    rows: list[list[str]] = []
    for name, row in by_name.items():
        rate, cpu_us = row["rate"], row["cpu_us"]
        median = rate["median"]
        ceiling_row = by_name.get(row["ceiling"]) if row["ceiling"] else None
        ceiling = ceiling_row["rate"]["median"] if ceiling_row else None
        rows.append(
            [
                name,
                fmt(median),
                f"{fmt(rate['min'])}-{fmt(rate['max'])}",
                fmt(cpu_us["median"], ".2f"),
                f"{fmt(cpu_us['min'], '.2f')}-{fmt(cpu_us['max'], '.2f')}",
                f"{median / baseline:.2f}x" if median and baseline else "-",
                f"{median / js:.2f}x" if median and js else "-",
                f"{median / ceiling:.0%}" if median and ceiling else "-",
                str(row["dropped"]) if row["dropped"] else "",
            ]
        )
    headers = ["client", "msg/s", "range", "CPU µs/msg", "range", "vs rt-py", "vs rt-js"]
    headers += ["vs ceiling", "drops"]
    return table(headers, rows)


def worker_main(argv: Sequence[str]) -> None:
    """``worker KIND --port P --n N [--vsn V] [--transport T] [--mode M] [--binary]``."""
    parser = worker_parser(
        kinds=["trio_realtime", "raw-sansio", "raw-trio-websocket", "raw-socket"]
    )
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--mode", default="iter")
    parser.add_argument("--binary", action="store_true")
    parser.add_argument("--buffer", type=int, default=None)
    args = parser.parse_args(argv)
    pin(args.cpu)
    if args.kind == "raw-socket":
        emit(raw_socket_worker(args.port, n=args.n, vsn=args.vsn))
        return

    async def measurement() -> JSON:
        if args.kind == "raw-sansio":
            return await raw_sansio_worker(args.port, n=args.n, vsn=args.vsn)
        if args.kind == "raw-trio-websocket":
            return await raw_trio_websocket_worker(args.port, n=args.n, vsn=args.vsn)
        return await trio_realtime_worker(
            args.port,
            n=args.n,
            vsn=args.vsn,
            transport=args.transport,
            mode=args.mode,
            binary=args.binary,
            buffer=args.buffer,
        )

    run_trio_worker(measurement, timeout=args.timeout)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the throughput measurement alone (see ``python -m benchmarks`` for the suite)."""
    module_main("throughput", worker_main, argv)


if __name__ == "__main__":
    main()
