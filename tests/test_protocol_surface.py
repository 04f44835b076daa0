"""The public surface of ``trio_realtime.protocol`` and the wall around it (STYLE.md 1, 13).

DESIGN.md section 2 lists the names the protocol layer owes its users; ``__all__`` must list
exactly the public names, in the order ruff's RUF022 keeps (isort style: SCREAMING_CASE, then
CamelCase, then the rest, each alphabetical).

The purity test imports the protocol layer in a fresh interpreter, exactly as a user would
(``import trio_realtime.protocol``), and checks that nothing that does I/O, concurrency or clock
reading came with it. The package ``__init__`` imports the runtime names lazily, so that import
loads the exceptions and the protocol modules only.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import trio_realtime
from trio_realtime import protocol

DESIGN_NAMES = [
    "Frame",
    "realtime_topic",
    "ref_counter",
    "next_ref",
    "join_frame",
    "leave_frame",
    "heartbeat_frame",
    "broadcast_frame",
    "presence_track_frame",
    "presence_untrack_frame",
    "access_token_frame",
    "encode",
    "parse_frame",
    "event_kind",
    "EventKind",
    "ProtocolError",
]

# Positional parameters as DESIGN.md section 2 writes each signature.
DESIGN_SIGNATURES = {
    "realtime_topic": ["topic"],
    "next_ref": ["counter"],
    "join_frame": ["ref", "topic", "config", "bindings", "access_token"],
    "leave_frame": ["ref", "join_ref", "topic"],
    "heartbeat_frame": ["ref"],
    "broadcast_frame": ["ref", "join_ref", "topic", "event", "payload"],
    "presence_track_frame": ["ref", "join_ref", "topic", "state"],
    "presence_untrack_frame": ["ref", "join_ref", "topic"],
    "access_token_frame": ["ref", "join_ref", "topic", "token"],
    "encode": ["frame", "vsn"],
    "parse_frame": ["data", "vsn"],
    "event_kind": ["frame"],
}

# The modules that make up the protocol layer (trio_realtime.protocol and what it imports, plus
# the URL helpers, which are pure as well).
PROTOCOL_MODULES = [
    "trio_realtime.protocol",
    "trio_realtime._exceptions",
    "trio_realtime._frames",
    "trio_realtime._serializer",
    "trio_realtime._presence",
    "trio_realtime._postgres",
    "trio_realtime._postgres_filters",
    "trio_realtime._url",
    "trio_realtime._public",
    "trio_realtime._events",
    "trio_realtime._session",
    "trio_realtime._session_events",
]

# Nothing that does I/O, runs tasks or threads, or talks to the network may come with them.
FORBIDDEN_MODULES = [
    "trio",
    "trio_websocket",
    "websockets",
    "wsproto",
    "h11",
    "asyncio",
    "socket",
    "ssl",
    "select",
    "selectors",
    "threading",
    "concurrent",
    "subprocess",
]

# What the protocol modules may import at all.
ALLOWED_IMPORTS = {
    "__future__",
    "collections",
    "collections.abc",
    "contextlib",
    "copy",
    "dataclasses",
    "enum",
    "math",
    "orjson",
    "re",
    "typing",
    "urllib.parse",
}


def _ruf022_key(name: str) -> tuple[int, str]:
    if name.isupper():
        return (0, name)
    if name[:1].isupper():
        return (1, name)
    return (2, name)


def test_design_names_exist() -> None:
    """STYLE 13: every name DESIGN.md section 2 lists is in ``trio_realtime.protocol``."""
    for name in DESIGN_NAMES:
        assert hasattr(protocol, name), name
        assert name in protocol.__all__, name
    assert protocol.ProtocolError is trio_realtime.ProtocolError


def test_design_signatures() -> None:
    """STYLE 13: the builders take their arguments in the order DESIGN.md writes them."""
    for name, expected in DESIGN_SIGNATURES.items():
        parameters = [
            parameter.name
            for parameter in inspect.signature(getattr(protocol, name)).parameters.values()
            if parameter.kind is not inspect.Parameter.KEYWORD_ONLY
        ]
        assert parameters == expected, name
    defaults = inspect.signature(protocol.join_frame).parameters
    assert defaults["access_token"].default is None
    assert inspect.signature(protocol.encode).parameters["vsn"].default == "1.0.0"
    assert inspect.signature(protocol.parse_frame).parameters["vsn"].default == "1.0.0"


def test_event_kind_has_the_ten_members() -> None:
    """SR-10: ``EventKind`` has exactly the ten members of DESIGN.md."""
    assert [member.name for member in protocol.EventKind] == [
        "PHX_REPLY",
        "PHX_CLOSE",
        "PHX_ERROR",
        "POSTGRES_CHANGES",
        "BROADCAST",
        "PRESENCE_STATE",
        "PRESENCE_DIFF",
        "SYSTEM",
        "HEARTBEAT_REPLY",
        "UNKNOWN",
    ]


def test_frame_fields() -> None:
    """STYLE 3: ``Frame`` is a dataclass with ``topic, event, payload, ref, join_ref``."""
    assert dataclasses.is_dataclass(protocol.Frame)
    assert [field.name for field in dataclasses.fields(protocol.Frame)] == [
        "topic",
        "event",
        "payload",
        "ref",
        "join_ref",
    ]


def test_all_is_sorted_and_matches_the_public_names() -> None:
    """STYLE 13: ``__all__`` is sorted (RUF022 order) and lists exactly the public names."""
    assert protocol.__all__ == sorted(protocol.__all__, key=_ruf022_key)
    assert len(set(protocol.__all__)) == len(protocol.__all__)
    public = {name for name in vars(protocol) if not name.startswith("_")}
    assert set(protocol.__all__) == public
    for name in protocol.__all__:
        assert getattr(protocol, name) is not None


def test_protocol_import_pulls_in_no_io_concurrency_or_runtime() -> None:
    """STYLE 1: importing the protocol layer imports no trio, websockets, asyncio, socket,
    ssl or threading (checked in a fresh interpreter)."""
    script = """
