"""The access token callable while channels are joined (RS-03) and when it hangs or fails
(HD-03): when it is called, what is pushed, one call at a time, bounded and reported.

Against the local server (in memory, and over loopback sockets with both transports where the
transport matters), in virtual time. Tokens that expire are JWTs whose ``exp`` is compared with
a wall clock that follows trio's clock, on the client (``time.time`` patched) and on the server
(``wall_clock=``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import jwt
import pytest
import trio
import trio.testing
from _realtime import next_event
from conftest import APIKEY, TOKEN
from sync_support import SHORT, WAIT, ServerThread, time_limit

import trio_realtime.sync
from trio_realtime import (
    Channel,
    ChannelClosed,
    ChannelEvent,
    ChannelJoined,
    ChannelJoinFailed,
    Connected,
    RealtimeClient,
    RealtimeError,
    Subscription,
    TokenError,
    backoff,
    open_realtime,
)
from trio_realtime.testing import RealtimeServer, serve_realtime

EPOCH = 1_800_000_000
SIGNING_KEY = "a-signing-key-of-32-bytes-SECRET!"
TRANSPORTS = ["memory", "websockets", "trio-websocket"]
EXACT = backoff(jitter=0)
_real_time = time.time
C = TypeVar("C", ChannelJoined, ChannelJoinFailed)


def _token(exp: float, sub: str = "user") -> str:
    return jwt.encode({"role": "authenticated", "sub": sub, "exp": exp}, SIGNING_KEY)


def _epoch_clock() -> float:
    """Unix time that follows trio's (virtual) clock from EPOCH; the real time outside trio."""
    try:
        return EPOCH + trio.current_time()
    except RuntimeError:
        return _real_time()


