"""Node and the official client, ``@supabase/realtime-js``, for tests that drive it.

:func:`realtime_js` finds ``node`` and ``npm`` and returns a :class:`NodeClient`: a folder
holding ``node_modules`` with ``@supabase/realtime-js`` (the version in
:data:`REALTIME_JS_VERSION`) and ``ws`` (node 20 has no global ``WebSocket``), and a way to run
a script there. The packages come from:

* the folder named by the environment variable :data:`MODULES_ENV` (``.ci/run`` prepares it),
  when it is set and holds them;
* otherwise one ``npm install`` per test session into a temporary folder, removed at exit.

Without node or npm, or when the install fails, the test is skipped with the reason; under CI
(the environment variable ``CI`` set) it fails instead, so that a missing dependency cannot pass
as a skip.

Scripts are CommonJS, run with the folder as working directory so that ``require`` finds the
packages. They report to the test on stdout, one JSON value per line.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import orjson
import pytest
import trio

REALTIME_JS_VERSION = "2.119.1"
"""The realtime-js release the tests drive (the one ``shared/vectors`` were recorded from)."""

PACKAGES = (f"@supabase/realtime-js@{REALTIME_JS_VERSION}", "ws@8")
"""What ``npm install`` brings: the client, and ``ws`` as its WebSocket on node 20."""

MODULES_ENV = "TRIO_REALTIME_NODE_MODULES"
"""Names a folder whose ``node_modules`` already holds :data:`PACKAGES`."""

INSTALL_TIMEOUT = 300.0
"""Seconds the one ``npm install`` of a session may take."""


@dataclass(frozen=True, slots=True)
class NodeResult:
    """What a finished script left.

    Attributes:
        returncode: The exit status.
        lines: Each stdout line decoded as JSON, in order (lines that are not JSON are kept
            as strings).
        stderr: Everything it wrote on stderr.
    """

    returncode: int
    lines: list[object]
    stderr: str


@dataclass(frozen=True, slots=True)
class NodeClient:
    """A node with realtime-js installed.

    Attributes:
        node: The ``node`` executable.
        folder: The folder whose ``node_modules`` holds the packages.
    """

    node: str
    folder: Path

    def script_path(self, name: str, source: str) -> Path:
        """Write ``source`` to ``name`` in the folder (so ``require`` finds the packages)."""
        path = self.folder / name
        path.write_text(source, encoding="utf-8")
        return path

    async def run(
        self, name: str, source: str, *args: str, env: dict[str, str] | None = None
    ) -> NodeResult:
        """Run ``source`` as ``name`` with ``args`` until it exits; the caller bounds the time.

        Cancelling it kills the process.
        """
        path = self.script_path(name, source)
        result = await trio.run_process(
            [self.node, str(path), *args],
            cwd=self.folder,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env={**os.environ, **(env or {})},
        )
        return NodeResult(
            result.returncode, _json_lines(result.stdout), result.stderr.decode(errors="replace")
        )

    @asynccontextmanager
    async def start(
        self, name: str, source: str, *args: str, env: dict[str, str] | None = None
    ) -> AsyncIterator[tuple[trio.Process, JSONLines]]:
        """Start ``source`` as ``name``; yield the process and a reader of its stdout lines.

        On exit the process is killed if it is still running, and waited for.
        """
        path = self.script_path(name, source)
        process = await trio.lowlevel.open_process(
            [self.node, str(path), *args],
            cwd=self.folder,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )
        assert process.stdout is not None
        try:
            yield process, JSONLines(process.stdout)
        finally:
            with trio.CancelScope(shield=True):
                if process.returncode is None:
                    process.kill()
                await process.wait()
                await process.stdout.aclose()


class JSONLines:
    """Reads a process's stdout one JSON line at a time."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def next(self) -> object:
        """Return the next line decoded as JSON (a string if it is not JSON).

        Raises:
            EOFError: the process closed its stdout first.
        """
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                if line.strip():
                    return _json_lines(line)[0]
                continue
            data = await self._stream.receive_some()
            if not data:
                raise EOFError("the process closed its stdout")
            self._buffer += data


def _json_lines(data: bytes) -> list[object]:
    lines: list[object] = []
    for line in data.decode(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            lines.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            lines.append(line)
    return lines


def _has_packages(folder: Path) -> bool:
    modules = folder / "node_modules"
    manifest = modules / "@supabase" / "realtime-js" / "package.json"
    if not manifest.is_file() or not (modules / "ws" / "package.json").is_file():
        return False
    version = orjson.loads(manifest.read_bytes()).get("version")
    return bool(version == REALTIME_JS_VERSION)


def install(folder: Path, npm: str) -> None:
    """Install :data:`PACKAGES` into ``folder`` with npm (what ``.ci/run`` does too).

    Raises:
        RuntimeError: with npm's output when the install fails.
    """
    folder.mkdir(parents=True, exist_ok=True)
    package = folder / "package.json"
    if not package.exists():
        package.write_text('{"name": "trio-realtime-node-tests", "private": true}\n')
    try:
        result = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", *PACKAGES],
            cwd=folder,
            capture_output=True,
            timeout=INSTALL_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"npm install did not finish within {INSTALL_TIMEOUT} s") from None
    if result.returncode != 0:
        output = (result.stdout + result.stderr).decode(errors="replace").strip()
        raise RuntimeError(f"npm install failed ({result.returncode}): {output[-2000:]}")


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"realtime-js tests must run under CI: {reason}", pytrace=False)
    pytest.skip(reason)


@functools.cache
def _prepare() -> NodeClient | str:
    """Find or install everything once per session; a string says why it is unavailable."""
    node = shutil.which("node")
    if node is None:
        return "node is not installed"
    prepared = os.environ.get(MODULES_ENV)
    if prepared:
        folder = Path(prepared)
        if _has_packages(folder):
            return NodeClient(node, folder)
        if os.environ.get("CI"):
            return f"{MODULES_ENV}={prepared} does not hold {' and '.join(PACKAGES)}"
    npm = shutil.which("npm")
    if npm is None:
        return "npm is not installed"
    folder = Path(tempfile.mkdtemp(prefix="trio-realtime-node-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    try:
        install(folder, npm)
    except RuntimeError as exc:
        return str(exc)
    return NodeClient(node, folder)


def realtime_js() -> NodeClient:
    """Return node with realtime-js; skip the test (fail it under CI) when it is unavailable."""
    prepared = _prepare()
    if isinstance(prepared, str):
        _unavailable(prepared)
    return prepared
