"""realtime-js on node, for the comparison rows: installed into a temporary folder per run.

``@supabase/realtime-js`` and ``ws`` (its WebSocket transport on node) are never dependencies
of this project: :func:`node_runner` installs them with ``npm`` into a fresh temporary folder,
copies ``realtime_js_worker.cjs`` beside them, and removes the folder when the suite ends. When
``node`` or ``npm`` is missing, or the install fails, it yields ``None`` and a note saying why,
and the realtime-js rows are left out. :func:`running_node_peer` runs ``peer_node.cjs`` from
the same folder: the peer of the send and connection measurements.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ._common import BENCH_DIR, JSON, WorkerError

REALTIME_JS_PACKAGES = ("@supabase/realtime-js@2.119.1", "ws@8")
WORKER = "realtime_js_worker.cjs"
PEER = "peer_node.cjs"


@dataclass
class NodeRunner:
    """Runs the realtime-js worker in its temporary folder."""

    node: str
    folder: Path
    version: str

    def run(self, args: Sequence[str], *, cpu: int | None, timeout: float = 180.0) -> JSON:
        """Run ``node realtime_js_worker.cjs <args>`` (pinned to ``cpu``); return its JSON."""
        command = [self.node, "--expose-gc", str(self.folder / WORKER), *args]
        if cpu is not None and shutil.which("taskset"):
            command = ["taskset", "-c", str(cpu), *command]
        started = time.monotonic()
        try:
            done = subprocess.run(
                command,
                cwd=self.folder,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise WorkerError(f"realtime-js {' '.join(args)}: timed out") from exc
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            tail = (done.stderr or done.stdout).strip().splitlines()[-15:]
            raise WorkerError(
                f"realtime-js {' '.join(args)}: exit {done.returncode}\n" + "\n".join(tail)
            )
        result: JSON = json.loads(lines[-1])
        result.setdefault("wall_s", time.monotonic() - started)
        return result


@contextlib.contextmanager
def node_runner(enabled: bool) -> Iterator[tuple[NodeRunner | None, str]]:
    """Yield a runner (or ``None``) and a note for the report."""
    if not enabled:
        yield None, "realtime-js: skipped (--no-realtime-js)"
        return
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        yield None, "realtime-js: skipped (node and npm are needed)"
        return
    with tempfile.TemporaryDirectory(prefix="trio-realtime-bench-js-") as tmp:
        folder = Path(tmp)
        command = [npm, "install", "--no-save", "--no-audit", "--no-fund", "--silent"]
        try:
            done = subprocess.run(
                [*command, *REALTIME_JS_PACKAGES],
                cwd=folder,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
        except subprocess.TimeoutExpired:
            yield None, "realtime-js: skipped (npm install timed out)"
            return
        if done.returncode != 0:
            tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            yield None, f"realtime-js: skipped (npm install failed: {tail})"
            return
        shutil.copy(BENCH_DIR / WORKER, folder / WORKER)
        package = folder / "node_modules" / "@supabase" / "realtime-js" / "package.json"
        version = json.loads(package.read_text(encoding="utf-8"))["version"]
        node_version = subprocess.run(
            [node, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
        yield (
            NodeRunner(node, folder, version),
            f"realtime-js {version} on node {node_version}, installed in a temporary folder",
        )


@contextlib.contextmanager
def running_node_peer(runner: NodeRunner, cpu: int | None) -> Iterator[int]:
    """Start ``peer_node.cjs`` (node ``ws``, replies ok to every push); yield its port."""
    shutil.copy(BENCH_DIR / PEER, runner.folder / PEER)
    command = [runner.node, str(runner.folder / PEER), "--port", "0"]
    if cpu is not None and shutil.which("taskset"):
        command = ["taskset", "-c", str(cpu), *command]
    process = subprocess.Popen(
        command, cwd=runner.folder, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"the node peer did not start: {line!r}")
        yield int(line.split()[1])
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
