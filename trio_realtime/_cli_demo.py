"""``trio-realtime demo``: a local server and two clients over loopback, printed as a transcript.

Only ``demo`` and ``serve`` need the local server, so they import ``trio_realtime.testing``
inside their handlers; nothing else in the package imports it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

import trio

from ._channel import Channel
from ._cli_common import VSNS, CommandFailed, run_session
from ._cli_output import dumps
from ._client import RealtimeClient, open_realtime
from ._events import Broadcast
from ._exceptions import RealtimeError
from ._frames import JSONObject
from ._postgres import PostgresChange
from ._presence import PresenceEvent
from ._serializer import Vsn, check_vsn
from ._subscription import Subscription

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


def add_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    vsn = check_vsn(args.vsn)

    async def session() -> None:
        try:
            await _demo_session(vsn, sys.stdout)
        except RealtimeError as exc:
            raise CommandFailed(f"the demo failed: {exc}") from None

    return run_session(session, str)


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


async def _demo_session(vsn: Vsn, stream: TextIO) -> None:
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
