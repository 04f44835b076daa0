"""The blocking face of a channel: ``with channel:`` joins and leaves, methods block."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

from .. import (
    Broadcast,
    ChannelEvent,
    ChannelState,
    ChannelStatistics,
    PostgresChange,
    PresenceEvent,
    SystemMessage,
)
from .. import Channel as AsyncChannel
from .. import Subscription as AsyncSubscription
from .._replay import ReplayTracker
from .._subscription import DEFAULT_BUFFER, Overflow
from ..protocol import ChannelOptions, JSONObject, JSONValue, Payload
from ._portal import Portal, check_timeout
from ._subscription import Subscription

T = TypeVar("T")


def _nothing() -> None:
    return None


class Channel:
    """One Realtime channel, used from blocking code; get it with ``client.channel(topic)``.

    Every method calls the same method of the async :class:`trio_realtime.Channel` in the
    client's thread and waits for it, so the behaviour (joins, rejoins, buffered pushes,
    presence) is exactly the async API's. ``with channel:`` joins (raising
    :class:`~trio_realtime.JoinError` with the server's reason if refused) and leaves at the
    end of the block. Every blocking method takes ``timeout=`` (seconds; ``None`` waits as long
    as the async call does) and raises :class:`~trio_realtime.sync.SyncTimeout` when it elapses.
    """

    def __init__(self, portal: Portal[Any], channel: AsyncChannel) -> None:
        self._portal = portal
        self._channel = channel

    def __repr__(self) -> str:
        return f"<sync {self._channel!r}>"

    @property
    def topic(self) -> str:
        """The full topic, with its ``realtime:`` prefix."""
        return self._channel.topic

    @property
    def options(self) -> ChannelOptions:
        """The options the channel was created with."""
        return self._channel.options

    @property
    def replay(self) -> ReplayTracker | None:
        """The channel's replay settings and what it has seen (``None`` without replay)."""
        return self._channel.replay

    def statistics(self) -> ChannelStatistics:
        """Return the channel's figures (the last ones once the client is closed)."""
        channel = self._channel
        return self._portal.run_sync(channel.statistics, after_close=channel.statistics)

    @property
    def channel(self) -> AsyncChannel:
        """The async channel behind this one (use it only in the client's trio thread)."""
        return self._channel

    @property
    def state(self) -> ChannelState:
        """The channel's current state."""
        return self._channel.state

    @property
    def join_ref(self) -> str | None:
        """The ref of the current (or pending) join."""
        return self._channel.join_ref

    @property
    def joined(self) -> bool:
        """Whether the channel is joined right now."""
        return self._channel.joined

    # -- subscriptions --------------------------------------------------------------------------

    def _subscribe(self, factory: Callable[[], AsyncSubscription[T]]) -> Subscription[T]:
        portal = self._portal

        def create() -> Subscription[T]:
            return Subscription(portal, factory())

        return portal.run_sync(create)

    def broadcasts(
        self,
        event: str | None = None,
        *,
        buffer: int = DEFAULT_BUFFER,
        overflow: Overflow = "error",
    ) -> Subscription[Broadcast]:
        """Subscribe to broadcasts of user event ``event``, or of every event for ``None``.

        Registered at once, so nothing sent after this call is missed. ``buffer`` is how many
        items it holds, ``overflow`` what happens when it is full: ``"error"`` (raise
        :class:`~trio_realtime.SubscriptionOverflow` after the buffered items), ``"drop_oldest"``
        or ``"drop_newest"``.

        Raises:
            ValueError: for a bad ``buffer`` or ``overflow``.
        """
        channel = self._channel
        return self._subscribe(lambda: channel.broadcasts(event, buffer=buffer, overflow=overflow))

    def postgres_changes(
        self,
        event: str = "*",
        *,
        schema: str = "public",
        table: str | None = None,
        filter: str | None = None,
        select: Sequence[str] | None = None,
        buffer: int = DEFAULT_BUFFER,
        overflow: Overflow = "error",
    ) -> Subscription[PostgresChange]:
        """Subscribe to row changes; the binding travels in the join, so declare it before
        joining (declared on a joined channel, it makes the channel rejoin). ``select`` names
        the columns the changes carry.

        Raises:
            ValueError: for an unknown event, a filter without a table, or bad buffer options.
        """
        channel = self._channel
        return self._subscribe(
            lambda: channel.postgres_changes(
                event,
                schema=schema,
                table=table,
                filter=filter,
                select=select,
                buffer=buffer,
                overflow=overflow,
            )
        )

    def presence_events(
        self, *, buffer: int = DEFAULT_BUFFER, overflow: Overflow = "error"
    ) -> Subscription[PresenceEvent]:
        """Subscribe to presence ``join``, ``leave`` and ``sync`` events (enables presence)."""
        channel = self._channel
        return self._subscribe(lambda: channel.presence_events(buffer=buffer, overflow=overflow))

    def system_events(
        self, *, buffer: int = DEFAULT_BUFFER, overflow: Overflow = "error"
    ) -> Subscription[SystemMessage]:
        """Subscribe to the server's ``system`` messages for this channel."""
        channel = self._channel
        return self._subscribe(lambda: channel.system_events(buffer=buffer, overflow=overflow))

    def channel_events(
        self, *, buffer: int = DEFAULT_BUFFER, overflow: Overflow = "error"
    ) -> Subscription[ChannelEvent]:
        """Subscribe to :class:`~trio_realtime.ChannelJoined` and
        :class:`~trio_realtime.ChannelJoinFailed` events.

        A ``ChannelJoined`` with ``rejoin=True`` signals a gap: events may have been missed
        while the channel was not joined, so this is the place to fetch and catch up.
        """
        channel = self._channel
        return self._subscribe(lambda: channel.channel_events(buffer=buffer, overflow=overflow))

    def presence_state(self) -> dict[str, list[JSONObject]]:
        """Return a copy of the presence state: ``{key: [meta, ...]}`` (metas carry
        ``presence_ref``)."""
        channel = self._channel
        return self._portal.run_sync(channel.presence_state, after_close=channel.presence_state)

    def wait_postgres_ready(self, *, timeout: float | None = None) -> None:
        """Wait until the server confirms that postgres_changes are streaming ("Subscribed to
        PostgreSQL"), so that no write made afterwards is missed.

        Raises:
            PostgresSubscriptionError: the server reported an error instead.
            PushTimeout: no confirmation within the client timeout.
            SyncTimeout: ``timeout`` elapsed first.
        """
        checked = check_timeout(timeout)
        self._portal.run(
            self._channel.wait_postgres_ready,
            timeout=checked,
            what=f"wait_postgres_ready on {self.topic!r}",
        )

    # -- join and leave -------------------------------------------------------------------------

    def join(self, *, timeout: float | None = None) -> None:
        """Join the channel and wait for the server's reply (see the async ``join``).

        A timeout cancels the join, as cancelling the async ``join`` does.

        Raises:
            JoinError: the server refused, with its reason. Not retried.
            PushTimeout: no reply within the client timeout.
            SyncTimeout: ``timeout`` elapsed first.
        """
        checked = check_timeout(timeout)
        self._portal.run(self._channel.join, timeout=checked, what=f"join of {self.topic!r}")

    def leave(self, *, timeout: float | None = None) -> None:
        """Leave the channel: send ``phx_leave`` and wait (bounded) for the reply.

        Subscriptions end once their buffered items are read. A no-op for a closed channel,
        and once the client is closed.
        """
        checked = check_timeout(timeout)
        self._portal.run(
            self._channel.leave,
            timeout=checked,
            what=f"leave of {self.topic!r}",
            after_close=_nothing,
        )

    def __enter__(self) -> Channel:
        self.join()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.leave()

    # -- sending --------------------------------------------------------------------------------

    def send_broadcast(self, event: str, payload: Payload, *, timeout: float | None = None) -> None:
        """Send a broadcast of user event ``event`` (see the async ``send_broadcast``).

        With ``broadcast_ack`` set, waits for the server's acknowledgement; without it, returns
        once the frame is written. While the channel is joining or rejoining, the push waits for
        the join.

        Raises:
            ChannelStateError: the channel was never joined, or was left: at once. Join first,
                or use :meth:`http_send` to send without joining.
            PushTimeout: not sent, or not acknowledged, within the client timeout.
            PushError: the server answered with an error.
            ConnectionClosed: written, but the connection dropped before the acknowledgement.
            ChannelClosed: the channel was left or closed by the server.
            ProtocolError: the payload cannot be encoded.
            SyncTimeout: ``timeout`` elapsed first (the push is cancelled).
        """
        checked = check_timeout(timeout)
        self._portal.run(
            self._channel.send_broadcast,
            event,
            payload,
            timeout=checked,
            what=f"broadcast {event!r} on {self.topic!r}",
        )

    def http_send(
        self,
        event: str,
        payload: Mapping[str, JSONValue] | bytes | bytearray | memoryview,
        *,
        timeout: float | None = None,
    ) -> None:
        """Send one broadcast of ``event`` to this channel's topic over HTTP, without joining
        (see the async ``http_send``): a mapping goes as JSON, bytes as binary.

        Raises:
            ValueError: for an empty event.
            TypeError: for a payload that is neither a mapping nor bytes.
            RestUnauthorized, RestPayloadTooLarge, RestRateLimited, RestServerError, RestError:
                the server's refusals, with its words.
            PushTimeout: no answer within the client timeout.
            RealtimeConnectionError: the server could not be reached.
            SyncTimeout: ``timeout`` elapsed first.
        """
        checked = check_timeout(timeout)
        self._portal.run(
            self._channel.http_send,
            event,
            payload,
            timeout=checked,
            what=f"http_send {event!r} on {self.topic!r}",
        )

    def track(self, state: Mapping[str, JSONValue], *, timeout: float | None = None) -> None:
        """Track this client's presence with ``state`` and wait for the server's reply.

        Raises:
            The same as :meth:`send_broadcast`.
        """
        checked = check_timeout(timeout)
        self._portal.run(
            self._channel.track, state, timeout=checked, what=f"track on {self.topic!r}"
        )

    def untrack(self, *, timeout: float | None = None) -> None:
        """Stop tracking this client's presence and wait for the server's reply.

        Raises:
            The same as :meth:`send_broadcast`.
        """
        checked = check_timeout(timeout)
        self._portal.run(self._channel.untrack, timeout=checked, what=f"untrack on {self.topic!r}")
