"""``python -m trio_realtime``: the same command line as ``trio-realtime``."""

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
