"""Ctrl-C and interpreter exit with the blocking interface (SY-04), each in a subprocess.

Each script runs the local server in a thread of its own, prints ``waiting`` just before it
blocks, and prints one JSON line of findings at the end. The test then interrupts it: with
``signal.raise_signal(SIGINT)`` from a helper thread of the script (the handler still runs in
the main thread, which must notice while it is blocked), or with a SIGINT from outside, as a
terminal's Ctrl-C does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sync_support import WAIT, time_limit

TESTS = Path(__file__).resolve().parent

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="POSIX signals; Windows has no SIGINT for a subprocess"
)

PRELUDE = f"""
import json, signal, sys, threading
sys.path.insert(0, {str(TESTS)!r})
from sync_support import WAIT, ServerThread
from trio_realtime.sync import connect

def helper():
    # Raise SIGINT in this process from a helper thread once the test says "go".
    if sys.stdin.readline().strip() == "go":
        signal.raise_signal(signal.SIGINT)

threading.Thread(target=helper, daemon=True).start()

def workers():
    return [t.name for t in threading.enumerate() if t.name == "trio_realtime.sync"]
"""

RECEIVE = """
result = {}
with ServerThread() as server:
    try:
        with connect(server.url, apikey="anon-key") as client:
            channel = client.channel("room:ctrl-c")
            messages = channel.broadcasts()
            with channel, messages:
                (connection,) = server.connections()
                print("waiting", flush=True)
                for message in messages:
                    result["unexpected"] = repr(message)
    except KeyboardInterrupt:
        result["interrupted"] = True
    result["close_code"] = server.wait_finished(connection)
    result["joined"] = server.run_sync(lambda: server.server.statistics().channels_joined)
    result["workers"] = workers()
print(json.dumps(result), flush=True)
"""

JOIN = """
result = {}
with ServerThread() as server:
    try:
        with connect(server.url, apikey="anon-key", timeout=30) as client:
            (connection,) = server.connections()
            server.run_sync(setattr, server.server, "reply_delay", 2 * WAIT)
            channel = client.channel("room:held")
            print("waiting", flush=True)
            channel.join()
            result["unexpected"] = "joined"
    except KeyboardInterrupt:
        result["interrupted"] = True
        result["state"] = channel.state.value
    result["close_code"] = server.wait_finished(connection)
    result["workers"] = workers()
print(json.dumps(result), flush=True)
"""

FORGOTTEN = """
import atexit
server = ServerThread().__enter__()
client = connect(server.url, apikey="anon-key")
channel = client.channel("room:forgotten")
channel.join()
(connection,) = server.connections()

def report():
    # atexit runs once the interpreter has joined the non-daemon threads: the blocking client
    # closed itself when the main thread ended.
    result = {"close_code": server.wait_finished(connection), "workers": workers()}
    print(json.dumps(result), flush=True)

atexit.register(report)
print("waiting", flush=True)
"""


FORK = """
import os
with ServerThread() as server, connect(server.url, apikey="anon-key") as client:
    print("waiting", flush=True)
    child = os.fork()
    if child == 0:
        try:
            client.statistics()
            code = 1
        except RuntimeError as exc:
            code = 0 if "forked" in str(exc) else 2
        client.close()  # the parent's client: nothing to do in the child
        os._exit(code)
    _, status = os.waitpid(child, 0)
    result = {"child": os.waitstatus_to_exitcode(status), "parent": client.statistics().connected}
result["workers"] = workers()
print(json.dumps(result), flush=True)
"""


@pytest.fixture(autouse=True)
def _limit() -> Iterator[None]:
    with time_limit(4 * WAIT):
        yield


def run_script(body: str, *, interrupt: str | None) -> tuple[int, dict[str, Any]]:
    """Run PRELUDE + ``body``; once it prints ``waiting``, interrupt it as asked (``"thread"``:
    raise_signal in its helper thread; ``"kill"``: SIGINT from outside). Return its exit code
    and its JSON findings."""
    process = subprocess.Popen(
        [sys.executable, "-c", PRELUDE + body],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdin is not None
        first = process.stdout.readline()
        assert first == "waiting\n", first + (process.stderr.read() if process.stderr else "")
        if interrupt == "thread":
            process.stdin.write("go\n")
            process.stdin.flush()
        elif interrupt == "kill":
            process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=3 * WAIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    lines = out.strip().splitlines()
    assert lines, err
    return process.returncode, json.loads(lines[-1])


@pytest.mark.parametrize("interrupt", ["thread", "kill"])
def test_sy04_ctrl_c_interrupts_a_blocked_iteration_and_closes_cleanly(interrupt: str) -> None:
    """SY-04: Ctrl-C while ``for message in messages`` blocks raises KeyboardInterrupt there;
    the with blocks leave the channel and close with 1000; no worker thread is left."""
    code, result = run_script(RECEIVE, interrupt=interrupt)
    assert code == 0
    assert result == {"interrupted": True, "close_code": 1000, "joined": 0, "workers": []}


def test_sy04_ctrl_c_cancels_a_pending_join() -> None:
    """SY-04: Ctrl-C while join() waits for a held-back reply cancels the join (the channel
    ends closed, as with a cancelled async join) and the client still closes with 1000."""
    code, result = run_script(JOIN, interrupt="thread")
    assert code == 0
    assert result == {"interrupted": True, "state": "closed", "close_code": 1000, "workers": []}


def test_sy04_a_client_never_closed_does_not_keep_the_interpreter_alive() -> None:
    """SY-04: a client opened in the main thread and never closed closes itself (with 1000)
    when the main thread ends, so that the process exits."""
    code, result = run_script(FORGOTTEN, interrupt=None)
    assert code == 0
    assert result == {"close_code": 1000, "workers": []}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_sy04_a_forked_child_is_told_to_open_its_own_client() -> None:
    """SY-04: in a child forked after connect() (a pre-forking web server), a call raises
    RuntimeError at once instead of waiting for a thread the child does not have; the
    parent's client is unaffected."""
    code, result = run_script(FORK, interrupt=None)
    assert code == 0
    assert result == {"child": 0, "parent": True, "workers": []}
