"""What the command line's subcommands share: exit statuses, the connection target, failures.

:class:`Target` is where ``listen`` and ``send`` connect, resolved from the arguments and the
environment by :func:`resolve_target`; :func:`run_session` runs a subcommand's trio session and
turns its failure into an exit status (through :class:`CommandFailed`, which ``main`` prints as
one line on stderr).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import trio

from ._client import RealtimeClient, backoff, open_realtime
from ._exceptions import RealtimeConnectionError, RealtimeError
from ._frames import realtime_topic
from ._serializer import check_vsn
from ._transport import TransportFactory
from ._url import redact, url_options, websocket_url

Handler = Callable[[argparse.Namespace], int]

PROG = "trio-realtime"
VSNS = ("1.0.0", "2.0.0")
URL_ENV = "SUPABASE_URL"
APIKEY_ENV = "SUPABASE_ANON_KEY"
LIBRARY_LOGGER = "trio_realtime"

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CommandFailed(Exception):
    """An expected failure: ``main`` prints it as one line on stderr and exits with ``status``.

    The message must already be redacted.
    """

    def __init__(self, message: str, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Target:
    """Where ``listen`` and ``send`` connect, and with which credentials.

    Attributes:
        url: The project, socket or WebSocket URL.
        apikey: The project's API key.
        token: The user's access token (JWT), if any.
        vsn: The serializer version.
        topic: The channel topic, as given (``realtime:`` is added by the client).
        private: Whether the channel is private (authorised by RLS policies).
        max_attempts: Reconnect attempts in a row before giving up (``None``: never).
        transport: The client's ``transport=`` option.
    """

    url: str
    apikey: str
    token: str | None
    vsn: str
    topic: str
    private: bool
    max_attempts: int | None = None
    transport: str | TransportFactory = "websockets"

    def redact(self, text: str) -> str:
        """Return ``text`` with the apikey and the token hidden."""
        return redact(text, self.apikey, self.token)

    def open(self) -> AbstractAsyncContextManager[RealtimeClient]:
        """Return ``open_realtime(...)`` for this target."""
        return open_realtime(
            self.url,
            apikey=self.apikey,
            access_token=self.token,
            vsn=check_vsn(self.vsn),
            reconnect=backoff(max_attempts=self.max_attempts),
            transport=self.transport,
        )


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "url",
        nargs="?",
        metavar="URL",
        help=(
            f"project URL (https://<ref>.supabase.co), socket URL (ws://host:4000/socket) or "
            f"full .../websocket URL; default: ${URL_ENV}"
        ),
    )
    parser.add_argument("--channel", required=True, metavar="TOPIC", help="the channel topic")
    parser.add_argument(
        "--apikey",
        metavar="KEY",
        help=f"the project's anon (or service) key; default: the URL's apikey, else ${APIKEY_ENV}",
    )
    parser.add_argument(
        "--token", metavar="JWT", help="a user access token, for RLS and private channels"
    )
    parser.add_argument(
        "--private",
        action="store_true",
        help="join a private channel (needs a token allowed by the realtime.messages policies)",
    )
    parser.add_argument(
        "--vsn",
        choices=VSNS,
        help=(
            "serializer: 1.0.0 (JSON objects) or 2.0.0 (arrays, binary broadcasts); "
            "default: the URL's vsn, else 1.0.0"
        ),
    )


def resolve_target(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> Target:
    """Resolve the URL, key and vsn and check them, with the channel and event names.

    The URL comes from the argument, else the environment. The apikey and vsn come from the
    options, else the URL's query, else the environment (apikey) or ``1.0.0`` (vsn); an option
    that contradicts the URL is a usage error.

    Raises:
        CommandFailed: with status 2 for a missing URL or key, a URL that cannot be used, an
            option that contradicts it, or an empty channel or event name.
    """
    try:
        realtime_topic(args.channel)
    except ValueError:
        raise CommandFailed(f"--channel {args.channel!r}: the topic is empty", EXIT_USAGE) from None
    event: str | None = getattr(args, "event", None)
    if event is not None and not event:
        raise CommandFailed("--event: the event name is empty", EXIT_USAGE)
    url: str | None = args.url or environ.get(URL_ENV)
    if not url:
        raise CommandFailed(f"no URL: give one, or set {URL_ENV}", EXIT_USAGE)
    try:
        options = url_options(url, apikey=args.apikey, vsn=args.vsn, log_level=None)
    except ValueError as exc:
        raise CommandFailed(redact(str(exc), args.apikey), EXIT_USAGE) from None
    apikey = options.apikey or environ.get(APIKEY_ENV)
    if not apikey:
        raise CommandFailed(
            f"no apikey: pass --apikey, put it in the URL, or set {APIKEY_ENV}", EXIT_USAGE
        )
    max_attempts: int | None = getattr(args, "max_attempts", None)
    target = Target(
        url, apikey, args.token, options.vsn or VSNS[0], args.channel, args.private, max_attempts
    )
    try:
        check_vsn(target.vsn)
        websocket_url(url, apikey=apikey, vsn=target.vsn)
    except ValueError as exc:
        raise CommandFailed(target.redact(str(exc)), EXIT_USAGE) from None
    return target


def leaf(error: BaseException) -> BaseException:
    """The exception that matters in ``error``: itself, or the first leaf of a group that is
    not a cancellation (a ``KeyboardInterrupt`` first of all)."""
    if not isinstance(error, BaseExceptionGroup):
        return error
    leaves: list[BaseException] = []
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop(0)
        if isinstance(current, BaseExceptionGroup):
            pending[:0] = list(current.exceptions)
        elif not isinstance(current, trio.Cancelled):
            leaves.append(current)
    for leaf in leaves:
        if isinstance(leaf, KeyboardInterrupt):
            return leaf
    return leaves[0] if leaves else error


def run_session(session: Callable[[], Awaitable[None]], redact: Callable[[str], str]) -> int:
    """Run ``session`` under ``trio.run``; return 0, or map its failure to an exit status.

    A library error becomes one line on stderr (through :class:`CommandFailed`), with the
    secrets removed by ``redact``; Ctrl-C gives 130; a closed stdout (``| head``) ends quietly
    with 0. Anything else is a bug, and propagates.

    Raises:
        CommandFailed: for a library error (connection, join, push), with status 1, or as
            raised by ``session``.
    """
    try:
        trio.run(session)
    except BaseException as exc:
        error = leaf(exc)
        if isinstance(error, KeyboardInterrupt):
            return EXIT_INTERRUPTED
        if isinstance(error, BrokenPipeError):
            # Keep Python's final flush of stdout from failing again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        if isinstance(error, CommandFailed):
            raise error from None
        if isinstance(error, RealtimeError):
            text = str(error)
            if isinstance(error, RealtimeConnectionError) and error.status_code in (401, 403):
                text += " (check the apikey and the token)"
            raise CommandFailed(redact(text)) from None
        raise
    return 0
