"""`maxwell experiment NAME [--seed N] [--out DIR] [--json]`: one experiment of the evidence
(issue 14; `maxwell.experiments`): the market beside fair share, each claim of the vision with
what was measured. It writes `NAME.json`, `NAME.png` and `NAME.md` under `--out` (default
`./maxwell-experiments`) and prints the claims (with `--json`, the JSON result).

Experiments (docs/evidence.md has each one's figures):
  fairshare   the same real agents on this machine under Linux fair share and under the Maxwell
              daemon, `--duration` seconds each (default 50: both runs under two minutes),
              checked against the twin; needs root and cgroups
  apoptosis   a useful job, a looper and a bloat
  landauer    a churning and an appending program under Landauer multipliers 0 to 1e12
  audit       cheaters caught against 1 - (1 - p)^N, their profit with and without the bond,
              honest agents never slashed
  mechanisms  welfare, revenue, efficiency and truthfulness gaps of uniform, vcg, kelly,
              lottery and posted, truthful and strategic
  overhead    the auctioneer's cost against n and against the CPU it allocates (timed here)
  thermal     a cluster under heat spikes with gossip price coupling and without;
              dissemination time against N up to 10,000
  limits      the vision's honest limits: a well-funded malicious agent, a poorly funded
              benign one
Where the figures come from is in every output (`measured_on`): the twin (`maxwell.sim`,
simulated nodes), the daemon's own cores timed in this process, or this machine's processes.
`--quick` runs the reduced form that CI runs (`maxwell report --quick`).

Exit status: 0 it ran (whether the claims held or not: that is the result, reported); 2 usage
(an unknown experiment, `--duration` for an experiment of the twin, matplotlib missing: pip
install 'maxwell[experiment]'); 125 the experiment cannot run on this machine (fairshare: not
root, or no usable cgroups); 128+N stopped by signal N (every process and cgroup it started is
gone).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from maxwell.cli.common import EXIT_FAILURE, EXIT_USAGE, StopRequest, fail, print_json

if TYPE_CHECKING:
    from maxwell.experiments import Result

PROG = "maxwell experiment"
REAL = ("fairshare",)  # experiments on this machine's processes: they take --duration


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "name", metavar="NAME",
        help="fairshare, apoptosis, landauer, audit, mechanisms, overhead, thermal or limits",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="its seed (0)")
    parser.add_argument(
        "--out", type=Path, default=Path("maxwell-experiments"), metavar="DIR",
        help="where its JSON, PNG and report go (./maxwell-experiments)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the JSON result")
    parser.add_argument(
        "--quick", action="store_true", help="its reduced form (fewer agents, ticks or sizes; CI)"
    )
    parser.add_argument(
        "--duration", type=float, default=None, metavar="S",
        help="fairshare: each run's wall time (50 s: both runs together under two minutes)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from maxwell.experiments import experiments

    known = experiments()
    if args.name in REAL:
        return _real(args)
    if args.duration is not None:
        return fail(PROG, f"--duration: {args.name} runs in the twin, on virtual time "
                    f"(only {', '.join(REAL)} takes it)", EXIT_USAGE)  # fmt: skip
    if args.name not in known:
        return fail("maxwell experiment", f"no experiment {args.name!r}: {', '.join(known)}",
                    EXIT_USAGE)  # fmt: skip
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return fail("maxwell experiment", "matplotlib is missing: pip install "
                    "'maxwell[experiment]'", EXIT_USAGE)  # fmt: skip
    result = known[args.name](args.seed, args.quick)
    return _show(args, result, [])


def _real(args: argparse.Namespace) -> int:
    """An experiment on this machine's processes: stopped cleanly by SIGINT/SIGTERM/SIGHUP."""
    from maxwell.experiments import fairshare
    from maxwell.experiments._realruns import MachineUnfitError, RunStopped

    if args.duration is not None and args.duration <= 0:
        return fail(PROG, f"--duration must be positive, got {args.duration:g}", EXIT_USAGE)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return fail(PROG, "matplotlib is missing: pip install 'maxwell[experiment]'", EXIT_USAGE)
    with StopRequest() as stop:
        try:
            result = fairshare.run(args.seed, args.quick, duration_s=args.duration, stop=stop)
        except MachineUnfitError as exc:
            return fail(PROG, f"{args.name}: {exc}", EXIT_FAILURE)
        except RunStopped as exc:
            print(f"{PROG}: {args.name}: {exc}; everything it started is gone", file=sys.stderr)
            return 128 + exc.signum
    duration = [] if args.duration is None else ["--duration", f"{args.duration:g}"]
    return _show(args, result, duration)


def _show(args: argparse.Namespace, result: Result, extra: list[str]) -> int:
    """Write the result under --out and print it (its claims, or with --json the JSON)."""
    quick = ["--quick"] if args.quick else []
    words = ["maxwell", "experiment", args.name, "--seed", str(args.seed), *quick, *extra]
    command = shlex.join(words)
    paths = result.write(args.out, command)
    if args.json:
        print_json(result.to_json())
        return 0
    print(f"{args.name} (seed {args.seed}), measured on the {result.measured_on}:")
    for claim in result.claims:
        verdict = "holds" if claim.holds else "DOES NOT HOLD"
        print(f"  [{verdict}] {claim.claim}\n      {claim.figure}")
    print("written: " + ", ".join(str(path) for path in paths), file=sys.stderr)
    return 0
