"""Helpers for the blocking-interface tests: the local server in a thread of its own.

The blocking client runs trio in its own thread, so the server cannot share the test's trio run
(or its MockClock); it runs in a second thread, on loopback TCP, and the tests drive it through
``trio.from_thread`` with :meth:`ServerThread.run`.

Every test here has a time limit (:func:`time_limit`): a ``SIGALRM`` timer that raises in the
main thread, which interrupts a blocked wait of the blocking client (it waits in short slices
there). The short real timeouts the tests pass keep them bounded; no test asserts a duration.

The fixtures the blocking-interface modules share live here too: ``sync_time_limit``
(autouse), ``server`` and ``open_client``. A module uses them by importing them (pytest finds
the fixtures in a test module's namespace); they are not in ``conftest.py``, so that the
``SIGALRM`` limit applies to these modules only, not to the trio tests, which have their own.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any, TypeVar

import pytest
import trio

from trio_realtime import Broadcast, RealtimeError, backoff
from trio_realtime.sync import RealtimeClient, connect
from trio_realtime.testing import RealtimeServer, ServerConnection, serve_realtime

T = TypeVar("T")

TEST_TIME_LIMIT = 20.0
"""Seconds any one blocking-interface test may run."""

SHORT = 0.05
"""A short real timeout, for calls that are expected to time out."""

WAIT = 5.0
"""A generous real timeout, for calls that are expected to complete."""

APIKEY = "anon-SECRET-apikey"
TOKEN = "user-SECRET-token"
WORKER = "trio_realtime.sync"
"""The name of a blocking client's worker thread."""

Connect = Callable[..., RealtimeClient]
"""The :func:`open_client` fixture: ``connect(server.url, **options)``, closed afterwards."""


def worker_threads() -> list[threading.Thread]:
    """The blocking clients' worker threads still alive."""
    return [thread for thread in threading.enumerate() if thread.name == WORKER]


def field(message: Broadcast, key: str) -> Any:
    """``message.payload[key]``, for a broadcast whose payload is an object."""
    payload = message.payload
    assert isinstance(payload, dict), payload
    return payload[key]


class TestTimeLimitExceeded(Exception):
    """Raised in the main thread when a test runs past its time limit."""


@contextmanager
def time_limit(seconds: float = TEST_TIME_LIMIT) -> Iterator[None]:
    """Fail the block with :class:`TestTimeLimitExceeded` after ``seconds`` (main thread)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(
        signal, "setitimer"
    ):  # pragma: no cover - POSIX main thread under pytest
        yield
        return

    def expired(signum: int, frame: FrameType | None) -> None:
        raise TestTimeLimitExceeded(f"the test ran for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class ServerThread:
    """The local server (``serve_realtime``) running in its own thread and trio run.

    Use it as a context manager; :attr:`server` is the running server.
    """

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._ready = threading.Event()
        self._server: RealtimeServer | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="local server", daemon=True)

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:  # pragma: no cover - reported by __enter__/__exit__
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._stop = trio.Event()
        async with serve_realtime(**self._options) as server:
            self._server = server
            self._token = trio.lowlevel.current_trio_token()
            self._ready.set()
            await self._stop.wait()

    @property
    def server(self) -> RealtimeServer:
        """The running server (read its properties from any thread; call it with run())."""
        assert self._server is not None
        return self._server

    @property
    def url(self) -> str:
        """The server's project URL."""
        return self.server.url

    def run(self, afn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``await afn(*args)`` in the server's trio run and return its result."""
        return trio.from_thread.run(afn, *args, trio_token=self._token)

    def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in the server's trio run and return its result."""
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def broadcast(self, topic: str, event: str, payload: Any) -> int:
        """Broadcast from the server to every channel joined to ``topic``."""
        return self.run(self.server.broadcast, topic, event, payload)

    def wait_until_joined(self, topic: str, count: int = 1) -> None:
        """Wait until ``count`` channels are joined to ``topic``."""

        async def wait() -> None:
            with trio.fail_after(WAIT):
                await self.server.wait_until_joined(topic, count)

        self.run(wait)

    def connections(self) -> list[ServerConnection]:
        """The open connections."""
        return self.run_sync(lambda: self.server.connections)

    def wait_finished(self, connection: ServerConnection) -> int | None:
        """Wait until ``connection`` has ended; return its close code."""

        async def wait() -> int | None:
            with trio.fail_after(WAIT):
                await connection.wait_finished()
            return connection.close_code

        return self.run(wait)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(WAIT) or self._error is not None:
            raise RuntimeError(f"the local server did not start: {self._error!r}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        stop = self._stop
        if stop is not None and self._thread.is_alive():
            self.run_sync(stop.set)
        self._thread.join(WAIT)


@pytest.fixture(autouse=True)
def sync_time_limit() -> Iterator[None]:
    """Every test of a module that imports this fixture fails after :data:`TEST_TIME_LIMIT`."""
    with time_limit():
        yield


# Registered under their ``name``, so that importing them does not shadow the test arguments.
@pytest.fixture(name="server")
def server_fixture() -> Iterator[ServerThread]:
    """The local server, in a thread of its own."""
    with ServerThread() as running:
        yield running


@pytest.fixture(name="open_client")
def open_client_fixture(server: ServerThread) -> Iterator[Connect]:
    """Connect blocking clients to the server; every one is closed afterwards, and no worker
    thread may be left behind (SY-04)."""
    before = set(worker_threads())
    clients: list[RealtimeClient] = []

    def open_one(**options: Any) -> RealtimeClient:
        options.setdefault("apikey", APIKEY)
        options.setdefault("reconnect", backoff((0.01,), jitter=0))
        options.setdefault("timeout", WAIT)
        client = connect(server.url, **options)
        clients.append(client)
        return client

    yield open_one
    for client in clients:
        with contextlib.suppress(RealtimeError):
            client.close()
    assert set(worker_threads()) <= before
