"""The ``access_token`` callable: one bounded call at a time, failures reported, the token kept
fresh while channels are joined.

Theory of operation
-------------------
A client opened with ``access_token=<async callable>`` holds one :class:`TokenKeeper`. Every
task that wants a token from the callable goes through :meth:`TokenKeeper.refresh`. The first
one makes the call, bounded by ``token_timeout``; a task arriving while that call runs waits
for its outcome instead of making another, so twenty simultaneous joins and a heartbeat share
one call (single flight, for the whole client). If the task making the call is cancelled (its
connection was lost, its join abandoned), one of the waiting tasks makes a new call.

A call that times out, raises or returns something that is not a token is logged once, as a
WARNING, and raised to every task that shared it as :class:`TokenError`; the cached token is
kept. A join falls back on the cached token when there is a usable one; otherwise the
join fails with that error (a background rejoin retries on the rejoin policy's delays).

The callable is consulted:

* by a join, first or background, when no token was obtained yet or the cached one has expired
  (its ``exp`` has passed);
* before every reconnect;
* while at least one channel is joined, by :func:`keep_fresh`, one task per connection:
  after every heartbeat the driver sends (:meth:`TokenKeeper.heartbeat`, as realtime-js does),
  and :data:`REFRESH_AHEAD` seconds before the cached token's ``exp``, so that a token never
  lapses between two heartbeats. A refresh for an ``exp`` comes at least ``spacing`` (the
  heartbeat interval) after the previous refresh of this task, so a callable that keeps
  returning a token about to expire is not called in a loop.

Whenever the token differs from the one a joined channel runs with, it is pushed to that channel
as ``access_token``; the session core remembers each channel's token, so an unchanged token is
never pushed. The real server does not reply to it: it checks the new token, evaluates the
channel's policies again and closes the channel (``system`` error and ``phx_close``) when the
token is refused or no longer grants access; the same token again is a no-op there.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

import trio

from ._auth import jwt_expiry, token_expired
from ._connection import Waiter
from ._exceptions import ConnectionClosed, TokenError, fresh

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = ["REFRESH_AHEAD", "TokenKeeper", "TokenSource", "keep_fresh", "push_token"]

logger = logging.getLogger("trio_realtime.client")

TokenSource = Callable[[], Awaitable[str | None]]

REFRESH_AHEAD: Final = 30.0
"""Seconds before the cached token's ``exp`` at which the callable is asked for a new one."""


class _Call:
    """One call of the callable, shared by every task that waits for it."""

    __slots__ = ("done", "error", "finished", "token")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.finished = False
        self.token: str | None = None
        self.error: TokenError | None = None


