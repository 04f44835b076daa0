"""trio_realtime: a trio-native client for Supabase Realtime."""

from ._exceptions import ChannelClosed as ChannelClosed
from ._exceptions import ConnectionClosed as ConnectionClosed
from ._exceptions import JoinError as JoinError
from ._exceptions import ProtocolError as ProtocolError
from ._exceptions import PushError as PushError
from ._exceptions import PushTimeout as PushTimeout
from ._exceptions import RealtimeConnectionError as RealtimeConnectionError
from ._exceptions import RealtimeError as RealtimeError
from ._exceptions import SubscriptionOverflow as SubscriptionOverflow

__version__ = "0.1.0"

__all__ = [
    "ChannelClosed",
    "ConnectionClosed",
    "JoinError",
    "ProtocolError",
    "PushError",
    "PushTimeout",
    "RealtimeConnectionError",
    "RealtimeError",
    "SubscriptionOverflow",
    "__version__",
]
