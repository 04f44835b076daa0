"""The sans-I/O layer of trio_realtime: Phoenix/Realtime frames in, frames out.

It does no I/O, imports no trio, reads no clock and keeps no hidden state, so it can be driven
from anything. :func:`encode` and :func:`parse_frame` are the client's side of the wire;
:func:`encode_server_frame` and :func:`parse_client_frame` the server's.

:class:`Session` is the way to drive Realtime from any I/O framework: it holds a whole
session's state (refs, join_refs, expected replies, the outstanding heartbeat, channel states,
bindings, presence and postgres readiness), makes the frames to send and turns received frames
into events, and is told the time instead of reading a clock::

    session = Session()
    session.add_channel("realtime:room")
    send(encode(session.join("realtime:room", token)))
    for frame in frames_received():
        for event in session.receive(frame):
            if isinstance(event, ReplyReceived) and event.kind == "join":
                result = session.join_replied(event)   # JoinAccepted, JoinRefused ...
            elif isinstance(event, Broadcast):
                ...

The trio runtime of this package (``open_realtime``) is one such driver: it only adds tasks,
waiting, timeouts and policies (retries, reconnects).
"""

from ._events import Broadcast as Broadcast
from ._events import SystemMessage as SystemMessage
from ._exceptions import ChannelStateError as ChannelStateError
from ._exceptions import FilterParseError as FilterParseError
from ._exceptions import ProtocolError as ProtocolError
from ._frames import Frame as Frame
from ._frames import JSONObject as JSONObject
from ._frames import JSONValue as JSONValue
from ._frames import Payload as Payload
from ._frames import RefCounter as RefCounter
from ._frames import access_token_frame as access_token_frame
from ._frames import broadcast_frame as broadcast_frame
from ._frames import channel_config as channel_config
from ._frames import heartbeat_frame as heartbeat_frame
from ._frames import join_frame as join_frame
from ._frames import leave_frame as leave_frame
from ._frames import next_ref as next_ref
from ._frames import postgres_binding as postgres_binding
from ._frames import presence_track_frame as presence_track_frame
from ._frames import presence_untrack_frame as presence_untrack_frame
from ._frames import realtime_topic as realtime_topic
from ._frames import ref_counter as ref_counter
from ._frames import sub_topic as sub_topic
from ._postgres import PostgresChange as PostgresChange
from ._postgres import convert_cell as convert_cell
from ._postgres import convert_change_data as convert_change_data
from ._postgres import parse_postgres_change as parse_postgres_change
from ._postgres_filters import FilterCondition as FilterCondition
from ._postgres_filters import filter_matches as filter_matches
from ._postgres_filters import parse_filter as parse_filter
from ._postgres_filters import postgres_filter as postgres_filter
from ._postgres_filters import postgres_filters as postgres_filters
from ._presence import PresenceEvent as PresenceEvent
from ._presence import PresenceTracker as PresenceTracker
from ._presence import transform_state as transform_state
from ._public import publish as _publish
from ._serializer import SUPPORTED_VSNS as SUPPORTED_VSNS
from ._serializer import BroadcastParts as BroadcastParts
from ._serializer import EventKind as EventKind
from ._serializer import check_vsn as check_vsn
from ._serializer import encode as encode
from ._serializer import encode_broadcast_push as encode_broadcast_push
from ._serializer import encode_server_frame as encode_server_frame
from ._serializer import encode_wire as encode_wire
from ._serializer import event_kind as event_kind
from ._serializer import parse_client_frame as parse_client_frame
from ._serializer import parse_frame as parse_frame
from ._serializer import parse_incoming as parse_incoming
from ._session import BINDING_MISMATCH as BINDING_MISMATCH
from ._session import TRANSITIONS as TRANSITIONS
from ._session import BindingKey as BindingKey
from ._session import ChannelClosedByServer as ChannelClosedByServer
from ._session import ChannelErrored as ChannelErrored
from ._session import ChannelOptions as ChannelOptions
from ._session import ChannelSession as ChannelSession
from ._session import ChannelState as ChannelState
from ._session import HeartbeatReplied as HeartbeatReplied
from ._session import JoinAccepted as JoinAccepted
from ._session import JoinRefused as JoinRefused
from ._session import JoinResult as JoinResult
from ._session import JoinSuperseded as JoinSuperseded
from ._session import PostgresChangeReceived as PostgresChangeReceived
from ._session import PostgresFailed as PostgresFailed
from ._session import PostgresReady as PostgresReady
from ._session import PresenceChanged as PresenceChanged
from ._session import ReplyReceived as ReplyReceived
from ._session import Session as Session
from ._session import SessionEvent as SessionEvent
from ._session import SystemReceived as SystemReceived
from ._session import Trigger as Trigger
from ._session import binding_key as binding_key

__all__ = [
    "BINDING_MISMATCH",
    "SUPPORTED_VSNS",
    "TRANSITIONS",
    "BindingKey",
    "Broadcast",
    "BroadcastParts",
    "ChannelClosedByServer",
    "ChannelErrored",
    "ChannelOptions",
    "ChannelSession",
    "ChannelState",
    "ChannelStateError",
    "EventKind",
    "FilterCondition",
    "FilterParseError",
    "Frame",
    "HeartbeatReplied",
    "JSONObject",
    "JSONValue",
    "JoinAccepted",
    "JoinRefused",
    "JoinResult",
    "JoinSuperseded",
    "Payload",
    "PostgresChange",
    "PostgresChangeReceived",
    "PostgresFailed",
    "PostgresReady",
    "PresenceChanged",
    "PresenceEvent",
    "PresenceTracker",
    "ProtocolError",
    "RefCounter",
    "ReplyReceived",
    "Session",
    "SessionEvent",
    "SystemMessage",
    "SystemReceived",
    "Trigger",
    "access_token_frame",
    "binding_key",
    "broadcast_frame",
    "channel_config",
    "check_vsn",
    "convert_cell",
    "convert_change_data",
    "encode",
    "encode_broadcast_push",
    "encode_server_frame",
    "encode_wire",
    "event_kind",
    "filter_matches",
    "heartbeat_frame",
    "join_frame",
    "leave_frame",
    "next_ref",
    "parse_client_frame",
    "parse_filter",
    "parse_frame",
    "parse_incoming",
    "parse_postgres_change",
    "postgres_binding",
    "postgres_filter",
    "postgres_filters",
    "presence_track_frame",
    "presence_untrack_frame",
    "realtime_topic",
    "ref_counter",
    "sub_topic",
    "transform_state",
]

_publish(__name__, globals(), __all__)
