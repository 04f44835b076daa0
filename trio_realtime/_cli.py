"""The ``trio-realtime`` command line (also ``python -m trio_realtime``).

Subcommands:

* ``demo``: a local server and two clients over loopback; prints a transcript and exits;
* ``listen``: prints a channel's events until interrupted, readable or as JSON lines;
* ``send``: sends one broadcast and waits for the server's acknowledgement (``--http``: over
  the REST endpoint, without a socket);
* ``serve``: runs the local Realtime-compatible server.

Each subcommand is added to the parser by its own ``_add_<name>`` function, which sets the
``handler`` default: a function from the parsed arguments to the exit status. Adding a
subcommand means writing one such pair and calling the ``_add_`` function in
:func:`build_parser`.

Exit statuses: 0 for success (and for ``listen`` stopped with Ctrl-C), 1 when the connection,
the join or a push fails, 2 for a usage error (including a URL that cannot be used), 130 when
``demo`` or ``send`` is interrupted. An expected failure is reported as one line on stderr, with
the apikey and token redacted, never as a traceback.

Only ``demo`` and ``serve`` need the local server, so they import ``trio_realtime.testing``
inside their handlers; nothing else in the package imports it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, TextIO

import orjson
import trio

from . import __version__
from ._channel import Channel
from ._cli_output import Line, Printer, describe, dumps, use_colour
from ._client import RealtimeClient, backoff, open_realtime
from ._events import Broadcast, Connected, HeartbeatEvent
from ._exceptions import (
    ChannelClosed,
    PushTimeout,
    RealtimeConnectionError,
    RealtimeError,
    SubscriptionOverflow,
)
from ._frames import JSONObject, JSONValue, realtime_topic
from ._postgres import PostgresChange
from ._postgres_filters import FilterParseError, parse_filter
from ._presence import PresenceEvent
from ._rest import RestSender
from ._serializer import check_vsn
from ._subscription import Subscription
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


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the whole command line."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="A trio-native client for Supabase Realtime, and a local server.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log more: -v for connections and channels, -vv for everything",
    )
    commands = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True
    )
    _add_demo(commands)
    _add_listen(commands)
    _add_send(commands)
    _add_serve(commands)
    for subparser in commands.choices.values():
        # -v after the subcommand too; counted apart, since a subcommand's defaults would
        # overwrite the main parser's count.
        subparser.add_argument(
            "-v",
            "--verbose",
            dest="verbose_after",
            action="count",
            default=0,
            help="log more: -v for connections and channels, -vv for everything",
        )
    return parser


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``; an unknown option is reported with the usage of its subcommand.

    Raises:
        SystemExit: for ``--help``, ``--version`` and usage errors.
    """
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        commands = next(
            action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
        )
        commands.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    Raises:
        SystemExit: for ``--help``, ``--version`` and usage errors found by the parser.
    """
    args = _parse(argv)
    args.verbose += args.verbose_after
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler: Handler = args.handler
    try:
        return handler(args)
    except CommandFailed as exc:
        print(f"{PROG} {args.command}: {exc}", file=sys.stderr, flush=True)
        return exc.status


# ---------------------------------------------------------------------------------------------
# Shared by listen and send: where to connect, and how a failure is reported.


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
            vsn=self.vsn,
            reconnect=backoff(max_attempts=self.max_attempts),
            transport=self.transport,
        )


def _add_target_arguments(parser: argparse.ArgumentParser) -> None:
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


def _target(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> Target:
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


def _leaf(error: BaseException) -> BaseException:
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


def _run(session: Callable[[], Awaitable[None]], redact: Callable[[str], str]) -> int:
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
        error = _leaf(exc)
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


# ---------------------------------------------------------------------------------------------
# demo

DEMO_TOPIC = "room:demo"
DEMO_APIKEY = "demo-anon-key"
DEMO_TIME_LIMIT = 30.0
# An INSERT as Postgres sends it, values as text, and the column types that convert them.
DEMO_COLUMNS: tuple[JSONObject, ...] = (
    {"name": "id", "type": "int4"},
    {"name": "body", "type": "text"},
    {"name": "urgent", "type": "bool"},
    {"name": "meta", "type": "jsonb"},
    {"name": "created_at", "type": "timestamp"},
)
DEMO_RECORD: JSONObject = {
    "id": "42",
    "body": "hello from Postgres",
    "urgent": "t",
    "meta": '{"tags": ["demo"]}',
    "created_at": "2025-01-31 12:30:00",
}


def _add_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo",
        help="run a local server and two clients, and print what happens",
        description=(
            "Start the local Realtime server on a free loopback port and connect two clients, "
            "alice and bob, to one channel: a broadcast each way, presence as bob joins and "
            "leaves, and one Postgres INSERT arriving with its values converted. Prints a "
            "transcript and exits. Needs no Supabase project and no network."
        ),
    )
    demo.add_argument(
        "--vsn", choices=VSNS, default="1.0.0", help="serializer version (%(default)s)"
    )
    demo.set_defaults(handler=_demo)


class Transcript:
    """Prints the demo's lines: seconds since the start, who, what."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._start = trio.current_time()

    def say(self, who: str, what: str) -> None:
        """Print one line of the transcript."""
        elapsed = trio.current_time() - self._start
        self._stream.write(f"{elapsed:7.3f}s  {who:<7}{what}\n")
        self._stream.flush()

    @property
    def elapsed(self) -> float:
        """Seconds since the start."""
        return trio.current_time() - self._start


