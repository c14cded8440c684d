"""`maxwell bench daemon` without the CLI: `python benchmarks/daemon.py [--json] [--quick]`."""

from __future__ import annotations

import argparse

from maxwell.bench.daemon import add_arguments, run


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/daemon.py",
        description="The node daemon's CPU, tick time, auctioneer share and API latency.",
    )
    add_arguments(parser)
    return run(parser.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
