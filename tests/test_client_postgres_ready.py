"""wait_postgres_ready() tells retried subscription errors from final ones, as the server (RS-04).

The real server (``realtime_channel.ex`` ``handle_info(:postgres_subscribe)``) never retries a
parameter error (``:malformed_subscription_params``, ``:subscription_insert_failed``) and retries
every other error after 5 to 10 s; the local server retries after exactly 5 s. Virtual time.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from _realtime import connect, drain, settle

from trio_realtime import PostgresSubscriptionError, PushTimeout, SystemMessage, backoff
from trio_realtime.testing import serve_realtime

TIMEOUTS = '{:error, "Too many database timeouts"}'


def _postgres(messages: list[SystemMessage]) -> list[tuple[str, str]]:
    return [(m.status, m.message) for m in messages if m.extension == "postgres_changes"]


async def test_rs04_a_retried_error_is_not_final(autojump_clock: trio.testing.MockClock) -> None:
    """RS-04: two retried errors, 5 s apart, then "Subscribed to PostgreSQL" 5 s later:
    wait_postgres_ready() returns then, without raising."""
    async with serve_realtime() as server, connect(server, timeout=15.0) as client:
        server.fail_postgres_subscriptions("room", 2)
        channel = client.channel("room")
        channel.postgres_changes("INSERT", table="messages")
        system = channel.system_events()
        times: list[float] = []

        async def watch() -> None:
            async for _ in system:
                times.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            await channel.join()
            await channel.wait_postgres_ready()
            assert trio.current_time() == 10.0
            await settle()
            nursery.cancel_scope.cancel()
        assert times == [0.0, 5.0, 10.0]
        frames = [f for f in server.connections[0].received_frames if f.event == "phx_join"]
        assert len(frames) == 1  # the server retries, not the client


async def test_rs04_timeout_names_the_retried_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RS-04: while the server keeps retrying, the wait ends at the client timeout with a
    PushTimeout naming the error the server retries; the confirmation still comes later."""
    async with serve_realtime() as server, connect(server, timeout=3.0) as client:
        server.fail_postgres_subscriptions("room", 1)
        channel = client.channel("room")
        channel.postgres_changes("INSERT", table="messages")
        system = channel.system_events()
        await channel.join()
        with pytest.raises(PushTimeout) as caught:
            await channel.wait_postgres_ready()
        assert trio.current_time() == 3.0
        assert str(caught.value) == (
            "no 'Subscribed to PostgreSQL' for 'realtime:room' within 3.0 s; the server is "
            f"retrying after: {TIMEOUTS}"
        )
        await trio.sleep_until(5.0)
        await channel.wait_postgres_ready()
        assert trio.current_time() == 5.0
        assert _postgres(drain(system)) == [
            ("error", TIMEOUTS),
            ("ok", "Subscribed to PostgreSQL"),
        ]


async def test_rs04_a_parameter_error_is_final(autojump_clock: trio.testing.MockClock) -> None:
    """RS-04: a subscription the server's trigger refuses raises at once and is never retried;
    so does a parameter error reported through the fault knob."""
    async with serve_realtime() as server, connect(server, timeout=30.0) as client:
        channel = client.channel("room")
        values = ",".join(str(n) for n in range(101))
        channel.postgres_changes("INSERT", table="messages", filter=f"id=in.({values})")
        system = channel.system_events()
        await channel.join()
        with pytest.raises(PostgresSubscriptionError) as caught:
            await channel.wait_postgres_ready()
        assert trio.current_time() == 0.0
        assert caught.value.message.startswith(
            "Unable to subscribe to changes with given parameters."
        )
        assert caught.value.message.endswith("too many values for `in` filter. Maximum 100")
        await trio.sleep(20.0)
        assert [status for status, _ in _postgres(drain(system))] == ["error"]

        other = client.channel("other")
        other.postgres_changes("INSERT", table="messages")
        bad = 'Error parsing `filter` params: ["undefined"]'
        server.fail_postgres_subscriptions("other", 3, message=bad)
        await other.join()
        with pytest.raises(PostgresSubscriptionError, match="undefined"):
            await other.wait_postgres_ready()
        assert trio.current_time() == 20.0


async def test_rs04_after_a_rejoin_it_waits_for_the_new_confirmation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RS-04: after a reconnect the readiness is the new join's: a retried error on the rejoin
    makes wait_postgres_ready() wait for the confirmation 5 s after it."""
    async with (
        serve_realtime() as server,
        connect(server, timeout=15.0, reconnect=backoff(jitter=0)) as client,
    ):
        channel = client.channel("room")
        channel.postgres_changes("INSERT", table="messages")
        await channel.join()
        await channel.wait_postgres_ready()
        server.fail_postgres_subscriptions("room", 1)
        await server.drop_connections()
        await settle()
        start = trio.current_time()
        await channel.wait_postgres_ready()
        assert trio.current_time() - start == pytest.approx(6.0)  # reconnect 1 s, retry 5 s
        assert channel.joined
