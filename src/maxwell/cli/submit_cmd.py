"""`maxwell submit` and `maxwell jobs`: work placed by price across a Ray cluster (issue 13, 2).

`maxwell submit --fund ENERGY --bid PRICE [--demand CORES] [--name N] [--wait] [--json]
[--exclude NODE ...] [--ray-address ADDR] -- CMD [ARGS...]` places CMD on the node with the
lowest price that has room (never an `--exclude`d one), from what the local daemon's gossip
verified (`maxwell.cluster.jobs.submit`), and runs it there as a Maxwell agent on funds sent
from this node. It prints where the job went; with `--wait` it
waits for the job's end and prints its outcome (node, state: exited or dead by apoptosis, exit
code, energy, paid, returned home). Without `--wait` a detached keeper on this node waits for
it and takes what is left back home, so the job outlives the command.

`maxwell jobs [--json] [--ray-address ADDR]` lists the jobs that moved money across the cluster,
from every node's ledger (a task pinned to each labelled Ray node reads its daemon's halves):
job, home node, node that ran it, funds, what came back, and its state: `sent` (its funds left
home), `received` (it runs, or ran and is not settled), `returned` (what was left is on its way
home), `closed` (back home).

JSON: submit `{"job", "node"}` (with `--wait` also `"agent", "state", "exit_code", "energy_j",
"paid_j", "returned_j"`); jobs `{"jobs": [{"job", "home", "node", "fund_j", "returned_j",
"state"}]}`. Exit status: 0 placed (with `--wait`: and it exited with 0); 1 the node refused,
or no node can take the job, or (with `--wait`) the job died or exited non-zero; 2 usage
error; 125 the daemon or Ray cannot be reached.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any

from maxwell.cli.agents_cmd import _positive, _price, add_client_arguments, run_with_client
from maxwell.cli.common import EXIT_FAILURE, EXIT_USAGE, fail, print_json
from maxwell.client import Client
from maxwell.errors import MaxwellError, UsageError
from maxwell.units import UJ_PER_J, parse_energy

STATES = {"xfer-out": "sent", "xfer-in": "received", "xfer-back": "returned", "xfer-home": "closed"}
_ORDER = tuple(STATES)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    if parser.prog.split()[-1] == "jobs":
        parser.add_argument("--json", action="store_true", help="JSON for scripts")
    else:
        add_client_arguments(parser)  # the home node: the local daemon
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--ray-address", metavar="ADDR", help="the Ray cluster (default: auto)")
    if parser.prog.split()[-1] == "jobs":
        return
    parser.add_argument("--fund", required=True, metavar="ENERGY", help="the job's budget")
    parser.add_argument("--bid", required=True, type=_price, metavar="PRICE", help="$J per J")
    parser.add_argument("--demand", type=_positive, default=1.0, metavar="CORES", help="cores (1)")
    parser.add_argument("--name", metavar="NAME", help="a name (default: the job's id)")
    parser.add_argument("--wait", action="store_true", help="wait for the end; print the outcome")
    parser.add_argument(
        "--exclude", action="append", default=[], metavar="NODE", help="never this node (repeat)"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")


def _ray(address: str | None) -> None:
    import os

    import ray

    from maxwell.cluster.jobs import RAY_ENV

    os.environ.update(RAY_ENV)
    ray.init(address=address or "auto", namespace="maxwell", log_to_driver=False)


def _submit(client: Client, args: argparse.Namespace) -> int:
    from maxwell.cluster.jobs import JobError, JobSpec, submit

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise UsageError("no command to run: maxwell submit ... -- CMD [ARGS...]")
    spec = JobSpec(tuple(command), parse_energy(args.fund) / UJ_PER_J, args.bid, args.demand,
                   args.name)  # fmt: skip
    try:
        handle = submit(spec, home=client, keep=not args.wait, exclude=args.exclude)
    except JobError as exc:
        return fail("maxwell submit", str(exc), 1)
    said: dict[str, Any] = {"job": handle.job, "node": handle.node}
    if args.wait:
        said |= {k: v for k, v in asdict(handle.result()).items() if k not in said}
    if args.json:
        print_json(said)
    else:
        print("  ".join(f"{k}: {v}" for k, v in said.items()))
    ended_well = not args.wait or (said["state"] == "exited" and said["exit_code"] == 0)
    return 0 if ended_well else 1


def job_rows(halves_by_node: Mapping[str, Iterable[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One row per job from every node's halves (`GET /transfers`' `halves`), pure."""
    rows: dict[str, dict[str, Any]] = {}
    for node, found in halves_by_node.items():
        for half in found:
            row = rows.setdefault(half["job"], _empty_row(half["job"]))
            home_side = half["kind"] in ("xfer-out", "xfer-home")
            row["home"], row["node"] = (node, half["node"]) if home_side else (half["node"], node)
            amount = half["amount_uj"] / UJ_PER_J
            if half["kind"] in ("xfer-out", "xfer-in"):
                row["fund_j"] = amount
            else:
                row["returned_j"] = amount
            if _ORDER.index(half["kind"]) >= _ORDER.index(_key(row["state"])):
                row["state"] = STATES[half["kind"]]
    return sorted(rows.values(), key=lambda row: row["job"])


def _empty_row(job: str) -> dict[str, Any]:
    return {"job": job, "home": None, "node": None, "fund_j": None, "returned_j": None,
            "state": ""}  # fmt: skip


def _key(state: str) -> str:
    return next((kind for kind, name in STATES.items() if name == state), "xfer-out")


def _jobs(args: argparse.Namespace) -> int:
    from maxwell.cluster.jobs import every_node_halves

    rows = job_rows(every_node_halves())
    if args.json:
        print_json({"jobs": rows})
        return 0
    print(f"{'JOB':24} {'HOME':16} {'NODE':16} {'FUND $J':>10} {'BACK $J':>10} STATE")
    for row in rows:
        back = "-" if row["returned_j"] is None else f"{row['returned_j']:.6g}"
        fund = "-" if row["fund_j"] is None else f"{row['fund_j']:.6g}"
        print(f"{row['job']:24} {row['home'] or '-':16} {row['node'] or '-':16} {fund:>10} "
              f"{back:>10} {row['state']}")  # fmt: skip
    return 0


def run(args: argparse.Namespace) -> int:
    prog = f"maxwell {args.command_name}"
    try:
        _ray(args.ray_address)
    except ImportError:
        return fail(prog, "Ray is not installed: pip install 'maxwell[cluster]'", EXIT_USAGE)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        return fail(prog, f"no Ray cluster: {exc}", EXIT_FAILURE)
    try:
        if args.command_name == "jobs":
            return _jobs(args)
        status = [0]

        def submitting(client: Client) -> None:
            status[0] = _submit(client, args)

        done = run_with_client(prog, args, submitting)
        return done or status[0]
    except MaxwellError as exc:
        return fail(prog, str(exc), EXIT_FAILURE)
