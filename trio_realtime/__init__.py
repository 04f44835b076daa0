"""trio_realtime: a trio-native client for Supabase Realtime.

Open a connection with :func:`open_realtime`, get channels from it, and iterate over their
subscriptions::

    async with open_realtime(url, apikey=key) as client:
        channel = client.channel("room:lobby")
        messages = channel.broadcasts("chat")
        async with channel, messages:
            async for message in messages:
                print(message.event, message.payload)

The wire protocol itself lives in :mod:`trio_realtime.protocol`, and a Realtime-compatible local
server for tests in :mod:`trio_realtime.testing`.

The runtime names are imported on first use, so that ``import trio_realtime.protocol`` loads
only the sans-I/O layer, without trio.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._exceptions import ChannelClosed as ChannelClosed
from ._exceptions import ChannelStateError as ChannelStateError
from ._exceptions import ConnectionClosed as ConnectionClosed
from ._exceptions import DecodeError as DecodeError
from ._exceptions import FilterParseError as FilterParseError
from ._exceptions import JoinError as JoinError
from ._exceptions import PostgresSubscriptionError as PostgresSubscriptionError
from ._exceptions import ProtocolError as ProtocolError
from ._exceptions import PushError as PushError
from ._exceptions import PushTimeout as PushTimeout
from ._exceptions import RateLimit as RateLimit
from ._exceptions import RateLimited as RateLimited
from ._exceptions import RealtimeConnectionError as RealtimeConnectionError
from ._exceptions import RealtimeError as RealtimeError
from ._exceptions import SubscriptionOverflow as SubscriptionOverflow
from ._exceptions import TokenError as TokenError
from ._frames import JSONObject as JSONObject
from ._frames import JSONValue as JSONValue
from ._frames import Payload as Payload
from ._postgres import PostgresChange as PostgresChange
from ._postgres_filters import FilterOperator as FilterOperator
from ._postgres_filters import postgres_filter as postgres_filter
from ._postgres_filters import postgres_filters as postgres_filters
from ._presence import PresenceEvent as PresenceEvent
from ._presence import PresenceMap as PresenceMap
from ._presence import PresenceMeta as PresenceMeta
from ._public import publish as _publish
from ._public import reserve as _reserve
from ._serializer import Vsn as Vsn

if TYPE_CHECKING:
    from ._channel import Channel as Channel
    from ._channel import ChannelState as ChannelState
    from ._channel import ChannelStatistics as ChannelStatistics
    from ._client import ClientStatistics as ClientStatistics
    from ._client import RealtimeClient as RealtimeClient
    from ._client import ReconnectPolicy as ReconnectPolicy
    from ._client import TokenSource as TokenSource
    from ._client import backoff as backoff
    from ._client import open_realtime as open_realtime
    from ._events import Broadcast as Broadcast
    from ._events import ChannelEvent as ChannelEvent
    from ._events import ChannelJoined as ChannelJoined
    from ._events import ChannelJoinFailed as ChannelJoinFailed
    from ._events import Connected as Connected
    from ._events import ConnectionEvent as ConnectionEvent
    from ._events import DecodedBroadcast as DecodedBroadcast
    from ._events import Disconnected as Disconnected
    from ._events import HeartbeatEvent as HeartbeatEvent
    from ._events import RateLimitReached as RateLimitReached
    from ._events import Reconnecting as Reconnecting
    from ._events import SystemMessage as SystemMessage
    from ._http_errors import RestError as RestError
    from ._http_errors import RestPayloadTooLarge as RestPayloadTooLarge
    from ._http_errors import RestRateLimited as RestRateLimited
    from ._http_errors import RestServerError as RestServerError
    from ._http_errors import RestUnauthorized as RestUnauthorized
    from ._rest import BroadcastMessage as BroadcastMessage
    from ._subscription import Overflow as Overflow
    from ._subscription import Subscription as Subscription
    from ._subscription import SubscriptionStatistics as SubscriptionStatistics
    from ._transport import Transport as Transport
    from ._transport import TransportFactory as TransportFactory
    from ._transport import TransportOptions as TransportOptions

_LAZY = {
    "Channel": "_channel",
    "ChannelState": "_channel",
    "ChannelStatistics": "_channel",
    "ClientStatistics": "_client",
    "RealtimeClient": "_client",
    "ReconnectPolicy": "_client",
    "TokenSource": "_client",
    "backoff": "_client",
    "open_realtime": "_client",
    "Broadcast": "_events",
    "ChannelEvent": "_events",
    "ChannelJoined": "_events",
    "ChannelJoinFailed": "_events",
    "Connected": "_events",
    "DecodedBroadcast": "_events",
    "ConnectionEvent": "_events",
    "Disconnected": "_events",
    "HeartbeatEvent": "_events",
    "RateLimitReached": "_events",
    "Reconnecting": "_events",
    "SystemMessage": "_events",
    "Overflow": "_subscription",
    "RestError": "_http_errors",
    "RestPayloadTooLarge": "_http_errors",
    "RestRateLimited": "_http_errors",
    "RestServerError": "_http_errors",
    "RestUnauthorized": "_http_errors",
    "BroadcastMessage": "_rest",
    "Subscription": "_subscription",
    "SubscriptionStatistics": "_subscription",
    "Transport": "_transport",
    "TransportFactory": "_transport",
    "TransportOptions": "_transport",
}

_reserve(__name__, _LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'trio_realtime' has no attribute {name!r}")
    # The first runtime name asked for loads them all, so that every public class is presented
    # as trio_realtime.X (see publish) before any of them can be seen.
    namespace = globals()
    for lazy_name, module in _LAZY.items():
        namespace[lazy_name] = getattr(importlib.import_module(f".{module}", __name__), lazy_name)
    _publish(__name__, namespace, _LAZY)
    return namespace[name]


def __dir__() -> list[str]:
    return sorted(__all__)


__version__ = "0.1.0"

__all__ = [
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
    "DecodeError",
    "DecodedBroadcast",
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

_publish(__name__, globals(), __all__)
