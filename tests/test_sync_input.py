"""HD-04 through the blocking interface: bad input raises in the caller's thread, at the call,
and the client's trio thread and its background tasks go on unharmed."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sync_support import WAIT, ServerThread, time_limit

from trio_realtime import BroadcastMessage, ChannelState, backoff
from trio_realtime.sync import Channel, connect

APIKEY = "anon-SECRET-apikey"
BAD = "x\ud800"


@pytest.fixture(autouse=True)
def _limit() -> Iterator[None]:
    with time_limit():
        yield


BAD_SYNC_CALLS: list[tuple[str, Callable[[Channel], object], type[Exception], str]] = [
    ("broadcasts", lambda ch: ch.broadcasts(BAD), ValueError, "event"),
    ("send_broadcast event", lambda ch: ch.send_broadcast(BAD, {}), ValueError, "event"),
    ("send_broadcast text", lambda ch: ch.send_broadcast("e", {"a": BAD}), ValueError, "payload"),
    ("send_broadcast set", lambda ch: ch.send_broadcast("e", {"a": {1}}), TypeError, "payload"),  # type: ignore[dict-item]
    ("track", lambda ch: ch.track({"a": BAD}), ValueError, "state"),
    ("track set", lambda ch: ch.track({"a": {1}}), TypeError, "state"),  # type: ignore[dict-item]
    ("postgres table", lambda ch: ch.postgres_changes(table=BAD), ValueError, "table"),
    ("postgres schema", lambda ch: ch.postgres_changes(schema=""), ValueError, "schema"),
    (
        "postgres filter",
        lambda ch: ch.postgres_changes(table="t", filter=BAD),
        ValueError,
        "filter",
    ),
    ("http_send", lambda ch: ch.http_send(BAD, {}), ValueError, "event"),
]


def test_hd04_sync_bad_input_is_refused_at_the_call() -> None:
    """HD-04: every bad argument raises ValueError or TypeError naming it in the calling
    thread; the channel stays joined, no rejoin is sent, and the client still works."""
    with ServerThread() as server:
        client = connect(server.url, apikey=APIKEY, reconnect=backoff((0.01,), jitter=0))
        with client:
            channel = client.channel("room", broadcast_self=True, broadcast_ack=True)
            messages = channel.broadcasts()
            with channel:
                for label, function, error, argument in BAD_SYNC_CALLS:
                    with pytest.raises(error, match=argument):
                        function(channel)
                    assert channel.state is ChannelState.JOINED, label
                with pytest.raises(ValueError, match="topic"):
                    client.channel(BAD)
                with pytest.raises(ValueError, match="payload"):
                    BroadcastMessage("room", "e", {"a": BAD})
                channel.send_broadcast("after", {"ok": True}, timeout=WAIT)
                assert messages.receive(timeout=WAIT).event == "after"
                joins = [
                    f
                    for c in server.server.connections
                    for f in c.received_frames
                    if f.event == "phx_join" and f.topic == channel.topic
                ]
                assert len(joins) == 1
                assert client.connected
