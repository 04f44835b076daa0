"""The session core: the whole state of a Realtime session, with no I/O, no trio and no clock.

Theory of operation
-------------------
A :class:`Session` is to Realtime what h11's ``Connection`` is to HTTP/1.1. The driver (the trio
runtime, or any other I/O framework) asks it for outgoing frames (:meth:`Session.join`,
:meth:`Session.leave`, :meth:`Session.broadcast`, :meth:`Session.track`,
:meth:`Session.heartbeat`, :meth:`Session.access_token` ...), writes them, and hands every
incoming frame to :meth:`Session.receive`, which returns what the frame means as events. The
session keeps:

* the ref counter, each channel's join_ref, and the replies it still expects (by ref);
* the outstanding heartbeat, with the time the driver said it was sent;
* each channel's :class:`ChannelState`, changed only through ``TRANSITIONS``, a table keyed
  by ``(state, trigger)``; a trigger the table does not list for a state raises
  :class:`~trio_realtime.ChannelStateError` naming both;
* the stale-frame rules: ``phx_close``, ``phx_error``, ``presence_*`` and ``system`` frames
  tagged with another join_ref, and replies to refs nobody expects, are dropped (and counted);
* the postgres_changes bindings and their reconciliation with the server's join reply;
* presence state (a :class:`~trio_realtime.protocol.PresenceTracker` per channel) and
  postgres readiness ("Subscribed to PostgreSQL").

Waiting, timeouts, retries and every other policy are the driver's: the session only says what
happened. A join reply comes out of :meth:`Session.receive` as a :class:`ReplyReceived`; the
driver settles the join with :meth:`Session.join_replied` when its join task resumes, so that
frames read in the same batch after the reply (a ``phx_close`` or ``phx_error`` for the same
join) decide first.

Everything that :meth:`Session.receive` returns concerns the frame's topic. The states, the
transition table and the events are in ``_session_events``.

The module is longer than the project's usual 500 lines because :class:`Session` is one state
machine: every rule that reads or changes a channel's state sits next to the others, where a
reader can check them against the table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from ._events import Broadcast, SystemMessage
from ._exceptions import ChannelStateError, ProtocolError
from ._frames import (
    BROADCAST,
    PHOENIX_TOPIC,
    PHX_CLOSE,
    PHX_ERROR,
    PHX_REPLY,
    POSTGRES_CHANGES,
    PRESENCE_DIFF,
    PRESENCE_STATE,
    SYSTEM,
    Frame,
    JSONObject,
    JSONValue,
    Payload,
    RefCounter,
    access_token_frame,
    broadcast_frame,
    channel_config,
    heartbeat_frame,
    join_frame,
    leave_frame,
    next_ref,
    presence_track_frame,
    presence_untrack_frame,
    ref_counter,
)
from ._postgres import is_final_postgres_error, parse_postgres_change
from ._presence import PresenceEvent, PresenceMap, PresenceTracker
from ._session_events import TRANSITIONS as TRANSITIONS
from ._session_events import BindingKey as BindingKey
from ._session_events import ChannelClosedByServer as ChannelClosedByServer
from ._session_events import ChannelErrored as ChannelErrored
from ._session_events import ChannelState as ChannelState
from ._session_events import HeartbeatReplied as HeartbeatReplied
from ._session_events import JoinAccepted as JoinAccepted
from ._session_events import JoinRefused as JoinRefused
from ._session_events import JoinResult as JoinResult
from ._session_events import JoinSuperseded as JoinSuperseded
from ._session_events import PostgresChangeReceived as PostgresChangeReceived
from ._session_events import PostgresFailed as PostgresFailed
from ._session_events import PostgresReady as PostgresReady
from ._session_events import PresenceChanged as PresenceChanged
from ._session_events import ReplyReceived as ReplyReceived
from ._session_events import SessionEvent as SessionEvent
from ._session_events import SystemReceived as SystemReceived
from ._session_events import Trigger as Trigger
from ._session_events import binding_key as binding_key

BINDING_MISMATCH: Final = "mismatch between server and client bindings for postgres changes"


@dataclass(frozen=True, slots=True)
class ChannelOptions:
    """A channel's options, as given to ``client.channel()``.

    Attributes:
        broadcast_self: Receive one's own broadcasts.
        broadcast_ack: Ask the server to acknowledge broadcasts.
        presence_key: The presence key (``""``: the server picks one).
        presence_enabled: Ask for presence from the first join.
        private: A private channel (authorised by RLS policies).
    """

    broadcast_self: bool = False
    broadcast_ack: bool = False
    presence_key: str = ""
    presence_enabled: bool = False
    private: bool = False


@dataclass(slots=True)
class _Binding:
    spec: JSONObject
    key: BindingKey
    server_id: int | None = None


PostgresReadiness = Literal["none", "waiting", "ready", "failed"]


@dataclass(slots=True)
class ChannelSession:
    """The pure state of one channel; owned by a :class:`Session`, read by the driver.

    Attributes:
        topic: The full topic.
        options: The options it was created with.
        state: Its current state.
        join_ref: The ref of the current (or last) join.
        ever_joined: Whether a join was accepted since the channel was last closed for good.
        presence_enabled: Whether joins ask for presence (set by the options or by
            :meth:`Session.enable_presence`).
        postgres: The readiness of postgres_changes for the current join.
        postgres_error: The server's message when ``postgres`` is ``"failed"``; while it is
            ``"waiting"``, the last error the server is retrying, if any.
        replay: The ``config.broadcast.replay`` object the next join sends, if any (set by the
            driver, which knows the time).
        tracked: The state of the last presence ``track`` not followed by an ``untrack``; it
            is tracked again after every accepted join, because the server forgets presence with
            the join it belonged to.
        token: The access token the server runs the current join with: the join's, then the
            last ``access_token`` pushed.
    """

    topic: str
    options: ChannelOptions
    state: ChannelState = ChannelState.CLOSED
    join_ref: str | None = None
    ever_joined: bool = False
    presence_enabled: bool = False
    postgres: PostgresReadiness = "none"
    postgres_error: str | None = None
    close_reason: str | None = None
    # A tuple, replaced when a binding is added: most channels have none, and an empty list
    # would be one more object per channel for the garbage collector to scan.
    bindings: tuple[_Binding, ...] = ()
    presence: PresenceTracker = field(default_factory=PresenceTracker)
    replay: JSONObject | None = None
    tracked: JSONObject | None = None
    token: str | None = None

    def config(self) -> JSONObject:
        """The join's ``config`` object, without the bindings."""
        options = self.options
        config = channel_config(
            broadcast_self=options.broadcast_self,
            broadcast_ack=options.broadcast_ack,
            presence_key=options.presence_key,
            presence_enabled=self.presence_enabled,
            private=options.private,
        )
        broadcast = config.get("broadcast")
        if self.replay is not None and isinstance(broadcast, dict):
            broadcast["replay"] = dict(self.replay)
        return config

    def binding_specs(self) -> list[JSONObject]:
        """The bindings, in the order they travel in the join."""
        return [binding.spec for binding in self.bindings]

    def _fire(self, trigger: Trigger) -> ChannelState:
        new = TRANSITIONS.get((self.state, trigger))
        if new is None:
            raise ChannelStateError(self.topic, self.state.value, trigger.value)
        self.state = new
        return new


