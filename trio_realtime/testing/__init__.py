"""A local server that behaves like Supabase Realtime on the wire, with fault injection.

Run it in-process in tests::

    async with serve_realtime() as server:
        ...  # connect a client to server.url, or use transport=server.memory_transport

or from the command line with ``trio-realtime serve``. It never imports the client runtime, so
it cannot agree with the client's bugs.
"""

from ._rest import MemoryHTTPTransport as MemoryHTTPTransport
from ._server import RealtimeServer as RealtimeServer
from ._server import ServerStatistics as ServerStatistics
from ._server import serve_realtime as serve_realtime
from ._server_connection import ServerConnection as ServerConnection
from ._state import ChannelAuthorization as ChannelAuthorization
from ._state import TokenCheck as TokenCheck

__all__ = [
    "ChannelAuthorization",
    "MemoryHTTPTransport",
    "RealtimeServer",
    "ServerConnection",
    "ServerStatistics",
    "TokenCheck",
    "serve_realtime",
]