def _demo(args: argparse.Namespace) -> int:
    """Run the demo; return 0, or raise :class:`CommandFailed` if a step fails."""
    vsn: str = args.vsn

    async def session() -> None:
        try:
            await _demo_session(vsn, sys.stdout)
        except RealtimeError as exc:
            raise CommandFailed(f"the demo failed: {exc}") from None

    return _run(session, str)


@dataclass(frozen=True, slots=True)
class DemoUser:
    """One of the demo's two users: their channel and its subscriptions."""

    name: str
    channel: Channel
    chat: Subscription[Broadcast]
    presence: Subscription[PresenceEvent]
    rows: Subscription[PostgresChange]

    @classmethod
    def on(cls, client: RealtimeClient, name: str) -> DemoUser:
        """Create ``name``'s channel on ``client``, with every subscription registered."""
        channel = client.channel(DEMO_TOPIC, broadcast_ack=True, presence_key=name)
        return cls(
            name,
            channel,
            channel.broadcasts("chat"),
            channel.presence_events(),
            channel.postgres_changes("INSERT", table="messages"),
        )

    async def next_presence(self, event: str, key: str) -> PresenceEvent:
        """Receive presence events until ``key`` joins or leaves (``event``); return it."""
        async for item in self.presence:
            if item.event == event and item.key == key:
                return item
        raise RealtimeError(f"presence events ended before {key} {event}")


async def _demo_session(vsn: str, stream: TextIO) -> None:
    """The demo itself; every step waits for the one before, so the transcript's order is fixed.

    Raises:
        CommandFailed: when the whole demo takes more than :data:`DEMO_TIME_LIMIT` seconds.
        RealtimeError: when a step fails.
    """
    # Only the demo and serve need the local server, so it is imported here.
    from .testing import serve_realtime  # noqa: PLC0415

    transcript = Transcript(stream)
    say = transcript.say
    with trio.move_on_after(DEMO_TIME_LIMIT) as limit:
        async with serve_realtime() as server:
            say("server", f"listening on {server.url} (loopback, vsn {vsn})")
            async with open_realtime(server.url, apikey=DEMO_APIKEY, vsn=vsn) as alice_client:
                alice = DemoUser.on(alice_client, "alice")
                async with alice.channel:
                    await _demo_arrive(alice, say)
                    async with open_realtime(server.url, apikey=DEMO_APIKEY, vsn=vsn) as bob_client:
                        bob = DemoUser.on(bob_client, "bob")
                        async with bob.channel:
                            await _demo_arrive(bob, say)
                            joined = await alice.next_presence("join", "bob")
                            metas = dumps(_strip_refs(joined.presences))
                            say("alice", f"sees bob join (presence): {metas}")
                            await _demo_greet(alice, bob, "hi bob", say)
                            await _demo_greet(bob, alice, "hi alice", say)
                            await server.emit_postgres_change(
                                "public",
                                "messages",
                                "INSERT",
                                record=DEMO_RECORD,
                                columns=DEMO_COLUMNS,
                            )
                            await _demo_rows(alice, bob, say)
                            say("bob", "leaves the channel and disconnects")
                    left = await alice.next_presence("leave", "bob")
                    online = ", ".join(sorted(alice.channel.presence_state()))
                    say("alice", f"sees {left.key} leave (presence); online now: {online}")
            say("demo", f"done in {transcript.elapsed:.2f} s")
    if limit.cancelled_caught:
        raise CommandFailed(f"the demo did not finish within {DEMO_TIME_LIMIT} s")


