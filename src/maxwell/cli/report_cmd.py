"""`maxwell report --out DIR [--seed N] [--quick] [--only NAME,...]`: every experiment of the
evidence (issue 14; `maxwell experiment`) run once and gathered into one self-contained HTML
page, `DIR/report.html`, beside `DIR/report.json` (every result
together) and each experiment's own JSON, PNG and markdown under `DIR/NAME/`. The page shows
each claim of the vision as measured (holds or not), the figures beside fair share, the plots,
the seed and the command that reproduces each experiment. (`--out` chooses this form of
`maxwell report`; without it, `maxwell report --cpu S` is an agent's report of its own use.)

`--quick` runs each experiment's reduced form (what CI runs: a minute or two in all); without it
the full forms run (several minutes). An experiment that cannot run here (`fairshare` needs
root and cgroups) is listed in the report as not run, with its reason.

Exit status: 0 every experiment ran (whether its claims held or not: that is the result);
1 the report was written but some experiment could not run (named on stderr); 2 usage (an
unknown name in --only, matplotlib missing: pip install 'maxwell[experiment]').
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from maxwell.cli.common import EXIT_USAGE, fail

PROG = "maxwell report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="where the report goes",
    )  # fmt: skip
    parser.add_argument(
        "--seed", type=int, default=0, metavar="N", help="every experiment's seed (0)"
    )
    parser.add_argument("--quick", action="store_true", help="the reduced forms (as in CI)")
    parser.add_argument("--only", metavar="NAME,...", help="these experiments only (default: all)")


def run(args: argparse.Namespace) -> int:
    from maxwell.experiments import experiments
    from maxwell.experiments.report import failed, run_all, write

    known = experiments()
    chosen = list(known) if args.only is None else [n.strip() for n in args.only.split(",")]
    unknown = [name for name in chosen if name not in known]
    if unknown or not chosen:
        return fail(PROG, f"no experiment {', '.join(map(repr, unknown)) or 'named'}: "
                    f"{', '.join(known)}", EXIT_USAGE)  # fmt: skip
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return fail(PROG, "matplotlib is missing: pip install 'maxwell[experiment]'", EXIT_USAGE)
    entries = run_all({name: known[name] for name in chosen}, seed=args.seed, quick=args.quick,
                      out=args.out, clock=time.monotonic)  # fmt: skip
    page = write(entries, args.out, seed=args.seed, quick=args.quick)
    holding = sum(bool(c["holds"]) for e in entries for c in e.claims)
    claims = sum(len(e.claims) for e in entries)
    print(f"{page}: {len(entries)} experiments, {holding} of {claims} claims hold")
    missing = failed(entries)
    for entry in missing:
        print(f"{PROG}: {entry.name} did not run: {entry.not_run}", file=sys.stderr)
    return 1 if missing else 0
