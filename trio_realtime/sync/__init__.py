"""A blocking interface to trio_realtime, for scripts, notebooks and web views.

It mirrors the async API the way ``websockets.sync`` mirrors ``websockets.asyncio``: the same
channels, subscriptions, events and exceptions, with blocking methods instead of coroutines::

    from trio_realtime.sync import connect

    with connect(url, apikey=key) as client:        # runs trio in one background thread
        channel = client.channel("room:lobby", presence_key="alice")
        messages = channel.broadcasts("chat")
        with channel, messages:                      # join / leave
            channel.track({"status": "online"})
            channel.send_broadcast("chat", {"text": "hi"})
            for message in messages:                 # blocks; messages.receive(timeout=1.0)
                print(message.event, message.payload)

Each :func:`connect` starts one thread running ``trio.run`` with
:func:`trio_realtime.open_realtime` inside; every method hands its work to that thread and
waits for it, so the behaviour (reconnects, rejoins, bounded buffers, typed errors) is the
async API's. Every blocking method takes ``timeout=`` and raises :class:`SyncTimeout` (a
:class:`TimeoutError` and a :class:`~trio_realtime.RealtimeError`) when it elapses; Ctrl-C
interrupts a blocking wait, and leaving the ``with`` block closes the connection and ends the
thread. Any thread may call any method; it works while an asyncio loop runs in the calling
thread (a Jupyter notebook).
"""

from .._public import publish as _publish
from ._channel import Channel as Channel
from ._client import BlockingTokenSource as BlockingTokenSource
from ._client import RealtimeClient as RealtimeClient
from ._client import connect as connect
from ._portal import SyncTimeout as SyncTimeout
from ._subscription import Subscription as Subscription

__all__ = [
    "BlockingTokenSource",
    "Channel",
    "RealtimeClient",
    "Subscription",
    "SyncTimeout",
    "connect",
]

# Public names, and their methods, print as trio_realtime.sync.X, wherever they are defined.
_publish(__name__, globals(), __all__)
