"""The blocking interface from several threads and under asyncio (SY-05), and its worker
thread's lifetime (SY-04)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
import trio
from sync_support import (
    APIKEY,
    SHORT,
    TOKEN,
    WAIT,
    Connect,
    ServerThread,
    field,
    worker_threads,
)
from sync_support import open_client_fixture as open_client_fixture  # the open_client fixture
from sync_support import server_fixture as server_fixture  # the server fixture
from sync_support import sync_time_limit as sync_time_limit  # autouse: each test's limit

from trio_realtime import ConnectionClosed, RealtimeError
from trio_realtime.sync import RealtimeClient, SyncTimeout, connect


def run_threads(targets: list[Callable[[], None]]) -> None:
    """Run every target in its own thread; re-raise the first failure."""
    errors: list[BaseException] = []

    def guarded(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:
                errors.append(exc)

        return run

    threads = [threading.Thread(target=guarded(target)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 2)
        assert not thread.is_alive(), "a test thread did not finish"
    if errors:
        raise errors[0]


# -- SY-05: several threads ----------------------------------------------------------------------


def test_sy05_one_thread_iterates_while_others_send(open_client: Connect) -> None:
    """SY-05: four threads send acknowledged broadcasts on one channel while a fifth iterates
    the subscription; everything arrives, in each sender's order."""
    client = open_client()
    channel = client.channel("room:threads", broadcast_self=True, broadcast_ack=True)
    messages = channel.broadcasts("n")
    senders, per_sender = 4, 50
    received: list[tuple[int, int]] = []

    def send(sender: int) -> Callable[[], None]:
        def run() -> None:
            for n in range(per_sender):
                channel.send_broadcast("n", {"sender": sender, "n": n}, timeout=WAIT)

        return run

    def consume() -> None:
        for message in messages:
            received.append((field(message, "sender"), field(message, "n")))
            if len(received) == senders * per_sender:
                return

    with channel, messages:
        run_threads([consume, *(send(sender) for sender in range(senders))])
    for sender in range(senders):
        assert [n for s, n in received if s == sender] == list(range(per_sender))


def test_sy05_two_threads_share_one_subscription(
    server: ServerThread, open_client: Connect
) -> None:
    """SY-05: two threads reading one subscription get every item exactly once."""
    client = open_client()
    channel = client.channel("room:shared")
    messages = channel.broadcasts("n")
    total = 200
    seen: list[list[int]] = [[], []]
    lock = threading.Lock()
    done = threading.Event()

    def consume(index: int) -> Callable[[], None]:
        def run() -> None:
            while not done.is_set():
                try:
                    message = messages.receive(timeout=SHORT)
                except SyncTimeout:
                    continue
                with lock:
                    seen[index].append(field(message, "n"))
                    if len(seen[0]) + len(seen[1]) == total:
                        done.set()

        return run

    def produce() -> None:
        for n in range(total):
            server.broadcast("room:shared", "n", {"n": n})

    with channel:
        run_threads([consume(0), consume(1), produce])
    assert sorted(seen[0] + seen[1]) == list(range(total))
    # Each thread saw its share in order.
    for part in seen:
        assert part == sorted(part)


def test_sy05_many_threads_get_the_same_channel(open_client: Connect) -> None:
    """SY-05 (CH-01): channel() from many threads at once gives one channel object."""
    client = open_client()
    got: list[object] = []

    def get() -> None:
        got.append(client.channel("room:same"))

    run_threads([get] * 8)
    assert len(got) == 8
    assert all(channel is got[0] for channel in got)


def test_sy05_works_inside_a_running_asyncio_loop(server: ServerThread) -> None:
    """SY-05: called from a coroutine of a running asyncio loop (a notebook cell), it works."""

    async def cell() -> list[Any]:
        assert asyncio.get_running_loop().is_running()
        with connect(server.url, apikey=APIKEY) as client:
            channel = client.channel("room:notebook", broadcast_self=True, presence_key="nb")
            messages = channel.broadcasts()
            with channel, messages:
                channel.track({"cell": 1})
                channel.send_broadcast("hello", {"from": "notebook"})
                message = messages.receive(timeout=WAIT)
                return [message.payload, sorted(channel.presence_state())]

    assert asyncio.run(cell()) == [{"from": "notebook"}, ["nb"]]
    assert not worker_threads()


def test_sy05_a_call_from_the_clients_own_thread_is_refused(open_client: Connect) -> None:
    """SY-05: a blocking call made in the client's own trio thread (here from an async token
    function) raises RuntimeError instead of deadlocking."""
    holder: list[RealtimeClient] = []
    errors: list[BaseException] = []

    async def token() -> str:
        try:
            holder[0].statistics()
        except RuntimeError as exc:
            errors.append(exc)
        await trio.lowlevel.checkpoint()
        return TOKEN

    client = open_client(access_token=token)
    holder.append(client)
    with client.channel("room:own-thread"):
        pass
    assert errors
    assert "own thread" in str(errors[0])


