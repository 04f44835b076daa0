"""SR-08: our builders plus encode reproduce every client frame realtime-js 2.119.1 sends.

DX-01: the recorded frames live in ``tests/data``, so a fresh clone with nothing beside it runs
these tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from trio_realtime.protocol import (
    Frame,
    access_token_frame,
    broadcast_frame,
    channel_config,
    encode,
    heartbeat_frame,
    join_frame,
    leave_frame,
    postgres_binding,
    presence_track_frame,
    presence_untrack_frame,
)

VECTORS = Path(__file__).resolve().parent / "data"


def _load(name: str) -> list[dict[str, str]]:
    path = VECTORS / f"realtime-js-2.119.1-client-{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _expected_frames() -> list[Frame]:
    """The same scripted conversation, built with our builders (one frame per vector line)."""
    room2_config = channel_config(broadcast_self=True, broadcast_ack=True, presence_key="u1")
    room2_binding = postgres_binding(
        "INSERT", schema="public", table="messages", filter="room_id=eq.5"
    )
    return [
        join_frame("6", "room1", channel_config(), []),
        heartbeat_frame("7"),
        join_frame("10", "room2", room2_config, [room2_binding]),
        broadcast_frame("11", "10", "room2", "msg", {"text": "hello", "n": 1}),
        presence_track_frame(
            "12", "10", "room2", {"name": "alice", "online_at": "2025-01-01T00:00:00Z"}
        ),
        presence_untrack_frame("13", "10", "room2"),
        access_token_frame("14", "6", "room1", "new-token"),
        access_token_frame("15", "10", "room2", "new-token"),
        join_frame(
            "18",
            "room3",
            channel_config(presence_enabled=True, private=True),
            [],
            access_token="new-token",
        ),
        join_frame(
            "19",
            "room1",
            channel_config(),
            [],
            access_token="new-token",
            version="realtime-js/2.119.1",
        ),
        leave_frame("20", "10", "room2"),
    ]


@pytest.mark.parametrize(("name", "vsn"), [("v1", "1.0.0"), ("v2", "2.0.0")])
def test_sr08_every_vector_frame_is_reproduced(name: str, vsn: str) -> None:
    """SR-08 (and SR-01, SR-03, SR-05, BC-01): same JSON value for text, same bytes for binary."""
    vectors = _load(name)
    frames = _expected_frames()
    assert len(vectors) == len(frames)
    for vector, frame in zip(vectors, frames, strict=True):
        ours = encode(frame, vsn)
        if vector["kind"] == "binary":
            assert isinstance(ours, bytes), vector["step"]
            assert ours == bytes.fromhex(vector["data"]), vector["step"]
        else:
            assert isinstance(ours, str), vector["step"]
            assert orjson.loads(ours) == orjson.loads(vector["data"]), vector["step"]