async def _demo_arrive(user: DemoUser, say: Callable[[str, str], None]) -> None:
    """``user`` has joined: wait until Postgres changes stream, then track presence."""
    await user.channel.wait_postgres_ready()
    say(user.name, f"connected, joined {user.channel.topic}, listening for INSERT on messages")
    await user.channel.track({"status": "online"})
    await user.next_presence("join", user.name)
    online = ", ".join(sorted(user.channel.presence_state()))
    say(user.name, f'tracks presence {{"status":"online"}}; online: {online}')


async def _demo_greet(
    sender: DemoUser, receiver: DemoUser, text: str, say: Callable[[str, str], None]
) -> None:
    """``sender`` broadcasts ``text`` (acknowledged by the server); ``receiver`` gets it."""
    payload: JSONObject = {"text": text}
    await sender.channel.send_broadcast("chat", payload)
    say(sender.name, f'-> broadcast "chat" {dumps(payload)} (acknowledged)')
    message = await receiver.chat.receive()
    say(receiver.name, f'<- broadcast "{message.event}" {dumps(message.payload)}')


async def _demo_rows(alice: DemoUser, bob: DemoUser, say: Callable[[str, str], None]) -> None:
    """Show the INSERT the server emitted as sent, and as each user receives it."""
    types = ", ".join(f"{column['name']} {column['type']}" for column in DEMO_COLUMNS)
    say("server", f"INSERT into public.messages ({types})")
    say("server", f"   values as text: {dumps(DEMO_RECORD)}")
    for user in (alice, bob):
        change = await user.rows.receive()
        say(user.name, f"<- {change.event_type} {change.schema}.{change.table}, converted:")
        say(user.name, f"   {dumps(change.new)}")


def _strip_refs(metas: list[JSONObject]) -> list[JSONObject]:
    """Metas without their ``presence_ref`` (a server-generated id), for the transcript."""
    return [{k: v for k, v in meta.items() if k != "presence_ref"} for meta in metas]


# ---------------------------------------------------------------------------------------------
# listen


@dataclass(frozen=True, slots=True)
class PostgresSpec:
    """One ``--postgres EVENT:schema.table[:filter]`` option.

    Attributes:
        event: ``INSERT``, ``UPDATE``, ``DELETE`` or ``*``.
        schema: The schema.
        table: The table, or ``None`` for every table of the schema (``schema.*``).
        filter: A filter such as ``id=eq.5``, or ``None``.
    """

    event: str
    schema: str
    table: str | None
    filter: str | None


def parse_postgres_spec(text: str) -> PostgresSpec:
    """Parse ``EVENT:schema.table[:filter]``; ``table`` alone means ``public.table``.

    The filter may itself contain colons (``created_at=gt.2025-01-01T00:00:00``).

    Raises:
        argparse.ArgumentTypeError: with what is wrong, for argparse to report.
    """
    usage = "expected EVENT:schema.table[:filter], for example INSERT:public.messages"
    event, colon, rest = text.partition(":")
    target, _, filter_text = rest.partition(":")
    if not colon or not target:
        raise argparse.ArgumentTypeError(f"{text!r}: {usage}")
    event = event.strip().upper()
    if event not in ("*", "INSERT", "UPDATE", "DELETE"):
        raise argparse.ArgumentTypeError(
            f"{text!r}: the event must be INSERT, UPDATE, DELETE or *, not {event!r}"
        )
    schema, dot, table = target.partition(".")
    if not dot:
        schema, table = "public", target
    if not schema or not table or "." in table:
        raise argparse.ArgumentTypeError(f"{text!r}: {usage}")
    if filter_text:
        if table == "*":
            raise argparse.ArgumentTypeError(f"{text!r}: a filter needs a table")
        try:
            parse_filter(filter_text)
        except FilterParseError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    return PostgresSpec(event, schema, None if table == "*" else table, filter_text or None)


