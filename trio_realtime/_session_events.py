"""The session core's vocabulary: channel states and their transition table, and the events.

Pure and frozen: :mod:`trio_realtime._session` changes states only through
``TRANSITIONS``, and :meth:`Session.receive` returns these events. Public through
:mod:`trio_realtime.protocol`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from ._events import Broadcast, SystemMessage
from ._frames import Frame, JSONValue
from ._postgres import PostgresChange
from ._presence import PresenceEvent


class ChannelState(enum.Enum):
    """Where a channel is in its lifecycle."""

    CLOSED = "closed"
    JOINING = "joining"
    JOINED = "joined"
    LEAVING = "leaving"
    ERRORED = "errored"


class Trigger(enum.Enum):
    """What changes a channel's state; the keys of ``TRANSITIONS``."""

    SEND_JOIN = "send_join"
    """A ``phx_join`` goes out (first join, rejoin, or a join with new bindings)."""
    REJOIN = "rejoin"
    """The driver will send a new join soon (new bindings or presence on a joined channel)."""
    JOIN_OK = "join_ok"
    """The server accepted the current join."""
    JOIN_FAILED = "join_failed"
    """The current join was refused or timed out, and the driver will retry."""
    SERVER_ERROR = "server_error"
    """The server sent ``phx_error`` for the current join."""
    SERVER_CLOSE = "server_close"
    """The server sent ``phx_close`` for the current join."""
    SEND_LEAVE = "send_leave"
    """A ``phx_leave`` goes out for a joined channel."""
    LEAVE_DONE = "leave_done"
    """The leave was answered, timed out or given up."""
    CONNECTION_LOST = "connection_lost"
    """The connection the channel lived on is gone."""
    CLOSE = "close"
    """The driver closes the channel locally (a refused first join, an abandoned join ...)."""


_S = ChannelState
_T = Trigger

TRANSITIONS: Final[Mapping[tuple[ChannelState, Trigger], ChannelState]] = {
    (_S.CLOSED, _T.SEND_JOIN): _S.JOINING,
    (_S.ERRORED, _T.SEND_JOIN): _S.JOINING,
    (_S.JOINED, _T.SEND_JOIN): _S.JOINING,
    (_S.JOINING, _T.SEND_JOIN): _S.JOINING,
    (_S.JOINED, _T.REJOIN): _S.JOINING,
    (_S.JOINING, _T.REJOIN): _S.JOINING,
    (_S.JOINING, _T.JOIN_OK): _S.JOINED,
    (_S.JOINING, _T.JOIN_FAILED): _S.ERRORED,
    (_S.JOINING, _T.SERVER_ERROR): _S.ERRORED,
    (_S.JOINED, _T.SERVER_ERROR): _S.ERRORED,
    (_S.ERRORED, _T.SERVER_ERROR): _S.ERRORED,
    (_S.JOINING, _T.SERVER_CLOSE): _S.CLOSED,
    (_S.JOINED, _T.SERVER_CLOSE): _S.CLOSED,
    (_S.ERRORED, _T.SERVER_CLOSE): _S.CLOSED,
    (_S.JOINED, _T.SEND_LEAVE): _S.LEAVING,
    (_S.LEAVING, _T.LEAVE_DONE): _S.CLOSED,
    (_S.JOINED, _T.CONNECTION_LOST): _S.ERRORED,
    (_S.JOINING, _T.CONNECTION_LOST): _S.ERRORED,
    (_S.ERRORED, _T.CONNECTION_LOST): _S.ERRORED,
    (_S.CLOSED, _T.CONNECTION_LOST): _S.CLOSED,
    (_S.LEAVING, _T.CONNECTION_LOST): _S.CLOSED,
    **{(state, _T.CLOSE): _S.CLOSED for state in ChannelState},
}
"""Every legal ``(state, trigger) -> new state``; anything else raises ChannelStateError."""


# -- events --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplyReceived:
    """The server answered a join, leave or push the session was waiting for.

    Attributes:
        topic: The channel topic.
        ref: The ref of the frame answered.
        kind: ``"join"``, ``"leave"`` or ``"push"``.
        status: The reply's ``status`` (``"ok"``, ``"error"``...; ``""`` when missing).
        response: The reply's ``response`` value.
    """

    topic: str
    ref: str
    kind: Literal["join", "leave", "push"]
    status: str
    response: JSONValue

    @property
    def ok(self) -> bool:
        """Whether ``status`` is ``"ok"``."""
        return self.status == "ok"

    @property
    def reason(self) -> str:
        """The server's reason for an error reply (``response.reason``), else a repr."""
        response = self.response
        if isinstance(response, dict):
            reason = response.get("reason")
            if isinstance(reason, str):
                return reason
        if isinstance(response, str):
            return response
        return repr(response)


