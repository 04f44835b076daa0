"""What the client and its channels share: the session core, the open connection and settings.

One :class:`Runtime` exists per client. The client creates it and owns the connections; each
channel holds it to build frames through the session, reach the open connection and read the
settings. The runtime never calls back into the client or the channels: data flows down to it,
and the client's reader routes session events up to the channels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, NoReturn

import trio

from ._connection import Connection
from ._events import ConnectionEvent, RateLimitReached
from ._exceptions import ProtocolError, RateLimit, RealtimeError
from ._frames import BROADCAST, Frame, Payload, broadcast_frame
from ._pacing import JoinPacer
from ._rest import RestSender
from ._serializer import encode_broadcast_push, encode_wire
from ._session import Session
from ._token_source import TokenKeeper, TokenSource

if TYPE_CHECKING:
    from ._channel import Channel

logger = logging.getLogger("trio_realtime.client")

__all__ = ["MAX_FRAME_SIZE", "ReconnectPolicy", "Runtime", "Settings", "TokenSource"]

ReconnectPolicy = Callable[[int], float | None]
"""Maps the attempt number (from 1) to seconds to wait, or ``None`` to give up."""

MAX_FRAME_SIZE: Final = 5_000_000
"""The server's cap on one incoming WebSocket frame: a bigger frame makes it
close the connection with 1009, so the client refuses to send one."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The options a channel needs, fixed for the client's life."""

    vsn: str
    timeout: float
    rejoin: ReconnectPolicy
    rejoin_rate: float | None = None


class Runtime:
    """The session core, the open connection and the token; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        access_token: str | TokenSource | None = None,
        token_timeout: float = 5.0,
        token_spacing: float = 25.0,
    ) -> None:
        self.settings = settings
        self._rest: RestSender | None = None
        self.session = Session()
        self.connection: Connection | None = None
        self.channels: dict[str, Channel] = {}
        # Unregistrations of the client's and its channels' subscriptions garbage-collected
        # without close(), queued by their finalizers (any thread, any moment), run by
        # whichever of them next delivers, counts or subscribes (purge_abandoned). One queue
        # for them all: a list apiece would be one more object per channel to hold and scan.
        self.abandoned: list[Callable[[], None]] = []
        # Rate limits: when one was last reached, and where connection events go.
        self.rate_limited_at: float | None = None
        self.emit: Callable[[ConnectionEvent], None] | None = None
        self._pacer: JoinPacer | None = None
        self._pacer_connection: Connection | None = None
        self.tokens = TokenKeeper(
            access_token,
            timeout=token_timeout,
            spacing=token_spacing,
            max_size=MAX_FRAME_SIZE // 2,
        )

    @property
    def token(self) -> str | None:
        """The cached access token."""
        return self.tokens.token

    @token.setter
    def token(self, token: str | None) -> None:
        self.tokens.token = token

    @property
    def token_source(self) -> TokenSource | None:
        """The access token callable, if one was given."""
        return self.tokens.source

    @property
    def rest(self) -> RestSender:
        """The REST broadcast sender, set by ``open_realtime``.

        Raises:
            RealtimeError: before it is set.
        """
        if self._rest is None:
            raise RealtimeError("REST sending needs a client opened with open_realtime()")
        return self._rest

    @rest.setter
    def rest(self, sender: RestSender) -> None:
        self._rest = sender

    @property
    def open_connection(self) -> Connection | None:
        """The connection, if there is one and it is not lost."""
        connection = self.connection
        if connection is None or connection.lost is not None:
            return None
        return connection

    def encode(self, frame: Frame) -> tuple[bytes, bool]:
        """Encode an outgoing frame for this client's vsn; log it at DEBUG (redacted).

        Raises:
            ProtocolError: when the frame cannot be encoded (for example bytes under 1.0.0),
                or is larger than the server accepts (:data:`MAX_FRAME_SIZE`).
        """
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("> %r", frame)
        data, binary = encode_wire(frame, self.settings.vsn)
        if len(data) > MAX_FRAME_SIZE:
            _too_large(frame.event, frame.topic, len(data))
        return data, binary

    def encode_broadcast(
        self, ref: str, join_ref: str, topic: str, event: str, payload: Payload
    ) -> tuple[bytes, bool]:
        """:meth:`encode` for ``broadcast_frame(ref, join_ref, topic, event, payload)``, with
        no frame built (see :func:`~trio_realtime.protocol.encode_broadcast_push`).

        Raises:
            ProtocolError: as :meth:`encode`.
        """
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("> %r", broadcast_frame(ref, join_ref, topic, event, payload))
        data, binary = encode_broadcast_push(
            ref, join_ref, topic, event, payload, vsn=self.settings.vsn
        )
        if len(data) > MAX_FRAME_SIZE:
            _too_large(BROADCAST, topic, len(data))
        return data, binary

    def rate_limited(self, topic: str | None, reason: str, limit: RateLimit) -> None:
        """Note that the server applied a rate limit: log it and publish the event."""
        self.rate_limited_at = trio.current_time()
        logger.warning(
            "rate limit reached (%s) on %s: %s", limit, topic or "the connection", reason
        )
        if self.emit is not None:
            self.emit(RateLimitReached(topic, reason, limit))

    async def pace_rejoin(self, connection: Connection) -> None:
        """Wait for a rejoin's turn on ``connection`` (``rejoin_rate``; see ``_pacing``).

        Each connection starts with a full bucket.
        """
        rate = self.settings.rejoin_rate
        if rate is None:
            await trio.lowlevel.checkpoint()
            return
        if self._pacer is None or self._pacer_connection is not connection:
            self._pacer = JoinPacer(rate, trio.current_time())
            self._pacer_connection = connection
        await self._pacer.wait()

    def rejoin_delay(self, attempt: int) -> float | None:
        """Seconds before channel rejoin attempt ``attempt``, or ``None`` to give up."""
        return self.settings.rejoin(attempt)

    async def token_for_join(self) -> str | None:
        """The token for a join: asked for first when missing or expired.

        Raises:
            TokenError: the callable failed and no usable token is cached.
        """
        return await self.tokens.for_join()

    async def refresh_token(self) -> None:
        """Ask the token callable for a token (bounded); keep the cached one if it fails."""
        await self.tokens.refresh_quietly()


def _too_large(event: str, topic: str, size: int) -> NoReturn:
    raise ProtocolError(
        f"{event} on {topic!r} is {size} bytes encoded, over the server's limit of "
        f"{MAX_FRAME_SIZE} bytes; it was not sent"
    )
