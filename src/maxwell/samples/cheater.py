"""A cheating workload: a busy loop that reports only a fraction of the CPU time it burns.

Run by a daemon in optimistic billing, it is billed by its own claims, so it pays less than it
uses, until an audit compares its claims with the kernel's counters and slashes its bond.

    python -m maxwell.samples.cheater [--claim FRACTION] [--period S]
"""

from __future__ import annotations

import argparse
import sys

from maxwell.samples._reporting import Reporter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="maxwell-cheater", description=__doc__)
    parser.add_argument(
        "--claim", type=float, default=0.2, help="fraction of its CPU time it claims (0.2)"
    )
    parser.add_argument("--period", type=float, default=0.25, help="seconds between reports")
    args = parser.parse_args(argv)
    reporter = Reporter(claim=args.claim, period_s=args.period)
    spins = 0
    try:
        while True:
            for _ in range(100_000):
                spins += 1
            reporter.maybe(work=spins // 100_000)
    finally:
        reporter.close()


if __name__ == "__main__":
    sys.exit(main())
