"""Typed broadcast payloads: ``broadcasts(decode=...)`` (DX-03, with BC-02 and BC-05).

A decoder turns each JSON payload into the user's type when the message is received. A payload
it refuses comes from the network, so it must neither end the subscription nor vanish: the one
``receive`` that reached it raises :class:`DecodeError` carrying the message and the decoder's
error, and the next ``receive`` goes on. The typing itself is checked by mypy over
``tests/typing_decode.py`` (see the last test).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trio.testing
from _realtime import connect, drain, settle
from conftest import APIKEY
from sync_support import WAIT, ServerThread, time_limit

from trio_realtime import (
    Broadcast,
    DecodedBroadcast,
    DecodeError,
    JSONValue,
    RealtimeError,
    SubscriptionOverflow,
)
from trio_realtime.sync import connect as connect_blocking
from trio_realtime.testing import serve_realtime

VSNS = ["1.0.0", "2.0.0"]


@dataclass(frozen=True)
class Point:
    x: int
    y: int


class Decoder:
    """Builds a :class:`Point` from ``{"x": int, "y": int}``, and counts its calls."""

    def __init__(self) -> None:
        self.calls: list[JSONValue] = []

    def __call__(self, payload: JSONValue) -> Point:
        self.calls.append(payload)
        if not isinstance(payload, dict):
            raise TypeError(f"a point is an object, not {payload!r}")
        x, y = payload["x"], payload["y"]
        if not isinstance(x, int) or not isinstance(y, int):
            raise ValueError(f"x and y must be integers, not {x!r} and {y!r}")  # noqa: TRY004
        return Point(x, y)


@pytest.mark.parametrize("vsn", VSNS)
async def test_dx03_decoded_items_carry_the_decoders_result(
    vsn: str, autojump_clock: trio.testing.MockClock
) -> None:
    """DX-03: with ``decode=``, items are DecodedBroadcast whose payload is the decoder's
    value, with the event, topic and meta of the message; a plain subscription on the same
    event still gets the raw Broadcast."""
    decode = Decoder()
    async with serve_realtime() as server, connect(server, vsn=vsn) as client:
        channel = client.channel("room", broadcast_self=True)
        points = channel.broadcasts("point", decode=decode)
        everything = channel.broadcasts(decode=decode)
        raw = channel.broadcasts("point")
        async with channel, points, everything, raw:
            await channel.send_broadcast("point", {"x": 1, "y": 2})
            await settle()
            assert decode.calls == []  # nothing is decoded before it is received
            assert await points.receive() == DecodedBroadcast("point", Point(1, 2), "realtime:room")
            assert (await everything.receive()).payload == Point(1, 2)
            assert await raw.receive() == Broadcast("point", {"x": 1, "y": 2}, "realtime:room")
            assert len(decode.calls) == 2


@pytest.mark.parametrize("vsn", VSNS)
async def test_dx03_a_refused_payload_raises_once_and_the_subscription_goes_on(
    vsn: str, autojump_clock: trio.testing.MockClock
) -> None:
    """DX-03: a payload the decoder refuses raises DecodeError from that one receive, with the
    message and the decoder's error (also the cause); the next receive, and a new ``async for``
    over the same subscription, go on with the next message."""
    decode = Decoder()
    async with serve_realtime() as server, connect(server, vsn=vsn) as client:
        channel = client.channel("room", broadcast_self=True)
        points = channel.broadcasts("point", decode=decode)
        async with channel, points:
            payloads: list[JSONValue] = [
                {"x": 1, "y": 1},
                {"x": "one", "y": 2},
                [3],
                {"x": 4, "y": 4},
            ]
            for payload in payloads:
                await channel.send_broadcast("point", payload)
            await settle()
            assert (await points.receive()).payload == Point(1, 1)
            with pytest.raises(DecodeError) as refused:
                await points.receive()
            error = refused.value
            assert isinstance(error, RealtimeError)
            assert error.broadcast == Broadcast("point", {"x": "one", "y": 2}, "realtime:room")
            assert isinstance(error.error, ValueError)
            assert error.__cause__ is error.error
            assert str(error) == (
                "cannot decode broadcast 'point' on 'realtime:room': "
                "ValueError: x and y must be integers, not 'one' and 2"
            )
            with pytest.raises(DecodeError, match="a point is an object") as refused:
                async for _ in points:
                    raise AssertionError("the list payload is not a point")  # pragma: no cover
            assert isinstance(refused.value.error, TypeError)
            async for message in points:
                assert message.payload == Point(4, 4)
                break
            assert points.statistics().buffered == 0
            assert not points.statistics().closed
            assert len(decode.calls) == 4


async def test_dx03_bc05_a_binary_payload_is_refused_without_calling_the_decoder(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """DX-03, BC-05: under vsn 2.0.0 a binary broadcast cannot go to a JSON decoder: its receive
    raises DecodeError (a TypeError) carrying the bytes, and the decoder is not called."""
    decode = Decoder()
    async with serve_realtime() as server, connect(server, vsn="2.0.0") as client:
        channel = client.channel("room", broadcast_self=True)
        points = channel.broadcasts("point", decode=decode)
        async with channel, points:
            await channel.send_broadcast("point", b"\x00\x01")
            await channel.send_broadcast("point", {"x": 5, "y": 6})
            await settle()
            with pytest.raises(DecodeError, match=r"binary \(2 bytes\)") as refused:
                points.receive_nowait()
            assert refused.value.broadcast.data == b"\x00\x01"
            assert isinstance(refused.value.error, TypeError)
            assert points.receive_nowait().payload == Point(5, 6)
            assert decode.calls == [{"x": 5, "y": 6}]


async def test_dx03_a_batch_stops_before_a_refused_payload(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """DX-03: receive_batch returns the messages decoded before a refused one and leaves the
    refusal to the next call; nothing is lost and nothing is decoded twice."""
    decode = Decoder()
    async with serve_realtime() as server, connect(server) as client:
        channel = client.channel("room", broadcast_self=True)
        points = channel.broadcasts("point", decode=decode)
        async with channel, points:
            payloads: list[JSONValue] = [
                {"x": 1, "y": 1},
                {"x": 2, "y": 2},
                {},
                {"x": 3, "y": 3},
                None,
            ]
            for payload in payloads:
                await channel.send_broadcast("point", payload)
            await settle()
            first = await points.receive_batch()
            assert [m.payload for m in first] == [Point(1, 1), Point(2, 2)]
            assert points.statistics().buffered == 3
            with pytest.raises(DecodeError) as refused:
                await points.receive_batch()
            assert isinstance(refused.value.error, KeyError)
            assert [m.payload for m in await points.receive_batch(max_items=5)] == [Point(3, 3)]
            with pytest.raises(DecodeError):
                await points.receive_batch()
            assert len(decode.calls) == 5
            assert drain(points) == []


async def test_dx03_overflow_and_end_apply_to_decoded_subscriptions(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """DX-03: the buffer and overflow policy count messages as received, refused ones included;
    leaving the channel ends the subscription after its buffered messages."""
    async with serve_realtime() as server, connect(server) as client:
        channel = client.channel("room", broadcast_self=True)
        points = channel.broadcasts("point", buffer=2, decode=Decoder())
        await channel.join()
        payloads: list[JSONValue] = [{"x": 1, "y": 1}, "bad", {"x": 3, "y": 3}]
        for payload in payloads:
            await channel.send_broadcast("point", payload)
        await settle()
        assert points.statistics().dropped == 1
        assert (await points.receive()).payload == Point(1, 1)
        with pytest.raises(DecodeError):
            await points.receive()
        with pytest.raises(SubscriptionOverflow):
            await points.receive()
        await channel.send_broadcast("point", {"x": 4, "y": 4})
        await settle()
        await channel.leave()
        assert [m.payload async for m in points] == [Point(4, 4)]


async def test_dx03_closing_a_decoded_subscription_unregisters_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """DX-03: closing it unregisters it like any subscription; a cancelled receive loses
    nothing and decodes nothing."""
    decode = Decoder()
    async with serve_realtime() as server, connect(server) as client:
        channel = client.channel("room", broadcast_self=True)
        points = channel.broadcasts("point", decode=decode)
        await channel.join()
        assert channel.statistics().subscriptions == 1
        with trio.move_on_after(1):
            await points.receive()
        await channel.send_broadcast("point", {"x": 1, "y": 1})
        await settle()
        with trio.CancelScope() as scope:
            scope.cancel()
            await points.receive()
        assert decode.calls == []
        assert (await points.receive()).payload == Point(1, 1)
        await points.aclose()
        assert channel.statistics().subscriptions == 0
        with pytest.raises(trio.ClosedResourceError):
            await points.receive()


async def test_dx03_decode_must_be_callable(autojump_clock: trio.testing.MockClock) -> None:
    """DX-03: a decoder that is not callable is a TypeError at the factory, and registers
    nothing."""
    async with serve_realtime() as server, connect(server) as client:
        channel = client.channel("room")
        with pytest.raises(TypeError, match="decode must be a function of the payload"):
            channel.broadcasts("point", decode=Point(1, 2))  # type: ignore[call-overload]
        with pytest.raises(TypeError, match="event must be a string"):
            channel.broadcasts(3, decode=Decoder())  # type: ignore[call-overload]
        assert channel.statistics().subscriptions == 0


def test_dx03_blocking_subscriptions_decode_alike() -> None:
    """DX-03 (SY-01): ``trio_realtime.sync`` channels take ``decode=`` too; DecodeError reaches
    the calling thread for the one refused message, and a batch stops before it."""
    decode = Decoder()
    with time_limit(), ServerThread() as server:
        with connect_blocking(server.url, apikey=APIKEY, timeout=WAIT) as client:
            channel = client.channel("room", broadcast_self=True, broadcast_ack=True)
            points = channel.broadcasts("point", decode=decode)
            raw = channel.broadcasts("point")
            with channel, raw:
                payloads: list[JSONValue] = [
                    {"x": 1, "y": 1},
                    {"x": 2, "y": 2},
                    {"x": 3},
                    {"x": 4, "y": 4},
                    {"x": 5, "y": 5},
                ]
                for payload in payloads:
                    channel.send_broadcast("point", payload, timeout=WAIT)
                # The reader fills both subscriptions in one step, the decoding one first:
                # once the raw one has every message, so has the other.
                assert [raw.receive(timeout=WAIT).payload for _ in payloads] == payloads
                assert points.receive(timeout=WAIT).payload == Point(1, 1)
                assert [m.payload for m in points.receive_batch(timeout=WAIT)] == [Point(2, 2)]
                with pytest.raises(DecodeError) as refused:
                    points.receive_nowait()
                assert refused.value.broadcast.payload == {"x": 3}
                assert isinstance(refused.value.error, KeyError)
                assert points.receive(timeout=WAIT) == DecodedBroadcast(
                    "point", Point(4, 4), "realtime:room"
                )
                assert [m.payload for m in points.receive_batch(timeout=WAIT)] == [Point(5, 5)]
            # Left: the loop ends after the buffered messages (none).
            assert list(points) == []
            points.close()
    assert len(decode.calls) == 5


TYPING_CHECK = Path(__file__).with_name("typing_decode.py")


def test_dx03_the_typing_holds_under_mypy_strict() -> None:
    """DX-03: mypy --strict accepts tests/typing_decode.py (its assert_type calls: the item
    types with and without a decoder, async and blocking) and rejects what it marks as wrong
    (each ``type: ignore`` there must be needed, or mypy reports it as unused)."""
    try:
        from mypy import api
    except ImportError:  # pragma: no cover - mypy is in the test extra
        if os.environ.get("CI"):
            raise
        pytest.skip("mypy is not installed (pip install -e '.[test]')")
    root = Path(__file__).resolve().parent.parent
    stdout, stderr, status = api.run(
        [
            "--config-file",
            str(root / "pyproject.toml"),
            # The repository's own cache (gitignored): after a mypy run, this takes a second.
            "--cache-dir",
            str(root / ".mypy_cache"),
            "--warn-unused-ignores",
            str(TYPING_CHECK),
        ]
    )
    assert status == 0, stdout + stderr
    assert "Success" in stdout
