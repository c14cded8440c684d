"""`maxwell cluster ledger verify --state DIR [--state DIR ...] [--json]`: every node's ledger, and
the money between them (issue 13, 3).

Each `--state` is one node's state directory; its ledger is opened read-only (a running daemon
keeps running) and verified as `maxwell ledger verify` does. Its cross-node halves
(`maxwell.cluster.transfers`) name the node the ledger belongs to, and the other nodes; every
pair that moved money is reconciled each way: what the home node holds in `outbound:<runner>`
plus what the runner holds in `inbound:<home>` must be exactly the money in flight (sent and
not yet received, returned and not yet refunded), and every second half must match its first.
A node named by a half whose ledger was not given is reported as missing (its pairs are not
reconciled: half of their story is not there).

JSON: `{"nodes": [{"node", "state", "sound", "violation", "halves"}], "pairs": [{"home",
"runner", "outbound_uj", "inbound_uj", "in_flight_uj", "pending", "broken", "conserved"}],
"missing": [node], "ok"}`. Exit status 0 when every ledger is sound, every pair conserved and no
ledger missing; 1 otherwise; 2 a state directory without a ledger; 125 the check itself failed.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from maxwell.cli.common import EXIT_FAILURE, EXIT_USAGE, fail, print_json
from maxwell.cluster.transfers import Half, PairReport, halves, reconcile_all
from maxwell.economy.store import LedgerSchemaError, LedgerStore, NotALedgerError, StateDirError
from maxwell.errors import MaxwellError, UsageError

PROG = "maxwell cluster ledger verify"


def add_arguments(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ledger = actions.add_parser("ledger", help="every node's ledger and the money between them")
    what = ledger.add_subparsers(dest="ledger_action", metavar="ACTION", required=True)
    verify = what.add_parser(
        "verify",
        help="verify each node's ledger and reconcile what crossed between them",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument(
        "--state", action="append", required=True, metavar="DIR",
        help="a node's state directory (repeat for each node)",
    )  # fmt: skip
    verify.add_argument("--json", action="store_true", help="one JSON object")


@dataclass(frozen=True)
class NodeLedger:
    state: str
    node: str | None  # from its halves; None when it moved nothing across
    violation: str | None
    balances: dict[str, int]
    halves: list[Half]


def _read(state: str) -> NodeLedger:
    with LedgerStore.open(state, create=False) as store:
        audit = store.verify()
        balances = {name: int(value) for name, value in store.balances().items()}
        found = halves((e.kind, e.detail, e.legs) for e in store.entries())
    names = {half.here for half in found if half.here}
    if len(names) > 1:
        raise UsageError(f"--state {state}: its halves name several nodes: {sorted(names)}")
    violation = str(audit.violation) if audit.violation is not None else None
    return NodeLedger(state, names.pop() if names else None, violation, balances, found)


@dataclass(frozen=True)
class Verdict:
    ledgers: list[NodeLedger]
    reports: list[PairReport]
    missing: list[str]

    @property
    def ok(self) -> bool:
        sound = all(ledger.violation is None for ledger in self.ledgers)
        return sound and not self.missing and all(r.conserved for r in self.reports)

    def to_json(self) -> dict[str, object]:
        nodes = [
            {"node": ledger.node, "state": ledger.state, "sound": ledger.violation is None,
             "violation": ledger.violation, "halves": len(ledger.halves)}
            for ledger in self.ledgers
        ]  # fmt: skip
        pairs = [
            {"home": r.home, "runner": r.runner, "outbound_uj": r.outbound,
             "inbound_uj": r.inbound, "in_flight_uj": r.in_flight, "pending": list(r.pending),
             "broken": list(r.broken), "conserved": r.conserved}
            for r in self.reports
        ]  # fmt: skip
        return {"nodes": nodes, "pairs": pairs, "missing": self.missing, "ok": self.ok}


def verify(states: list[str]) -> Verdict:
    """The verdict on the nodes whose state directories are `states` (see the module)."""
    ledgers = [_read(state) for state in states]
    known = {ledger.node: ledger for ledger in ledgers if ledger.node is not None}
    reports = reconcile_all({n: (ledger.balances, ledger.halves) for n, ledger in known.items()})
    named = {half.peer for ledger in ledgers for half in ledger.halves}
    given = [r for r in reports if r.home in known and r.runner in known]  # else: missing
    return Verdict(ledgers, given, sorted(named - set(known)))


def _print(verdict: Verdict) -> None:
    for ledger in verdict.ledgers:
        sound = "sound" if ledger.violation is None else f"unsound: {ledger.violation}"
        print(f"{ledger.node or '(no transfers)'} ({ledger.state}): {sound}, "
              f"{len(ledger.halves)} halves")  # fmt: skip
    for r in verdict.reports:
        state = "conserved" if r.conserved else "NOT CONSERVED"
        print(f"{r.home} -> {r.runner}: {state}; outbound {r.outbound} + inbound {r.inbound} "
              f"= in flight {r.in_flight} µ$J; pending {list(r.pending) or 'none'}, "
              f"broken {list(r.broken) or 'none'}")  # fmt: skip
    for node in verdict.missing:
        print(f"{node}: named by a transfer, but its ledger was not given (--state)")
    print("ok" if verdict.ok else "NOT OK")


def run(args: argparse.Namespace) -> int:
    states = [str(Path(state)) for state in args.state]
    try:
        verdict = verify(states)
    except (UsageError, StateDirError, NotALedgerError, LedgerSchemaError) as exc:
        return fail(PROG, str(exc), EXIT_USAGE)
    except MaxwellError as exc:
        return fail(PROG, str(exc), EXIT_FAILURE)
    if args.json:
        print_json(verdict.to_json())
    else:
        _print(verdict)
    return 0 if verdict.ok else 1