import json, sys
before = set(sys.modules)
import trio_realtime.protocol
import trio_realtime._url
print(json.dumps(sorted(set(sys.modules) - before)))
"""
    result = subprocess.run(
        [sys.executable, "-I", "-c", script], capture_output=True, text=True, check=True
    )
    imported: list[str] = json.loads(result.stdout)
    for module in PROTOCOL_MODULES:
        assert module in imported
    leaked = [
        name
        for name in imported
        if name.split(".")[0] in FORBIDDEN_MODULES or name.startswith("trio_realtime.testing")
    ]
    assert leaked == []
    own = sorted(name for name in imported if name.startswith("trio_realtime."))
    assert own == sorted(PROTOCOL_MODULES)


def _module_path(name: str) -> Path:
    return Path(trio_realtime.__file__).parent / (name.rpartition(".")[2] + ".py")


def test_protocol_modules_import_only_pure_modules() -> None:
    """STYLE 1: the protocol modules import only pure stdlib modules, orjson and each other."""
    own = {name.rpartition(".")[2] for name in PROTOCOL_MODULES}
    for name in PROTOCOL_MODULES:
        tree = ast.parse(_module_path(name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name in ALLOWED_IMPORTS, (name, alias.name)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    assert node.module in own, (name, node.module)
                else:
                    assert node.module in ALLOWED_IMPORTS, (name, node.module)


def test_protocol_modules_read_no_clock() -> None:
    """STYLE 1, 2: no clock is read in the protocol layer; time is the driver's job."""
    clocks = ("time", "monotonic", "perf_counter", "now", "utcnow", "today", "sleep")
    for name in PROTOCOL_MODULES:
        source = _module_path(name).read_text()
        for pattern in (r"\btime\.\w", r"\bdatetime\.(now|utcnow|today)", r"\bdate\.today"):
            assert re.search(pattern, source) is None, (name, pattern)
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                assert node.attr not in clocks, (name, node.attr)
            elif isinstance(node, ast.Name):
                assert node.id not in ("time", "datetime", "monotonic"), (name, node.id)
