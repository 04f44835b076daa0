"""The ``trio-realtime`` command line (also ``python -m trio_realtime``): the parser and ``main``.

Subcommands, each in a module of its own:

* ``demo`` (``_cli_demo``): a local server and two clients over loopback; prints a transcript
  and exits;
* ``listen`` (``_cli_listen``): prints a channel's events until interrupted, readable or as JSON
  lines;
* ``send`` (``_cli_send``): sends one broadcast and waits for the server's acknowledgement
  (``--http``: over the REST endpoint, without a socket);
* ``serve`` (``_cli_serve``): runs the local Realtime-compatible server.

Each subcommand's module has an ``add_<name>`` function, which adds the subcommand to the parser
and sets the ``handler`` default: a function from the parsed arguments to the exit status.
Adding a subcommand means writing such a module and calling its ``add_`` function in
:func:`build_parser`. What the subcommands share (the exit statuses, the connection target, how
a failure becomes an exit status) is in ``_cli_common``.

Exit statuses: 0 for success (and for ``listen`` stopped with Ctrl-C), 1 when the connection,
the join or a push fails, 2 for a usage error (including a URL that cannot be used), 130 when
``demo`` or ``send`` is interrupted. An expected failure is reported as one line on stderr, with
the apikey and token redacted, never as a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from . import __version__
from ._cli_common import PROG, CommandFailed, Handler
from ._cli_demo import add_demo
from ._cli_listen import add_listen
from ._cli_send import add_send
from ._cli_serve import add_serve


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
    add_demo(commands)
    add_listen(commands)
    add_send(commands)
    add_serve(commands)
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
