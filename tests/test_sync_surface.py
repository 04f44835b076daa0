"""The public surface of ``trio_realtime.sync``: it mirrors the async API (SY-01)."""

from __future__ import annotations

import inspect

import trio_realtime
import trio_realtime.sync
from trio_realtime.sync import Channel, RealtimeClient, Subscription, SyncTimeout, connect

CLIENT_METHODS = [
    "channel",
    "channels",
    "http_broadcast",
    "connection_events",
    "set_auth",
    "statistics",
    "wait_connected",
    "url",
    "vsn",
    "timeout",
    "connected",
]
CHANNEL_METHODS = [
    "broadcasts",
    "postgres_changes",
    "presence_events",
    "system_events",
    "channel_events",
    "presence_state",
    "wait_postgres_ready",
    "join",
    "leave",
    "send_broadcast",
    "http_send",
    "track",
    "untrack",
    "topic",
    "state",
    "join_ref",
    "joined",
    "options",
    "replay",
    "statistics",
]
SUBSCRIPTION_METHODS = ["receive", "receive_nowait", "receive_batch", "close", "statistics"]


def test_sy01_all_is_sorted_and_resolvable() -> None:
    """SY-01: the module's __all__ is sorted and every name in it exists."""
    names = trio_realtime.sync.__all__
    assert names == sorted(names, key=lambda n: (n[0].islower(), n))
    for name in names:
        assert getattr(trio_realtime.sync, name) is not None


def test_sy01_connect_takes_every_option_of_open_realtime() -> None:
    """SY-01: connect() has open_realtime()'s parameters, keyword-only, with its defaults."""
    ours = inspect.signature(connect).parameters
    theirs = inspect.signature(trio_realtime.open_realtime).parameters
    assert list(ours) == list(theirs)
    for name, parameter in theirs.items():
        assert ours[name].kind is parameter.kind, name
        if name not in ("reconnect", "rejoin"):  # fresh policy objects, equal in behaviour
            assert ours[name].default == parameter.default, name


def test_sy01_the_async_methods_have_blocking_twins() -> None:
    """SY-01: every method of the async client, channel and subscription that users call has
    a blocking twin with the same parameters, plus a keyword-only timeout= where it blocks."""
    pairs = [
        (RealtimeClient, trio_realtime.RealtimeClient, CLIENT_METHODS),
        (Channel, trio_realtime.Channel, CHANNEL_METHODS),
        (Subscription, trio_realtime.Subscription, SUBSCRIPTION_METHODS),
    ]
    for sync_class, async_class, names in pairs:
        for name in names:
            ours = inspect.getattr_static(sync_class, name, None)
            assert ours is not None, f"{sync_class.__name__}.{name}"
            theirs = inspect.getattr_static(async_class, name, None)
            if not callable(theirs) or not callable(ours):
                continue
            our_parameters = dict(inspect.signature(ours).parameters)
            their_parameters = inspect.signature(theirs).parameters
            if inspect.iscoroutinefunction(theirs):
                timeout = our_parameters.pop("timeout")
                assert timeout.kind is inspect.Parameter.KEYWORD_ONLY, name
                assert timeout.default is None, name
            assert list(our_parameters) == list(their_parameters), name
            for key, parameter in their_parameters.items():
                assert our_parameters[key].default == parameter.default, (name, key)


def test_sy02_sync_timeout_is_a_timeout_error_in_the_tree() -> None:
    """SY-02: SyncTimeout is both a RealtimeError and a builtin TimeoutError."""
    assert issubclass(SyncTimeout, trio_realtime.RealtimeError)
    assert issubclass(SyncTimeout, TimeoutError)


def test_sy01_public_names_print_as_trio_realtime_sync() -> None:
    """SY-01 (DX-03): the public classes and connect() show trio_realtime.sync as their module."""
    for value in (Channel, RealtimeClient, Subscription, SyncTimeout, connect):
        assert value.__module__ == "trio_realtime.sync"
    assert repr(SyncTimeout("x", 1.0)).startswith("SyncTimeout(")