def _add_listen(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    listen = commands.add_parser(
        "listen",
        help="print a channel's events until interrupted",
        description=(
            "Join a channel and print its broadcasts, and optionally Postgres changes and\n"
            "presence, until Ctrl-C. Connection and channel events (disconnected,\n"
            "reconnecting, rejoined) are printed too, so gaps are visible. With --json, each\n"
            "event is one JSON object per line, with a 'type' field, for jq."
        ),
        epilog=(
            "examples:\n"
            "  trio-realtime listen --channel room1 --json \\\n"
            "      | jq -c 'select(.type == \"broadcast\") | .payload'\n"
            "  trio-realtime listen https://<ref>.supabase.co --channel db \\\n"
            "      --postgres 'INSERT:public.messages' --postgres '*:public.todos:id=eq.5'"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_target_arguments(listen)
    listen.add_argument(
        "--event", metavar="EVENT", help="print only broadcasts of this event (default: all)"
    )
    listen.add_argument(
        "--postgres",
        action="append",
        default=[],
        type=parse_postgres_spec,
        metavar="EVENT:schema.table[:filter]",
        help="also print these row changes (repeatable); EVENT is INSERT, UPDATE, DELETE or *",
    )
    listen.add_argument("--presence", action="store_true", help="also print presence changes")
    listen.add_argument("--json", action="store_true", help="print one JSON object per line")
    listen.add_argument(
        "--max-attempts",
        type=_attempts,
        metavar="N",
        help="give up (exit 1) after N failed reconnect attempts in a row (default: never)",
    )
    listen.set_defaults(handler=_listen)


def _attempts(text: str) -> int:
    """Parse ``--max-attempts``: a whole number, 0 or more.

    Raises:
        argparse.ArgumentTypeError: for anything else.
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _listen(args: argparse.Namespace) -> int:
    """Print the channel's events until SIGINT or SIGTERM (exit 0) or a failure (exit 1)."""
    target = _target(args)
    if not args.verbose:
        # listen prints connection and channel events itself; the library's warnings about
        # the same events would only repeat them (-v shows them, with everything else).
        logging.getLogger(LIBRARY_LOGGER).setLevel(logging.ERROR)
    printer = Printer(sys.stdout, json_lines=args.json, colour=use_colour(sys.stdout))
    specs: list[PostgresSpec] = args.postgres

    async def session() -> None:
        await _listen_until_signal(target, printer, args.event, specs, args.presence)

    status = _run(session, target.redact)
    # Ctrl-C is how listen is meant to stop, even before its signal handler is in place.
    return 0 if status == EXIT_INTERRUPTED else status


async def _listen_until_signal(
    target: Target,
    printer: Printer,
    event: str | None,
    specs: Sequence[PostgresSpec],
    presence: bool,
) -> None:
    """Run :func:`_listen_session` until SIGINT or SIGTERM, then close the client cleanly."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            await _listen_session(target, printer, event, specs, presence)
            nursery.cancel_scope.cancel()


async def _listen_session(
    target: Target,
    printer: Printer,
    event: str | None,
    specs: Sequence[PostgresSpec],
    presence: bool,
) -> None:
    """Connect, subscribe, join, and print every item until cancelled or the channel closes."""
    async with target.open() as client:
        printer.show(describe(Connected(client.url, reconnect=False), target.topic))
        channel = client.channel(target.topic, private=target.private)
        topic = channel.topic
        connection_events = client.connection_events()
        channel_events = channel.channel_events()
        # Registered before the join, so that nothing sent after it is missed.
        subscriptions: list[Subscription[Any]] = [
            channel_events,
            channel.system_events(),
            channel.broadcasts(event),
        ]
        subscriptions += [
            channel.postgres_changes(s.event, schema=s.schema, table=s.table, filter=s.filter)
            for s in specs
        ]
        if presence:
            subscriptions.append(channel.presence_events())
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_print_items, connection_events, printer, topic)
                await channel.join()
                # The join's own event first, then whatever arrived with it (presence state,
                # system messages), which their subscriptions have kept meanwhile.
                with contextlib.suppress(trio.WouldBlock):
                    printer.show(describe(channel_events.receive_nowait(), topic))
                for subscription in subscriptions:
                    nursery.start_soon(_print_items, subscription, printer, topic)
                if specs:
                    nursery.start_soon(_check_postgres, channel, printer)
        except* ChannelClosed as group:
            # Every subscription of the channel ends with the same error: one line for all.
            # (Readable output leaves it to the line on stderr.)
            error = group.exceptions[0]
            if printer.json_lines and isinstance(error, ChannelClosed):
                record: dict[str, object] = {
                    "topic": error.topic,
                    "event": "closed",
                    "reason": error.reason,
                    "by_server": error.by_server,
                }
                printer.show(Line("channel", "closed", str(error), record, "red"))
            raise


async def _print_items(subscription: Subscription[Any], printer: Printer, topic: str) -> None:
    """Print every item of ``subscription``; an overflow is reported and reading goes on.

    Raises:
        ChannelClosed: when the channel closes.
    """
    while True:
        try:
            item = await subscription.receive()
        except trio.EndOfChannel:
            return
        except SubscriptionOverflow as exc:
            name = subscription.statistics().name
            record: dict[str, object] = {"topic": topic, "subscription": name, "count": exc.dropped}
            text = f"{exc.dropped} events of {name}: the output could not keep up"
            printer.show(Line("dropped", "dropped", text, record, "red"))
            continue
        if isinstance(item, HeartbeatEvent):
            continue
        printer.show(describe(item, topic))


async def _check_postgres(channel: Channel, printer: Printer) -> None:
    """Fail if the server cannot stream the Postgres changes; note it if it stays silent.

    Raises:
        PostgresSubscriptionError: the server refused the bindings (a bad filter, a table the
            publication lacks...), which ends ``listen`` with status 1.
    """
    try:
        await channel.wait_postgres_ready()
    except PushTimeout as exc:
        text = f"{exc}; changes made before it arrives may be missed"
        printer.show(
            Line("notice", "notice", text, {"topic": channel.topic, "message": text}, "yellow")
        )


# ---------------------------------------------------------------------------------------------
# send


MAX_PAYLOAD_BYTES = 16_000_000
"""The largest ``--payload`` read from a file or stdin (far above the server's 3 MB limit)."""


def _read_payload(source: str) -> bytes:
    """Read ``--payload @FILE`` (``source`` is FILE) or ``--payload -`` (``source`` is ``-``).

    Raises:
        argparse.ArgumentTypeError: when it cannot be read or is over ``MAX_PAYLOAD_BYTES``.
    """
    name = "stdin" if source == "-" else repr(source)
    try:
        if source == "-":
            data = sys.stdin.buffer.read(MAX_PAYLOAD_BYTES + 1)
        else:
            with open(source, "rb") as file:
                data = file.read(MAX_PAYLOAD_BYTES + 1)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {name}: {exc.strerror or exc}") from None
    if len(data) > MAX_PAYLOAD_BYTES:
        raise argparse.ArgumentTypeError(f"{name} holds more than {MAX_PAYLOAD_BYTES} bytes")
    return data


def _json_payload(text: str) -> JSONValue:
    """Parse ``--payload``: JSON text, ``@FILE`` for a file's contents, ``-`` for stdin.

    Raises:
        argparse.ArgumentTypeError: for text that is not JSON, or a file that cannot be read.
    """
    data: str | bytes = text
    where = ""
    if text == "-" or text.startswith("@"):
        source = "-" if text == "-" else text[1:]
        if not source:
            raise argparse.ArgumentTypeError("@ needs a file name: --payload @FILE")
        data = _read_payload(source)
        where = " in stdin" if source == "-" else f" in {source!r}"
    try:
        value: JSONValue = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON{where} ({exc})") from None
    return value


def _add_send(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    send = commands.add_parser(
        "send",
        help="send one broadcast and wait for the server's acknowledgement",
        description=(
            "Join a channel, send one broadcast, wait for the server to acknowledge it, and "
            "leave. Exits 1 if the connection, the join or the broadcast fails."
        ),
        epilog="example: trio-realtime send --channel room1 --event chat --payload '{\"text\":1}'",
    )
    _add_target_arguments(send)
    send.add_argument("--event", required=True, help="the broadcast's event name")
    send.add_argument(
        "--payload",
        required=True,
        type=_json_payload,
        metavar="JSON",
        help=(
            "the broadcast's payload, any JSON value (a JSON object with --http); "
            "@FILE reads it from a file, - from stdin"
        ),
    )
    send.add_argument(
        "--http",
        action="store_true",
        help=(
            "send over the REST endpoint (POST /api/broadcast/<topic>/events/<event>), "
            "without a socket or a join; exits once the server has accepted it (202)"
        ),
    )
    send.set_defaults(handler=_send)


def _send(args: argparse.Namespace) -> int:
    """Send the broadcast; return 0 once acknowledged."""
    target = _target(args)
    event: str = args.event
    payload: JSONValue = args.payload
    if args.http:
        return _send_http(target, event, payload)

    async def session() -> None:
        async with target.open() as client:
            channel = client.channel(target.topic, broadcast_ack=True, private=target.private)
            async with channel:
                await channel.send_broadcast(event, payload)
        print(f"sent {event!r} to {channel.topic} (acknowledged)", flush=True)

    return _run(session, target.redact)


def _send_http(target: Target, event: str, payload: JSONValue) -> int:
    """``send --http``: one REST request, no socket; return 0 once the server accepted it."""
    if not isinstance(payload, dict):
        raise CommandFailed("--http needs a JSON object as --payload", EXIT_USAGE)
    endpoint = websocket_url(target.url, apikey=target.apikey, vsn=target.vsn)
    token = target.token

    async def get_token() -> str | None:
        await trio.lowlevel.checkpoint()
        return token

    async def session() -> None:
        sender = RestSender(
            endpoint,
            apikey=target.apikey,
            token=get_token,
            ssl_context=None,
            timeout=10.0,
            connect_timeout=10.0,
        )
        try:
            await sender.send_single(target.topic, event, payload, private=target.private)
        finally:
            with trio.CancelScope(shield=True):
                await sender.aclose()
        print(f"sent {event!r} to {realtime_topic(target.topic)} over HTTP (accepted)", flush=True)

    return _run(session, target.redact)


# ---------------------------------------------------------------------------------------------
# serve


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="run a local Realtime-compatible server",
        description=(
            "Run a local server that speaks the Supabase Realtime protocol (vsn 1.0.0 and "
            "2.0.0) at /realtime/v1/websocket and /socket/websocket, until interrupted."
        ),
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    serve.add_argument(
        "--port", type=int, default=4000, help="TCP port (%(default)s); 0 picks a free one"
    )
    serve.add_argument("--apikey", help="require this apikey from clients (default: accept any)")
    serve.add_argument(
        "--database-url",
        help="stream postgres_changes from this PostgreSQL (wal_level=logical, wal2json), with RLS",
    )
    serve.add_argument(
        "--jwt-secret", help="verify tokens as JWTs signed with this secret (HS256/384/512)"
    )
    serve.add_argument(
        "--rate-limits",
        action="store_true",
        help=(
            "apply the hosted server's rate limits (100 joins/s, 200 users, 100 events/s, "
            "1000 presence events/s, 5 presence messages per channel per 30 s)"
        ),
    )
    serve.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    # Only the server subcommands need the local server, so it is imported here.
    from .testing import DatabaseSetupError, RateLimits, serve_realtime  # noqa: PLC0415

    async def run() -> None:
        async with serve_realtime(
            args.host,
            args.port,
            apikey=args.apikey,
            database_url=args.database_url,
            jwt_secret=args.jwt_secret,
            rate_limits=RateLimits.supabase() if args.rate_limits else None,
        ) as server:
            websocket = "ws" + server.url.removeprefix("http") + "/realtime/v1/websocket"
            print(f"Serving Supabase Realtime at {server.url}", flush=True)
            print(f"  WebSocket: {websocket} (also /socket/websocket), vsn 1.0.0 and 2.0.0")
            if server.database is not None:
                print(
                    f"  postgres_changes: publication {server.database.publication},"
                    f" slot {server.database.slot_name}"
                )
            print("  Press Ctrl-C to stop.", flush=True)
            await trio.sleep_forever()

    try:
        # Ctrl-C then interrupts the main task, asleep in the server's body, which shuts the
        # server down in order, rather than whichever connection task happens to be running.
        trio.run(run, restrict_keyboard_interrupt_to_checkpoints=True)
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(
            f"trio-realtime serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return 1
    except (DatabaseSetupError, ImportError, ValueError) as exc:
        print(f"trio-realtime serve: {exc}", file=sys.stderr)
        return 1
    return 0
