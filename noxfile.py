"""Development sessions: tests, lint, typecheck, demo and benchmarks.

Every session runs in a fresh virtual environment and installs the project into it.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = False
nox.options.error_on_missing_interpreters = True


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (pytest, with trio's MockClock where time matters)."""
    session.install(".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and formatting with ruff."""
    session.install("ruff>=0.8")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check the package, tests and benchmarks with mypy --strict."""
    session.install(".[test]", "mypy>=1.13", "nox")
    session.run("mypy")


@nox.session
def demo(session: nox.Session) -> None:
    """Run ``trio-realtime demo``: a local server and two clients over loopback, no account needed.

    Pass flags through: ``nox -s demo -- --vsn 2.0.0``.
    """
    session.install(".")
    session.run("trio-realtime", "demo", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmark suite against a local flood/echo peer (not part of the default run).

    realtime-py, the comparison client, goes into its own virtualenv
    (benchmarks/.venv-realtime-py), created by the suite and never installed here. Pass flags
    through: ``nox -s bench -- --quick``, ``-- --only throughput,latency``.
    """
    session.install(".")
    session.run("python", "-m", "benchmarks", *session.posargs)
