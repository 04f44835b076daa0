"""CLI-01, CLI-02 and RS-12: ``trio-realtime demo``, ``listen``, ``send`` and the parser.

The commands run as real subprocesses (``python -m trio_realtime``) against a local server that
this test runs on a loopback port. Nothing sleeps: each step waits for the line it needs on the
child's stdout, with ``trio.fail_after`` only as a guard against a hang. (``serve`` has its own
tests in ``test_server_cli.py``.)
"""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
import trio.testing
from _realtime import connect
from conftest import APIKEY, SECRET_MARKER

from trio_realtime import (
    Broadcast,
    ChannelClosed,
    ConnectionClosed,
    RealtimeConnectionError,
    Transport,
    TransportOptions,
)
from trio_realtime._cli import _parse, build_parser, main
from trio_realtime._cli_common import Target, leaf, resolve_target
from trio_realtime._cli_listen import PostgresSpec, listen_session, parse_postgres_spec
from trio_realtime._cli_output import Line, Printer, describe, use_colour
from trio_realtime._url import Endpoint
from trio_realtime.testing import RealtimeServer, serve_realtime

CLI = (sys.executable, "-m", "trio_realtime")
GUARD = 60  # seconds; only a guard against a hang, never waited for


def _environment(**extra: str) -> dict[str, str]:
    """The child's environment: ours, without the variables the CLI reads, plus ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("SUPABASE_URL", "SUPABASE_ANON_KEY", "NO_COLOR")
    }
    env.update(extra)
    return env


class Lines:
    """Reads a child's stdout line by line, without ever sleeping."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""
        self.seen: list[str] = []

    async def next(self) -> str:
        """Return the next line; fail if the stream ends first."""
        while b"\n" not in self._buffer:
            chunk = await self._stream.receive_some(65536)
            assert chunk, f"stdout ended; lines so far: {self.seen}"
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        text = line.decode()
        self.seen.append(text)
        return text

    async def json_until(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Parse lines as JSON objects until one satisfies ``predicate``; return it."""
        while True:
            record = orjson.loads(await self.next())
            assert isinstance(record, dict)
            assert isinstance(record["type"], str)
            assert isinstance(record["time"], str)
            if predicate(record):
                return record


async def _read_all(stream: trio.abc.ReceiveStream | None) -> bytes:
    assert stream is not None
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


@asynccontextmanager
async def _child(args: list[str], env: Mapping[str, str]) -> AsyncIterator[trio.Process]:
    """Run the CLI with ``args``; kill it on the way out if it is still running."""
    process = await trio.lowlevel.open_process(
        [*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                await pipe.aclose()


async def _run(args: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(GUARD):
        return await trio.run_process(
            [*CLI, *args], capture_stdout=True, capture_stderr=True, check=False, env=env
        )


def _assert_one_clean_line(stderr: bytes, command: str) -> str:
    """stderr is one line from ``command``, without a traceback or a secret; return it."""
    text = stderr.decode()
    assert text.endswith("\n"), text
    assert text.count("\n") == 1, text
    assert text.startswith(f"trio-realtime {command}: "), text
    assert "Traceback" not in text
    assert SECRET_MARKER not in text
    return text.strip()


# ---------------------------------------------------------------------------------------------
# CLI-01: the demo


@pytest.mark.parametrize("vsn", ["1.0.0", "2.0.0"])
async def test_cli01_demo_runs_end_to_end_and_exits_0(vsn: str) -> None:
    """CLI-01: ``python -m trio_realtime demo`` prints the whole story, in order, and exits 0."""
    result = await _run(["demo", "--vsn", vsn], _environment())
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b""
    lines = result.stdout.decode().splitlines()
    # Every line: seconds since the start, who, what.
    for line in lines:
        assert re.match(r"^ *\d+\.\d{3}s  (server|alice|bob|demo) +\S", line), line
    converted = (
        '{"id":42,"body":"hello from Postgres","urgent":true,"meta":{"tags":["demo"]},'
        '"created_at":"2025-01-31T12:30:00"}'
    )
    story = [
        "server listening on http://127.0.0.1:",
        f"(loopback, vsn {vsn})",
        "alice  connected, joined realtime:room:demo",
        "alice  tracks presence",
        "bob    connected, joined realtime:room:demo",
        'bob    tracks presence {"status":"online"}; online: alice, bob',
        'alice  sees bob join (presence): [{"status":"online"}]',
        'alice  -> broadcast "chat" {"text":"hi bob"} (acknowledged)',
        'bob    <- broadcast "chat" {"text":"hi bob"}',
        'bob    -> broadcast "chat" {"text":"hi alice"} (acknowledged)',
        'alice  <- broadcast "chat" {"text":"hi alice"}',
        "server INSERT into public.messages (id int4, body text, urgent bool, meta jsonb",
        '"id":"42"',
        "alice  <- INSERT public.messages, converted:",
        converted,
        "bob    <- INSERT public.messages, converted:",
        converted,
        "bob    leaves the channel and disconnects",
        "alice  sees bob leave (presence); online now: alice",
        "demo   done in",
    ]
    text = "\n".join(lines)
    position = 0
    for phrase in story:
        found = text.find(phrase, position)
        assert found >= 0, f"{phrase!r} missing (or out of order) in:\n{text}"
        position = found + len(phrase)


# ---------------------------------------------------------------------------------------------
# CLI-02: listen and send against the local server


async def test_cli02_listen_json_shows_what_send_sends_and_stops_on_sigint() -> None:
    """CLI-02: ``listen --json`` prints one JSON object per line (a sent broadcast, a row change,
    a binary broadcast, a disconnection) and exits 0 on SIGINT; ``send`` waits for the ack."""
    async with serve_realtime(apikey=APIKEY) as server:
        listen = [
            "listen",
            server.url,
            "--channel",
            "room1",
            "--json",
            "--vsn",
            "2.0.0",
            "--presence",
            "--postgres",
            "INSERT:public.messages",
        ]
        async with _child(listen, _environment(SUPABASE_ANON_KEY=APIKEY)) as process:
            assert process.stdout is not None
            lines = Lines(process.stdout)
            with trio.fail_after(GUARD):
                connected = await lines.json_until(lambda r: r["type"] == "connection")
                assert connected["event"] == "connected"
                assert connected["url"].startswith(f"ws://127.0.0.1:{server.port}/realtime/v1/")
                joined = await lines.json_until(lambda r: r["type"] == "channel")
                assert joined == joined | {"event": "joined", "topic": "realtime:room1"}
                await lines.json_until(
                    lambda r: r["type"] == "system" and r["extension"] == "postgres_changes"
                )

                # send takes the URL and the key from the environment.
                env = _environment(SUPABASE_URL=server.url, SUPABASE_ANON_KEY=APIKEY)
                payload = '{"text":"hello","n":[1,2.5,null,true]}'
                sent = await _run(
                    ["send", "--channel", "room1", "--event", "chat", "--payload", payload], env
                )
                assert sent.returncode == 0, sent.stderr.decode()
                assert sent.stdout.decode() == "sent 'chat' to realtime:room1 (acknowledged)\n"
                broadcast = await lines.json_until(lambda r: r["type"] == "broadcast")
                assert broadcast == broadcast | {
                    "topic": "realtime:room1",
                    "event": "chat",
                    "payload": {"text": "hello", "n": [1, 2.5, None, True]},
                }

                await server.emit_postgres_change(
                    "public",
                    "messages",
                    "INSERT",
                    record={"id": "7", "done": "f", "tags": '["a"]'},
                    columns=[
                        {"name": "id", "type": "int4"},
                        {"name": "done", "type": "bool"},
                        {"name": "tags", "type": "jsonb"},
                    ],
                )
                change = await lines.json_until(lambda r: r["type"] == "postgres_changes")
                assert change["event_type"] == "INSERT"
                assert change["new"] == {"id": 7, "done": False, "tags": ["a"]}

                await server.broadcast("room1", "blob", b"\x00\x01\xff")
                binary = await lines.json_until(lambda r: r["type"] == "broadcast")
                assert binary["payload"] == "AAH/"
                assert binary["payload_encoding"] == "base64"

                await server.drop_connections()
                lost = await lines.json_until(lambda r: r["type"] == "connection")
                assert lost == lost | {"event": "disconnected", "code": 1006}
                again = await lines.json_until(lambda r: r["type"] == "connection")
                assert again == again | {"event": "reconnecting", "attempt": 1}

                process.send_signal(signal.SIGINT)
                assert await process.wait() == 0
                rest = await _read_all(process.stdout)
                stderr = await _read_all(process.stderr)
    for line in rest.decode().splitlines():
        assert isinstance(orjson.loads(line), dict)
    output = "\n".join(lines.seen) + rest.decode() + stderr.decode()
    assert "Traceback" not in output
    assert SECRET_MARKER not in output
    # RS-12: the drop and the reconnect are the CLI's own lines; the library's warnings about
    # them are not repeated on stderr.
    assert "WARNING" not in stderr.decode()


async def test_cli02_listen_readable_output_has_no_colour_in_a_pipe() -> None:
    """CLI-02: without ``--json``, lines are readable, and plain when stdout is not a terminal."""
    async with serve_realtime() as server:
        listen = ["listen", server.url, "--apikey", APIKEY, "--channel", "room2"]
        async with _child(listen, _environment()) as process:
            assert process.stdout is not None
            lines = Lines(process.stdout)
            with trio.fail_after(GUARD):
                while " joined " not in await lines.next():
                    pass
                await server.broadcast("room2", "cursor", {"x": 1})
                while " broadcast " not in (line := await lines.next()):
                    pass
                assert line.endswith(' broadcast    cursor {"x":1}')
                process.send_signal(signal.SIGTERM)
                assert await process.wait() == 0
    output = "\n".join(lines.seen)
    assert "\x1b[" not in output
    assert re.match(r"^\d\d:\d\d:\d\d\.\d{3} connected    ws://127\.0\.0\.1:", lines.seen[0])
    assert "apikey=<redacted>" in lines.seen[0]
    assert SECRET_MARKER not in output


@pytest.mark.parametrize("command", ["listen", "send"])
async def test_cli02_refused_connection_is_one_clean_line(command: str) -> None:
    """CLI-02: a refused connection: exit 1, one line on stderr, no traceback, no apikey."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound but not listening: connections are refused
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        args = [command, url, "--apikey", APIKEY, "--channel", "room1"]
        if command == "send":
            args += ["--event", "e", "--payload", "{}"]
        result = await _run(args, _environment())
    assert result.returncode == 1
    line = _assert_one_clean_line(result.stderr, command)
    assert "cannot connect to 127.0.0.1:" in line
    assert result.stdout == b""


async def test_cli02_unauthorized_is_one_clean_line() -> None:
    """CLI-02: a key the server refuses (HTTP 401): exit 1, the server's words, no apikey."""
    async with serve_realtime(apikey=APIKEY) as server:
        args = ["listen", server.url, "--apikey", "wrong-SECRET-key", "--channel", "room1"]
        result = await _run(args, _environment())
    assert result.returncode == 1
    line = _assert_one_clean_line(result.stderr, "listen")
    assert "HTTP 401" in line
    assert "check the apikey" in line
    assert "apikey=<redacted>" in line


async def test_cli02_refused_join_is_one_clean_line() -> None:
    """CLI-02: ``send`` to a channel whose join is refused: exit 1 with the server's reason."""
    async with serve_realtime() as server:
        server.reject_joins("locked", "Unauthorized: You do not have permissions")
        args = ["send", server.url, "--apikey", APIKEY, "--channel", "locked"]
        result = await _run([*args, "--event", "e", "--payload", "1", "--private"], _environment())
    assert result.returncode == 1
    line = _assert_one_clean_line(result.stderr, "send")
    assert "join of 'realtime:locked' refused: Unauthorized" in line


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com", "must start with http://, https://, ws:// or wss://"),
        ("http://", "has no host"),
        (f"http://[::1?apikey={APIKEY}", "invalid URL '<redacted>'"),
    ],
)
def test_cli02_a_url_that_cannot_work_is_a_usage_error(
    url: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """CLI-02: a bad URL gives exit status 2 and one line, before any connection."""
    assert main(["listen", url, "--apikey", APIKEY, "--channel", "x"]) == 2
    captured = capsys.readouterr()
    line = _assert_one_clean_line(captured.err.encode(), "listen")
    assert message in line
    assert captured.out == ""


def test_cli02_url_and_key_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """CLI-02: without a URL or key argument, SUPABASE_URL and SUPABASE_ANON_KEY are used."""
    monkeypatch.delenv("SUPABASE_URL", raising=False)
    monkeypatch.delenv("SUPABASE_ANON_KEY", raising=False)
    assert main(["listen", "--channel", "x"]) == 2
    assert "no URL: give one, or set SUPABASE_URL" in capsys.readouterr().err
    monkeypatch.setenv("SUPABASE_URL", "ftp://from-the-environment")
    assert main(["listen", "--channel", "x"]) == 2
    assert (
        "no apikey: pass --apikey, put it in the URL, or set SUPABASE_ANON_KEY"
        in capsys.readouterr().err
    )
    monkeypatch.setenv("SUPABASE_ANON_KEY", APIKEY)
    assert main(["send", "--channel", "x", "--event", "e", "--payload", "{}"]) == 2
    err = capsys.readouterr().err
    assert "URL 'ftp://from-the-environment' must start with" in err
    assert SECRET_MARKER not in err


def test_cli02_send_refuses_a_payload_that_is_not_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """CLI-02: ``--payload`` must be JSON; anything else is a usage error (status 2)."""
    args = ["send", "http://127.0.0.1:9", "--apikey", APIKEY, "--channel", "x", "--event", "e"]
    with pytest.raises(SystemExit) as caught:
        main([*args, "--payload", "{text: hi}"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "argument --payload: not valid JSON" in err
    assert "usage: trio-realtime send" in err


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("INSERT:public.messages", PostgresSpec("INSERT", "public", "messages", None)),
        ("update:todos", PostgresSpec("UPDATE", "public", "todos", None)),
        ("*:private.*", PostgresSpec("*", "private", None, None)),
        ("DELETE:public.t:id=eq.5", PostgresSpec("DELETE", "public", "t", "id=eq.5")),
        (
            "*:public.t:at=gt.2025-01-01T00:00:00",
            PostgresSpec("*", "public", "t", "at=gt.2025-01-01T00:00:00"),
        ),
    ],
)
def test_cli02_postgres_specs(text: str, spec: PostgresSpec) -> None:
    """CLI-02: ``--postgres EVENT:schema.table[:filter]``; the filter may contain colons."""
    assert parse_postgres_spec(text) == spec


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("INSERT", "expected EVENT:schema.table[:filter]"),
        ("INSERT:", "expected EVENT:schema.table[:filter]"),
        ("INSERT:.t", "expected EVENT:schema.table[:filter]"),
        ("TRUNCATE:public.t", "the event must be INSERT, UPDATE, DELETE or *"),
        ("*:public.*:id=eq.1", "a filter needs a table"),
        ("INSERT:public.t:id=fts.1", "Error parsing `filter` params"),
        ("INSERT:a.b.c", "expected EVENT:schema.table[:filter]"),
    ],
)
def test_cli02_bad_postgres_specs_are_usage_errors(
    text: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """CLI-02: a malformed ``--postgres`` is refused by the parser, saying what is wrong."""
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["listen", "--channel", "x", "--postgres", text])
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("command", ["demo", "listen", "send", "serve"])
def test_cli02_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """CLI-02: ``--help`` works for every subcommand, and the top level lists them all."""
    with pytest.raises(SystemExit) as caught:
        main([command, "--help"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: trio-realtime {command} ")
    with pytest.raises(SystemExit):
        main(["--help"])
    assert f"    {command} " in capsys.readouterr().out


def test_cli02_json_lines_render_bytes_as_base64() -> None:
    """CLI-02: a binary broadcast's payload is base64 text with a ``payload_encoding`` marker."""
    stream = io.StringIO()
    printer = Printer(stream, json_lines=True, colour=False)
    printer.show(describe(Broadcast("blob", b"\x00\xff", "realtime:x"), "realtime:x"))
    printer.show(describe(Broadcast("n", 2**70, "realtime:x"), "realtime:x"))
    first, second = (orjson.loads(line) for line in stream.getvalue().splitlines())
    assert first["payload"] == "AP8="
    assert first["payload_encoding"] == "base64"
    assert (first["type"], first["event"], first["topic"]) == ("broadcast", "blob", "realtime:x")
    assert second["payload"] == 2**70


def test_cli02_colour_only_on_a_terminal_and_without_no_color() -> None:
    """CLI-02: colour when stdout is a terminal and NO_COLOR is unset or empty."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert use_colour(Terminal(), {})
    assert use_colour(Terminal(), {"NO_COLOR": ""})
    assert not use_colour(Terminal(), {"NO_COLOR": "1"})
    assert not use_colour(io.StringIO(), {})


def test_cli02_readable_lines_escape_control_characters() -> None:
    """CLI-02: text from the server cannot send escape sequences to the terminal."""
    stream = io.StringIO()
    Printer(stream, json_lines=False, colour=True).show(
        Line("system", "system", "bad \x1b[2J\nnews", {}, "red")
    )
    text = stream.getvalue()
    assert "bad \\x1b[2J\\x0anews\n" in text
    assert text.count("\n") == 1
    assert "\x1b[31msystem" in text


# ---------------------------------------------------------------------------------------------
# RS-12: what a new user hit


async def test_rs12_a_short_apikey_is_redacted_only_where_it_is_the_value() -> None:
    """RS-12: ``--apikey 1`` is hidden in the URL's query, and ``127.0.0.1`` stays readable."""
    async with serve_realtime(apikey=APIKEY) as server:
        result = await _run(
            ["listen", server.url, "--apikey", "1", "--channel", "r"], _environment()
        )
    assert result.returncode == 1
    line = _assert_one_clean_line(result.stderr, "listen")
    assert f"ws://127.0.0.1:{server.port}/realtime/v1/websocket?apikey=<redacted>&vsn=1.0.0" in line
    assert "HTTP 401" in line
    assert "<redacted>27" not in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["listen", "--channel", ""], "--channel '': the topic is empty"),
        (["listen", "--channel", "realtime:"], "--channel 'realtime:': the topic is empty"),
        (["listen", "--channel", "x", "--event", ""], "--event: the event name is empty"),
        (
            ["send", "--channel", "x", "--event", "", "--payload", "1"],
            "--event: the event name is empty",
        ),
        (
            ["listen", "--channel", "x", "--vsn", "1.0.0", "ws://h/socket?vsn=2.0.0"],
            "vsn='1.0.0' contradicts vsn='2.0.0' in the URL",
        ),
        (
            ["listen", "--channel", "x", "--apikey", "other", f"ws://h/socket?apikey={APIKEY}"],
            "the apikey given differs from the apikey in the URL",
        ),
        (["listen", "--channel", "x", "--apikey", APIKEY, "ws://h/socket?vsn=3.0.0"], "vsn"),
    ],
)
def test_rs12_empty_names_and_contradictions_are_one_line_usage_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """RS-12, RS-08: an empty channel or event name, or an option that contradicts the URL, is
    exit 2 with one line and no traceback, before any connection."""
    if not any(arg.startswith("ws://") for arg in args):
        args = [*args, "ws://127.0.0.1:9/socket", "--apikey", APIKEY]
    assert main(args) == 2
    captured = capsys.readouterr()
    line = _assert_one_clean_line(captured.err.encode(), args[0])
    assert message in line
    assert captured.out == ""