# -- SY-04: the worker thread's lifetime ---------------------------------------------------------


def test_sy04_the_with_block_ends_the_worker_thread(server: ServerThread) -> None:
    """SY-04 (CL-03): leaving the with block leaves the channels, closes with 1000 and ends the
    worker thread; close() is idempotent."""
    before = set(worker_threads())
    with connect(server.url, apikey=APIKEY) as client:
        channel = client.channel("room:bye")
        channel.join(timeout=WAIT)
        (connection,) = server.connections()
        assert len(set(worker_threads()) - before) == 1
    assert set(worker_threads()) <= before
    assert server.wait_finished(connection) == 1000
    assert server.run_sync(lambda: server.server.statistics().channels_joined) == 0
    client.close()
    client.close()


def test_sy04_calls_after_close(server: ServerThread) -> None:
    """SY-04: after close, calls raise ConnectionClosed; subscriptions give their buffered items
    then end; presence_state and statistics still answer."""
    client = connect(server.url, apikey=APIKEY)
    channel = client.channel("room:after-close", broadcast_self=True, broadcast_ack=True)
    messages = channel.broadcasts()
    events = client.connection_events()
    channel.join(timeout=WAIT)
    channel.send_broadcast("last", {"n": 1}, timeout=WAIT)
    client.close()
    assert messages.receive(timeout=WAIT).payload == {"n": 1}
    assert list(messages) == []
    assert list(events) == []
    with pytest.raises(ConnectionClosed) as caught:
        channel.send_broadcast("late", {})
    assert caught.value.code == 1000
    with pytest.raises(ConnectionClosed):
        client.channel("room:new")
    with pytest.raises(ConnectionClosed):
        client.wait_connected(timeout=WAIT)
    channel.leave()
    assert channel.presence_state() == {}
    assert client.statistics().connected is False
    assert client.channels == []
    assert not worker_threads()


def test_sy04_close_from_another_thread_ends_a_blocked_iteration(
    server: ServerThread,
) -> None:
    """SY-04: a thread blocked iterating a subscription stops when another thread closes."""
    client = connect(server.url, apikey=APIKEY)
    channel = client.channel("room:stop")
    messages = channel.broadcasts()
    channel.join(timeout=WAIT)
    iterated = threading.Event()

    def consume() -> None:
        for _ in messages:
            pass
        iterated.set()

    consumer = threading.Thread(target=consume)
    consumer.start()
    client.close()
    assert iterated.wait(WAIT)
    consumer.join(WAIT)
    assert not worker_threads()


def test_sy04_waiting_calls_fail_as_closed(server: ServerThread) -> None:
    """SY-04: a call waiting for something that will not come (a channel join held back by the
    server) fails when the client closes, and the thread ends."""
    client = connect(server.url, apikey=APIKEY, timeout=WAIT)
    server.run_sync(setattr, server.server, "reply_delay", WAIT)
    outcome: list[BaseException] = []

    def join() -> None:
        try:
            client.channel("room:held").join()
        except BaseException as exc:
            outcome.append(exc)

    joiner = threading.Thread(target=join)
    joiner.start()
    # The server has the join (its reply is held back): the call is waiting.
    server.wait_until_joined("room:held")
    client.close()
    joiner.join(WAIT)
    assert not joiner.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], RealtimeError)
    assert not worker_threads()


def test_sy04_an_item_taken_as_the_caller_is_interrupted_is_kept(
    server: ServerThread, open_client: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SY-04: when Ctrl-C lands just after a receive took its item, the item is not lost: the
    next receive returns it. (The interrupt is injected where the caller wakes up.)"""
    from trio_realtime.sync import _portal

    client = open_client()
    channel = client.channel("room:salvage")
    messages = channel.broadcasts()
    every = channel.broadcasts()
    with channel:
        server.broadcast("room:salvage", "kept", {"n": 1})
        every.receive(timeout=WAIT)
        original = _portal._Call.wait
        calls = 0

        def interrupted_wait(self: Any) -> Any:
            nonlocal calls
            calls += 1
            result = original(self)
            if calls == 1:
                raise KeyboardInterrupt
            return result

        monkeypatch.setattr(_portal._Call, "wait", interrupted_wait)
        with pytest.raises(KeyboardInterrupt):
            messages.receive(timeout=WAIT)
        monkeypatch.undo()
        assert messages.statistics().buffered == 1
        assert messages.receive(timeout=WAIT).payload == {"n": 1}
        with pytest.raises(SyncTimeout):
            messages.receive(timeout=SHORT)
