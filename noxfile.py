"""Development sessions: tests, lint, typecheck, docs, build, demo, benchmarks, fuzzing and soak.

Every session runs in a fresh virtual environment and installs the project into it.
"""

from __future__ import annotations

import os
from pathlib import Path

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
def docs(session: nox.Session) -> None:
    """Build the documentation (Sphinx) into docs/_build/html; any warning fails the build.

    ``-n`` makes every cross-reference resolve. Flags go to sphinx-build:
    ``nox -s docs -- -b linkcheck``.
    """
    session.install(".[docs]")
    session.run(
        "sphinx-build",
        "-W",
        "--keep-going",
        "-n",
        "-E",
        "-b",
        "html",
        *session.posargs,
        "docs",
        "docs/_build/html",
    )


@nox.session
def build(session: nox.Session) -> None:
    """Build the sdist and the wheel into dist/, check them with twine, and check that the wheel
    ships py.typed (so that type checkers read the package's annotations)."""
    session.install("build>=1.2", "twine>=5.1")
    session.run("python", "-c", "import shutil; shutil.rmtree('dist', ignore_errors=True)")
    session.run("python", "-m", "build", "--outdir", "dist")
    session.run("twine", "check", "--strict", *sorted(str(p) for p in Path("dist").iterdir()))
    session.run(
        "python",
        "-c",
        "import glob, sys, zipfile; "
        "names = zipfile.ZipFile(glob.glob('dist/*.whl')[0]).namelist(); "
        "sys.exit(0 if 'trio_realtime/py.typed' in names else 'py.typed is not in the wheel')",
    )


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


@nox.session
def fuzz(session: nox.Session) -> None:
    """Fuzz the parser, the V2 binary decoder, the frame splitter, presence sync and the live
    reader at length, on every core, and report how many inputs were tried.

    Runs the property tests of tests/test_fuzz.py and the frame mutation and decoding tests of
    tests/test_protocol_properties.py under the ``fuzz`` hypothesis profile: random inputs
    (no fixed seed), ``FUZZ_SCALE`` times the CI example counts (100 by default: over
    1,000,000 inputs, in under 30 minutes on two cores), spread over the cores with
    pytest-xdist (``FUZZ_WORKERS``, default ``auto``). The "fuzz inputs" section at the end
    gives each test's count and the total. Flags go to pytest: ``nox -s fuzz -- -x``;
    ``FUZZ_SCALE=10 nox -s fuzz`` for a run a tenth as long.
    """
    session.install(".[test]", "pytest-xdist")
    session.run(
        "pytest",
        "tests/test_fuzz.py",
        "tests/test_protocol_properties.py",
        "-k",
        "sr09 or sr06 or pr02 or bi01 or hd02",
        "-p",
        "no:cacheprovider",
        "-p",
        "_fuzzing",
        "-n",
        os.environ.get("FUZZ_WORKERS", "auto"),
        *session.posargs,
        env={
            "HYPOTHESIS_PROFILE": "fuzz",
            "FUZZ_SCALE": os.environ.get("FUZZ_SCALE", "100"),
            "PYTHONPATH": "tests",
        },
    )


@nox.session
def soak(session: nox.Session) -> None:
    """Soak several clients under random faults over loopback sockets (two minutes by default).

    Clients of both transports and both serializers send acked broadcasts while the local
    server drops, closes and crashes their connections and channels; at the end every acked
    push must have been acknowledged or have raised (lost = 0), none may arrive twice, and
    presence must match the server's. Prints the figures (sent, received, raised, reconnects,
    RSS at start and end) and exits 1 if a promise was broken. Flags go to the driver:
    ``nox -s soak -- --duration 300 --clients 6 --json soak.json``.
    """
    session.install(".")
    session.run("python", "-m", "benchmarks.soak", *session.posargs)


@nox.session
def mutation(session: nox.Session) -> None:
    """Mutation testing (mutmut) of the pure protocol layer and the session core; not part of
    the default run.

    Mutates ``_frames``, ``_serializer``, ``_presence``, ``_postgres``, ``_postgres_filters``,
    ``_session`` and ``_session_events`` (or the modules named: ``nox -s mutation --
    _presence``) and runs the tests that cover each mutant (the ``[tool.mutmut]`` table of
    pyproject.toml selects them), then lists the survivors. Each
    mutant's test run may use at most 3 GiB of address space, so that a mutant that makes a
    loop grow forever fails instead of eating the machine's memory. The tests run with the
    ``tests/_mutation.py`` plugin, which gives the public classes' methods back the module they
    are defined in, where mutmut looks for them. ``mutmut show NAME`` (in the session's
    environment) prints one mutant's diff.
    """
    session.install("-e", ".[test]", "mutmut>=3.3")
    modules = session.posargs or [
        "_frames",
        "_serializer",
        "_presence",
        "_postgres",
        "_postgres_filters",
        "_session",
        "_session_events",
    ]
    patterns = " ".join(f"'trio_realtime.{module}.*'" for module in modules)
    session.run(
        "bash",
        "-c",
        f"ulimit -v {3 * 1024 * 1024} && mutmut run --max-children 2 {patterns}",
        external=True,
        env={"PYTHONPATH": "tests"},
    )
    session.run("mutmut", "results")
