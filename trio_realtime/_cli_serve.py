"""``trio-realtime serve``: run the local Realtime-compatible server until interrupted.

Only ``demo`` and ``serve`` need the local server, so they import ``trio_realtime.testing``
inside their handlers; nothing else in the package imports it.
"""

from __future__ import annotations

import argparse
import sys

import trio


def add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
