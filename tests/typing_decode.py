"""Checked by mypy --strict (the repository's mypy run, and tests/test_decode.py), never run.

What users see of ``broadcasts(decode=...)`` and of ``vsn``: each ``assert_type`` must hold, and
each line marked ``type: ignore`` must be an error (an ignore that is not needed is reported).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict, assert_type

import trio_realtime.sync
from trio_realtime import (
    Broadcast,
    Channel,
    DecodedBroadcast,
    JSONValue,
    Subscription,
    open_realtime,
)


@dataclass(frozen=True)
class Point:
    x: int
    y: int


def point(payload: JSONValue) -> Point:
    if not isinstance(payload, dict):
        raise TypeError("not an object")
    x, y = payload["x"], payload["y"]
    if not isinstance(x, int) or not isinstance(y, int):
        raise TypeError("not integers")
    return Point(x, y)


class Chat(TypedDict):
    user: str
    text: str


def chat(payload: JSONValue) -> Chat:
    if not isinstance(payload, dict):
        raise TypeError("not an object")
    user, text = payload["user"], payload["text"]
    if not isinstance(user, str) or not isinstance(text, str):
        raise TypeError("not strings")
    return {"user": user, "text": text}


def takes_an_int(value: int) -> Point:
    return Point(value, value)


async def async_api(channel: Channel) -> None:
    assert_type(channel.broadcasts(), Subscription[Broadcast])
    assert_type(channel.broadcasts("cursor", buffer=8), Subscription[Broadcast])
    assert_type(channel.broadcasts(decode=None), Subscription[Broadcast])
    points = channel.broadcasts("cursor", decode=point, overflow="drop_oldest")
    assert_type(points, Subscription[DecodedBroadcast[Point]])
    async for message in points:
        assert_type(message, DecodedBroadcast[Point])
        assert_type(message.payload, Point)
        assert_type(message.event, str)
    chats = channel.broadcasts(decode=chat)
    assert_type((await chats.receive()).payload, Chat)
    assert_type(await chats.receive_batch(), list[DecodedBroadcast[Chat]])
    # A lambda's result type is the decoded type as well.
    sizes = channel.broadcasts(decode=lambda p: len(str(p)))
    assert_type(sizes, Subscription[DecodedBroadcast[int]])

    # A decoder must take the JSON payload.
    channel.broadcasts(decode=takes_an_int)  # type: ignore[arg-type]
    # Decoded payloads are not raw JSON.
    raw: JSONValue = (await points.receive()).payload  # type: ignore[assignment]
    del raw
    # The overflow policy and vsn are literals.
    channel.broadcasts(overflow="drop-oldest")  # type: ignore[call-overload]
    async with open_realtime("ws://localhost", apikey="k", vsn="3.0"):  # type: ignore[arg-type]
        pass
    async with open_realtime("ws://localhost", apikey="k", vsn=None):
        pass


def blocking_api(channel: trio_realtime.sync.Channel) -> None:
    assert_type(channel.broadcasts(), trio_realtime.sync.Subscription[Broadcast])
    points = channel.broadcasts("cursor", decode=point)
    assert_type(points, trio_realtime.sync.Subscription[DecodedBroadcast[Point]])
    for message in points:
        assert_type(message.payload, Point)
    assert_type(points.receive_batch(), list[DecodedBroadcast[Point]])
    channel.broadcasts(decode=takes_an_int)  # type: ignore[arg-type]
    trio_realtime.sync.connect("ws://localhost", apikey="k", vsn="2")  # type: ignore[arg-type]
    trio_realtime.sync.connect("ws://localhost", apikey="k", vsn="2.0.0").close()
