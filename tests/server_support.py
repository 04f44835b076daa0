"""Raw-frame helpers for the local server tests.

They drive the server with the protocol layer only (``encode_wire`` for client frames,
``parse_frame`` for server frames), never with the client runtime, so the server is checked
against PROTOCOL.md rather than against the client's idea of it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import trio

from trio_realtime._transport import Message, Transport, TransportOptions
from trio_realtime._url import Endpoint, websocket_url
from trio_realtime._ws_sansio import connect_sansio
from trio_realtime.protocol import (
    Frame,
    JSONObject,
    JSONValue,
    channel_config,
    encode_wire,
    heartbeat_frame,
    join_frame,
    leave_frame,
    parse_frame,
    realtime_topic,
    ref_counter,
)
from trio_realtime.protocol import next_ref as advance
from trio_realtime.testing import RealtimeServer

VSNS = ("1.0.0", "2.0.0")
APIKEY = "anon-SECRET-apikey"
TOKEN = "user-SECRET-token"


class RawClient:
    """One connection speaking raw frames of one vsn."""

    def __init__(self, transport: Transport, vsn: str) -> None:
        self.transport = transport
        self.vsn = vsn
        self._pending: deque[Message] = deque()
        self._refs = ref_counter()

    def next_ref(self) -> str:
        """Return a fresh ref."""
        return advance(self._refs)

    async def send(self, frame: Frame) -> None:
        """Encode ``frame`` for this vsn and send it."""
        data, binary = encode_wire(frame, self.vsn)
        await self.transport.send_message(data, binary)

    async def send_raw(self, data: str | bytes) -> None:
        """Send ``data`` as it is (``str`` as text, ``bytes`` as binary)."""
        if isinstance(data, str):
            await self.transport.send_message(data.encode(), False)
        else:
            await self.transport.send_message(data, True)

    async def receive_raw(self) -> Message:
        """Return the next message as it arrived."""
        while not self._pending:
            self._pending.extend(await self.transport.receive_messages())
        return self._pending.popleft()

    async def receive(self) -> Frame:
        """Return the next message, parsed as a server frame."""
        return parse_frame(await self.receive_raw(), self.vsn)

    async def receive_event(self, event: str) -> Frame:
        """Skip frames until one with ``event`` arrives; return it."""
        while True:
            frame = await self.receive()
            if frame.event == event:
                return frame

    async def assert_silent(self, seconds: float = 1.0) -> None:
        """Fail if anything arrives within ``seconds`` (use under the autojump clock)."""
        with trio.move_on_after(seconds):
            message = await self.receive_raw()
            raise AssertionError(f"unexpected message: {message!r}")

    async def heartbeat(self) -> Frame:
        """Send a heartbeat and return the next frame (its reply)."""
        await self.send(heartbeat_frame(self.next_ref()))
        return await self.receive()

    async def join(
        self,
        topic: str,
        *,
        config: Mapping[str, JSONValue] | None = None,
        bindings: Sequence[Mapping[str, JSONValue]] = (),
        access_token: str | None = None,
    ) -> Frame:
        """Join ``topic`` and return the reply, which must be the next frame."""
        ref = self.next_ref()
        await self.send(
            join_frame(ref, topic, config or channel_config(), bindings, access_token=access_token)
        )
        reply = await self.receive()
        assert reply.event == "phx_reply", reply
        assert reply.ref == ref, reply
        return reply

    async def leave(self, topic: str, join_ref: str | None) -> None:
        """Send a ``phx_leave``."""
        await self.send(leave_frame(self.next_ref(), join_ref, topic))

    async def aclose(self) -> None:
        """Close the connection."""
        await self.transport.aclose()


def endpoint(server: RealtimeServer, vsn: str, apikey: str = APIKEY) -> Endpoint:
    """Return the server's WebSocket endpoint for ``vsn``."""
    return websocket_url(server.url, apikey=apikey, vsn=vsn)


async def connect(
    server: RealtimeServer, vsn: str, nursery: trio.Nursery, *, apikey: str = APIKEY
) -> RawClient:
    """Connect in memory (usable under the MockClock)."""
    transport = await server.memory_transport(
        endpoint(server, vsn, apikey), TransportOptions(), nursery
    )
    return RawClient(transport, vsn)


async def connect_socket(
    server: RealtimeServer, vsn: str, nursery: trio.Nursery, *, apikey: str = APIKEY
) -> RawClient:
    """Connect over a real loopback socket; it is released when ``nursery`` is cancelled."""
    transport = await connect_sansio(endpoint(server, vsn, apikey), TransportOptions(), nursery)
    nursery.start_soon(_release_at_exit, transport)
    return RawClient(transport, vsn)


async def _release_at_exit(transport: Transport) -> None:
    try:
        await trio.sleep_forever()
    finally:
        await transport.abort()


def config(**options: object) -> JSONObject:
    """Return ``channel_config(**options)``."""
    return channel_config(**options)  # type: ignore[arg-type]


def reply_status(frame: Frame) -> tuple[object, object]:
    """Return ``(status, response)`` of a ``phx_reply``."""
    assert frame.event == "phx_reply", frame
    assert isinstance(frame.payload, dict), frame
    return frame.payload["status"], frame.payload["response"]


def obj(value: object) -> dict[str, Any]:
    """Return ``value``, checked to be a JSON object, for easy indexing in assertions."""
    assert isinstance(value, dict), value
    return value


def topic_of(name: str) -> str:
    """Return the full topic of ``name``."""
    return realtime_topic(name)
