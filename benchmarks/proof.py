"""`maxwell bench proof` without the CLI: `python benchmarks/proof.py [--json] [--quick]`."""

from __future__ import annotations

import argparse

from maxwell.bench.proof import add_arguments, run


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/proof.py",
        description="Proof of inference: verifying a layer vs recomputing it, and detection.",
    )
    add_arguments(parser)
    return run(parser.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
