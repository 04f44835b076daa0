"""``trio-realtime listen``: print a channel's events until interrupted, as text or JSON lines."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import trio

from ._channel import Channel
from ._cli_common import (
    EXIT_INTERRUPTED,
    LIBRARY_LOGGER,
    Target,
    add_target_arguments,
    resolve_target,
    run_session,
)
from ._cli_output import Line, Printer, describe, use_colour
from ._events import Connected, HeartbeatEvent
from ._exceptions import ChannelClosed, PushTimeout, SubscriptionOverflow
from ._postgres_filters import FilterParseError, parse_filter
from ._subscription import Subscription


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


def add_listen(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    add_target_arguments(listen)
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
    target = resolve_target(args)
    if not args.verbose:
        # listen prints connection and channel events itself; the library's warnings about
        # the same events would only repeat them (-v shows them, with everything else).
        logging.getLogger(LIBRARY_LOGGER).setLevel(logging.ERROR)
    printer = Printer(sys.stdout, json_lines=args.json, colour=use_colour(sys.stdout))
    specs: list[PostgresSpec] = args.postgres

    async def session() -> None:
        await _listen_until_signal(target, printer, args.event, specs, args.presence)

    status = run_session(session, target.redact)
    # Ctrl-C is how listen is meant to stop, even before its signal handler is in place.
    return 0 if status == EXIT_INTERRUPTED else status


async def _listen_until_signal(
    target: Target,
    printer: Printer,
    event: str | None,
    specs: Sequence[PostgresSpec],
    presence: bool,
) -> None:
    """Run :func:`listen_session` until SIGINT or SIGTERM, then close the client cleanly."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            await listen_session(target, printer, event, specs, presence)
            nursery.cancel_scope.cancel()


async def listen_session(
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
