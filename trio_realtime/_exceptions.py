"""The exception tree of trio_realtime.

Every error the library raises derives from :class:`RealtimeError`::

    RealtimeError
    ├── ProtocolError           a frame could not be parsed or built
    ├── FilterParseError        a postgres_changes filter does not parse (also a ValueError)
    ├── ChannelStateError       an operation the channel's state does not allow
    ├── RealtimeConnectionError the connection failed or was lost for good
    │   └── ConnectionClosed    the WebSocket closed; carries code and reason
    ├── JoinError               the server refused a ``phx_join``; carries the reason
    ├── PushTimeout             no reply arrived in time (join, leave, push with ack)
    ├── PushError               the server answered a push with ``status: error``
    ├── ChannelClosed           the server closed the channel (``system`` error + ``phx_close``)
    │                           or the channel was left while a subscription was open
    ├── RateLimited             one of the server's rate limits refused a join or closed the
    │                           channel (also a JoinError and a ChannelClosed)
    ├── PostgresSubscriptionError  the server could not start the postgres_changes stream
    ├── SubscriptionOverflow    a subscription buffer overflowed with ``overflow="error"``
    └── DecodeError             a subscription's decoder refused one message

Exceptions from trio, the WebSocket packages and JSON decoding are mapped to these at the layer
boundary, so callers only ever need to catch this tree (plus :class:`trio.Cancelled`, which is
never caught by the library).

Messages never contain an apikey or access token: builders of these exceptions take already
redacted text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, Literal, TypeVar

if TYPE_CHECKING:
    from ._events import Broadcast


class RealtimeError(Exception):
    """Base class of every error raised by trio_realtime."""


class ProtocolError(RealtimeError):
    """A frame was malformed, or a frame could not be encoded for the chosen serializer."""


class FilterParseError(RealtimeError, ValueError):
    """A filter string could not be parsed; the message is the server's error text."""


class ChannelStateError(RealtimeError):
    """An operation that a channel's current state does not allow.

    Raised by the session core for an illegal state transition, and by the runtime for an
    operation on a channel in the wrong state (for example pushing on a channel that was
    never joined).

    Attributes:
        topic: The full topic.
        state: The channel's state, for example ``"closed"``.
        operation: What was attempted (a transition trigger or an operation name).
    """

    def __init__(self, topic: str, state: str, operation: str, detail: str = "") -> None:
        text = f"channel {topic!r} is {state}: {operation} is not allowed"
        if detail:
            text += f"; {detail}"
        super().__init__(text)
        self.topic = topic
        self.state = state
        self.operation = operation


class RealtimeConnectionError(RealtimeError):
    """The connection to the server could not be established or was lost for good.

    Raised by :func:`trio_realtime.open_realtime` when the first connection fails (refused,
    DNS failure, TLS failure, or an HTTP error at upgrade such as 401 or 403), and when
    reconnection has been disabled or the reconnect policy gave up.

    Attributes:
        status_code: The HTTP status of a refused upgrade, or ``None``.
        server_message: The ``error`` text of the server's JSON body, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        server_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.server_message = server_message


class ConnectionClosed(RealtimeConnectionError):
    """The WebSocket connection is closed.

    Attributes:
        code: The WebSocket close code (1006 when the TCP connection dropped without a close
            frame).
        reason: The close reason sent by the peer, possibly empty.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        text = f"connection closed with code {code}"
        if reason:
            text += f": {reason}"
        super().__init__(text)
        self.code = code
        self.reason = reason


class JoinError(RealtimeError):
    """The server refused to join a channel.

    Attributes:
        topic: The full topic, with its ``realtime:`` prefix.
        reason: The server's reason, for example
            ``"Unauthorized: You do not have permissions to read from this Channel topic: x"``.
    """

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"join of {topic!r} refused: {reason}")
        self.topic = topic
        self.reason = reason


class PushTimeout(RealtimeError):
    """No reply arrived within the timeout for a join, leave or acknowledged push."""


class TokenError(RealtimeError):
    """The ``access_token`` callable timed out, raised or returned something that is not a
    token, and no usable cached token was there to fall back on.

    Attributes:
        timed_out: ``True`` when the callable did not return within ``token_timeout`` (or
            within the join's timeout).
    """

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class PushError(RealtimeError):
    """The server answered a push with ``status: "error"``.

    Attributes:
        response: The ``response`` value of the reply, as sent by the server.
    """

    def __init__(self, message: str, response: object = None) -> None:
        super().__init__(message)
        self.response = response


class ChannelClosed(RealtimeError):
    """The channel was closed, so a subscription or push on it cannot continue.

    Attributes:
        topic: The full topic.
        reason: The server's ``system`` message when the server closed the channel (for
            example ``"Token has expired 3 seconds ago"``), or a description of a local close.
        by_server: ``True`` when the server closed the channel, ``False`` when the user left it.
    """

    def __init__(self, topic: str, reason: str, *, by_server: bool) -> None:
        super().__init__(f"channel {topic!r} closed: {reason}")
        self.topic = topic
        self.reason = reason
        self.by_server = by_server


RateLimit = Literal[
    "joins", "users", "channels", "database_connections", "messages", "presence", "client_presence"
]
"""Which of the server's rate limits was reached (see :class:`RateLimited`)."""

# The server's words for each limit: the code a join refusal starts with, or the whole
# ``system`` error message that closes a channel (``realtime_channel.ex``).
RATE_LIMIT_REASONS: Final[Mapping[str, RateLimit]] = {
    "ClientJoinRateLimitReached": "joins",
    "ConnectionRateLimitReached": "users",
    "ChannelRateLimitReached": "channels",
    "DatabaseConnectionRateLimitReached": "database_connections",
    "Too many messages per second": "messages",
    "Too many presence messages per second": "presence",
    "Client presence rate limit exceeded": "client_presence",
    # The HTTP 429 bodies of a refused connection (``user_socket.ex``).
    "Too many joins per second": "joins",
    "Too many connected users": "users",
}


