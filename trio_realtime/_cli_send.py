"""``trio-realtime send``: one broadcast, acknowledged by the server, or one REST request."""

from __future__ import annotations

import argparse
import sys

import orjson
import trio

from ._cli_common import (
    EXIT_USAGE,
    CommandFailed,
    Target,
    add_target_arguments,
    resolve_target,
    run_session,
)
from ._frames import JSONValue, realtime_topic
from ._rest import RestSender
from ._url import websocket_url

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


def add_send(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    send = commands.add_parser(
        "send",
        help="send one broadcast and wait for the server's acknowledgement",
        description=(
            "Join a channel, send one broadcast, wait for the server to acknowledge it, and "
            "leave. Exits 1 if the connection, the join or the broadcast fails."
        ),
        epilog="example: trio-realtime send --channel room1 --event chat --payload '{\"text\":1}'",
    )
    add_target_arguments(send)
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
    target = resolve_target(args)
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

    return run_session(session, target.redact)


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

    return run_session(session, target.redact)
