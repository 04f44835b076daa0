"""Helpers for client tests: a client connected to the in-process local server."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio
import trustme
from conftest import APIKEY

from trio_realtime import ConnectionEvent, RealtimeClient, Subscription, open_realtime
from trio_realtime._presence import PresenceMap, transform_state
from trio_realtime.testing import RealtimeServer

T = Any
E = TypeVar("E", bound=ConnectionEvent)


@asynccontextmanager
async def connect_socket(
    server: RealtimeServer, transport: str = "websockets", **options: Any
) -> AsyncIterator[RealtimeClient]:
    """Open a client on ``server`` over a loopback socket, reconnecting and rejoining at once
    (real clock)."""
    options.setdefault("apikey", APIKEY)
    options.setdefault("reconnect", lambda attempt: 0.0)
    options.setdefault("rejoin", lambda attempt: 0.0)
    async with open_realtime(server.url, transport=transport, **options) as client:
        yield client


async def next_event(events: Subscription[ConnectionEvent], kind: type[E]) -> E:
    """Skip connection events until one of ``kind`` arrives; return it."""
    while True:
        event = await events.receive()
        if isinstance(event, kind):
            return event


@asynccontextmanager
async def connect(server: RealtimeServer, **options: Any) -> AsyncIterator[RealtimeClient]:
    """Open a client on ``server``'s in-memory transport (no sockets, MockClock friendly)."""
    options.setdefault("apikey", APIKEY)
    options.setdefault("transport", server.memory_transport)
    async with open_realtime(server.url, **options) as client:
        yield client


def drain(subscription: Subscription[T]) -> list[T]:
    """Everything buffered in ``subscription`` right now."""
    items: list[T] = []
    while True:
        try:
            items.append(subscription.receive_nowait())
        except trio.WouldBlock:
            return items


async def settle() -> None:
    """Let every task run until all are blocked (under MockClock autojump: no time passes)."""
    await trio.testing.wait_all_tasks_blocked()


def task_count() -> int:
    """How many tasks exist in this trio run (to show that nothing leaked)."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    stack = [root]
    count = 0
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


def expected_presence(server: RealtimeServer, topic: str) -> PresenceMap:
    """The server's presence state for ``topic``, in the form ``channel.presence_state()`` has."""
    return transform_state(server.presence_state(topic))


def server_tls_context(ca: trustme.CA, *identities: str) -> ssl.SSLContext:
    """A server-side TLS context with a certificate for ``identities`` (default: 127.0.0.1 and
    localhost) signed by ``ca``, for ``serve_realtime(ssl_context=...)``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*(identities or ("127.0.0.1", "localhost"))).configure_cert(context)
    return context


def client_tls_context(ca: trustme.CA) -> ssl.SSLContext:
    """A client TLS context that trusts ``ca`` and verifies, as the default context does."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context
