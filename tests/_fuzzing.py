"""Example counts for property tests: modest in CI, many more under ``nox -s fuzz``.

The ``ci`` hypothesis profile (the default, see ``conftest.py``) is derandomized, so every run
sees the same examples. ``nox -s fuzz`` loads the ``fuzz`` profile (random, no database) and
multiplies every count given through :func:`examples` by ``FUZZ_SCALE`` (default 100).

Loaded as a pytest plugin (``-p _fuzzing``, as ``nox -s fuzz`` does), this module also adds up
the inputs every fuzz test tried and prints the totals per test and overall at the end. A test
that feeds several inputs to the code under test per hypothesis example (mutants of one frame,
re-cuts of one byte stream, the frames of one live session, the steps of one presence program)
says so with :func:`tried`; any other counts hypothesis' test cases, from its own statistics.
Both travel on the test's report, so the totals are right under pytest-xdist too.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Generator
from typing import Any

import pytest

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
SCALE = int(os.environ.get("FUZZ_SCALE", "100")) if PROFILE == "fuzz" else 1

_STATS_KEY = "_hypothesis_stats"  # where hypothesis' pytest plugin leaves a test's statistics
_PHASE = re.compile(
    r"during (\w+) phase \(([\d.]+) seconds\):.*?"
    r"(\d+) passing, (\d+) failing, and (\d+) invalid test cases",
    re.DOTALL,
)


_REPORT_KEY = "_fuzz_inputs"
_tried: Counter[str] = Counter()  # "inputs" counted by the running test


def examples(count: int) -> int:
    """``count`` examples in CI, ``count * FUZZ_SCALE`` under the fuzz profile."""
    return count * SCALE


def tried(count: int = 1) -> None:
    """Count ``count`` inputs fed to the code under test by the running test."""
    _tried["inputs"] += count


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Generator[None, Any, None]:
    """Put the inputs the test counted on its teardown report (which xdist sends home)."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "teardown":
        counted = _tried.pop("inputs", 0)
        if counted:
            report.__dict__[_REPORT_KEY] = counted


def count_inputs(statistics: str) -> tuple[int, float]:
    """Test cases run (passing, failing and invalid, every phase) and seconds spent, from
    one test's hypothesis statistics text."""
    cases = 0
    seconds = 0.0
    for match in _PHASE.finditer(statistics):
        seconds += float(match.group(2))
        cases += sum(int(match.group(i)) for i in (3, 4, 5))
    return cases, seconds


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print how many inputs each hypothesis test tried, and the total."""
    inputs: Counter[str] = Counter()
    seconds: dict[str, float] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            fields = getattr(report, "__dict__", {})
            statistics = fields.get(_STATS_KEY)
            if not statistics:
                continue
            cases, spent = count_inputs(statistics)
            name = statistics.split(":\n", 1)[0].rsplit("::", 1)[-1]
            inputs[name] += fields.get(_REPORT_KEY) or cases
            seconds[name] = seconds.get(name, 0.0) + spent
    if not inputs:
        return
    terminalreporter.section("fuzz inputs")
    for name, cases in sorted(inputs.items(), key=lambda item: -item[1]):
        rate = cases / seconds[name] if seconds[name] else 0.0
        terminalreporter.write_line(
            f"{cases:>10,}  {name}  ({seconds[name]:.0f} s in hypothesis, {rate:,.0f}/s)"
        )
    terminalreporter.write_line(f"{sum(inputs.values()):>10,}  inputs in total")
