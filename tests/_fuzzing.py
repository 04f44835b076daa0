"""Example counts for property tests: modest in CI, many more under ``nox -s fuzz``.

The ``ci`` hypothesis profile (the default, see ``conftest.py``) is derandomized, so every run
sees the same examples. ``nox -s fuzz`` loads the ``fuzz`` profile (random, no database) and
multiplies every count given through :func:`examples` by ``FUZZ_SCALE`` (default 100).
"""

from __future__ import annotations

import os

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
SCALE = int(os.environ.get("FUZZ_SCALE", "100")) if PROFILE == "fuzz" else 1


def examples(count: int) -> int:
    """``count`` examples in CI, ``count * FUZZ_SCALE`` under the fuzz profile."""
    return count * SCALE