def test_rs08_cli_takes_the_apikey_and_vsn_from_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """RS-08: ``listen "ws://.../websocket?apikey=...&vsn=2.0.0"`` needs no --apikey or --vsn."""
    monkeypatch.delenv("SUPABASE_ANON_KEY", raising=False)
    url = f"ws://127.0.0.1:9/socket/websocket?apikey={APIKEY}&vsn=2.0.0"
    target = resolve_target(build_parser().parse_args(["listen", url, "--channel", "x"]))
    assert (target.apikey, target.vsn) == (APIKEY, "2.0.0")
    monkeypatch.setenv("SUPABASE_ANON_KEY", "from-the-environment")
    target = resolve_target(build_parser().parse_args(["listen", url, "--channel", "x"]))
    assert target.apikey == APIKEY  # the URL is more specific than the environment


def test_rs12_verbose_works_after_the_subcommand() -> None:
    """RS-12: ``-v`` is accepted before and after the subcommand, and they add up."""
    args = _parse(["-v", "listen", "--channel", "x", "-vv"])
    assert (args.verbose, args.verbose_after) == (1, 2)


def test_rs12_an_unknown_option_shows_the_subcommands_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """RS-12: an unknown flag is reported with the usage of the subcommand it was given to."""
    with pytest.raises(SystemExit) as caught:
        main(["send", "--channel", "x", "--event", "e", "--payload", "1", "--bogus"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: trio-realtime send ")
    assert "trio-realtime send: error: unrecognized arguments: --bogus" in err


def test_rs12_payload_from_a_file_or_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """RS-12: ``--payload @FILE`` reads a file, ``--payload -`` reads stdin; bad input is a
    usage error that says where the JSON was."""
    big = {"rows": [{"n": n, "text": "x" * 50} for n in range(2000)]}
    path = tmp_path / "payload.json"
    path.write_bytes(orjson.dumps(big))
    base = ["send", "--channel", "x", "--event", "e", "--payload"]
    assert build_parser().parse_args([*base, f"@{path}"]).payload == big
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"from": "stdin"}')))
    assert build_parser().parse_args([*base, "-"]).payload == {"from": "stdin"}
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"{nope")))
    for payload, message in [
        ("-", "not valid JSON in stdin"),
        (f"@{tmp_path / 'missing.json'}", "cannot read"),
        ("@", "@ needs a file name"),
    ]:
        with pytest.raises(SystemExit) as caught:
            build_parser().parse_args([*base, payload])
        assert caught.value.code == 2
        assert message in capsys.readouterr().err