def rate_limit_of(reason: str) -> RateLimit | None:
    """The rate limit a server's join refusal or channel-closing message names, if any."""
    code = reason.split(":", 1)[0]
    return RATE_LIMIT_REASONS.get(code)


class RateLimited(JoinError, ChannelClosed):
    """One of the server's rate limits refused a join or closed a channel.

    The server's limits, and what each looks like on the wire:

    * ``"joins"``: ``ClientJoinRateLimitReached: Too many joins per second`` refuses a join,
      then the server closes the whole connection (code 1001); the client reconnects with a
      backoff that does not start again until a connection stays healthy without a limit;
    * ``"users"``: ``ConnectionRateLimitReached: Too many connected users`` refuses a join;
    * ``"channels"``: ``ChannelRateLimitReached: Too many channels`` (this connection has the
      most channels the server allows) refuses a join;
    * ``"database_connections"``: ``DatabaseConnectionRateLimitReached: ...`` refuses a join;
    * ``"messages"``: ``Too many messages per second`` closes a channel (the tenant's events
      per second);
    * ``"presence"``: ``Too many presence messages per second`` closes a channel;
    * ``"client_presence"``: ``Client presence rate limit exceeded`` closes a channel that sent
      too many presence messages (5 per 30 s by default).

    It is both a :class:`JoinError` and a :class:`ChannelClosed`, so code that catches either
    keeps working: :meth:`Channel.join` raises it for a refused join, and subscriptions and
    pushes of a channel the server closed raise it. Every occurrence is also logged as a
    warning and published as a :class:`RateLimitReached` connection event.

    Attributes:
        topic: The full topic.
        reason: The server's text, for example ``"Too many messages per second"``.
        limit: Which limit (see above).
        by_server: Always ``True``.
    """

    def __init__(self, topic: str, reason: str, limit: RateLimit) -> None:
        RealtimeError.__init__(self, f"rate limit reached on {topic!r}: {reason}")
        self.topic = topic
        self.reason = reason
        self.limit = limit
        self.by_server = True


def join_refused(topic: str, reason: str) -> JoinError:
    """The error for a join the server refused: :class:`RateLimited` for a rate limit."""
    limit = rate_limit_of(reason)
    return JoinError(topic, reason) if limit is None else RateLimited(topic, reason, limit)


def closed_by_server(topic: str, reason: str) -> ChannelClosed:
    """The error for a channel the server closed: :class:`RateLimited` for a rate limit."""
    limit = rate_limit_of(reason)
    if limit is None:
        return ChannelClosed(topic, reason, by_server=True)
    return RateLimited(topic, reason, limit)


class PostgresSubscriptionError(RealtimeError):
    """The server reported that it could not subscribe to Postgres changes for a channel.

    Attributes:
        topic: The full topic.
        message: The server's ``system`` message, for example a filter parse error.
    """

    def __init__(self, topic: str, message: str) -> None:
        super().__init__(f"postgres_changes on {topic!r} failed: {message}")
        self.topic = topic
        self.message = message


class SubscriptionOverflow(RealtimeError):
    """A subscription with ``overflow="error"`` could not keep up.

    Raised by the subscription's ``receive`` after every item buffered before the overflow has
    been delivered.

    Attributes:
        dropped: How many items were dropped because the buffer was full.
    """

    def __init__(self, dropped: int, buffer: int) -> None:
        super().__init__(
            f"subscription buffer of {buffer} items overflowed; {dropped} item(s) dropped"
        )
        self.dropped = dropped
        self.buffer = buffer


class DecodeError(RealtimeError):
    """A subscription's decoder refused one message (``channel.broadcasts(decode=...)``).

    Raised by the ``receive`` call (or ``async for`` step) that reached the message, and only
    by it: the message is consumed, the subscription stays open, and the next call returns the
    next message. A payload comes from the network, so a message the decoder cannot take is
    the sender's mistake, not a reason to end the stream::

        while True:
            try:
                message = await messages.receive()
            except DecodeError as exc:
                log.warning("skipping %r: %s", exc.broadcast.payload, exc.error)
                continue

    Attributes:
        broadcast: The message as received, its payload untouched.
        error: What the decoder raised (also the exception's ``__cause__``); a ``TypeError``
            for a binary payload, which a JSON decoder cannot take.
    """

    def __init__(self, broadcast: Broadcast, error: Exception) -> None:
        super().__init__(
            f"cannot decode broadcast {broadcast.event!r} on {broadcast.topic!r}: "
            f"{type(error).__name__}: {error}"
        )
        self.broadcast = broadcast
        self.error = error


E = TypeVar("E", bound=BaseException)


def fresh(error: E) -> E:
    """A new exception of the same type, arguments and attributes as ``error``.

    A stored failure (a closed channel, a lost connection) may be raised by many tasks, or many
    times by one: raising the same object each time would pile every raise's frames onto one
    traceback, shared between tasks. Raise ``fresh(error) from error`` instead.
    """
    cls = type(error)
    copy = cls.__new__(cls, *error.args)
    copy.args = error.args
    copy.__dict__.update(error.__dict__)
    return copy


def leaf_exceptions(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """Every exception in ``group`` and its nested groups, in order (the ones that are not groups).

    Used where trio's nurseries hand back an ExceptionGroup and the library maps its contents to
    one exception of this tree.
    """
    leaves: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            leaves.extend(leaf_exceptions(exc))
        else:
            leaves.append(exc)
    return leaves
