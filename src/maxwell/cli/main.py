"""Entry point of the `maxwell` command.

Each command lives in its own module with `add_arguments(parser)` and `run(args) -> int`. Only the
module of the command being run is imported (numpy and the mechanisms cost ~100 ms to import,
which `maxwell run` has no use for); `maxwell --help` imports none.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Protocol

from maxwell import __version__
from maxwell.cli.common import EXIT_FAILURE, OneLineParser, fail
from maxwell.errors import MaxwellError

Handler = Callable[[argparse.Namespace], int]


class CommandModule(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


# name -> (module, one-line help). Benchmarks are one level down: `maxwell bench NAME`.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("maxwell.cli.run_cmd", "run a command on an energy budget"),
    "sensors": ("maxwell.sensors.cli", "list energy and temperature sensors"),
    "ledger": ("maxwell.cli.ledger_cmd", "the $JOULE ledger: verify, balances, fund, compact"),
    "market": ("maxwell.cli.market_cmd", "clear a market of bids with a mechanism"),
    "demo": ("maxwell.cli.demo_cmd", "a private market: useful, looper, bloat, cheater"),
    "daemon": ("maxwell.cli.daemon_cmd", "run the node daemon (agents, market, API)"),
    "spawn": ("maxwell.cli.agents_cmd", "start a command as a funded, bidding agent"),
    "ps": ("maxwell.cli.agents_cmd", "list the node's agents"),
    "fund": ("maxwell.cli.agents_cmd", "fund an agent from the treasury"),
    "bid": ("maxwell.cli.agents_cmd", "change an agent's bid"),
    "kill": ("maxwell.cli.agents_cmd", "kill an agent"),
    "rm": ("maxwell.cli.agents_cmd", "forget an ended agent (its ledger history stays)"),
    "events": ("maxwell.cli.agents_cmd", "print the node's events"),
    "price": ("maxwell.cli.agents_cmd", "show the spot price"),
    "top": ("maxwell.cli.agents_cmd", "a live view of the market"),
    "web": ("maxwell.cli.web_cmd", "where the daemon's live page is (--open: open it)"),
    "status": ("maxwell.cli.agents_cmd", "the node's health: ticks, failures, last error"),
    "report": (
        "maxwell.cli.agents_cmd",
        "report an agent's own consumption since spawn; with --out DIR: the evidence report",
    ),
    "audit": ("maxwell.cli.agents_cmd", "audit an agent now: reports vs counters, code pages"),
    "logs": ("maxwell.cli.logs_cmd", "an agent's output (-f: as it comes)"),
    "job": ("maxwell.cli.job_cmd", "posted work that bounties pay for: post, ls, show"),
    "cluster": ("maxwell.cli.cluster_cmd", "heat gossip: keygen, sign-node, members, price"),
    "submit": ("maxwell.cli.submit_cmd", "run a command on the cluster's cheapest node (Ray)"),
    "jobs": ("maxwell.cli.submit_cmd", "the jobs that moved money across the cluster"),
    "user": ("maxwell.cli.user_cmd", "local users' accounts, which fund their agents: show, fund"),
    "infer": ("maxwell.cli.proof_cmd", "run an ONNX model and write a proof of the inference"),
    "verify": ("maxwell.cli.proof_cmd", "check a proof of inference without re-running the model"),
    "experiment": ("maxwell.cli.experiment_cmd", "a claim of the vision measured vs fair share"),
    "sim": ("maxwell.cli.sim_cmd", "run a scenario file on the twin: Maxwell beside fair share"),
}
# A command with a second form, chosen by a flag of its own after the command's name.
FORMS: dict[str, tuple[str, str]] = {
    "report": ("--out", "maxwell.cli.report_cmd"),  # `maxwell report --out DIR`: the evidence
}
BENCHES: dict[str, tuple[str, str]] = {
    "meter": ("maxwell.bench.meter", "the meter's own CPU cost vs CodeCarbon"),
    "market": ("maxwell.bench.market", "mechanisms' clearing cost vs n"),
    "daemon": ("maxwell.bench.daemon", "the node daemon's own cost with 100 to 5,000 agents"),
    "proof": ("maxwell.bench.proof", "proof of inference: verify vs recompute, detection"),
    "audit": ("maxwell.bench.audit", "audits: pause per IP sample, auditor cost, detection"),
    "zk": ("maxwell.bench.zk", "a zk-SNARK proof of a tiny model with EZKL (maxwell[zk])"),
    "gossip": ("maxwell.bench.gossip", "heat gossip: distress latency vs Serf's own, node cost"),
    "cluster": ("maxwell.bench.cluster", "placement by price on Ray vs Ray's own scheduler"),
}


def _load(module_name: str) -> CommandModule:
    module: CommandModule = importlib.import_module(module_name)
    return module


def _wanted(argv: Sequence[str], names: Sequence[str]) -> str | None:
    """The first argument that names one of `names` (the command being run), if any."""
    return next((arg for arg in argv if arg in names), None)


def _form(name: str, module_name: str, argv: Sequence[str]) -> str:
    """The module of the form of `name` that `argv` asks for (see FORMS)."""
    if name not in FORMS:
        return module_name
    flag, other = FORMS[name]
    after = list(argv)[list(argv).index(name) + 1 :]
    return other if any(a == flag or a.startswith(flag + "=") for a in after) else module_name


def _build_parser(argv: Sequence[str]) -> tuple[argparse.ArgumentParser, Handler | None]:
    parser = OneLineParser(
        prog="maxwell",
        description="Maxwell: a thermodynamic compute market for Linux.",
    )
    parser.add_argument("--version", action="version", version=f"maxwell {__version__}")
    commands = parser.add_subparsers(dest="command_name", metavar="COMMAND", required=True)
    wanted = _wanted(argv, [*COMMANDS, "bench"])
    handler: Handler | None = None
    for name, (module_name, summary) in COMMANDS.items():
        sub = commands.add_parser(name, help=summary)
        if name == wanted:
            module = _load(_form(name, module_name, argv))
            module.add_arguments(sub)
            handler = module.run
    bench_parser = commands.add_parser("bench", help="benchmarks that print JSON")
    benches = bench_parser.add_subparsers(dest="bench_name", metavar="BENCH", required=True)
    after_bench = argv[list(argv).index("bench") + 1 :] if wanted == "bench" else []
    wanted_bench = _wanted(after_bench, list(BENCHES))
    for name, (module_name, summary) in BENCHES.items():
        sub = benches.add_parser(name, help=summary)
        if name == wanted_bench:
            module = _load(module_name)
            module.add_arguments(sub)
            handler = module.run
    return parser, handler


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser, handler = _build_parser(arguments)
    args = parser.parse_args(arguments)
    if handler is None:  # cannot happen: argparse requires a known command
        parser.error("no command")
    try:
        status = handler(args)
        sys.stdout.flush()  # here, so that a reader gone is seen here and not as Python exits
        return status
    except BrokenPipeError:  # `maxwell events | head -1`: the reader has what it wanted
        return _reader_gone()
    except MaxwellError as exc:
        return fail(f"maxwell {args.command_name}", str(exc), EXIT_FAILURE)
    except Exception as exc:  # a bug, still reported in one line with Maxwell's failure status
        if os.environ.get("MAXWELL_DEBUG"):
            raise
        message = f"internal error: {type(exc).__name__}: {exc} (MAXWELL_DEBUG=1 shows where)"
        return fail(f"maxwell {args.command_name}", message, EXIT_FAILURE)


def _reader_gone() -> int:
    """Whoever read our standard output stopped reading: end quietly, with success, as `cat`
    does under `head`. Standard output goes to /dev/null, so that flushing it at exit (what
    Python still holds for the closed pipe) cannot fail a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real stdout (a test's capture): nothing to flush there
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
