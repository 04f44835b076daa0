"""One client connection to the local server: a reader, a writer and a bounded send buffer.

Theory of operation
-------------------
Each connection runs two tasks in its own nursery:

* the **reader** takes batches of messages from the transport, parses each with the shared
  ``parse_client_frame`` and handles it synchronously (a join may sleep first: the real server
  blocks the connection while a refused join backs off);
* the **writer** is the only task that writes to the transport. It takes everything queued in the
  send buffer at once and hands it over as one batch.

Everything that sends to a client, whatever task it runs in (this connection's reader, another
connection's reader during a fan-out, a test calling the server API), calls :meth:`enqueue`,
which never blocks: it appends to the connection's ``SendBuffer`` (``_send_buffer``, where the
buffer policy is: a client that lets ``send_buffer`` frames pile up is dropped) and wakes the
writer. A close request goes through the same buffer, so it keeps its place in line: the writer
stops the reader, then closes the transport with the given code after the frames before it.

The module is longer than the project's usual 500 lines because :class:`ServerConnection` is one
state machine: the reader, the frame handlers and the joins all read and change the connection's
channel table, its timers and its close sequence. What needs none of that state is beside it:
the buffer (``_send_buffer``), the join checks (``_join_checks``), the join payload
(``_payloads``), token expiry (``_tokens``) and the rate limits (``_limits``).
"""

from __future__ import annotations

import logging
from collections import deque

import trio

from .._exceptions import ConnectionClosed, ProtocolError
from .._frames import (
    ACCESS_TOKEN,
    BROADCAST,
    HEARTBEAT,
    PHOENIX_TOPIC,
    PHX_JOIN,
    PHX_LEAVE,
    PHX_REPLY,
    PRESENCE,
    PRESENCE_DIFF,
    PRESENCE_STATE,
    SYSTEM,
    TOPIC_PREFIX,
    Frame,
    JSONObject,
    JSONValue,
    make_frame,
    sub_topic,
)
from .._postgres import is_final_postgres_error
from .._postgres_filters import FilterParseError
from .._serializer import parse_client_frame
from .._transport import CLOSE_NORMAL, CLOSE_SERVICE_RESTART, OutgoingMessage, Transport
from ._join_checks import UNAUTHORIZED_READ, join_refusal, may
from ._limits import (
    CLIENT_PRESENCE,
    CLOSE_GOING_AWAY,
    TOO_MANY_JOINS,
    TOO_MANY_PRESENCE,
    TRACK_TOO_LARGE,
    PresenceWindow,
    track_too_large,
)
from ._payloads import SB_PREFIX, channel_token, parse_join
from ._postgres_changes import SUBSCRIBED, parse_bindings, reply_entries
from ._postgres_subscribe import RETRY_DELAY as POSTGRES_RETRY_DELAY
from ._postgres_subscribe import attempt as postgres_attempt
from ._replay import replay_on_join
from ._send_buffer import Close, Delay, SendBuffer
from ._state import Channel, Hub, encode
from ._tokens import expired_message, next_check, token_expiry

logger = logging.getLogger("trio_realtime.testing")

UNMATCHED_TOPIC: JSONObject = {"reason": "unmatched topic"}