@dataclass(slots=True)
class _Pending:
    topic: str
    kind: Literal["join", "leave", "push"]
    track: JSONObject | None = None
    """For a presence track: its state, remembered once the server accepts it."""


_NOTHING: Final[tuple[SessionEvent, ...]] = ()


class Session:
    """The state of a Realtime session over successive connections; see the module docstring.

    Args:
        refs: The ref counter to draw refs from (a fresh one by default).
    """

    def __init__(self, *, refs: RefCounter | None = None) -> None:
        self._refs = refs if refs is not None else ref_counter()
        self._channels: dict[str, ChannelSession] = {}
        self._pending: dict[str, _Pending] = {}
        self._heartbeat: tuple[str, float] | None = None
        self.stale_frames = 0
        """Frames dropped by the stale-frame rules (other join_ref, unknown reply ref)."""
        self.unroutable_frames = 0
        """Frames for a topic with no channel, or with an event the session does not know."""

    def __repr__(self) -> str:
        return (
            f"<Session channels={len(self._channels)} pending_replies={len(self._pending)} "
            f"heartbeat={'outstanding' if self._heartbeat else 'none'}>"
        )

    # -- channels ---------------------------------------------------------------------------------

    def add_channel(
        self,
        topic: str,
        options: ChannelOptions | None = None,
        *,
        tracked: Mapping[str, JSONValue] | None = None,
    ) -> ChannelSession:
        """Register the channel for ``topic`` (its full ``realtime:`` topic).

        Args:
            topic: The full topic.
            options: The channel's options.
            tracked: A presence state to track after its first join (that of an earlier
                channel object for the topic that the server closed); presence is enabled.

        Raises:
            ValueError: when the topic already has a channel.
        """
        if topic in self._channels:
            raise ValueError(f"channel {topic!r} already exists")
        opts = options if options is not None else ChannelOptions()
        channel = ChannelSession(
            topic,
            opts,
            presence_enabled=opts.presence_enabled or tracked is not None,
            tracked=dict(tracked) if tracked is not None else None,
        )
        self._channels[topic] = channel
        return channel

    def remove_channel(self, topic: str) -> None:
        """Forget the channel for ``topic`` and the replies it was waiting for. Idempotent."""
        if self._channels.pop(topic, None) is not None:
            for ref in [r for r, p in self._pending.items() if p.topic == topic]:
                del self._pending[ref]

    def channel(self, topic: str) -> ChannelSession:
        """The channel for ``topic``.

        Raises:
            KeyError: when there is none.
        """
        return self._channels[topic]

    @property
    def channels(self) -> Mapping[str, ChannelSession]:
        """The registered channels, by topic (read-only view)."""
        return self._channels

    def add_binding(self, topic: str, spec: JSONObject) -> tuple[BindingKey, bool]:
        """Add a postgres_changes binding (no-op if the same one exists).

        Returns:
            The binding's key, and whether the channel must rejoin to send it (it is joined or
            joining, and the binding is new).
        """
        channel = self._channels[topic]
        key = binding_key(spec)
        if any(binding.key == key for binding in channel.bindings):
            return key, False
        channel.bindings = (*channel.bindings, _Binding(dict(spec), key))
        return key, channel.state in (ChannelState.JOINED, ChannelState.JOINING)

    def enable_presence(self, topic: str) -> bool:
        """Ask for presence in this channel's joins; return whether it must rejoin for that."""
        channel = self._channels[topic]
        if channel.presence_enabled:
            return False
        channel.presence_enabled = True
        return channel.state in (ChannelState.JOINED, ChannelState.JOINING)

    # -- outgoing frames --------------------------------------------------------------------------

    def next_ref(self) -> str:
        """A fresh ref (for frames the session does not build itself)."""
        return next_ref(self._refs)

    def join(self, topic: str, access_token: str | None = None) -> Frame:
        """Build the ``phx_join`` for ``topic`` and expect its reply; the channel is JOINING.

        A join while one is pending supersedes it: the old join's reply will be ignored.
        """
        channel = self._channels[topic]
        channel._fire(Trigger.SEND_JOIN)
        if channel.join_ref is not None:
            self._pending.pop(channel.join_ref, None)
        ref = next_ref(self._refs)
        channel.join_ref = ref
        channel.close_reason = None
        channel.postgres = "waiting" if channel.bindings else "none"
        channel.postgres_error = None
        channel.token = access_token
        self._pending[ref] = _Pending(topic, "join")
        return join_frame(ref, topic, channel.config(), channel.binding_specs(), access_token)

    def rejoin(self, topic: str) -> None:
        """A new join will follow shortly: a joined channel becomes JOINING at once, so that
        nothing more is pushed with the old join_ref."""
        channel = self._channels[topic]
        if channel.state in (ChannelState.JOINED, ChannelState.JOINING):
            channel._fire(Trigger.REJOIN)

    def join_replied(self, reply: ReplyReceived) -> JoinResult:
        """Settle a join with its reply (from :meth:`receive`).

        Returns :class:`JoinSuperseded` when the channel has moved on (a later join, a
        ``phx_close`` or ``phx_error``, a leave); :class:`JoinRefused` for a refusal or bindings
        that do not match the server's (the state is unchanged: the driver then fires
        :meth:`join_failed` or :meth:`close`); :class:`JoinAccepted` otherwise, with the channel
        JOINED and each binding given the server's id.
        """
        channel = self._channels.get(reply.topic)
        if (
            channel is None
            or channel.join_ref != reply.ref
            or channel.state is not ChannelState.JOINING
        ):
            return JoinSuperseded()
        if not reply.ok:
            return JoinRefused(reply.reason)
        ids = _server_binding_ids(channel.bindings, reply.response)
        if ids is None:
            return JoinRefused(BINDING_MISMATCH)
        for binding, server_id in zip(channel.bindings, ids, strict=True):
            binding.server_id = server_id
        channel._fire(Trigger.JOIN_OK)
        rejoin = channel.ever_joined
        channel.ever_joined = True
        track = None
        if channel.tracked is not None:
            frame = presence_track_frame(
                next_ref(self._refs), reply.ref, channel.topic, channel.tracked
            )
            # Not remembered again on its reply: the state is ``tracked`` already, and a later
            # track answered in the meantime must stay the one remembered.
            track = self._push(channel.topic, frame, True)
        return JoinAccepted(reply.ref, rejoin, track)

    def join_failed(self, topic: str) -> None:
        """The current join failed and will be retried: JOINING becomes ERRORED."""
        channel = self._channels[topic]
        if channel.join_ref is not None:
            self._pending.pop(channel.join_ref, None)
        if channel.state is ChannelState.JOINING:
            channel._fire(Trigger.JOIN_FAILED)

    def leave(self, topic: str) -> Frame | None:
        """Build the ``phx_leave`` for ``topic``, if the server may hold the channel.

        A joined channel becomes LEAVING and its reply is expected (call :meth:`leave_done`
        when it is answered or given up). A joining one is closed at once: the leave only tells
        the server, in case it joins. Otherwise the channel is closed and ``None`` returned.
        """
        channel = self._channels[topic]
        state = channel.state
        join_ref = channel.join_ref
        if state is ChannelState.JOINED and join_ref is not None:
            channel._fire(Trigger.SEND_LEAVE)
            ref = next_ref(self._refs)
            self._pending[ref] = _Pending(topic, "leave")
            return leave_frame(ref, join_ref, topic)
        self.close(topic)
        if state is ChannelState.JOINING and join_ref is not None:
            return leave_frame(next_ref(self._refs), join_ref, topic)
        return None

    def leave_done(self, topic: str) -> None:
        """The leave was answered (or given up): LEAVING becomes CLOSED."""
        channel = self._channels[topic]
        if channel.state is ChannelState.LEAVING:
            channel._fire(Trigger.LEAVE_DONE)

    def close(
        self, topic: str, *, forget: bool = False, keep_tracked: bool = False
    ) -> list[PresenceEvent]:
        """Close the channel locally; no frame is needed (or the driver sent one already).

        No reply is expected for it any more.

        Args:
            topic: The channel.
            forget: Also drop its bindings and presence state, for a channel closed for good;
                and its tracked state unless ``keep_tracked``.
            keep_tracked: Keep :attr:`ChannelSession.tracked` (a channel the server closed,
                which a new join may take up again; see :meth:`add_channel`).

        Returns:
            The presence leaves of a forgotten state.
        """
        channel = self._channels[topic]
        channel._fire(Trigger.CLOSE)
        for ref in [r for r, p in self._pending.items() if p.topic == topic]:
            del self._pending[ref]
        channel.close_reason = None
        if not forget:
            return []
        channel.ever_joined = False
        channel.bindings = ()
        channel.postgres = "none"
        if not keep_tracked:
            channel.tracked = None
        return channel.presence.clear()

    def _require_joined(self, topic: str, what: str) -> tuple[ChannelSession, str]:
        channel = self._channels[topic]
        if channel.state is not ChannelState.JOINED or channel.join_ref is None:
            raise ChannelStateError(topic, channel.state.value, what)
        return channel, channel.join_ref

    def _push(self, topic: str, frame: Frame, ack: bool, track: JSONObject | None = None) -> Frame:
        if ack:
            assert frame.ref is not None
            self._pending[frame.ref] = _Pending(topic, "push", track)
        return frame

    def broadcast(self, topic: str, event: str, payload: Payload, *, ack: bool) -> Frame:
        """Build a broadcast push; with ``ack``, its reply is expected.

        Raises:
            ChannelStateError: when the channel is not joined.
        """
        ref, join_ref = self.broadcast_refs(topic, ack=ack)
        return broadcast_frame(ref, join_ref, topic, event, payload)

    def broadcast_refs(self, topic: str, *, ack: bool) -> tuple[str, str]:
        """:meth:`broadcast` without the frame: the push's ``(ref, join_ref)``, for a caller
        that encodes it directly (:func:`~trio_realtime.protocol.encode_broadcast_push`).
        With ``ack``, its reply is expected; :meth:`forget` the ref if it is not sent.

        Raises:
            ChannelStateError: when the channel is not joined.
        """
        _, join_ref = self._require_joined(topic, "broadcast")
        ref = next_ref(self._refs)
        if ack:
            self._pending[ref] = _Pending(topic, "push", None)
        return ref, join_ref

    def track(self, topic: str, state: Mapping[str, JSONValue]) -> Frame:
        """Build a presence ``track`` push and expect its reply.

        Once the server accepts it, the state is remembered (:attr:`ChannelSession.tracked`)
        and tracked again after every later join, until :meth:`untrack`. A track that the
        server refused, or that never got its reply (one the server dropped the connection
        for, say), is not.

        Raises:
            ChannelStateError: when the channel is not joined.
        """
        _, join_ref = self._require_joined(topic, "track")
        frame = presence_track_frame(next_ref(self._refs), join_ref, topic, state)
        return self._push(topic, frame, True, dict(state))

    def untrack(self, topic: str) -> Frame:
        """Build a presence ``untrack`` push and expect its reply; nothing is tracked any more.

        Raises:
            ChannelStateError: when the channel is not joined.
        """
        channel, join_ref = self._require_joined(topic, "untrack")
        frame = presence_untrack_frame(next_ref(self._refs), join_ref, topic)
        channel.tracked = None
        for pending in self._pending.values():
            if pending.topic == topic:
                pending.track = None  # an earlier track answered later is not remembered
        return self._push(topic, frame, True)

    def access_token(self, topic: str, token: str) -> Frame | None:
        """Build an ``access_token`` push for a joined channel (never answered), else ``None``.

        A channel that is not joined gets the token with its next join instead; one that runs
        with this token already gets nothing.
        """
        channel = self._channels.get(topic)
        if channel is None or channel.state is not ChannelState.JOINED or channel.token == token:
            return None
        channel.token = token
        return access_token_frame(next_ref(self._refs), channel.join_ref, topic, token)

    def heartbeat(self, now: float) -> Frame:
        """Build a heartbeat sent at time ``now``; it is outstanding until answered.

        Raises:
            ProtocolError: when the previous heartbeat is still outstanding (the driver
                should declare the connection dead instead).
        """
        if self._heartbeat is not None:
            raise ProtocolError("the previous heartbeat is still unanswered")
        ref = next_ref(self._refs)
        self._heartbeat = (ref, now)
        return heartbeat_frame(ref)

    @property
    def heartbeat_outstanding(self) -> tuple[str, float] | None:
        """The ref and send time of the unanswered heartbeat, if any."""
        return self._heartbeat

    def expecting_reply(self, ref: str) -> bool:
        """Whether a reply to ``ref`` is expected."""
        return ref in self._pending

    @property
    def pending_replies(self) -> int:
        """How many replies are expected."""
        return len(self._pending)

    def forget(self, ref: str) -> None:
        """Stop expecting the reply to ``ref`` (its waiter gave up). Idempotent."""
        self._pending.pop(ref, None)

    # -- connection lifecycle ---------------------------------------------------------------------

    def connection_lost(self) -> list[str]:
        """The connection is gone: no reply or heartbeat will come.

        Joined and joining channels become ERRORED (they rejoin on the next connection);
        leaving ones become CLOSED.

        Returns:
            The topics whose leave was cut short (now CLOSED).
        """
        self._pending.clear()
        self._heartbeat = None
        left: list[str] = []
        for topic, channel in self._channels.items():
            if channel.state is ChannelState.LEAVING:
                left.append(topic)
            channel._fire(Trigger.CONNECTION_LOST)
        return left

    # -- incoming frames --------------------------------------------------------------------------

    def receive(self, frame: Frame) -> Sequence[SessionEvent]:
        """Take one frame from the server; return what it means (possibly nothing).

        Never raises for what the server sends: malformed or stale frames are dropped and
        counted (``stale_frames``, ``unroutable_frames``).
        """
        event = frame.event
        topic = frame.topic
        if event == BROADCAST:
            item = self.receive_broadcast(frame)
            return _NOTHING if item is None else (item,)
        if event == PHX_REPLY:
            return self._on_reply(frame)
        channel = self._channels.get(topic)
        if channel is None:
            self.unroutable_frames += 1
            return _NOTHING
        if event == POSTGRES_CHANGES:
            return self._on_postgres(channel, frame.payload)
        if event in (PRESENCE_DIFF, PRESENCE_STATE):
            return self._on_presence(channel, frame)
        if event == SYSTEM:
            return self._on_system(channel, frame)
        if event == PHX_CLOSE:
            return self._on_close(channel, frame)
        if event == PHX_ERROR:
            return self._on_error(channel, frame)
        self.unroutable_frames += 1
        return _NOTHING

    def receive_broadcast(self, frame: Frame) -> Broadcast | None:
        """:meth:`receive` for a frame whose event is ``broadcast``: the item, or ``None``.

        The reader's fast path (SPEED, measured below): no tuple, no second dispatch.
        """
        return self.receive_broadcast_parts(frame.topic, frame.payload)

    def receive_broadcast_parts(self, topic: str, payload: Payload) -> Broadcast | None:
        """:meth:`receive_broadcast` for a broadcast frame's topic and payload, as
        :func:`~trio_realtime.protocol.parse_incoming` returns them (no frame object)."""
        if topic not in self._channels:
            self.unroutable_frames += 1
            return None
        if type(payload) is not dict:
            return None
        user_event = payload.get("event")
        if type(user_event) is not str:
            return None
        # SPEED: the slots filled directly; see the note at the end of the module.
        item: Broadcast = _new_object(Broadcast)
        _set_event(item, user_event)
        _set_payload(item, payload.get("payload"))
        _set_topic(item, topic)
        _set_meta(item, payload.get("meta"))
        return item

    def _stale(self, channel: ChannelSession, frame: Frame, *, ref_too: bool) -> bool:
        marker = frame.join_ref
        if marker is None and ref_too:
            marker = frame.ref
        if marker is not None and marker != channel.join_ref:
            self.stale_frames += 1
            return True
        return False

    def _on_reply(self, frame: Frame) -> Sequence[SessionEvent]:
        payload = frame.payload
        status: JSONValue = None
        response: JSONValue = None
        if isinstance(payload, dict):
            status = payload.get("status")
            response = payload.get("response")
        status_text = status if isinstance(status, str) else ""
        ref = frame.ref
        if frame.topic == PHOENIX_TOPIC:
            heartbeat = self._heartbeat
            if heartbeat is None or heartbeat[0] != ref:
                self.stale_frames += 1
                return _NOTHING
            self._heartbeat = None
            return (HeartbeatReplied(heartbeat[0], status_text, heartbeat[1]),)
        if (
            ref is None
            or (pending := self._pending.get(ref)) is None
            or pending.topic != frame.topic
        ):
            self.stale_frames += 1
            return _NOTHING
        del self._pending[ref]
        if pending.track is not None and status_text == "ok":
            self._channels[frame.topic].tracked = pending.track
        # SPEED: one per acknowledged push; see the note at the end of the module.
        reply: ReplyReceived = _new_object(ReplyReceived)
        _set_reply_topic(reply, frame.topic)
        _set_reply_ref(reply, ref)
        _set_reply_kind(reply, pending.kind)
        _set_reply_status(reply, status_text)
        _set_reply_response(reply, response)
        return (reply,)

    def _on_postgres(self, channel: ChannelSession, payload: Payload) -> Sequence[SessionEvent]:
        change = parse_postgres_change(payload)
        if change is None:
            self.unroutable_frames += 1
            return _NOTHING
        ids = change.ids
        kind = change.event_type.upper()
        keys = tuple(
            binding.key
            for binding in channel.bindings
            if binding.server_id is not None
            and binding.server_id in ids
            and binding.key[0] in ("*", kind)
        )
        if not keys:
            return _NOTHING
        return (PostgresChangeReceived(channel.topic, change, keys),)

    def _on_presence(self, channel: ChannelSession, frame: Frame) -> Sequence[SessionEvent]:
        if channel.state is ChannelState.CLOSED or self._stale(channel, frame, ref_too=False):
            return _NOTHING
        try:
            if frame.event == PRESENCE_DIFF:
                changes = channel.presence.sync_diff(frame.payload, channel.join_ref)
            else:
                changes = channel.presence.sync_state(frame.payload, channel.join_ref)
        except ProtocolError:
            self.unroutable_frames += 1
            return _NOTHING
        return tuple(PresenceChanged(channel.topic, change) for change in changes)

    def _on_system(self, channel: ChannelSession, frame: Frame) -> Sequence[SessionEvent]:
        if self._stale(channel, frame, ref_too=False):
            return _NOTHING
        payload = frame.payload
        if not isinstance(payload, dict):
            self.unroutable_frames += 1
            return _NOTHING
        message = payload.get("message")
        status = payload.get("status")
        extension = payload.get("extension")
        sub = payload.get("channel")
        item = SystemMessage(
            extension=extension if isinstance(extension, str) else "",
            status=status if isinstance(status, str) else "",
            message=str(message),  # the text itself for a string
            channel=sub if isinstance(sub, str) else None,
            payload=payload,
        )
        received = SystemReceived(channel.topic, item)
        if item.extension == POSTGRES_CHANGES:
            if item.ok:
                channel.postgres = "ready"
                return (PostgresReady(channel.topic), received)
            final = is_final_postgres_error(item.message)
            # A retried error leaves the join waiting for the server's next attempt.
            channel.postgres = "failed" if final else "waiting"
            channel.postgres_error = item.message
            return (PostgresFailed(channel.topic, item.message, final=final), received)
        if item.status == "error":
            channel.close_reason = item.message
        return (received,)

    def _on_close(self, channel: ChannelSession, frame: Frame) -> Sequence[SessionEvent]:
        if self._stale(channel, frame, ref_too=True):
            return _NOTHING
        if channel.state in (ChannelState.CLOSED, ChannelState.LEAVING):
            # Closed already, or the server's phx_close that follows a leave reply.
            return _NOTHING
        reason = channel.close_reason or "the server closed the channel"
        channel._fire(Trigger.SERVER_CLOSE)
        if channel.join_ref is not None:
            self._pending.pop(channel.join_ref, None)
        channel.close_reason = None
        return (ChannelClosedByServer(channel.topic, reason),)

    def _on_error(self, channel: ChannelSession, frame: Frame) -> Sequence[SessionEvent]:
        if self._stale(channel, frame, ref_too=True):
            return _NOTHING
        if channel.state in (ChannelState.CLOSED, ChannelState.LEAVING):
            return _NOTHING
        channel._fire(Trigger.SERVER_ERROR)
        if channel.join_ref is not None:
            self._pending.pop(channel.join_ref, None)
        return (ChannelErrored(channel.topic),)

    # -- presence ---------------------------------------------------------------------------------

    def presence_state(self, topic: str) -> PresenceMap:
        """A copy of the channel's presence state."""
        return self._channels[topic].presence.snapshot()


