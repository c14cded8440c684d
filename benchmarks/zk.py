"""`maxwell bench zk` without the CLI: `python benchmarks/zk.py [--json] [--quick]`.

Needs the optional extra: `pip install -e '.[zk]'` (EZKL); exits 2 without it.
"""

from __future__ import annotations

import argparse

from maxwell.bench.zk import add_arguments, run


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/zk.py",
        description="A zk-SNARK proof of a tiny MLP with EZKL, beside Maxwell's Freivalds proof.",
    )
    add_arguments(parser)
    return run(parser.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
