"""The public surface of ``trio_realtime`` (DESIGN.md section 3, STYLE.md 5 and 13)."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import trio

import trio_realtime
from trio_realtime import RealtimeError

DESIGN_NAMES = [
    "open_realtime",
    "RealtimeError",
    "ProtocolError",
    "ConnectionClosed",
    "JoinError",
    "PushTimeout",
    "ChannelClosed",
    "SubscriptionOverflow",
]

OPEN_REALTIME_OPTIONS = [
    "apikey",
    "access_token",
    "vsn",
    "heartbeat_interval",
    "timeout",
    "reconnect",
    "transport",
    "ssl_context",
    "log_level",
]


def test_design_names_exist_and_all_is_sorted() -> None:
    """Every name DESIGN.md promises is importable; __all__ is sorted and resolvable."""
    for name in DESIGN_NAMES:
        assert name in trio_realtime.__all__
        assert getattr(trio_realtime, name) is not None
    assert trio_realtime.__all__ == sorted(trio_realtime.__all__, key=lambda n: (n[0].islower(), n))
    for name in trio_realtime.__all__:
        assert getattr(trio_realtime, name) is not None
    assert sorted(dir(trio_realtime)) == sorted(trio_realtime.__all__)


def test_open_realtime_options_are_keyword_only_with_design_defaults() -> None:
    """open_realtime(url, *, apikey, access_token=None, vsn="1.0.0", ...) as designed."""
    signature = inspect.signature(trio_realtime.open_realtime)
    parameters = signature.parameters
    assert next(iter(parameters)) == "url"
    for name in OPEN_REALTIME_OPTIONS:
        assert parameters[name].kind is inspect.Parameter.KEYWORD_ONLY
    assert parameters["access_token"].default is None
    assert parameters["vsn"].default == "1.0.0"
    assert parameters["heartbeat_interval"].default == 25.0
    assert parameters["timeout"].default == 10.0


def test_channel_and_subscription_factories_take_buffer_and_overflow() -> None:
    """Every subscription factory takes keyword-only buffer= and overflow=."""
    channel_factories: list[Callable[..., object]] = [
        trio_realtime.Channel.broadcasts,
        trio_realtime.Channel.postgres_changes,
        trio_realtime.Channel.presence_events,
        trio_realtime.Channel.system_events,
        trio_realtime.Channel.channel_events,
        trio_realtime.RealtimeClient.connection_events,
    ]
    for factory in channel_factories:
        parameters = inspect.signature(factory).parameters
        for name in ("buffer", "overflow"):
            assert parameters[name].kind is inspect.Parameter.KEYWORD_ONLY, factory
    channel = inspect.signature(trio_realtime.RealtimeClient.channel).parameters
    for name in ("broadcast_self", "broadcast_ack", "presence_key", "presence_enabled", "private"):
        assert channel[name].kind is inspect.Parameter.KEYWORD_ONLY


def test_subscriptions_are_trio_receive_channels() -> None:
    """Subscriptions are trio.abc.ReceiveChannel (STYLE.md 9)."""
    assert issubclass(trio_realtime.Subscription, trio.abc.ReceiveChannel)


def test_one_exception_tree() -> None:
    """Every exported exception derives from RealtimeError; closed splits by cause."""
    for name in trio_realtime.__all__:
        value = getattr(trio_realtime, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            assert issubclass(value, RealtimeError), name
    assert issubclass(trio_realtime.ConnectionClosed, trio_realtime.RealtimeConnectionError)


def test_statistics_are_frozen_dataclasses() -> None:
    """statistics() returns frozen dataclasses (STYLE.md 12)."""
    for cls in (trio_realtime.ClientStatistics, trio_realtime.SubscriptionStatistics):
        params = getattr(cls, "__dataclass_params__", None)
        assert params is not None
        assert params.frozen
