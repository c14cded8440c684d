"""Counted inference: `useful.py`'s MLP batches on one thread, each batch a unit of work
counted in the agent's work file (`_workcount`), optionally in bursts (the bursty agent).

`--batches N` is a finite job (it exits when done; 0: it never ends of itself). With
`--duty D --period P` it wants the CPU only D of each P seconds and sleeps the rest (a bursty
service). Run by a daemon it reports its CPU time honestly, with its batches as its work.

    python -m maxwell.samples.inference [--batches N] [--duty D --period P] [--tag T]
"""

from __future__ import annotations

import os

# One BLAS thread: the agent is a one-core job whatever the machine (set before numpy loads).
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402  (after the thread settings above, which numpy reads on import)
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from maxwell.samples._reporting import Reporter  # noqa: E402
from maxwell.samples._workcount import WorkCounter  # noqa: E402
from maxwell.samples.useful import infer, make_weights  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="maxwell-inference", description=__doc__)
    parser.add_argument("--batches", type=int, default=0, help="the job's batches (0: forever)")
    parser.add_argument("--duty", type=float, default=1.0, help="busy share of each period (1)")
    parser.add_argument("--period", type=float, default=4.0, help="seconds per period (4)")
    parser.add_argument("--width", type=int, default=512, help="hidden width (512)")
    parser.add_argument("--tokens", type=int, default=64, help="rows per batch (64)")
    parser.add_argument("--layers", type=int, default=4, help="layers (4)")
    parser.add_argument("--seed", type=int, default=7, help="seed of weights and inputs (7)")
    parser.add_argument("--tag", default="", help="an inert label, to find the processes later")
    args = parser.parse_args(argv)
    if not 0 < args.duty <= 1 or args.period <= 0:
        parser.error("--duty must be in (0, 1] and --period positive")
    rng = np.random.default_rng(args.seed)
    weights = make_weights(args.width, args.layers, rng)
    counter, reporter = WorkCounter(), Reporter()
    done, started = 0, time.monotonic()
    try:
        while args.batches == 0 or done < args.batches:
            if args.duty < 1:
                into = (time.monotonic() - started) % args.period
                if into >= args.duty * args.period:  # the quiet part of the period
                    time.sleep(args.period - into)
                    continue
            batch = rng.standard_normal((args.tokens, args.width)).astype(np.float32)
            infer(weights, batch)
            done += 1
            counter.count(done)
            reporter.maybe(work=done)
    finally:
        counter.close(done)
        reporter.close()
    print(f"inference: done, {done} batches", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