@dataclass(frozen=True, slots=True)
class HeartbeatReplied:
    """The outstanding heartbeat was answered.

    Attributes:
        ref: The heartbeat's ref.
        status: The reply's status (``"ok"`` normally).
        sent_at: The time the driver gave :meth:`Session.heartbeat`; latency is now minus it.
    """

    ref: str
    status: str
    sent_at: float


@dataclass(frozen=True, slots=True)
class ChannelErrored:
    """The server sent ``phx_error`` for the current join: the channel is ERRORED.

    Attributes:
        topic: The channel topic.
    """

    topic: str


@dataclass(frozen=True, slots=True)
class ChannelClosedByServer:
    """The server sent ``phx_close`` for the current join: the channel is CLOSED.

    Attributes:
        topic: The channel topic.
        reason: The message of the ``system`` error that preceded it, or a default text.
    """

    topic: str
    reason: str


@dataclass(frozen=True, slots=True)
class SystemReceived:
    """A ``system`` message for the current join.

    Attributes:
        topic: The channel topic.
        message: The message.
    """

    topic: str
    message: SystemMessage


@dataclass(frozen=True, slots=True)
class PostgresReady:
    """The server confirmed that postgres_changes stream for the current join.

    Attributes:
        topic: The channel topic.
    """

    topic: str


@dataclass(frozen=True, slots=True)
class PostgresFailed:
    """The server could not start postgres_changes for the current join.

    Attributes:
        topic: The channel topic.
        message: The server's text.
        final: ``True`` for an error the server does not retry (bad parameters or filter, a
            table it cannot subscribe to); ``False`` for one it retries after 5 to 10 s, which
            may be followed by "Subscribed to PostgreSQL".
    """

    topic: str
    message: str
    final: bool = True


@dataclass(frozen=True, slots=True)
class PresenceChanged:
    """Presence state changed.

    Attributes:
        topic: The channel topic.
        event: The change (join, leave or sync).
    """

    topic: str
    event: PresenceEvent


@dataclass(frozen=True, slots=True)
class PostgresChangeReceived:
    """A row change for some of the channel's bindings.

    Attributes:
        topic: The channel topic.
        change: The change, values converted.
        bindings: The keys (:func:`binding_key`) of the bindings it is for.
    """

    topic: str
    change: PostgresChange
    bindings: tuple[BindingKey, ...]


SessionEvent = (
    ReplyReceived
    | HeartbeatReplied
    | ChannelErrored
    | ChannelClosedByServer
    | SystemReceived
    | PostgresReady
    | PostgresFailed
    | PresenceChanged
    | PostgresChangeReceived
    | Broadcast
)


@dataclass(frozen=True, slots=True)
class JoinAccepted:
    """What :meth:`Session.join_replied` returns for an accepted join; the channel is JOINED.

    Attributes:
        join_ref: The join's ref.
        rejoin: Whether the channel had been joined before.
        track: The presence ``track`` push of the channel's tracked state, for the driver to
            send now (the server forgets presence with the join it belonged to; RS-01), or
            ``None`` when nothing is tracked. Its reply is expected.
    """

    join_ref: str
    rejoin: bool
    track: Frame | None = None


@dataclass(frozen=True, slots=True)
class JoinRefused:
    """What :meth:`Session.join_replied` returns for a refused join (state unchanged).

    Attributes:
        reason: The server's reason, or ``BINDING_MISMATCH``.
    """

    reason: str


@dataclass(frozen=True, slots=True)
class JoinSuperseded:
    """What :meth:`Session.join_replied` returns when a later frame already decided the join."""


JoinResult = JoinAccepted | JoinRefused | JoinSuperseded

BindingKey = tuple[str, str, str, str, str]
"""A binding's identity: event (upper case), schema, table, filter and selected columns."""


def binding_key(spec: Mapping[str, JSONValue]) -> BindingKey:
    """The identity of a postgres_changes binding, as the server echoes it in the join reply."""
    select = spec.get("select")
    return (
        str(spec.get("event", "*")).upper(),
        str(spec.get("schema", "")),
        str(spec.get("table", "")),
        str(spec.get("filter", "")),
        ",".join(str(column) for column in select) if isinstance(select, list) else "",
    )
