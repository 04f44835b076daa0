"""Shared fixtures.

Every test runs with the ``trio_realtime`` loggers at DEBUG, and afterwards checks that no log
record mentions a secret (SE-01): test apikeys and tokens all contain ``SECRET``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

SECRET_MARKER = "SECRET"
APIKEY = "anon-SECRET-apikey"
TOKEN = "user-SECRET-token"


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def _no_secrets_in_logs() -> Iterator[None]:
    """SE-01: apikeys and tokens never appear in any log record of any test."""
    collector = _Collector()
    root = logging.getLogger("trio_realtime")
    previous = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(collector)
    try:
        yield
    finally:
        root.removeHandler(collector)
        root.setLevel(previous)
    leaks = []
    for record in collector.records:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += " " + repr(record.exc_info[1])
        if SECRET_MARKER in text:
            leaks.append(text)
    assert not leaks, f"secrets in log records: {leaks[:3]}"
