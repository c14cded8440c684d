"""`maxwell experiment NAME [--seed N] [--out DIR] [--json]`: one experiment of the evidence
(issue 14; `maxwell.experiments`): the market beside fair share, each claim of the vision with
what was measured. It writes `NAME.json`, `NAME.png` and `NAME.md` under `--out` (default
`./maxwell-experiments`) and prints the claims (with `--json`, the JSON result).

Experiments: `apoptosis` (a useful job, a looper and a bloat), `landauer` (a churning and an
appending program under Landauer multipliers 0 to 1e12), `limits` (the vision's honest limits:
a well-funded malicious agent, a poorly funded benign one). The figures come from the twin
(`maxwell.sim`, a simulated node), which every output says.

Exit status: 0 it ran (whether the claims held or not: that is the result, reported); 2 usage
(an unknown experiment, matplotlib missing: pip install 'maxwell[experiment]').
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from maxwell.cli.common import EXIT_USAGE, fail


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("name", metavar="NAME", help="apoptosis, landauer or limits")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="its seed (0)")
    parser.add_argument(
        "--out", type=Path, default=Path("maxwell-experiments"), metavar="DIR",
        help="where its JSON, PNG and report go (./maxwell-experiments)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the JSON result")


def run(args: argparse.Namespace) -> int:
    from maxwell.experiments import experiments

    known = experiments()
    if args.name not in known:
        return fail("maxwell experiment", f"no experiment {args.name!r}: {', '.join(known)}",
                    EXIT_USAGE)  # fmt: skip
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return fail("maxwell experiment", "matplotlib is missing: pip install "
                    "'maxwell[experiment]'", EXIT_USAGE)  # fmt: skip
    result = known[args.name](args.seed, False)
    command = shlex.join(["maxwell", "experiment", args.name, "--seed", str(args.seed)])
    paths = result.write(args.out, command)
    if args.json:
        print(json.dumps(result.to_json()))
        return 0
    print(f"{args.name} (seed {args.seed}), measured on the {result.measured_on}:")
    for claim in result.claims:
        verdict = "holds" if claim.holds else "DOES NOT HOLD"
        print(f"  [{verdict}] {claim.claim}\n      {claim.figure}")
    print("written: " + ", ".join(str(path) for path in paths), file=sys.stderr)
    return 0