class TokenKeeper:
    """The client's token and its callable; see the module docstring.

    Args:
        access_token: A token, an async callable returning one, or ``None``.
        timeout: Bound on one call of the callable, in seconds.
        spacing: The least time between two refreshes for an ``exp`` (the heartbeat cadence).
        max_size: The largest token accepted from the callable, in UTF-8 bytes.
    """

    def __init__(
        self,
        access_token: str | TokenSource | None,
        *,
        timeout: float,
        spacing: float,
        max_size: int,
    ) -> None:
        self.timeout = timeout
        self.spacing = spacing
        self._max_size = max_size
        if callable(access_token):
            self.source: TokenSource | None = access_token
            self._token: str | None = None
            self._have_token = False
        else:
            self.source = None
            self._token = access_token
            self._have_token = True
        self._call: _Call | None = None
        self._last_ask = -math.inf
        self._idle_until = -math.inf
        self._heartbeat_due = False
        self._wake: Waiter[None] = Waiter()
        self.calls = 0
        self.failures = 0

    @property
    def token(self) -> str | None:
        """The cached token (the callable's last answer, or what ``set_auth`` gave)."""
        return self._token

    @token.setter
    def token(self, token: str | None) -> None:
        self._token = token
        self._have_token = True
        self._wake.set(None)

    @property
    def pending(self) -> bool:
        """Whether a call of the callable is in flight."""
        return self._call is not None

    def _usable(self) -> bool:
        """Whether the cached token can go in a join: obtained and not expired."""
        token = self._token
        return self._have_token and (token is None or not token_expired(token, time.time()))

    async def for_join(self) -> str | None:
        """The token for a join: asked for first when none is usable or a call is in flight.

        Raises:
            TokenError: the callable failed and no usable token is cached.
        """
        if self.source is None or (self._call is None and self._usable()):
            await trio.lowlevel.checkpoint()
            return self._token
        try:
            return await self.refresh()
        except TokenError:
            if self._usable():
                return self._token
            raise

    async def refresh_quietly(self) -> None:
        """Ask the callable (before a reconnect); a failure is logged and the cache kept."""
        with contextlib.suppress(TokenError):
            await self.refresh()

    async def refresh(self) -> str | None:
        """Ask the callable for a token, or wait for the call in flight; return the token.

        Raises:
            TokenError: the call timed out, raised or returned something that is not a token
                (logged once as a WARNING, whoever waited for it).
        """
        assert self.source is not None
        while (call := self._call) is not None:
            await call.done.wait()
            if call.error is not None:
                raise fresh(call.error) from call.error
            if call.finished:
                return call.token
            # The task making that call was cancelled: make a new one.
        call = _Call()
        self._call = call
        self.calls += 1
        try:
            call.token = await self._ask(self.source)
            call.finished = True
        except TokenError as exc:
            self.failures += 1
            call.error = exc
            logger.warning("%s; keeping the cached token", exc)
            raise
        finally:
            self._call = None
            call.done.set()
        if call.token != self._token or not self._have_token:
            self.token = call.token
        return call.token

    async def _ask(self, source: TokenSource) -> str | None:
        with trio.move_on_after(self.timeout):
            try:
                value: object = await source()
            except Exception as exc:
                raise TokenError(f"the access token callable raised {type(exc).__name__}") from exc
            return self._checked(value)
        raise TokenError(
            f"the access token callable timed out after {self.timeout:g} s", timed_out=True
        )

    def _checked(self, value: object) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise TokenError(
                f"the access token callable returned {type(value).__name__}, not a string"
            )
        try:
            size = len(value.encode())
        except UnicodeEncodeError:
            raise TokenError(
                "the access token callable returned text with a lone surrogate"
            ) from None
        if size > self._max_size:
            raise TokenError(
                f"the access token callable returned {size} bytes, over the {self._max_size} "
                f"a join can carry"
            )
        return value

    # -- while channels are joined ---------------------------------------------------------------

    def heartbeat(self) -> None:
        """A heartbeat went out: ask the callable again (synchronous; :func:`keep_fresh` asks)."""
        if self.source is not None:
            self._heartbeat_due = True
            self._wake.set(None)

    def _expiry_deadline(self) -> float:
        """When (trio time) the cached token is to be refreshed for its ``exp``, or ``inf``."""
        token = self._token
        exp = jwt_expiry(token) if token is not None else None
        if exp is None:
            return math.inf
        due = trio.current_time() + (exp - REFRESH_AHEAD - time.time())
        return max(due, self._last_ask + self.spacing, self._idle_until)

    async def keep_fresh(self, runtime: Runtime) -> None:
        """Refresh on heartbeats and ahead of ``exp`` while a channel is joined; push changes.

        Runs for the life of one connection (in its nursery), only with a callable.
        """
        while True:
            with trio.move_on_at(self._expiry_deadline()) as expiry:
                await self._wake.wait()
            self._wake = Waiter()
            ask = expiry.cancelled_caught or self._heartbeat_due
            self._heartbeat_due = False
            if ask:
                if any(channel.joined for channel in runtime.channels.values()):
                    self._last_ask = trio.current_time()
                    with contextlib.suppress(TokenError):
                        await self.refresh()
                else:
                    # Nothing joined: no call now; the next join asks if the token expired.
                    self._idle_until = trio.current_time() + self.spacing
            token = self._token
            if token is not None:
                await push_token(runtime, token)


async def keep_fresh(runtime: Runtime) -> None:
    """The per-connection task of :meth:`TokenKeeper.keep_fresh` for ``runtime``'s keeper."""
    await runtime.tokens.keep_fresh(runtime)


async def push_token(runtime: Runtime, token: str) -> None:
    """Send ``token`` as ``access_token`` to every joined channel that runs with another one."""
    session = runtime.session
    for topic in list(runtime.channels):
        connection = runtime.open_connection
        if connection is None:
            break
        frame = session.access_token(topic, token)
        if frame is None:
            continue
        data, binary = runtime.encode(frame)
        with contextlib.suppress(ConnectionClosed):
            await connection.send(data, binary)
    await trio.lowlevel.checkpoint()
