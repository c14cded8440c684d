"""An idle hoarder: an agent that asks for cores (its bid and demand say so) and leaves them
idle, using only `--use` of one core (a spin of that share of each `--period`, asleep the rest).

It is what a market can waste and fair share cannot: capacity granted to an agent that does not
use it. Run by a daemon it reports its CPU time honestly.

    python -m maxwell.samples.hoarder [--use FRACTION] [--period S] [--tag T]
"""

from __future__ import annotations

import argparse
import sys
import time

from maxwell.samples._reporting import Reporter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="maxwell-hoarder", description=__doc__)
    parser.add_argument("--use", type=float, default=0.05, help="share of a core it uses (0.05)")
    parser.add_argument("--period", type=float, default=0.5, help="seconds per period (0.5)")
    parser.add_argument("--tag", default="", help="an inert label, to find the processes later")
    args = parser.parse_args(argv)
    if not 0 <= args.use <= 1 or args.period <= 0:
        parser.error("--use must be in [0, 1] and --period positive")
    reporter = Reporter()
    print(f"hoarder: holding its cores, using {args.use:.0%} of one", flush=True)
    try:
        while True:
            busy_until = time.monotonic() + args.use * args.period
            while time.monotonic() < busy_until:
                pass
            time.sleep((1 - args.use) * args.period)
            reporter.maybe()
    finally:
        reporter.close()


if __name__ == "__main__":
    sys.exit(main())
