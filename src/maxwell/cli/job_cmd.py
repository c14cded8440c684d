"""`maxwell job post|ls|show`: posted work, the only work bounties pay for (`maxwell.node.jobs`).

`post` (admin) publishes a job: the `.npy` inputs of a directory, each paying its bounty once,
to the first agent that proves its inference with the model (spawned with `--model`); the
bounties are escrowed from the treasury at once. `ls` and `show` (any token) list jobs and how
far each has got. Agents take inputs with the SDK (`Client.take_input(job)`).
"""

from __future__ import annotations

import argparse
import os

from rich.console import Console
from rich.table import Table

from maxwell.cli.agents_cmd import (
    COMMON_EPILOG,
    add_client_arguments,
    dollars_j,
    run_with_client,
)
from maxwell.cli.common import print_json
from maxwell.client import Client
from maxwell.node.facade import JobInfo
from maxwell.node.wire import JobList, to_json
from maxwell.units import UJ_PER_J, parse_energy


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Posted work, the only work bounties pay for: post a job of inputs (admin), list the"
        " jobs, show one."
    )
    parser.epilog = COMMON_EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    actions = parser.add_subparsers(dest="job_action", metavar="ACTION", required=True)
    post = actions.add_parser("post", help="post a job of inputs (admin)")
    post.add_argument("--model", required=True, metavar="M.onnx", help="the model to prove")
    post.add_argument("--inputs", required=True, metavar="DIR", help="a directory of .npy inputs")
    post.add_argument(
        "--bounty", required=True, metavar="ENERGY", help="paid per input's first valid proof"
    )
    actions.add_parser("ls", help="list the jobs")
    show = actions.add_parser("show", help="one job")
    show.add_argument("job", metavar="JOB")
    for sub in (post, actions.choices["ls"], show):
        add_client_arguments(sub)


def _line(job: JobInfo) -> str:
    model = os.path.basename(job.model)
    return (
        f"{job.id}: {job.inputs} inputs of {model}, {dollars_j(job.bounty)} $J each; "
        f"{job.paid} paid, {job.taken} taken, {dollars_j(job.escrow)} $J left in escrow"
    )


def _post(client: Client, args: argparse.Namespace) -> None:
    bounty_j = parse_energy(args.bounty) / UJ_PER_J
    # The daemon has its own working directory: paths travel absolute.
    job = client.post_job(os.path.abspath(args.model), os.path.abspath(args.inputs), bounty_j)
    print_json(to_json(job)) if args.json else print(_line(job))


def _ls(client: Client, args: argparse.Namespace) -> None:
    jobs = client.jobs()
    if args.json:
        print_json(to_json(JobList(jobs)))
        return
    table = Table(box=None, header_style="bold")
    for heading in ("JOB", "MODEL", "INPUTS", "PAID", "TAKEN", "BOUNTY $J", "ESCROW $J"):
        table.add_column(heading, justify="left" if heading in ("JOB", "MODEL") else "right")
    for job in jobs:
        table.add_row(
            job.id, os.path.basename(job.model), str(job.inputs), str(job.paid), str(job.taken),
            dollars_j(job.bounty), dollars_j(job.escrow),
        )  # fmt: skip
    Console().print(table)


def _show(client: Client, args: argparse.Namespace) -> None:
    job = client.job(args.job)
    print_json(to_json(job)) if args.json else print(_line(job))


HANDLERS = {"post": _post, "ls": _ls, "show": _show}


def run(args: argparse.Namespace) -> int:
    action = args.job_action
    return run_with_client(
        f"maxwell job {action}", args, lambda client: HANDLERS[action](client, args)
    )
