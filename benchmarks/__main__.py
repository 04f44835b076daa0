"""``python -m benchmarks``: the whole suite; see :mod:`benchmarks.run_all`."""

from .run_all import main

main()
