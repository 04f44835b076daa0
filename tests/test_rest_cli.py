"""``trio-realtime send --http``: one REST broadcast from the command line, no socket (RB-01).

The CLI runs as a child process against the local server over loopback; ``trio.fail_after`` is
only a guard against a hang.
"""

from __future__ import annotations

import os
import sys

import trio
from _realtime import connect_socket
from conftest import APIKEY, SECRET_MARKER, TOKEN

from trio_realtime.testing import serve_realtime

CLI = (sys.executable, "-m", "trio_realtime")
GUARD = 60


def _environment() -> dict[str, str]:
    return {
        key: value
        for key, value in os.environ.items()
        if key not in ("SUPABASE_URL", "SUPABASE_ANON_KEY", "NO_COLOR")
    }


async def test_rb01_send_http_reaches_a_subscriber_without_a_socket() -> None:
    """RB-01: ``send --http`` posts to the single-message endpoint; the sender never opens a
    WebSocket, and the subscriber receives the message."""
    with trio.fail_after(GUARD):
        async with serve_realtime(apikey=APIKEY) as server:
            async with connect_socket(server) as client:
                channel = client.channel("room:cli", private=True)
                messages = channel.broadcasts()
                async with channel:
                    before = server.statistics().connections_accepted
                    result = await trio.run_process(
                        [
                            *CLI,
                            "send",
                            server.url,
                            "--apikey",
                            APIKEY,
                            "--token",
                            TOKEN,
                            "--channel",
                            "room:cli",
                            "--private",
                            "--event",
                            "chat",
                            "--payload",
                            '{"text": "over http"}',
                            "--http",
                        ],
                        capture_stdout=True,
                        capture_stderr=True,
                        check=False,
                        env=_environment(),
                    )
                    assert result.returncode == 0, result.stderr.decode()
                    assert result.stdout.decode() == (
                        "sent 'chat' to realtime:room:cli over HTTP (accepted)\n"
                    )
                    message = await messages.receive()
                    assert (message.event, message.payload) == ("chat", {"text": "over http"})
                    assert server.statistics().connections_accepted == before
                    assert server.rest_requests == 1


async def test_rb03_send_http_failure_is_one_line_with_the_server_words() -> None:
    """RB-03: a refused request exits 1 with one line holding the server's message and no
    secret; a payload that is not an object is a usage error (2)."""
    with trio.fail_after(GUARD):
        async with serve_realtime(apikey=APIKEY) as server:
            base = [*CLI, "send", server.url, "--channel", "r", "--event", "e", "--http"]
            refused = await trio.run_process(
                [*base, "--apikey", "anon-SECRET-wrong", "--payload", "{}"],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=_environment(),
            )
            usage = await trio.run_process(
                [*base, "--apikey", APIKEY, "--payload", "[1, 2]"],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=_environment(),
            )
    text = refused.stderr.decode()
    assert refused.returncode == 1
    assert text.count("\n") == 1
    assert text.startswith("trio-realtime send: ")
    assert "HTTP 401: Unauthorized" in text
    assert SECRET_MARKER not in text
    assert usage.returncode == 2
    assert "JSON object" in usage.stderr.decode()
