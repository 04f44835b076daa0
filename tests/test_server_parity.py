"""The local server behaves like the real one where the client depends on it: a stopped server
refuses memory connections (RS-09), channel tokens expire (RS-13).

Time is virtual (trio's MockClock with autojump), so every timing assertion is exact.
"""

from __future__ import annotations

import time

import jwt
import pytest
import trio
import trio.testing
from _realtime import connect
from server_support import VSNS, RawClient, reply_status
from server_support import connect as connect_raw

from trio_realtime import (
    Disconnected,
    RealtimeConnectionError,
    Reconnecting,
    backoff,
)
from trio_realtime.protocol import Frame, access_token_frame
from trio_realtime.testing import RealtimeServer, serve_realtime

EXACT = backoff(jitter=0)


async def _serve_until(
    stop: trio.Event, *, task_status: trio.TaskStatus[RealtimeServer] = trio.TASK_STATUS_IGNORED
) -> None:
    async with serve_realtime() as server:
        task_status.started(server)
        await stop.wait()


async def test_rs09_memory_transport_of_a_stopped_server_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RS-09: connecting in memory to a server that has exited fails like a refused TCP
    connection: a RealtimeConnectionError without a status, not a RuntimeError."""
    with trio.fail_after(5):
        async with serve_realtime() as server:
            pass
        with pytest.raises(RealtimeConnectionError, match="Connection refused") as info:
            async with connect(server):
                pass  # pragma: no cover
        assert info.value.status_code is None
        assert server.statistics().connections_accepted == 0


async def test_rs09_a_reconnecting_client_survives_its_server_exiting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RS-09: when the server exits under a connected client, each reconnect attempt fails as
    refused and the client goes on backing off (1, 2, 5 s) instead of dying."""
    stop = trio.Event()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(_serve_until, stop)
            async with connect(server, reconnect=EXACT) as client:
                events = client.connection_events()
                start = trio.current_time()
                stop.set()
                seen: list[tuple[float, object]] = []
                while len(seen) < 4:
                    event = await events.receive()
                    seen.append((trio.current_time() - start, event))
                assert isinstance(seen[0][1], Disconnected)
                assert seen[0][1].will_reconnect
                assert [(at, event) for at, event in seen[1:]] == [
                    (0.0, Reconnecting(1, 1.0)),
                    (1.0, Reconnecting(2, 2.0)),
                    (3.0, Reconnecting(3, 5.0)),
                ]
                assert not client.connected


# -- RS-13: a channel's token expires as on the server ------------------------------------------

EPOCH = 1_800_000_000
"""The Unix time at virtual time 0 in the token tests (MockClock starts at 0)."""


SIGNING_KEY = "a-signing-key-of-32-bytes-SECRET!"


def _epoch_clock() -> float:
    return EPOCH + trio.current_time()


def _token(exp: float, **claims: object) -> str:
    return jwt.encode({"role": "authenticated", "exp": exp, **claims}, SIGNING_KEY)


async def _expiry_frames(client: RawClient) -> tuple[float, Frame, Frame]:
    """Receive until ``system`` then ``phx_close``; return the time they came and both."""
    system = await client.receive_event("system")
    at = trio.current_time()
    closed = await client.receive()
    return at, system, closed


def _expired(topic: str, seconds: int) -> dict[str, str]:
    return {
        "channel": topic,
        "extension": "system",
        "message": f"Token has expired {seconds} seconds ago",
        "status": "error",
    }


@pytest.mark.parametrize("vsn", VSNS)
async def test_rs13_a_channel_closes_when_its_token_expires(
    vsn: str, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """RS-13: a token valid for 700 s is checked at 300 s and 600 s (min(5 min, exp - now))
    and at exactly 700 s the channel gets ``system`` "Token has expired 0 seconds ago" and
    ``phx_close`` with its join_ref; the connection stays open."""
    with trio.fail_after(800):
        async with serve_realtime(idle_timeout=None, wall_clock=_epoch_clock) as server:
            client = await connect_raw(server, vsn, nursery)
            reply = await client.join("room", access_token=_token(EPOCH + 700))
            assert reply_status(reply)[0] == "ok"
            at, system, closed = await _expiry_frames(client)
            assert at == 700.0
            assert system.payload == _expired("room", 0)
            assert (closed.event, closed.payload) == ("phx_close", {})
            if vsn == "2.0.0":
                assert closed.join_ref == reply.ref
            assert server.statistics().channels_joined == 0
            assert (await client.heartbeat()).event == "phx_reply"


async def test_rs13_an_access_token_push_replaces_the_token_and_its_timer(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """RS-13: after ``access_token`` the channel runs on the new token: a later ``exp`` moves
    the expiry later, an earlier one brings it forward."""
    with trio.fail_after(800):
        async with serve_realtime(idle_timeout=None, wall_clock=_epoch_clock) as server:
            client = await connect_raw(server, "1.0.0", nursery)
            reply = await client.join("room", access_token=_token(EPOCH + 100))
            await trio.sleep(90)
            await client.send(access_token_frame("9", reply.ref, "room", _token(EPOCH + 250)))
            await trio.sleep(100)  # 190 s: the first token would have expired at 100 s
            assert server.statistics().channels_joined == 1
            await client.send(access_token_frame("10", reply.ref, "room", _token(EPOCH + 200)))
            at, system, _closed = await _expiry_frames(client)
            assert at == 200.0
            assert system.payload == _expired("room", 0)


async def test_rs13_an_expired_token_is_refused_at_join_and_on_push(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """RS-13: joining with a token that expired 5 s ago is refused with the server's reason;
    pushing an expired token closes the channel with the message."""
    with trio.fail_after(100):
        async with serve_realtime(wall_clock=_epoch_clock) as server:
            await trio.sleep(10)
            client = await connect_raw(server, "2.0.0", nursery)
            reply = await client.join("room", access_token=_token(EPOCH + 5))
            assert reply_status(reply) == (
                "error",
                {"reason": "InvalidJWTToken: Token has expired 5 seconds ago"},
            )
            reply = await client.join("room", access_token=_token(EPOCH + 50))
            assert reply_status(reply)[0] == "ok"
            await client.send(access_token_frame("9", reply.ref, "room", _token(EPOCH + 8)))
            at, system, closed = await _expiry_frames(client)
            assert at == 10.0
            assert system.payload == _expired("room", 2)
            assert closed.event == "phx_close"


async def test_rs13_tokens_without_exp_and_non_jwts_never_expire(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """RS-13: the local server accepts tokens that are not JWTs, or have no ``exp``; those
    channels are never closed for expiry."""
    with trio.fail_after(800):
        async with serve_realtime(idle_timeout=None, wall_clock=_epoch_clock) as server:
            client = await connect_raw(server, "1.0.0", nursery)
            await client.join("a", access_token="not-a-jwt-SECRET")
            await client.join("b", access_token=jwt.encode({"role": "anon"}, SIGNING_KEY))
            await trio.sleep(600)
            assert server.statistics().channels_joined == 2


async def test_rs13_default_wall_clock_follows_trio_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RS-13: by default the server's Unix time advances with trio's (virtual) clock."""
    with trio.fail_after(100):
        async with serve_realtime() as server:
            start = server.wall_time()
            assert abs(start - time.time()) < 60
            await trio.sleep(42)
            assert server.wall_time() - start == pytest.approx(42.0)
