"""A bloated workload: allocates, writes and frees memory in a loop, forever.

Every round allocates `--mib` MiB, writes every page (so the memory is really charged to its
cgroup) and frees it: the cgroup's released-memory counter climbs fast, which is what Landauer's
tax bills. It does little else, so its energy bill stays small next to its tax.

    python -m maxwell.samples.bloat [--mib M] [--pause S]
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="maxwell-bloat", description=__doc__)
    parser.add_argument("--mib", type=int, default=64, help="MiB allocated and freed per round")
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between rounds")
    parser.add_argument("--tag", default="", help="an inert label, to find the processes later")
    args = parser.parse_args(argv)
    size = args.mib * 2**20
    print(f"bloat: allocating and freeing {args.mib} MiB per round, forever", flush=True)
    while True:
        block = b"\x01" * size  # writes every page
        del block
        time.sleep(args.pause)


if __name__ == "__main__":
    sys.exit(main())
