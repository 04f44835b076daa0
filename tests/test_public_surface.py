"""The public surface of ``trio_realtime`` (DESIGN.md section 3, STYLE.md 5 and 13).

Exported names, and the modules their classes and functions are presented under.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import types
from collections.abc import Callable

import pytest
import trio

import trio_realtime
import trio_realtime.protocol
import trio_realtime.sync
import trio_realtime.testing
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


# The exported names, sorted as ``__all__`` is (classes and constants, then functions). Adding
# a public name means adding it here too.
TOP_LEVEL_NAMES = [
    "Broadcast",
    "BroadcastMessage",
    "Channel",
    "ChannelClosed",
    "ChannelEvent",
    "ChannelJoinFailed",
    "ChannelJoined",
    "ChannelState",
    "ChannelStateError",
    "ChannelStatistics",
    "ClientStatistics",
    "Connected",
    "ConnectionClosed",
    "ConnectionEvent",
    "Disconnected",
    "FilterOperator",
    "FilterParseError",
    "HeartbeatEvent",
    "JSONObject",
    "JSONValue",
    "JoinError",
    "Overflow",
    "Payload",
    "PostgresChange",
    "PostgresSubscriptionError",
    "PresenceEvent",
    "PresenceMap",
    "PresenceMeta",
    "ProtocolError",
    "PushError",
    "PushTimeout",
    "RateLimit",
    "RateLimitReached",
    "RateLimited",
    "RealtimeClient",
    "RealtimeConnectionError",
    "RealtimeError",
    "ReconnectPolicy",
    "Reconnecting",
    "RestError",
    "RestPayloadTooLarge",
    "RestRateLimited",
    "RestServerError",
    "RestUnauthorized",
    "Subscription",
    "SubscriptionOverflow",
    "SubscriptionStatistics",
    "SystemMessage",
    "TokenError",
    "TokenSource",
    "Transport",
    "TransportFactory",
    "TransportOptions",
    "Vsn",
    "__version__",
    "backoff",
    "open_realtime",
    "postgres_filter",
    "postgres_filters",
]

TESTING_NAMES = [
    "ChannelAuthorization",
    "DatabaseSetupError",
    "DatabaseStatistics",
    "MemoryHTTPTransport",
    "PostgresCluster",
    "PostgresNotFound",
    "RateLimits",
    "RealtimeServer",
    "ServerConnection",
    "ServerStatistics",
    "TokenCheck",
    "make_token",
    "serve_realtime",
    "start_postgres",
]


SYNC_NAMES = [
    "BlockingTokenSource",
    "Channel",
    "RealtimeClient",
    "Subscription",
    "SyncTimeout",
    "connect",
]


def test_exported_names_are_the_documented_list() -> None:
    """__all__ of trio_realtime, .testing and .sync are exactly the lists above."""
    assert trio_realtime.__all__ == TOP_LEVEL_NAMES
    assert trio_realtime.testing.__all__ == TESTING_NAMES
    assert trio_realtime.sync.__all__ == SYNC_NAMES
    assert trio_realtime.testing.__all__ == sorted(trio_realtime.testing.__all__)


def _public_objects(module: types.ModuleType) -> list[tuple[str, object]]:
    """The exported classes and functions of ``module`` (type aliases have no module)."""
    return [
        (name, value)
        for name in module.__all__
        if isinstance(value := getattr(module, name), type) or inspect.isfunction(value)
    ]


@pytest.mark.parametrize(
    "module",
    [trio_realtime, trio_realtime.protocol, trio_realtime.testing, trio_realtime.sync],
    ids=lambda m: m.__name__,
)
def test_public_objects_are_presented_under_a_public_module(module: types.ModuleType) -> None:
    """Every exported class and function, and their methods, has a public ``__module__``.

    A name exported from ``trio_realtime`` prints as ``trio_realtime.JoinError``; one exported
    only from ``trio_realtime.protocol`` or ``.testing`` prints under that module.
    """
    objects = _public_objects(module)
    assert objects
    for name, value in objects:
        owner = value.__module__
        assert owner in (module.__name__, "trio_realtime"), (name, owner)
        if owner != module.__name__:
            assert name in trio_realtime.__all__, name
        if isinstance(value, type):
            for attribute_name, attribute in vars(value).items():
                target = getattr(attribute, "__func__", attribute)
                if isinstance(target, property):
                    target = target.fget
                if inspect.isfunction(target) and not attribute_name.startswith("__"):
                    parts = target.__module__.split(".")
                    assert not any(part.startswith("_") for part in parts), (
                        f"{name}.{attribute_name}",
                        target.__module__,
                    )


def test_reprs_name_the_public_module() -> None:
    """What users see: the class in a repr and in a traceback line."""
    assert repr(trio_realtime.JoinError) == "<class 'trio_realtime.JoinError'>"
    assert repr(trio_realtime.Broadcast) == "<class 'trio_realtime.Broadcast'>"
    assert repr(trio_realtime.protocol.Frame) == "<class 'trio_realtime.protocol.Frame'>"
    assert repr(trio_realtime.testing.RealtimeServer) == (
        "<class 'trio_realtime.testing.RealtimeServer'>"
    )
    error = trio_realtime.PushTimeout("no reply")
    assert f"{type(error).__module__}.{type(error).__qualname__}" == "trio_realtime.PushTimeout"


def test_version_is_the_package_version() -> None:
    """__version__ is the installed distribution's version."""
    assert trio_realtime.__version__ == importlib.metadata.version("trio-realtime")


def test_broadcast_payload_accessors_narrow_or_raise() -> None:
    """Broadcast.json() gives JSON and Broadcast.data bytes; each refuses the other kind."""
    text = trio_realtime.Broadcast("chat", {"text": "hi"}, "realtime:room")
    binary = trio_realtime.Broadcast("blob", b"\x00\x01", "realtime:room")
    assert text.json() == {"text": "hi"}
    assert binary.data == b"\x00\x01"
    with pytest.raises(TypeError, match=r"binary payload; use \.data"):
        binary.json()
    with pytest.raises(TypeError, match=r"JSON payload; use \.json\(\)"):
        _ = text.data