def _server_binding_ids(bindings: Sequence[_Binding], response: JSONValue) -> list[int] | None:
    """The server's id for each binding, in order, or ``None`` when they do not match."""
    server = response.get("postgres_changes") if isinstance(response, dict) else None
    entries = server if isinstance(server, list) else []
    if len(entries) != len(bindings):
        return None
    ids: list[int] = []
    for binding, entry in zip(bindings, entries, strict=True):
        if not isinstance(entry, dict):
            return None
        entry_id = entry.get("id")
        if not isinstance(entry_id, int) or isinstance(entry_id, bool):
            return None
        if binding_key(entry) != binding.key:
            return None
        ids.append(entry_id)
    return ids


# -- speed tricks ----------------------------------------------------------------------------------
# SPEED. Broadcasts are the reader's hot path, and replies to acknowledged pushes the next one:
# ``Session.receive_broadcast_parts`` returns the item itself (``receive`` wraps it in a tuple),
# takes the topic and payload that ``parse_incoming`` returns without building a frame, and
# fills the frozen, slotted ``Broadcast`` through its slot descriptors, skipping the generated
# ``__init__`` and the frozen ``__setattr__``. A slotted item is one object where a dataclass
# with a ``__dict__`` is two, which the garbage collector counts too: on the 2-core machine,
# building 300,000 items and keeping them took 1.0 us each this way, 1.7 us with a one-step
# ``__dict__`` fill (the way before), medians of 3 in one process. ``_on_reply`` fills the
# ``ReplyReceived`` of every reply the same way: 0.30 us where the generated frozen
# ``__init__`` took 0.57 us (timeit, best of 5, on a 2-core Xeon).

_new_object = object.__new__
_BROADCAST_SLOTS: Any = Broadcast
_set_event = _BROADCAST_SLOTS.event.__set__
_set_payload = _BROADCAST_SLOTS.payload.__set__
_set_topic = _BROADCAST_SLOTS.topic.__set__
_set_meta = _BROADCAST_SLOTS.meta.__set__
_REPLY_SLOTS: Any = ReplyReceived
_set_reply_topic = _REPLY_SLOTS.topic.__set__
_set_reply_ref = _REPLY_SLOTS.ref.__set__
_set_reply_kind = _REPLY_SLOTS.kind.__set__
_set_reply_status = _REPLY_SLOTS.status.__set__
_set_reply_response = _REPLY_SLOTS.response.__set__