class ServerConnection:
    """One client connection to the local server, as tests see it.

    Attributes:
        answer_heartbeats: Overrides the server's ``answer_heartbeats`` for this connection
            when not ``None``.
        reply_delay: Overrides the server's ``reply_delay`` for this connection when not
            ``None``.
        frames_received: Well-formed frames received (malformed ones are counted by the server).
        close_code: The close code once the connection has ended (1006 when it was dropped).
    """

    def __init__(self, hub: Hub, *, connection_id: int, vsn: str, token: str | None) -> None:
        self._id = connection_id
        self._vsn = vsn
        self._hub = hub
        self._token = token
        self.answer_heartbeats: bool | None = None
        self.reply_delay: float | None = None
        self.frames_received = 0
        self.close_code: int | None = None
        self._channels: dict[str, Channel] = {}
        self._recent: deque[Frame] = deque(maxlen=hub.config.record_frames)
        self._buffer = SendBuffer(hub.config.send_buffer)
        self._reader_scope = trio.CancelScope()
        self._reader_done = trio.Event()
        self._scope = trio.CancelScope()
        self._closing = False
        self._dead = False
        self._finished = trio.Event()
        self._timers: trio.Nursery | None = None
        self._presence_windows: dict[Channel, PresenceWindow] = {}
        self._token_watches: dict[Channel, trio.CancelScope] = {}

    def __repr__(self) -> str:
        state = "closed" if self._dead else "open"
        return (
            f"<ServerConnection id={self._id} vsn={self._vsn} {state} "
            f"channels={len(self._channels)} pending={self.pending_frames}>"
        )

    @property
    def id(self) -> int:
        """The connection's number, from 1 in order of acceptance."""
        return self._id

    @property
    def vsn(self) -> str:
        """The serializer version, ``"1.0.0"`` or ``"2.0.0"``."""
        return self._vsn

    @property
    def joined_topics(self) -> list[str]:
        """The topics of the channels joined now, in join order."""
        return list(self._channels)

    @property
    def received_frames(self) -> list[Frame]:
        """The most recent well-formed frames received (``record_frames`` of them at most)."""
        return list(self._recent)

    @property
    def pending_frames(self) -> int:
        """Frames queued for this client and not yet handed to the transport."""
        return self._buffer.pending

    @property
    def frames_sent(self) -> int:
        """Frames handed to the transport."""
        return self._buffer.frames_sent

    @property
    def closed(self) -> bool:
        """Whether the connection has ended (or is being torn down)."""
        return self._dead

    # -- the send buffer ------------------------------------------------------------------------

    def enqueue(self, item: OutgoingMessage) -> bool:
        """Queue an encoded frame for the writer; never blocks.

        Returns:
            ``False`` when the frame was not accepted: the connection is closed, or the buffer
            was full, in which case the connection is dropped (see the module docstring).
        """
        if self._buffer.put(item):
            return True
        if not self._dead:
            self._hub.dropped_slow_connections += 1
            logger.warning(
                "connection %d: send buffer full (%d frames), dropping the slow client",
                self._id,
                self._hub.config.send_buffer,
            )
            self.kill()
        return False

    def send_raw(self, data: str | bytes) -> bool:
        """Queue ``data`` as it is: ``str`` as a text frame, ``bytes`` as a binary frame."""
        if isinstance(data, str):
            return self.enqueue((data.encode(), False))
        return self.enqueue((bytes(data), True))

    def close_soon(self, code: int, reason: str = "") -> None:
        """Close with ``code`` after the frames already queued have been written."""
        if not self._closing:
            self._closing = True
            if not self._dead:
                self._buffer.put_control(Close(code, reason))

    def kill(self) -> None:
        """Drop the connection now, without a close frame (what a TCP drop looks like)."""
        if not self._dead:
            self._die()
            self._scope.cancel()

    def _die(self) -> None:
        self._dead = True
        self._buffer.clear()

    async def wait_finished(self) -> None:
        """Wait until the connection has ended and left its channels."""
        await self._finished.wait()

    async def wait_flushed(self, max_pending: int = 0) -> None:
        """Wait until at most ``max_pending`` frames wait for this client (or it has closed)."""
        while not self._dead and self.pending_frames > max_pending:
            await self._buffer.wait_written()
        await trio.lowlevel.checkpoint()

    # -- tasks ----------------------------------------------------------------------------------

    def abandon(self) -> None:
        """Give up on a connection that will never run (its upgrade failed)."""
        self._die()
        self._finished.set()

    async def run(self, transport: Transport) -> None:
        """Serve the connection over ``transport`` until it ends, then leave every channel.

        Frames queued (and faults injected) before this is called wait for it.
        """
        try:
            with self._scope:
                # Timers (token expiry) run beside the reader and writer, and stop with them.
                async with trio.open_nursery() as timers:
                    self._timers = timers
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._write_loop, transport)
                        await self._read_loop(transport)
                        if not self._reader_scope.cancelled_caught:
                            nursery.cancel_scope.cancel()  # the client closed or vanished
                        elif not self._closing:
                            logger.info("connection %d: idle timeout, closing", self._id)
                            self.close_soon(CLOSE_NORMAL)
                        # else the writer is closing the transport, and returns when done
                    timers.cancel_scope.cancel()
        except Exception:
            logger.exception("connection %d: internal error, dropping the connection", self._id)
        finally:
            self._die()
            for channel in list(self._channels.values()):
                self._hub.remove_channel(channel)
            self._channels.clear()
            if self._hub.limiter is not None:
                self._hub.limiter.users.discard(self._id)
            if self.close_code is None:
                self.close_code = 1006
            with trio.CancelScope(shield=True):
                await transport.abort()
            self._finished.set()

    async def _read_loop(self, transport: Transport) -> None:
        vsn = self._vsn
        hub = self._hub
        record = self._recent.append
        idle = hub.config.idle_timeout
        scope = self._reader_scope
        try:
            with scope:
                while True:
                    if idle is not None:
                        scope.deadline = trio.current_time() + idle
                    try:
                        messages = await transport.receive_messages()
                    except ConnectionClosed as exc:
                        self.close_code = exc.code
                        return
                    for data in messages:
                        try:
                            frame, user_broadcast = parse_client_frame(data, vsn)
                        except ProtocolError as exc:
                            hub.malformed_frames += 1
                            logger.warning(
                                "connection %d: MalformedWebSocketMessage (%d bytes): %s",
                                self._id,
                                len(data),
                                exc,
                            )
                            continue
                        self.frames_received += 1
                        hub.count_received(frame.topic)
                        record(frame)
                        if frame.event == PHX_JOIN:
                            await self._join(frame)
                        elif frame.event == ACCESS_TOKEN and hub.database is not None:
                            await self._reauthorize(frame)
                        else:
                            self._handle(frame, user_broadcast)
        finally:
            self._reader_done.set()

    async def _write_loop(self, transport: Transport) -> None:
        try:
            await self._buffer.write_to(transport, self._count_sent, self._close_transport)
        except ConnectionClosed as exc:
            self.close_code = exc.code
            self._scope.cancel()

    def _count_sent(self, count: int) -> None:
        self._hub.frames_sent += count

    async def _close_transport(self, transport: Transport, control: Close) -> None:
        self._closing = True
        self._reader_scope.cancel()
        await self._reader_done.wait()
        logger.debug("connection %d: closing with code %d", self._id, control.code)
        self.close_code = control.code
        await transport.aclose(control.code, control.reason)

    # -- sending helpers ------------------------------------------------------------------------

    def _reply(
        self, topic: str, ref: str | None, join_ref: str | None, status: str, response: JSONValue
    ) -> None:
        delay = self.reply_delay if self.reply_delay is not None else self._hub.reply_delay
        if delay > 0 and not self._dead:
            self._buffer.put_control(Delay(trio.current_time() + delay))
        frame = make_frame(
            topic, PHX_REPLY, {"response": response, "status": status}, ref, join_ref
        )
        self.enqueue(encode(frame, self._vsn))

    def remove_channel(self, topic: str) -> Channel | None:
        """Forget the channel joined to ``topic`` (no frame is sent); return it."""
        channel = self._channels.pop(topic, None)
        if channel is not None:
            self._hub.remove_channel(channel)
            self._watch_token(channel, stop=True)
            self._presence_windows.pop(channel, None)
        return channel

    # -- token expiry (see _tokens) -------------------------------------------------------------

    def _token_expired(self, token: str | None) -> str | None:
        """The server's message when ``token`` is a JWT whose ``exp`` has passed, else ``None``."""
        exp = token_expiry(token)
        return None if exp is None else expired_message(exp, self._hub.config.wall_clock())

    def _watch_token(self, channel: Channel, *, stop: bool = False) -> None:
        """(Re)start the timer that closes ``channel`` when its token expires; ``stop`` only
        stops it."""
        old = self._token_watches.pop(channel, None)
        if old is not None:
            old.cancel()
        exp = token_expiry(channel.token)
        if stop or exp is None or self._timers is None:
            return
        scope = self._token_watches[channel] = trio.CancelScope()
        self._timers.start_soon(self._expire_token, channel, exp, scope)

    async def _expire_token(self, channel: Channel, exp: int, scope: trio.CancelScope) -> None:
        clock = self._hub.config.wall_clock
        message: str | None = None
        with scope:
            while message is None:
                await trio.sleep(next_check(exp, clock()))
                message = expired_message(exp, clock())
        if message is None or self._channels.get(channel.topic) is not channel:
            return
        self._token_watches.pop(channel, None)
        logger.debug("connection %d: token of %s expired", self._id, channel.topic)
        self.system_close(channel, message)

    def channel(self, topic: str) -> Channel | None:
        """Return the channel joined to ``topic``, if any."""
        return self._channels.get(topic)

    # -- frame handling -------------------------------------------------------------------------

    def _handle(self, frame: Frame, user_broadcast: bool) -> None:
        topic = frame.topic
        event = frame.event
        channel = self._channels.get(topic)
        if channel is None:
            if event == HEARTBEAT and topic == PHOENIX_TOPIC:
                answer = self.answer_heartbeats
                if answer is None:
                    answer = self._hub.answer_heartbeats
                if answer:
                    self._reply(topic, frame.ref, None, "ok", {})
            elif event == PHX_LEAVE:
                self._reply(topic, frame.ref, frame.join_ref, "ok", {})
            else:
                self._reply(topic, frame.ref, None, "error", UNMATCHED_TOPIC)
            return
        if event == BROADCAST:
            self._broadcast(channel, frame, user_broadcast)
        elif event == PRESENCE:
            self._presence(channel, frame)
        elif event == PHX_LEAVE:
            self._leave(channel, frame)
        elif event == ACCESS_TOKEN:
            self._access_token(channel, frame)
        elif self._hub.limiter is not None:
            # Any other event on a joined topic is ignored, as on the real server, and counted.
            self._hub.limiter.count_event(trio.current_time())

    def _broadcast(self, channel: Channel, frame: Frame, user_broadcast: bool) -> None:
        room = channel.room
        assert room is not None
        if channel.policies is not None and not channel.policies.broadcast_write:
            # No write policy: dropped silently, with no ack even when acks were asked for.
            logger.debug("connection %d: broadcast on %s refused by RLS", self._id, channel.topic)
            return
        if channel.private and not may(
            self._hub.config.authorize, channel.topic, channel.token, "write"
        ):
            return  # dropped without a word, and without an ack, as on the server
        if self._hub.limiter is not None:
            self._hub.limiter.count_event(trio.current_time())
        exclude = None if channel.broadcast_self else channel
        payload = frame.payload
        if user_broadcast and isinstance(payload, dict):
            if "meta" in payload:  # the server drops a kind-3 push's metadata
                payload = {key: value for key, value in payload.items() if key != "meta"}
            room.fan_out_user_broadcast(payload, exclude)
        elif not isinstance(payload, bytes):
            room.fan_out(BROADCAST, payload, exclude)
        else:  # a kind-0 binary push: the real server would relay it as kind 2 (derived)
            logger.debug("connection %d: ignoring a kind-0 binary broadcast", self._id)
        if channel.broadcast_ack:
            self._reply(channel.topic, frame.ref, channel.join_ref, "ok", {})

    def _presence(self, channel: Channel, frame: Frame) -> None:
        room = channel.room
        assert room is not None
        body = frame.payload if isinstance(frame.payload, dict) else {}
        event = body.get("event")
        topic, ref, join_ref = channel.topic, frame.ref, channel.join_ref
        if "event" not in body:
            self._reply(topic, ref, join_ref, "ok", {})
            return
        window = self._presence_windows.get(channel)
        if window is not None and not window.allow(trio.current_time()):
            self.system_close(channel, CLIENT_PRESENCE)
            return
        name = event.lower() if isinstance(event, str) else None
        if channel.policies is not None and not channel.policies.presence_write:
            self._reply(topic, ref, join_ref, "error", {})
            return
        if name == "track":
            state = body.get("payload", {})
            if not isinstance(state, dict):
                reason: JSONObject = {"reason": "Presence track payload must be a map"}
                self._reply(topic, ref, join_ref, "error", reason)
                return
            changed = room.tracked(channel) != state  # an unchanged track is a no-op
            if changed and track_too_large(state):
                self.system_close(channel, TRACK_TOO_LARGE)
                return
            limiter = self._hub.limiter
            if (
                limiter is not None
                and changed
                and not limiter.presence_allowed(trio.current_time())
            ):
                self.system_close(channel, TOO_MANY_PRESENCE)
                return
            channel.presence_enabled = True
            diff = room.track(channel, state)
        elif name == "untrack":
            diff = room.untrack(channel)
        else:
            self._reply(topic, ref, join_ref, "error", {})
            return
        self._reply(topic, ref, join_ref, "ok", {})
        if diff is not None:
            room.fan_out(PRESENCE_DIFF, diff)

    def _leave(self, channel: Channel, frame: Frame) -> None:
        if channel.raw_join_ref is not None and frame.join_ref != channel.raw_join_ref:
            return  # a leave for an older join of this topic: ignored, no reply
        self._reply(channel.topic, frame.ref, channel.join_ref, "ok", {})
        self.remove_channel(channel.topic)
        channel.push_close()

    def _access_token(self, channel: Channel, frame: Frame) -> bool:
        """Take a new token; return whether the channel now runs with it."""
        body = frame.payload
        if not isinstance(body, dict) or "access_token" not in body:
            return False
        token = body["access_token"]
        if not isinstance(token, str) or token.startswith(SB_PREFIX) or token == channel.token:
            return False
        check = self._hub.config.token_check
        message = check(token) if check is not None else None
        if message is None:
            message = self._token_expired(token)
        if message is not None:
            self.system_close(channel, message)
            return False
        channel.token = token
        self._watch_token(channel)
        if channel.bindings:
            channel.push(SYSTEM, _postgres_system(channel, "ok", SUBSCRIBED))
        return True

    async def _reauthorize(self, frame: Frame) -> None:
        """``access_token`` on a database-backed server: a private channel's policies are
        evaluated again under the new token, and the channel closes if it may no longer read."""
        channel = self._channels.get(frame.topic)
        if channel is None:
            self._handle(frame, False)
            return
        if not self._access_token(channel, frame) or channel.policies is None:
            return
        database = self._hub.database
        assert database is not None
        policies = await database.authorize(channel.token, sub_topic(channel.topic))
        if self._channels.get(channel.topic) is not channel:
            return  # left or replaced meanwhile
        if policies is None or not policies.can_read:
            self.system_close(
                channel,
                "You no longer have permission to read from this Channel topic: "
                + sub_topic(channel.topic),
            )
            return
        channel.policies = policies

    def system_close(self, channel: Channel, message: str) -> None:
        """Close ``channel`` as the server does on an error: ``system`` error, then close."""
        payload: JSONObject = {
            "channel": sub_topic(channel.topic),
            "extension": "system",
            "message": message,
            "status": "error",
        }
        self.remove_channel(channel.topic)
        channel.push(SYSTEM, payload)
        channel.push_close()

    def request_disconnect(self) -> None:
        """Send "Server requested disconnect" on every joined channel, then close with 1012.

        The ``system`` frames are fan-out frames (join_ref null, no ``channel`` key), as the real
        server's ``UserSocket.disconnect/1`` sends them.
        """
        payload: JSONObject = {
            "extension": "system",
            "message": "Server requested disconnect",
            "status": "ok",
        }
        for topic in self._channels:
            self.enqueue(encode(make_frame(topic, SYSTEM, payload), self._vsn))
        self.close_soon(CLOSE_SERVICE_RESTART)

    # -- joins ----------------------------------------------------------------------------------

    async def _join(self, frame: Frame) -> None:
        topic, ref, raw_join_ref = frame.topic, frame.ref, frame.join_ref
        if not topic.startswith(TOPIC_PREFIX):
            self._reply(topic, ref, None, "error", UNMATCHED_TOPIC)
            return
        hub = self._hub
        old = self.remove_channel(topic)  # a duplicate join replaces the old channel
        params = parse_join(frame.payload)
        token = channel_token(params.token, self._token)
        reason, delay = join_refusal(
            hub, topic, params, token, connection_id=self._id, joined=len(self._channels)
        )
        policies = None
        if not reason and params.private and hub.database is not None:
            policies = await hub.database.authorize(token, sub_topic(topic))
            if policies is None or not policies.can_read:
                reason = UNAUTHORIZED_READ + sub_topic(topic)
                delay = hub.config.join_error_delay
        if reason:
            hub.joins_refused += 1
            logger.debug("connection %d: refusing join of %s: %s", self._id, topic, reason)
            if delay > 0:
                await trio.sleep(delay)
            self._reply(topic, ref, raw_join_ref, "error", {"reason": reason})
            if old is not None:
                old.push_close()
            if reason == TOO_MANY_JOINS:
                self.close_soon(CLOSE_GOING_AWAY)  # Phoenix's "disconnect", after the reply
            return
        channel = Channel(
            peer=self,
            vsn=self._vsn,
            topic=topic,
            private=params.private,
            join_ref=raw_join_ref or ref,
            raw_join_ref=raw_join_ref,
            broadcast_self=params.broadcast_self,
            broadcast_ack=params.broadcast_ack,
            presence_enabled=params.presence_enabled,
            presence_key=params.presence_key,
            token=token,
            policies=policies,
        )
        bindings_error: str | None = None
        if params.bindings:
            try:
                channel.bindings = parse_bindings(params.bindings)
            except FilterParseError as exc:
                bindings_error = str(exc)
        self._channels[topic] = channel
        hub.add_channel(channel)
        self._watch_token(channel)
        limiter = hub.limiter
        if limiter is not None:
            limiter.users.add(self._id)
            window = limiter.presence_window()
            if window is not None:
                self._presence_windows[channel] = window
        logger.debug("connection %d: joined %s", self._id, topic)
        response: JSONObject = {"postgres_changes": reply_entries(params.bindings)}
        self._reply(topic, ref, raw_join_ref, "ok", response)
        if old is not None:
            old.push_close()
        may_see_presence = policies is None or policies.presence_read
        if channel.presence_enabled and channel.room is not None and may_see_presence:
            if limiter is not None and not limiter.presence_allowed(trio.current_time()):
                self.system_close(channel, TOO_MANY_PRESENCE)
                return
            channel.push(PRESENCE_STATE, channel.room.presence_state())
        replay_on_join(channel, hub.messages, frame.payload)
        if params.bindings:
            if bindings_error is not None:  # a parameter error: final
                channel.push(SYSTEM, _postgres_system(channel, "error", bindings_error))
            elif self._postgres_outcome(channel, await postgres_attempt(hub, channel)):
                assert self._timers is not None
                self._timers.start_soon(self._retry_postgres, channel)

    # -- postgres_changes subscription retries (see _postgres_subscribe) -------------------------

    def _postgres_outcome(self, channel: Channel, error: str | None) -> bool:
        """Send a subscription attempt's outcome; return whether the server retries it."""
        if self._channels.get(channel.topic) is not channel:
            return False  # left or replaced meanwhile
        if error is None:
            channel.push(SYSTEM, _postgres_system(channel, "ok", SUBSCRIBED))
            return False
        channel.push(SYSTEM, _postgres_system(channel, "error", error))
        return not is_final_postgres_error(error)

    async def _retry_postgres(self, channel: Channel) -> None:
        while self._channels.get(channel.topic) is channel:
            await trio.sleep(POSTGRES_RETRY_DELAY)
            if self._channels.get(channel.topic) is not channel:
                return
            if not self._postgres_outcome(channel, await postgres_attempt(self._hub, channel)):
                return


def _postgres_system(channel: Channel, status: str, message: str) -> JSONObject:
    return {
        "channel": sub_topic(channel.topic),
        "extension": "postgres_changes",
        "message": message,
        "status": status,
    }
