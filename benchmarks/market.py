"""`maxwell bench market` without the CLI: `python benchmarks/market.py [--json] [--quick]`."""

from __future__ import annotations

import argparse

from maxwell.bench.market import add_arguments, run


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/market.py",
        description="What clearing the market costs, per mechanism and book size.",
    )
    add_arguments(parser)
    return run(parser.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