@pytest.fixture
def epoch_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's wall clock (``time.time``) follows trio's clock, from EPOCH."""
    monkeypatch.setattr(time, "time", _epoch_clock)


@asynccontextmanager
async def _client(
    server: RealtimeServer, transport: str = "memory", **options: Any
) -> AsyncIterator[RealtimeClient]:
    options.setdefault("apikey", APIKEY)
    chosen: object = server.memory_transport if transport == "memory" else transport
    async with open_realtime(server.url, transport=chosen, **options) as client:  # type: ignore[arg-type]
        yield client


class Source:
    """An async token callable that records when it is called and answers from ``answer``."""

    def __init__(self, answer: Callable[[int], str], *, delay: float = 0.0) -> None:
        self.answer = answer
        self.delay = delay
        self.calls: list[float] = []

    async def __call__(self) -> str:
        self.calls.append(trio.current_time())
        if self.delay:
            await trio.sleep(self.delay)
        else:
            await trio.lowlevel.checkpoint()
        return self.answer(len(self.calls))


class Seen:
    """The server's view: every token a join runs with or an ``access_token`` push brings,
    with the virtual time it arrived (through ``token_check``)."""

    def __init__(self) -> None:
        self.tokens: list[tuple[float, str]] = []

    def __call__(self, token: str) -> str | None:
        self.tokens.append((trio.current_time(), token))
        return None


def _pushes(server: RealtimeServer) -> list[tuple[str, object]]:
    """The ``access_token`` frames the server received, over all connections."""
    return [
        (frame.topic, frame.payload)
        for connection in server.connections
        for frame in connection.received_frames
        if frame.event == "access_token"
    ]


async def _channel_event(events: Subscription[ChannelEvent], kind: type[C]) -> C:
    """Skip channel events until one of ``kind`` arrives; return it."""
    while True:
        event = await events.receive()
        if isinstance(event, kind):
            return event


def _warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.WARNING and text in record.getMessage()
    ]


# -- RS-03: consulted while channels are joined ----------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_rs03_every_heartbeat_asks_and_only_a_changed_token_is_pushed(
    transport: str, autojump_clock: trio.testing.MockClock
) -> None:
    """RS-03: with heartbeats every 25 s the callable is called at the first join (0 s), then
    after each heartbeat (25, 50, 75 s); the token it changed at 50 s is pushed to both joined
    channels at 50 s, and nothing is pushed when it is unchanged (25, 75 s) nor to a channel
    that is not joined."""
    source = Source(lambda n: "tok-2-SECRET" if n >= 3 else "tok-1-SECRET")
    seen = Seen()
    with trio.fail_after(200):
        async with (
            serve_realtime(token_check=seen) as server,
            _client(server, transport, access_token=source) as client,
        ):
            start = trio.current_time()
            rooms = [client.channel("a"), client.channel("b")]
            for room in rooms:
                await room.join()
            client.channel("never-joined")
            await trio.sleep(80)
            assert [at - start for at in source.calls] == [0, 25, 50, 75]
            assert [(at - start, token) for at, token in seen.tokens] == [
                (0, "tok-1-SECRET"),
                (0, "tok-1-SECRET"),
                (50, "tok-2-SECRET"),
                (50, "tok-2-SECRET"),
            ]
            assert _pushes(server) == [
                ("realtime:a", {"access_token": "tok-2-SECRET"}),
                ("realtime:b", {"access_token": "tok-2-SECRET"}),
            ]
            assert all(room.joined for room in rooms)


async def test_rs03_a_token_is_refreshed_30_s_before_its_exp_between_heartbeats(
    epoch_time: None, autojump_clock: trio.testing.MockClock
) -> None:
    """RS-03: without heartbeats, a token that expires at 100 s is replaced at exactly 70 s
    (30 s before ``exp``), the next at 170 s; the server, which would close the channel at
    100 s, keeps it joined on the pushed tokens."""
    exps = [EPOCH + 100, EPOCH + 200, EPOCH + 300]
    source = Source(lambda n: _token(exps[n - 1]))
    seen = Seen()
    with trio.fail_after(400):
        async with (
            serve_realtime(token_check=seen, wall_clock=_epoch_clock, idle_timeout=None) as server,
            _client(server, access_token=source, heartbeat_interval=None) as client,
        ):
            assert trio.current_time() == 0
            room = client.channel("room")
            messages = room.broadcasts()
            await room.join()
            await trio.sleep(180)
            assert source.calls == [0, 70, 170]
            assert seen.tokens == [
                (at, _token(exp)) for at, exp in zip([0, 70, 170], exps, strict=True)
            ]
            assert _pushes(server) == [
                ("realtime:room", {"access_token": _token(exps[1])}),
                ("realtime:room", {"access_token": _token(exps[2])}),
            ]
            assert room.joined
            assert server.statistics().channels_joined == 1
            with pytest.raises(trio.WouldBlock):
                messages.receive_nowait()


async def test_rs03_a_token_that_stays_about_to_expire_is_not_asked_for_in_a_loop(
    epoch_time: None, autojump_clock: trio.testing.MockClock
) -> None:
    """RS-03: a callable that keeps returning the token expiring at 100 s is asked at 70 s and
    95 s (one heartbeat interval, 25 s, apart), nothing is pushed, and at 100 s the server
    closes the channel ("Token has expired 0 seconds ago"); nothing joined, it is not asked
    again."""
    source = Source(lambda n: _token(EPOCH + 100))
    with trio.fail_after(400):
        async with (
            serve_realtime(wall_clock=_epoch_clock, idle_timeout=None) as server,
            _client(server, access_token=source, heartbeat_interval=None) as client,
        ):
            room = client.channel("room")
            messages = room.broadcasts()
            await room.join()
            with pytest.raises(ChannelClosed) as closed:
                await messages.receive()
            assert trio.current_time() == 100
            assert closed.value.reason == "Token has expired 0 seconds ago"
            await trio.sleep(200)
            assert source.calls == [0, 70, 95]
            assert _pushes(server) == []


async def test_rs03_hd03_twenty_joins_and_a_heartbeat_share_one_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RS-03, HD-03: twenty simultaneous joins make one call (3 s long) and all join at 3 s
    with its token. At the heartbeat (25 s) the next call starts; five joins made during it
    (at 26 s) wait for that same call, join at 28 s with the new token, and the twenty joined
    channels get it pushed at 28 s: two calls in all, no push to the five."""
    source = Source(lambda n: f"tok-{n}-SECRET", delay=3.0)
    seen = Seen()
    with trio.fail_after(200):
        async with (
            serve_realtime(token_check=seen) as server,
            _client(server, access_token=source) as client,
        ):
            first = [client.channel(f"first-{i}") for i in range(20)]
            async with trio.open_nursery() as nursery:
                for channel in first:
                    nursery.start_soon(channel.join)
            assert trio.current_time() == 3
            assert source.calls == [0]
            await trio.sleep_until(26)
            assert source.calls == [0, 25]
            late = [client.channel(f"late-{i}") for i in range(5)]
            async with trio.open_nursery() as nursery:
                for channel in late:
                    nursery.start_soon(channel.join)
            assert trio.current_time() == 28
            await trio.testing.wait_all_tasks_blocked()
            assert source.calls == [0, 25]
            assert sorted(seen.tokens) == [(3, "tok-1-SECRET")] * 20 + [(28, "tok-2-SECRET")] * 25
            assert _pushes(server) == [
                (channel.topic, {"access_token": "tok-2-SECRET"}) for channel in first
            ]