async def test_rs12_send_payload_from_stdin_reaches_a_subscriber() -> None:
    """RS-12: ``send --payload -`` sends what stdin holds."""
    async with serve_realtime() as server:
        async with connect(server) as client:
            channel = client.channel("room9")
            messages = channel.broadcasts("e")
            async with channel:
                args = ["send", server.url, "--apikey", APIKEY, "--channel", "room9", "--event"]
                with trio.fail_after(GUARD):
                    result = await trio.run_process(
                        [*CLI, *args, "e", "--payload", "-"],
                        stdin=b'{"text": "from stdin"}',
                        capture_stdout=True,
                        capture_stderr=True,
                        check=False,
                        env=_environment(),
                    )
                    assert result.returncode == 0, result.stderr.decode()
                    message = await messages.receive()
    assert message.payload == {"text": "from stdin"}


async def _listen_in_process(
    target: Target, stream: io.StringIO, *, task_status: trio.TaskStatus[None]
) -> None:
    printer = Printer(stream, json_lines=True, colour=False)
    task_status.started()
    await listen_session(target, printer, None, (), False)


def _json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


async def test_rs12_json_listen_reports_a_server_closed_channel_as_a_json_line(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RS-12: in ``--json`` mode, a channel the server closes is one JSON line (besides the
    system line before it), then listen ends with the error."""
    stream = io.StringIO()
    with trio.fail_after(10):
        async with serve_realtime() as server:
            target = Target(
                server.url, APIKEY, None, "1.0.0", "room", False, transport=server.memory_transport
            )
            with pytest.raises(BaseExceptionGroup) as caught:
                async with trio.open_nursery() as nursery:
                    await nursery.start(_listen_in_process, target, stream)
                    await server.wait_until_joined("room")
                    await trio.testing.wait_all_tasks_blocked()
                    await server.system_close("room", "Token has expired 3 seconds ago")
            assert isinstance(leaf(caught.value), ChannelClosed)
    records = _json_lines(stream)
    closed = [r for r in records if r["type"] == "channel" and r["event"] == "closed"]
    assert closed == [
        closed[0]
        | {
            "topic": "realtime:room",
            "reason": "Token has expired 3 seconds ago",
            "by_server": True,
        }
    ]
    system = [r for r in records if r["type"] == "system"]
    assert system[-1]["message"] == "Token has expired 3 seconds ago"


async def test_rs12_listen_max_attempts_gives_up(autojump_clock: trio.testing.MockClock) -> None:
    """RS-12: ``listen --max-attempts 2`` stops after two failed reconnects in a row."""
    stream = io.StringIO()
    args = build_parser().parse_args(
        ["listen", "http://h", "--channel", "r", "--max-attempts", "2"]
    )
    assert args.max_attempts == 2
    with trio.fail_after(60):
        async with serve_realtime() as server:
            gate = _Gate(server)
            target = Target(server.url, APIKEY, None, "1.0.0", "room", False, 2, gate)
            with pytest.raises(BaseExceptionGroup) as caught:
                async with trio.open_nursery() as nursery:
                    await nursery.start(_listen_in_process, target, stream)
                    await server.wait_until_joined("room")
                    gate.open = False
                    await server.drop_connections()
            assert isinstance(leaf(caught.value), ConnectionClosed)
    attempts = [r["attempt"] for r in _json_lines(stream) if r.get("event") == "reconnecting"]
    assert attempts == [1, 2]
    assert gate.refused == 2


class _Gate:
    """A transport factory that refuses connections (as a down server would) while closed."""

    def __init__(self, server: RealtimeServer) -> None:
        self.server = server
        self.open = True
        self.refused = 0

    async def __call__(
        self, endpoint: Endpoint, options: TransportOptions, nursery: trio.Nursery
    ) -> Transport:
        if not self.open:
            await trio.lowlevel.checkpoint()
            self.refused += 1
            raise RealtimeConnectionError("cannot connect: connection refused")
        return await self.server.memory_transport(endpoint, options, nursery)
