"""DX-02: every Python example in the README and the documentation runs, so that none can rot.

Each fenced ``python`` block of ``README.md`` and ``docs/*.md`` is extracted and run as a user
would run it, in a child process:

- a block that defines ``test_`` functions is a pytest module: it runs with pytest in an empty
  directory whose ``pyproject.toml`` is the page's own ``toml`` block that configures pytest
  (the configuration the page tells users to copy), or the testing guide's when the page has
  none;
- any other block is a program: it runs with ``SUPABASE_URL`` and ``SUPABASE_ANON_KEY``
  pointing at a local server (``trio_realtime.testing``) on a loopback port, and must exit 0.

The documentation build itself (``nox -s docs``: Sphinx, warnings as errors, every reference
resolved) also runs here, so that a docstring that breaks it fails the suite.

``trio.fail_after`` only guards against a hang.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from trio_realtime.testing import serve_realtime

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TESTING_PAGE = ROOT / "docs" / "testing.md"
GUARD = 60.0

_FENCE = re.compile(r"^```(?P<lang>[^\s`]*)[^\n]*\n(?P<body>.*?)^```\s*$", re.DOTALL | re.MULTILINE)


@dataclass(frozen=True)
class Block:
    """One fenced code block."""

    page: Path
    line: int
    lang: str
    code: str

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def is_test_module(self) -> bool:
        return re.search(r"^(async )?def test_", self.code, re.MULTILINE) is not None


def _blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    return [
        Block(page, text.count("\n", 0, match.start()) + 1, match["lang"], match["body"])
        for match in _FENCE.finditer(text)
    ]


def _pytest_config(page: Path) -> str:
    """The page's pytest configuration block, else the testing guide's."""
    for source in (page, TESTING_PAGE):
        for block in _blocks(source):
            if block.lang == "toml" and "[tool.pytest.ini_options]" in block.code:
                return block.code
    raise AssertionError(f"no pytest configuration in {page} or {TESTING_PAGE}")


PROGRAMS = [
    b for page in PAGES for b in _blocks(page) if b.lang == "python" and not b.is_test_module
]
TEST_PAGES = sorted(
    {b.page for page in PAGES for b in _blocks(page) if b.lang == "python" and b.is_test_module}
)


def _environment(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SUPABASE_")}
    env.pop("PYTEST_ADDOPTS", None)
    env.update(extra)
    return env


def _output(result: subprocess.CompletedProcess[bytes]) -> str:
    return (result.stdout + result.stderr).decode(errors="replace")


def test_the_pages_have_examples() -> None:
    """The extraction finds the examples (a broken fence pattern would find none)."""
    assert any(b.page.name == "README.md" for b in PROGRAMS)
    assert ROOT / "README.md" in TEST_PAGES
    assert TESTING_PAGE in TEST_PAGES
    for page in PAGES:
        for block in _blocks(page):
            assert block.lang, f"{block.name}: a code block without a language"


@pytest.mark.parametrize("block", PROGRAMS, ids=[b.name for b in PROGRAMS])
async def test_program_example_runs(block: Block, tmp_path: Path) -> None:
    """The program exits 0 against the local server."""
    script = tmp_path / "example.py"
    script.write_text(block.code, encoding="utf-8")
    async with serve_realtime() as server:
        env = _environment(SUPABASE_URL=server.url, SUPABASE_ANON_KEY="anon-key")
        with trio.fail_after(GUARD):
            result = await trio.run_process(
                [sys.executable, str(script)],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                cwd=tmp_path,
                env=env,
            )
    assert result.returncode == 0, f"{block.name} failed:\n{_output(result)}"


def _needs_postgres(block: Block) -> bool:
    return "start_postgres" in block.code


def _test_groups() -> list[tuple[str, bool, list[Block]]]:
    """The test examples, grouped by the pytest configuration their page shows and by whether
    they need PostgreSQL; each group is one pytest run."""
    groups: dict[tuple[str, bool], list[Block]] = {}
    for page in TEST_PAGES:
        config = _pytest_config(page)
        for block in _blocks(page):
            if block.lang == "python" and block.is_test_module:
                groups.setdefault((config, _needs_postgres(block)), []).append(block)
    return [(config, postgres, blocks) for (config, postgres), blocks in groups.items()]


GROUPS = _test_groups()


def _postgres_missing() -> str | None:
    """Why the PostgreSQL examples cannot run here, or ``None`` when they can."""
    from trio_realtime.testing import PostgresNotFound
    from trio_realtime.testing._cluster import wal2json_available

    if importlib.util.find_spec("psycopg") is None:
        return "psycopg is not installed (pip install 'trio-realtime[postgres]')"
    try:
        if not wal2json_available():
            return "wal2json is not installed (apt-get install postgresql-15-wal2json)"
    except PostgresNotFound as exc:
        return str(exc)
    return None


@pytest.mark.parametrize(
    ("config", "postgres", "blocks"),
    GROUPS,
    ids=[
        ("postgres:" if postgres else "") + "+".join(sorted({b.page.name for b in blocks}))
        for _, postgres, blocks in GROUPS
    ],
)
async def test_pytest_examples_pass(
    config: str, postgres: bool, blocks: list[Block], tmp_path: Path
) -> None:
    """The test examples pass under pytest, with the configuration their pages show.

    The examples that need PostgreSQL (with wal2json) skip without it, except under CI.
    """
    if postgres and (reason := _postgres_missing()) is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set, and the PostgreSQL examples cannot run: {reason}")
        pytest.skip(reason)
    (tmp_path / "pyproject.toml").write_text(config, encoding="utf-8")
    tests = 0
    for block in blocks:
        name = re.sub(r"\W", "_", block.name)
        (tmp_path / f"test_{name}.py").write_text(block.code, encoding="utf-8")
        tests += len(re.findall(r"^(?:async )?def test_", block.code, re.MULTILINE))
    with trio.fail_after(GUARD):
        result = await trio.run_process(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=tmp_path,
            env=_environment(),
        )
    output = _output(result)
    assert result.returncode == 0, f"the examples failed:\n{output}"
    assert f"{tests} passed" in output, output


async def test_documentation_builds_without_warnings(tmp_path: Path) -> None:
    """Sphinx builds the documentation with -W -n, as ``nox -s docs`` does.

    Sphinx is part of the test extra, like pytest itself: without it this fails, so that a
    docstring that would break the documentation build is seen before it lands.
    """
    if importlib.util.find_spec("sphinx") is None:
        pytest.fail("Sphinx is missing: install the test extra again (pip install -e '.[test]')")
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-E", "-q"]
    with trio.fail_after(GUARD * 3):
        result = await trio.run_process(
            [*command, "-b", "html", "-d", str(tmp_path / "doctrees"), "docs", str(tmp_path)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=ROOT,
            env=_environment(),
        )
    assert result.returncode == 0, _output(result)
