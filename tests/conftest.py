"""Shared fixtures.

Every test runs with the ``trio_realtime`` loggers, and those of the WebSocket packages under
it (``websockets``, ``trio-websocket``), at DEBUG, and afterwards checks that no log record
mentions a secret (SE-01): test apikeys and tokens all contain ``SECRET``. A record is checked
as a handler would write it: message, traceback (with chained exceptions and exception group
members) and stack. An exception that fails a test is checked the same way, so a secret in a
library error reaching pytest is reported as such.

Tests that measure something (recovery times, cancellation points...) put it in the
``figures`` fixture; the figures are printed in a section at the end of the run.

Every async test runs under a time limit: it fails after :data:`TEST_TIME_LIMIT` seconds of
trio's clock. Under ``autojump_clock``
that is virtual time, so a regression that leaves a periodic task running (a heartbeat or
retry loop that never stops) fails in milliseconds instead of spinning forever.

Hypothesis runs under the deterministic ``ci`` profile unless ``HYPOTHESIS_PROFILE`` names
another one (``fuzz``: see ``tests/_fuzzing.py`` and ``nox -s fuzz``).
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import traceback
from collections.abc import Awaitable, Callable, Generator, Iterator
from typing import Any

import pytest
import trio
import trustme
from hypothesis import HealthCheck, settings

SECRET_MARKER = "SECRET"
APIKEY = "anon-SECRET-apikey"
TOKEN = "user-SECRET-token"

LOGGERS = ("trio_realtime", "websockets", "trio-websocket")
"""Loggers captured at DEBUG in every test."""

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "fuzz",
    derandomize=False,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_FORMATTER = logging.Formatter("%(name)s %(levelname)s %(message)s")


def record_text(record: logging.LogRecord) -> str:
    """A record as a handler writes it: message, traceback (chains, group members), stack."""
    return _FORMATTER.format(record)


def exception_text(error: BaseException) -> str:
    """An exception as a traceback prints it, with its causes, contexts and group members."""
    return "".join(traceback.format_exception(error))


@pytest.fixture(autouse=True)
def _no_secrets_in_logs() -> Iterator[None]:
    """SE-01: apikeys and tokens never appear in any log record of any test."""
    collector = _Collector()
    root = logging.getLogger()
    loggers = [logging.getLogger(name) for name in LOGGERS]
    previous = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    root.addHandler(collector)
    try:
        yield
    finally:
        root.removeHandler(collector)
        for logger, level in zip(loggers, previous, strict=True):
            logger.setLevel(level)
    leaks = [text for text in map(record_text, collector.records) if SECRET_MARKER in text]
    assert not leaks, f"secrets in log records: {leaks[:3]}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """SE-01: flag a test whose failing exception text contains a secret."""
    report = yield
    if call.excinfo is not None and SECRET_MARKER in exception_text(call.excinfo.value):
        report.outcome = "failed"
        report.sections.append(
            ("SE-01", f"a secret appears in the exception that failed {item.nodeid}")
        )
    return report


Figures = dict[str, Any]
"""Type of the ``figures`` fixture."""

_FIGURES: dict[str, Figures] = {}


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    """A dict for the test's measured figures, printed at the end of the run."""
    return _FIGURES.setdefault(request.node.nodeid, {})


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the figures tests measured."""
    measured = {nodeid: values for nodeid, values in _FIGURES.items() if values}
    if not measured:
        return
    terminalreporter.section("figures")
    for nodeid, values in measured.items():
        text = ", ".join(f"{key}={value}" for key, value in values.items())
        terminalreporter.write_line(f"{nodeid}: {text}")


TEST_TIME_LIMIT = 900.0
"""Seconds of trio's clock (virtual under autojump_clock) an async test may run."""


def _with_time_limit(test: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    @functools.wraps(test)
    async def limited(*args: Any, **kwargs: Any) -> None:
        with trio.move_on_after(TEST_TIME_LIMIT) as scope:
            await test(*args, **kwargs)
        if scope.cancelled_caught:
            pytest.fail(
                f"the test ran past {TEST_TIME_LIMIT} s of trio's clock (virtual under "
                "autojump_clock): a task that never stops?"
            )

    return limited


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run every async test under the :data:`TEST_TIME_LIMIT` of trio's clock."""
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            item.obj = _with_time_limit(item.obj)


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A certificate authority for TLS tests (SE-02)."""
    return trustme.CA()


# The throwaway PostgreSQL cluster, one per session, for the database-backed server tests.
from db_support import database as database  # noqa: E402
from db_support import postgres_cluster as postgres_cluster  # noqa: E402
