"""A "hallucinating" workload: busy loops that never finish, ignore SIGTERM and keep forking.

It is what apoptosis is for: `while True` on every core it is given, a child per extra worker,
and a fresh grandchild every second, each ignoring SIGTERM, so only a kill of the whole group
stops it. It also allocates and frees memory so the Landauer figures are not zero.

    python -m maxwell.samples.looper [--workers N] [--churn-mib M]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time


def _spin(churn_bytes: int) -> None:
    last_fork = time.monotonic()
    while True:
        if churn_bytes:
            block = b"\x01" * churn_bytes  # writes every page, so the memory is really charged
            del block
        deadline = time.monotonic() + 0.05
        while time.monotonic() < deadline:
            pass
        if time.monotonic() - last_fork > 1.0:
            last_fork = time.monotonic()
            if os.fork() == 0:  # a short-lived grandchild: its CPU time must still be billed
                end = time.monotonic() + 0.2
                while time.monotonic() < end:
                    pass
                os._exit(0)
            os.waitpid(-1, os.WNOHANG)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="maxwell-looper", description=__doc__)
    parser.add_argument("--workers", type=int, default=2, help="busy processes (default 2)")
    parser.add_argument("--churn-mib", type=int, default=16, help="MiB allocated, freed per loop")
    parser.add_argument("--tag", default="", help="an inert label, to find the processes later")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(f"looper: {args.workers} workers spinning forever, ignoring SIGTERM", flush=True)
    for _ in range(max(args.workers, 1) - 1):
        if os.fork() == 0:
            _spin(args.churn_mib * 2**20)
    _spin(args.churn_mib * 2**20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
