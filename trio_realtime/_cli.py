"""The ``trio-realtime`` command line (also ``python -m trio_realtime``).

Each subcommand is added to the parser by its own ``_add_<name>`` function, which sets the
``handler`` default: a function from the parsed arguments to the exit status. Adding a
subcommand means writing one such pair and calling the ``_add_`` function in
:func:`build_parser`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

import trio

from . import __version__

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the whole command line."""
    parser = argparse.ArgumentParser(
        prog="trio-realtime",
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
    _add_serve(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler: Handler = args.handler
    return handler(args)


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
    serve.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    # Only the server subcommands need the local server, so it is imported here.
    from .testing import serve_realtime  # noqa: PLC0415

    async def run() -> None:
        async with serve_realtime(args.host, args.port, apikey=args.apikey) as server:
            websocket = "ws" + server.url.removeprefix("http") + "/realtime/v1/websocket"
            print(f"Serving Supabase Realtime at {server.url}", flush=True)
            print(f"  WebSocket: {websocket} (also /socket/websocket), vsn 1.0.0 and 2.0.0")
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
    return 0
