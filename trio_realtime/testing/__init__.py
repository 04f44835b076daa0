"""A local server that behaves like Supabase Realtime on the wire, with fault injection.

Run it in-process in tests::

    async with serve_realtime() as server:
        ...  # connect a client to server.url, or use transport=server.memory_transport

or from the command line with ``trio-realtime serve``. It never imports the client runtime, so
it cannot agree with the client's bugs.

With ``database_url=`` it streams postgres_changes from a real PostgreSQL, checked against row
level security under each subscriber's JWT; :func:`start_postgres` runs a throwaway cluster for
that, and :func:`make_token` signs tokens for ``jwt_secret=``.
"""

from .._public import publish as _publish
from ._cluster import PostgresCluster as PostgresCluster
from ._cluster import PostgresNotFound as PostgresNotFound
from ._cluster import start_postgres as start_postgres
from ._database_types import DatabaseSetupError as DatabaseSetupError
from ._database_types import DatabaseStatistics as DatabaseStatistics
from ._jwt import make_token as make_token
from ._limits import RateLimits as RateLimits
from ._rest import MemoryHTTPTransport as MemoryHTTPTransport
from ._serve import serve_realtime as serve_realtime
from ._server import RealtimeServer as RealtimeServer
from ._server import ServerStatistics as ServerStatistics
from ._server_connection import ServerConnection as ServerConnection
from ._state import ChannelAuthorization as ChannelAuthorization
from ._state import TokenCheck as TokenCheck

__all__ = [
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

_publish(__name__, globals(), __all__)
