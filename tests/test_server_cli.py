"""CLI-02 (serve), RS-15: ``trio-realtime serve`` runs the local server until interrupted."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys

import pytest
import trio
from server_support import APIKEY, RawClient, obj

from trio_realtime._cli import build_parser, main
from trio_realtime._transport import TransportOptions
from trio_realtime._url import websocket_url
from trio_realtime._ws_sansio import connect_sansio
from trio_realtime.protocol import channel_config, presence_track_frame


async def test_cli02_serve_prints_the_url_and_exits_cleanly_on_sigint(
    nursery: trio.Nursery,
) -> None:
    """CLI-02: ``python -m trio_realtime serve --port 0`` prints its URL, serves, exits 0."""
    command = [sys.executable, "-m", "trio_realtime", "serve", "--port", "0"]
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        output = b""
        with trio.fail_after(30):
            while b"\n" not in output:
                chunk = await process.stdout.receive_some(4096)
                assert chunk, f"serve exited early: {output!r}"
                output += chunk
        match = re.search(rb"http://127\.0\.0\.1:(\d+)", output)
        assert match is not None, output
        url = match.group(0).decode()

        endpoint = websocket_url(url, apikey=APIKEY, vsn="2.0.0")
        client = RawClient(await connect_sansio(endpoint, TransportOptions(), nursery), "2.0.0")
        reply = await client.heartbeat()
        assert (reply.topic, reply.event) == ("phoenix", "phx_reply")
        await client.aclose()

        process.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()


def test_cli02_serve_reports_a_busy_port(capsys: pytest.CaptureFixture[str]) -> None:
    """CLI-02: a port that cannot be bound is reported on stderr with exit status 1."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_cli02_parser_structure() -> None:
    """CLI-02: a subcommand is required; ``serve`` has host, port and apikey options."""
    parser = build_parser()
    with pytest.raises(SystemExit) as caught:
        parser.parse_args([])
    assert caught.value.code == 2
    args = parser.parse_args(["serve", "--port", "0", "--apikey", "k"])
    assert (args.command, args.host, args.port, args.apikey) == ("serve", "127.0.0.1", 0, "k")
    assert parser.parse_args(["serve"]).port == 4000


async def test_rs15_serve_rate_limits_applies_the_hosted_limits(nursery: trio.Nursery) -> None:
    """RS-15: ``serve --rate-limits`` applies the hosted limits: the sixth presence message of a
    channel within 30 s closes it with ``Client presence rate limit exceeded``."""
    command = [sys.executable, "-m", "trio_realtime", "serve", "--port", "0", "--rate-limits"]
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        output = b""
        with trio.fail_after(30):
            while b"\n" not in output:
                chunk = await process.stdout.receive_some(4096)
                assert chunk, f"serve exited early: {output!r}"
                output += chunk
            match = re.search(rb"http://127\.0\.0\.1:(\d+)", output)
            assert match is not None, output
            endpoint = websocket_url(match.group(0).decode(), apikey=APIKEY, vsn="1.0.0")
            client = RawClient(await connect_sansio(endpoint, TransportOptions(), nursery), "1.0.0")
            joined = await client.join("room", config=channel_config(presence_key="me"))
            for number in range(6):
                await client.send(
                    presence_track_frame(client.next_ref(), joined.ref, "room", {"n": number})
                )
            system = await client.receive_event("system")
            assert obj(system.payload)["message"] == "Client presence rate limit exceeded"
            await client.aclose()
        process.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()
