"""`maxwell bench meter` without the CLI: `python benchmarks/meter.py [--json] [--seconds S]`."""

from __future__ import annotations

import argparse

from maxwell.bench.meter import add_arguments, run


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/meter.py",
        description="The meter's own CPU cost on live cgroups, against a floor and CodeCarbon.",
    )
    add_arguments(parser)
    return run(parser.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
