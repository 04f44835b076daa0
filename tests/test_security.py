"""Security: certificate checks (SE-02), no secret anywhere (SE-01), incoming size cap (BP-03).

TLS runs against the local server with ``serve_realtime(ssl_context=...)`` and a trustme CA;
everything is real sockets on 127.0.0.1 (real clock, no sleeps: every wait is for an event, with
``trio.fail_after`` only as a guard against hangs).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import trio
import trio.testing
import trustme
from _realtime import (
    client_tls_context,
    connect,
    connect_socket,
    drain,
    next_event,
    server_tls_context,
)
from conftest import APIKEY, SECRET_MARKER, TOKEN, exception_text, record_text

from trio_realtime import (
    ChannelClosed,
    Connected,
    Disconnected,
    JoinError,
    RealtimeClient,
    RealtimeConnectionError,
    backoff,
    open_realtime,
)
from trio_realtime._transport import CLOSE_NORMAL
from trio_realtime._ws_sansio import SansIOWebSocket, server_handshake
from trio_realtime.testing import RealtimeServer, serve_realtime

TRANSPORTS = ["websockets", "trio-websocket"]
VSNS = ["1.0.0", "2.0.0"]
GUARD = 10.0


# -- SE-02: certificates -----------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_se02_untrusted_certificate_is_refused_by_default(
    transport: str, ca: trustme.CA
) -> None:
    """SE-02: wss verifies certificates by default: a certificate from an unknown CA fails the
    connection with one clear RealtimeConnectionError, and no upgrade happens."""
    with trio.fail_after(GUARD):
        async with serve_realtime(ssl_context=server_tls_context(ca)) as server:
            assert server.url.startswith("https://")
            with pytest.raises(RealtimeConnectionError) as info:
                async with connect_socket(server, transport):
                    pass  # pragma: no cover
            message = str(info.value)
            assert "TLS handshake" in message
            assert "certificate" in message or "issuer" in message, message
            assert SECRET_MARKER not in exception_text(info.value)
            assert server.statistics().connections_accepted == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_se02_certificate_for_another_host_is_refused(transport: str, ca: trustme.CA) -> None:
    """SE-02: a certificate from a trusted CA but for another host name fails too."""
    with trio.fail_after(GUARD):
        async with serve_realtime(ssl_context=server_tls_context(ca, "other.example")) as server:
            with pytest.raises(RealtimeConnectionError) as info:
                async with connect_socket(server, transport, ssl_context=client_tls_context(ca)):
                    pass  # pragma: no cover
            assert "mismatch" in str(info.value), info.value
            assert server.statistics().connections_accepted == 0


@pytest.mark.parametrize("vsn", VSNS)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_se02_trusted_ca_via_ssl_context_works(
    transport: str, vsn: str, ca: trustme.CA
) -> None:
    """SE-02: with the CA passed as ``ssl_context=``, wss works end to end: join, acked
    broadcast, presence, a reconnect over TLS, and a clean close with 1000."""
    with trio.fail_after(GUARD):
        async with serve_realtime(ssl_context=server_tls_context(ca)) as server:
            async with connect_socket(
                server, transport, vsn=vsn, ssl_context=client_tls_context(ca)
            ) as client:
                assert client.url.startswith("wss://")
                events = client.connection_events()
                channel = client.channel(
                    "room", broadcast_self=True, broadcast_ack=True, presence_key="me"
                )
                messages = channel.broadcasts("msg")
                await channel.join()
                await channel.send_broadcast("msg", {"over": "tls"})
                assert (await messages.receive()).payload == {"over": "tls"}
                await server.drop_connections()
                assert (await next_event(events, Disconnected)).code == 1006
                await next_event(events, Connected)
                await server.wait_until_joined("room")
                await channel.track({"online": True})
                assert list(server.presence_state("room")) == ["me"]
                (connection,) = server.connections
            await connection.wait_finished()
            assert connection.close_code == CLOSE_NORMAL


async def test_se02_plain_client_to_tls_server_fails_clearly(ca: trustme.CA) -> None:
    """SE-02: speaking plain ws to a TLS port is a clear connection error, not a hang."""
    with trio.fail_after(GUARD):
        async with serve_realtime(ssl_context=server_tls_context(ca)) as server:
            with pytest.raises(RealtimeConnectionError):
                async with open_realtime(
                    server.url.replace("https://", "http://"), apikey=APIKEY, reconnect=None
                ):
                    pass  # pragma: no cover


# -- SE-01: secrets ----------------------------------------------------------------------------


class _Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def every_log_record() -> Iterator[list[logging.LogRecord]]:
    """Every record of every logger at DEBUG (the root logger at DEBUG, as an app might set it)."""
    handler = _Everything()
    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_se01_no_secret_in_any_log_repr_or_error_over_tls(
    transport: str, ca: trustme.CA, every_log_record: list[logging.LogRecord]
) -> None:
    """SE-01: with every logger at DEBUG, over wss with both transports, through connect, a token
    callback, joins, set_auth, pushes, refusals, a reconnect and close: no log record, repr or
    exception text contains the apikey or a token."""
    tokens = iter(f"{TOKEN}-{n}" for n in range(100))

    async def token() -> str:
        await trio.lowlevel.checkpoint()
        return next(tokens)

    texts: list[str] = []
    with trio.fail_after(GUARD):
        async with serve_realtime(ssl_context=server_tls_context(ca)) as server:
            async with connect_socket(
                server,
                transport,
                access_token=token,
                ssl_context=client_tls_context(ca),
                vsn="2.0.0",
            ) as client:
                events = client.connection_events()
                channel = client.channel("room", broadcast_ack=True, presence_key="me")
                subscription = channel.broadcasts()
                await channel.join()
                await channel.track({"who": "me"})
                await channel.send_broadcast("msg", {"n": 1})
                await client.set_auth(f"{TOKEN}-set")
                await channel.send_broadcast("msg", b"\x00binary")
                server.reject_joins("refused", "InvalidJWTToken: Token has expired 3 seconds ago")
                with pytest.raises(JoinError) as refused:
                    await client.channel("refused").join()
                await server.drop_connections()
                await next_event(events, Connected)
                await server.wait_until_joined("room")
                await server.system_close("room", "Token has expired 1 seconds ago")
                with pytest.raises(ChannelClosed) as closed:
                    while True:
                        await subscription.receive()
                texts += [repr(client), repr(channel), repr(subscription), client.url]
                texts += [repr(client.statistics()), repr(subscription.statistics())]
                texts += [repr(event) for event in drain(events)]
                texts.append(exception_text(refused.value))
                texts.append(exception_text(closed.value))
        async with serve_realtime(
            ssl_context=server_tls_context(ca), apikey="the-right-one"
        ) as other:
            with pytest.raises(RealtimeConnectionError) as unauthorized:
                async with connect_socket(other, transport, ssl_context=client_tls_context(ca)):
                    pass  # pragma: no cover
            assert unauthorized.value.status_code == 401
            texts.append(exception_text(unauthorized.value))
            with pytest.raises(RealtimeConnectionError) as untrusted:
                async with connect_socket(other, transport):
                    pass  # pragma: no cover
            texts.append(exception_text(untrusted.value))
    names = {record.name.split(".")[0] for record in every_log_record}
    assert {"trio_realtime", "websockets"} <= names
    texts += [record_text(record) for record in every_log_record]
    leaks = [text for text in texts if SECRET_MARKER in text]
    assert not leaks, leaks[:3]


# -- BP-03: incoming size cap ------------------------------------------------------------------


def _text_broadcast_of_size(size: int, topic: str = "realtime:nowhere") -> str:
    """A V1 broadcast frame of exactly ``size`` bytes, for a topic nobody joined."""
    head = '{"event":"broadcast","payload":{"event":"pad","payload":"'
    tail = f'"}},"ref":null,"topic":"{topic}"}}'
    return head + "x" * (size - len(head) - len(tail)) + tail


async def _cap_is_exact(client: RealtimeClient, server: RealtimeServer, cap: int) -> None:
    """A message of exactly ``cap`` bytes is taken; one byte more closes with 1009, then the
    client reconnects."""
    events = client.connection_events()
    before = client.statistics().unroutable_frames
    await server.send_raw(_text_broadcast_of_size(cap))
    await server.send_raw(_text_broadcast_of_size(cap + 1))
    event = await next_event(events, Disconnected)
    assert event.code == 1009
    assert event.reason
    assert client.statistics().unroutable_frames == before + 1
    await next_event(events, Connected)
    assert client.statistics().reconnects == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_bp03_cap_is_exact_over_both_transports(transport: str) -> None:
    """BP-03: the cap is the last size accepted, for both real transports."""
    with trio.fail_after(GUARD):
        async with (
            serve_realtime() as server,
            connect_socket(server, transport, max_message_size=10_000) as client,
        ):
            await _cap_is_exact(client, server, 10_000)


async def test_bp03_cap_is_exact_in_memory(autojump_clock: trio.testing.MockClock) -> None:
    """BP-03: the same boundary on the in-memory transport; the reconnect comes after 1 s."""
    async with (
        serve_realtime() as server,
        connect(server, max_message_size=10_000, reconnect=backoff(jitter=0)) as client,
    ):
        start = trio.current_time()
        await _cap_is_exact(client, server, 10_000)
        assert trio.current_time() - start == 1.0


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_bp03_binary_message_over_the_cap(transport: str) -> None:
    """BP-03: a V2 binary broadcast over the cap closes with 1009 too."""
    with trio.fail_after(GUARD):
        async with (
            serve_realtime() as server,
            connect_socket(server, transport, vsn="2.0.0", max_message_size=4096) as client,
        ):
            events = client.connection_events()
            channel = client.channel("room")
            messages = channel.broadcasts()
            await channel.join()
            await server.broadcast("room", "small", b"\x01" * 1000)
            assert (await messages.receive()).payload == b"\x01" * 1000
            await server.broadcast("room", "big", b"\x02" * 5000)
            assert (await next_event(events, Disconnected)).code == 1009
            await next_event(events, Connected)


async def _fragmenting_peer(
    fragments: list[list[bytes]], task_status: trio.TaskStatus[int]
) -> None:
    """Accept connections; on the first, send each message of ``fragments`` as a text message
    in those fragments. Connections are then held open until the client closes them."""

    async def accept_all(request: object) -> None:
        await trio.lowlevel.checkpoint()

    connections = 0

    async def handle(stream: trio.SocketStream) -> None:
        nonlocal connections
        connections += 1
        accepted = await server_handshake(stream, accept_all, max_message_size=1 << 20)
        assert accepted is not None
        websocket: SansIOWebSocket = accepted[0]
        if connections == 1:
            protocol = websocket._protocol
            for parts in fragments:
                protocol.send_text(parts[0], fin=len(parts) == 1)
                for index, part in enumerate(parts[1:], start=2):
                    protocol.send_continuation(part, fin=index == len(parts))
            await stream.send_all(b"".join(protocol.data_to_send()))
        try:
            while True:
                await websocket.receive_messages()
        except RealtimeConnectionError:
            pass

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_bp03_fragmented_messages_count_as_a_whole(transport: str) -> None:
    """BP-03: the cap applies to a whole fragmented message: one reassembled within the cap is
    delivered, one whose fragments are each small but whose total is over the cap closes the
    connection with 1009."""
    within = _text_broadcast_of_size(3000).encode()
    over = _text_broadcast_of_size(5000).encode()
    fragments = [
        [within[:1000], within[1000:2000], within[2000:]],
        [over[:2000], over[2000:4000], over[4000:]],
    ]
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(_fragmenting_peer, fragments)
            async with open_realtime(
                f"http://127.0.0.1:{port}",
                apikey=APIKEY,
                transport=transport,
                max_message_size=4096,
                reconnect=lambda attempt: 0.0,
                heartbeat_interval=None,
            ) as client:
                events = client.connection_events()
                assert (await next_event(events, Disconnected)).code == 1009
                assert client.statistics().unroutable_frames == 1
                assert client.statistics().malformed_frames == 0
                await next_event(events, Connected)
            nursery.cancel_scope.cancel()
