"""The wall around ``trio_realtime.testing``, and its public surface.

The local server must never use the client runtime (so it cannot agree with the client's bugs),
and the runtime must never use the server. Only the command line, which sits above both, may
import it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import trio_realtime
import trio_realtime.testing
from trio_realtime.testing import serve_realtime

PACKAGE = Path(trio_realtime.__file__).parent
RUNTIME = {"_client", "_channel", "_subscription", "_connection", "_events", "_auth"}
# What the server may use from the package: the protocol floors and the transports.
ALLOWED_FOR_TESTING = {
    "_exceptions",
    "_frames",
    "_postgres",
    "_postgres_filters",
    "_presence",
    "_public",
    "_serializer",
    "_transport",
    "_url",
    "_ws_sansio",
    "protocol",
}


def _package_imports(path: Path, package: str) -> set[str]:
    """Return the ``trio_realtime`` submodules ``path`` imports (first component only)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names = [module] if node.module else [f"{module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "trio_realtime" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_testing_imports_only_the_protocol_floors() -> None:
    """The server package imports protocol and transport modules, never the client runtime."""
    for path in sorted((PACKAGE / "testing").glob("*.py")):
        imported = _package_imports(path, "trio_realtime.testing") - {"testing"}
        assert imported <= ALLOWED_FOR_TESTING, (path.name, imported - ALLOWED_FOR_TESTING)


def test_nothing_but_the_cli_imports_testing() -> None:
    """No module of the package outside ``testing/`` imports it, except the command line's
    ``demo`` and ``serve``."""
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name in ("_cli_demo.py", "_cli_serve.py", "__main__.py"):
            continue
        assert "testing" not in _package_imports(path, "trio_realtime"), path.name


def test_importing_testing_loads_no_runtime_module() -> None:
    """At run time too: importing the server loads none of the client runtime's modules."""
    code = (
        "import sys, trio_realtime.testing; "
        "print(' '.join(m.split('.')[-1] for m in sys.modules if m.startswith('trio_realtime.')))"
    )
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True
        ).stdout.split()
    )
    assert not loaded & RUNTIME, loaded & RUNTIME


def test_public_surface() -> None:
    """``trio_realtime.testing`` exports exactly its documented names, sorted."""
    assert trio_realtime.testing.__all__ == [
        "ChannelAuthorization",
        "DatabaseSetupError",
        "DatabaseStatistics",
        "MemoryHTTPTransport",
        "PostgresCluster",
        "PostgresNotFound",
        "RateLimits",
        "RealtimeServer",
        "ServerConnection",
        "ServerStatistics",
        "TokenCheck",
        "make_token",
        "serve_realtime",
        "start_postgres",
    ]
    for name in trio_realtime.testing.__all__:
        assert getattr(trio_realtime.testing, name) is not None


async def test_an_exception_in_the_body_comes_out_unwrapped() -> None:
    """The caller's own exception leaves ``serve_realtime`` as is, not in an ExceptionGroup."""
    with pytest.raises(KeyError, match="mine"):
        async with serve_realtime():
            raise KeyError("mine")


async def test_invalid_settings_are_refused() -> None:
    """Settings that cannot work are refused before anything is bound."""
    with pytest.raises(ValueError, match="send_buffer"):
        async with serve_realtime(send_buffer=0):
            pass  # pragma: no cover
