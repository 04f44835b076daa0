"""A minimal Realtime-compatible flood/echo peer for the benchmarks, run in its own process.

It speaks just enough of the protocol (vsn 1.0.0 and 2.0.0) to serve every benchmark client,
trio_realtime and realtime-py alike:

* ``phx_join`` is answered ``ok`` with ``{"postgres_changes": []}``, heartbeats ``ok``,
  ``phx_leave`` with an ``ok`` reply followed by ``phx_close``;
* a broadcast on a joined channel is echoed to the sender when the join asked for
  ``broadcast.self`` (as binary kind 4 when it came as kind 3), then acknowledged when it asked
  for ``broadcast.ack`` (echo first, as the real server fans out before it acks);
* the topic of a join is also a command:

  - ``realtime:flood:<count>:<rate>[:bin]`` sends ``count`` copies of a small broadcast frame
    (event ``msg``, payload ``{"n":1,"text":"hello"}``) on that topic after the join reply,
    at full speed when ``rate`` is 0, else at ``rate`` messages per second; ``count`` 0 means
    until the channel is left. ``:bin`` sends V2 binary kind-4 frames instead of text;
  - ``realtime:drop:<delay_ms>`` drops the TCP connection (no close frame) ``delay_ms`` after
    the join reply, so that a client reconnects, rejoins, and is dropped again.

Frames and their codecs come from :mod:`trio_realtime.protocol`; the WebSocket layer is the
websockets package's sans-I/O ``ServerProtocol`` for the handshake and for what the client
sends. What the peer sends is framed by hand (server frames are unmasked, so a frame is a
two-to-ten byte header plus the payload), and a flood is one pre-encoded frame repeated into
64 KiB chunks: sending costs the peer a ``send_all`` per chunk, nothing per message. The
suite shows that a raw socket reader gets far more messages per second from it than any
client can take.

    python -m benchmarks._peer [--host 127.0.0.1] [--port 0] [--cpu N]

prints ``PORT <n>`` once listening, and exits when its standard input closes (so it never
outlives the suite that started it) or after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import resource
import struct
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import trio
from websockets.frames import Frame as WSFrame
from websockets.frames import Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from trio_realtime.protocol import Frame, ProtocolError, encode_server_frame, parse_client_frame

RECEIVE_SIZE = 256 * 1024
CHUNK_BYTES = 64 * 1024
FLOOD_EVENT = "msg"
FLOOD_PAYLOAD = {"n": 1, "text": "hello"}
RATE_TICK = 0.001  # seconds between bursts of a rate-limited flood


def ws_frame(data: bytes, binary: bool) -> bytes:
    """Frame ``data`` as one unmasked, unfragmented WebSocket message (server to client)."""
    first = 0x82 if binary else 0x81
    size = len(data)
    if size < 126:
        header = bytes((first, size))
    elif size < 65536:
        header = struct.pack("!BBH", first, 126, size)
    else:
        header = struct.pack("!BBQ", first, 127, size)
    return header + data


def flood_frame(topic: str, vsn: str, binary: bool) -> bytes:
    """The wire bytes (WebSocket frame included) of one flood broadcast on ``topic``."""
    payload = {"event": FLOOD_EVENT, "payload": FLOOD_PAYLOAD, "type": "broadcast"}
    frame = Frame(topic, "broadcast", payload)  # type: ignore[arg-type]
    data, is_binary = encode_server_frame(frame, vsn, user_broadcast=binary)
    return ws_frame(data, is_binary)


def _flag(value: object) -> bool:
    if isinstance(value, str):
        return value.lower() == "true"
    return value is True


@dataclass
class _Joined:
    join_ref: str | None
    self_: bool
    ack: bool
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


class PeerConnection:
    """One client connection: reads and answers its frames, runs its floods."""

    def __init__(self, stream: trio.SocketStream, protocol: ServerProtocol, vsn: str) -> None:
        self.stream = stream
        self.protocol = protocol
        self.vsn = vsn
        self.lock = trio.StrictFIFOLock()
        self.joined: dict[str, _Joined] = {}
        self.dropped = False
        # Answers to one chunk of client frames are written together, in one send.
        self.pending: list[bytes] = []

    async def write(self, data: bytes) -> None:
        async with self.lock:
            await self.stream.send_all(data)

    def send(self, frame: Frame, *, user_broadcast: bool = False) -> None:
        data, binary = encode_server_frame(frame, self.vsn, user_broadcast=user_broadcast)
        self.pending.append(ws_frame(data, binary))

    def reply(self, topic: str, ref: str | None, join_ref: str | None, response: object) -> None:
        payload = {"response": response, "status": "ok"}
        self.send(Frame(topic, "phx_reply", payload, ref, join_ref))  # type: ignore[arg-type]

    async def flush(self) -> None:
        """Write the queued answers and whatever the WebSocket protocol wants to send."""
        self.pending.extend(self.protocol.data_to_send())
        if self.pending:
            data = b"".join(self.pending)
            self.pending = []
            await self.write(data)

    async def serve(self, nursery: trio.Nursery, events: list[object]) -> None:
        protocol = self.protocol
        try:
            self.handle_events(nursery, events)
            await self.flush()
            while protocol.state is State.OPEN and not self.dropped:
                data = await self.stream.receive_some(RECEIVE_SIZE)
                if data:
                    protocol.receive_data(data)
                else:
                    protocol.receive_eof()
                self.handle_events(nursery, protocol.events_received())
                await self.flush()
                if not data:
                    break
        except _STREAM_ERRORS:
            pass
        finally:
            nursery.cancel_scope.cancel()

    def handle_events(self, nursery: trio.Nursery, events: Sequence[object]) -> None:
        for event in events:
            if not isinstance(event, WSFrame):
                continue
            if event.opcode is Opcode.TEXT:
                self.handle_message(nursery, bytes(event.data).decode())
            elif event.opcode is Opcode.BINARY:
                self.handle_message(nursery, bytes(event.data))

    def handle_message(self, nursery: trio.Nursery, data: str | bytes) -> None:
        try:
            frame, user_broadcast = parse_client_frame(data, self.vsn)
        except ProtocolError:
            return
        topic, event = frame.topic, frame.event
        if event == "heartbeat":
            self.reply(topic, frame.ref, None, {})
        elif event == "phx_join":
            self.join(nursery, frame)
        elif event == "phx_leave":
            joined = self.joined.pop(topic, None)
            if joined is not None:
                joined.scope.cancel()
            join_ref = joined.join_ref if joined else frame.join_ref
            self.reply(topic, frame.ref, join_ref, {})
            self.send(Frame(topic, "phx_close", {}, join_ref, join_ref))
        elif event == "broadcast":
            joined = self.joined.get(topic)
            if joined is None:
                return
            if joined.self_:
                echo = Frame(topic, "broadcast", frame.payload)
                self.send(echo, user_broadcast=user_broadcast)
            if joined.ack:
                self.reply(topic, frame.ref, joined.join_ref, {})

    def join(self, nursery: trio.Nursery, frame: Frame) -> None:
        topic = frame.topic
        payload = frame.payload if isinstance(frame.payload, dict) else {}
        config = payload.get("config")
        broadcast = config.get("broadcast") if isinstance(config, dict) else None
        if not isinstance(broadcast, dict):
            broadcast = {}
        join_ref = frame.join_ref or frame.ref
        previous = self.joined.pop(topic, None)
        if previous is not None:
            previous.scope.cancel()
        joined = _Joined(join_ref, _flag(broadcast.get("self")), _flag(broadcast.get("ack")))
        self.joined[topic] = joined
        self.reply(topic, frame.ref, frame.join_ref, {"postgres_changes": []})
        parts = topic.split(":")
        if len(parts) >= 4 and parts[1] == "flood":
            count, rate = int(parts[2]), float(parts[3])
            binary = len(parts) > 4 and parts[4] == "bin"
            nursery.start_soon(self.flood, joined.scope, topic, count, rate, binary)
        elif len(parts) >= 3 and parts[1] == "drop":
            nursery.start_soon(self.drop_later, int(parts[2]) / 1000)

    async def flood(
        self, scope: trio.CancelScope, topic: str, count: int, rate: float, binary: bool
    ) -> None:
        # A client that went away mid-flood: serve() notices and ends the connection.
        with contextlib.suppress(*_STREAM_ERRORS):
            await self._flood(scope, topic, count, rate, binary)

    async def _flood(
        self, scope: trio.CancelScope, topic: str, count: int, rate: float, binary: bool
    ) -> None:
        one = flood_frame(topic, self.vsn, binary and self.vsn == "2.0.0")
        per_chunk = max(1, CHUNK_BYTES // len(one))
        chunk = one * per_chunk
        with scope:
            if rate <= 0:
                sent = 0
                while count == 0 or sent < count:
                    batch = per_chunk if count == 0 else min(per_chunk, count - sent)
                    await self.write(chunk if batch == per_chunk else one * batch)
                    sent += batch
                return
            start = trio.current_time()
            sent = 0
            while count == 0 or sent < count:
                due = int((trio.current_time() - start) * rate) + 1
                if count:
                    due = min(due, count)
                if due > sent:
                    batch = min(due - sent, per_chunk)
                    await self.write(chunk if batch == per_chunk else one * batch)
                    sent += batch
                await trio.sleep_until(max(start + sent / rate, trio.current_time() + RATE_TICK))

    async def drop_later(self, delay: float) -> None:
        await trio.sleep(delay)
        self.dropped = True
        async with self.lock:
            await trio.aclose_forcefully(self.stream)


async def _handshake(stream: trio.SocketStream) -> tuple[ServerProtocol, str, list[object]] | None:
    protocol = ServerProtocol(max_size=16 * 1024 * 1024)
    request: Request | None = None
    while request is None:
        data = await stream.receive_some(RECEIVE_SIZE)
        if not data:
            return None
        protocol.receive_data(data)
        for event in protocol.events_received():
            if isinstance(event, Request):
                request = event
    query = parse_qs(urlsplit(request.path).query)
    vsn = query.get("vsn", ["1.0.0"])[0]
    if vsn not in ("1.0.0", "2.0.0"):
        protocol.send_response(protocol.reject(403, ""))
        await stream.send_all(b"".join(protocol.data_to_send()))
        return None
    protocol.send_response(protocol.accept(request))
    await stream.send_all(b"".join(protocol.data_to_send()))
    return protocol, vsn, list(protocol.events_received())


_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


def _only_stream_errors(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_stream_errors(inner) for inner in exc.exceptions)
    return isinstance(exc, _STREAM_ERRORS)


async def _handle(stream: trio.SocketStream) -> None:
    """Serve one connection. Nothing a client does can bring the peer down."""
    try:
        handshake = await _handshake(stream)
        if handshake is None:
            return
        protocol, vsn, events = handshake
        connection = PeerConnection(stream, protocol, vsn)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.serve, nursery, events)
    except Exception as exc:
        if not _only_stream_errors(exc):
            traceback.print_exc()
    finally:
        await trio.aclose_forcefully(stream)


async def _watch_stdin(cancel_scope: trio.CancelScope) -> None:
    """End the peer when the parent closes our standard input (or dies)."""
    await trio.to_thread.run_sync(sys.stdin.buffer.read, abandon_on_cancel=True)
    cancel_scope.cancel()


async def serve(host: str, port: int, max_seconds: float) -> None:
    """Serve until standard input closes or ``max_seconds`` pass."""
    with trio.move_on_after(max_seconds) as scope:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, _handle, port, host=host)
            )
            bound = listeners[0].socket.getsockname()[1]
            print(f"PORT {bound}", flush=True)
            nursery.start_soon(_watch_stdin, scope)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cpu", type=int, default=None, help="pin the peer to this CPU")
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    args = parser.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    # One descriptor per client connection: the connections benchmark opens 10,000.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    trio.run(serve, args.host, args.port, args.max_seconds)


if __name__ == "__main__":
    main()