# -- HD-03: a callable that hangs or fails --------------------------------------------------------


async def test_hd03_a_callable_that_never_returns_fails_twenty_joins_at_token_timeout(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """HD-03: twenty simultaneous joins wait for one call of a callable that never returns;
    at exactly ``token_timeout`` (5 s by default) each raises TokenError ("timed out",
    ``timed_out``), one WARNING says so, and the client is still usable."""
    calls: list[float] = []

    async def hangs() -> str:
        calls.append(trio.current_time())
        await trio.sleep_forever()
        raise AssertionError  # pragma: no cover

    errors: list[TokenError] = []
    with trio.fail_after(100):
        async with serve_realtime() as server, _client(server, access_token=hangs) as client:

            async def join(channel: Channel) -> None:
                with pytest.raises(TokenError) as info:
                    await channel.join()
                errors.append(info.value)

            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(join, client.channel(f"room-{i}"))
            assert trio.current_time() == 5
            assert calls == [0]
            assert len(errors) == 20
            assert all(error.timed_out for error in errors)
            assert {str(error) for error in errors} == {
                "the access token callable timed out after 5 s"
            }
            assert isinstance(errors[0], RealtimeError)
            assert _warnings(caplog, "access token callable") == [
                "the access token callable timed out after 5 s; keeping the cached token"
            ]
            assert server.statistics().channels_joined == 0
            assert client.connected
            # A later join makes a new call, bounded the same way.
            with pytest.raises(TokenError):
                await client.channel("later").join()
            assert calls == [0, 5]
            assert trio.current_time() == 10


async def test_hd03_a_join_timeout_shorter_than_token_timeout_names_the_callable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """HD-03: with ``timeout=2`` and ``token_timeout=30``, the join raises TokenError at 2 s
    saying the callable timed out (not a bare PushTimeout); nothing was sent for it."""

    async def hangs() -> str:
        await trio.sleep_forever()
        raise AssertionError  # pragma: no cover

    with trio.fail_after(100):
        async with (
            serve_realtime() as server,
            _client(server, access_token=hangs, timeout=2.0, token_timeout=30.0) as client,
        ):
            with pytest.raises(TokenError, match="access token callable timed out") as info:
                await client.channel("room").join()
            assert trio.current_time() == 2
            assert info.value.timed_out
            frames = server.connections[0].received_frames
            assert [f.event for f in frames if f.topic == "realtime:room"] == []


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_hd03_a_callable_that_hangs_does_not_stop_reconnects(
    transport: str, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """HD-03: after a drop the reconnect (1 s later) asks the callable, which hangs: at 5 s
    the call is abandoned with a WARNING, the client connects (at 6 s) and the channel
    rejoins on the cached token."""
    calls: list[float] = []

    async def first_then_hangs() -> str:
        calls.append(trio.current_time())
        if len(calls) > 1:
            await trio.sleep_forever()
        await trio.lowlevel.checkpoint()
        return TOKEN

    seen = Seen()
    with trio.fail_after(100):
        async with (
            serve_realtime(token_check=seen) as server,
            _client(
                server,
                transport,
                access_token=first_then_hangs,
                heartbeat_interval=None,
                reconnect=EXACT,
            ) as client,
        ):
            events = client.connection_events()
            room = client.channel("room")
            channel_events = room.channel_events()
            await room.join()
            await _channel_event(channel_events, ChannelJoined)
            start = trio.current_time()
            await server.drop_connections()
            await next_event(events, Connected)
            assert trio.current_time() - start == 6
            rejoined = await _channel_event(channel_events, ChannelJoined)
            assert rejoined.rejoin
            assert trio.current_time() - start == 6
            assert [at - start for at in calls[1:]] == [1]
            assert [token for _at, token in seen.tokens] == [TOKEN, TOKEN]
            assert _warnings(caplog, "access token callable") == [
                "the access token callable timed out after 5 s; keeping the cached token"
            ]


async def test_hd03_a_raising_callable_is_reported_and_the_rejoin_retries_on_its_backoff(
    epoch_time: None, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """HD-03: the callable raises from 10 s to 47 s. Its refreshes at 10 s and 35 s (ahead of
    ``exp`` at 40 s) fail with a WARNING each and the client goes on. After a drop at 45 s the
    rejoin (46 s) has no usable token: ChannelJoinFailed says the callable raised, attempt 1,
    retried after the rejoin policy's 1 s; at 47 s the callable answers and the channel joins
    with the new token."""
    good = _token(EPOCH + 1000, sub="renewed")
    calls: list[float] = []

    async def flaky() -> str:
        calls.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        if not calls[1:]:
            return _token(EPOCH + 40)
        if trio.current_time() < 47:
            raise RuntimeError("auth service down")
        return good

    seen = Seen()
    with trio.fail_after(200):
        async with (
            serve_realtime(token_check=seen, wall_clock=lambda: EPOCH, idle_timeout=None) as server,
            _client(
                server,
                access_token=flaky,
                heartbeat_interval=None,
                reconnect=EXACT,
                rejoin=EXACT,
            ) as client,
        ):
            room = client.channel("room")
            events = room.channel_events()
            await room.join()
            await _channel_event(events, ChannelJoined)
            await trio.sleep_until(45)
            assert calls == [0, 10, 35]
            assert room.joined
            await server.drop_connections()
            failed = await _channel_event(events, ChannelJoinFailed)
            assert trio.current_time() == 46
            assert (failed.reason, failed.attempt, failed.retry_in) == (
                "the access token callable raised RuntimeError",
                1,
                1.0,
            )
            await _channel_event(events, ChannelJoined)
            assert trio.current_time() == 47
            assert calls == [0, 10, 35, 46, 46, 47]
            assert seen.tokens[-1] == (47.0, good)
            warnings = _warnings(caplog, "access token callable raised")
            assert (
                warnings.count(
                    "the access token callable raised RuntimeError; keeping the cached token"
                )
                == 4
            )
            assert [text for text in warnings if text.startswith("join of")] == [
                "join of realtime:room failed (the access token callable raised RuntimeError); "
                "attempt 1, retrying in 1.0 s"
            ]


# -- the option -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [math.nan, math.inf, 0, -1.0, "5", True])
async def test_hd08_hd03_token_timeout_is_validated_up_front(value: object) -> None:
    """HD-08, HD-03: ``token_timeout`` is a finite number of seconds above 0, checked before
    anything connects, in both interfaces."""
    with trio.fail_after(10):
        with pytest.raises(ValueError, match="token_timeout"):
            async with open_realtime(
                "ws://127.0.0.1:1/socket",
                apikey=APIKEY,
                token_timeout=value,  # type: ignore[arg-type]
            ):
                pass  # pragma: no cover
    with pytest.raises(ValueError, match="token_timeout"):
        trio_realtime.sync.connect(
            "ws://127.0.0.1:1/socket",
            apikey=APIKEY,
            token_timeout=value,  # type: ignore[arg-type]
        )


def test_hd03_sync_a_blocking_token_function_that_hangs_is_bounded() -> None:
    """HD-03 (SY-01): the blocking interface takes ``token_timeout``: a plain token function
    that hangs makes ``join()`` raise TokenError (timed out) once the bound passes (a short
    real timeout: the blocking client runs on the real clock), after one call."""
    release = threading.Event()
    calls: list[str] = []

    def hangs() -> str:
        calls.append(threading.current_thread().name)
        release.wait(WAIT)
        return TOKEN

    with time_limit(), ServerThread() as server:
        client = trio_realtime.sync.connect(
            server.url, apikey=APIKEY, access_token=hangs, token_timeout=SHORT, timeout=WAIT
        )
        try:
            with pytest.raises(TokenError, match=r"timed out after 0\.05 s") as info:
                client.channel("room:hang").join(timeout=WAIT)
        finally:
            release.set()
            client.close()
    assert info.value.timed_out
    assert len(calls) == 1
