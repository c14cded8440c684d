"""`maxwell ledger {verify,balances,fund} --state DIR`: the $JOULE ledger from the shell."""

from __future__ import annotations

import argparse
import json
import math
import uuid

from maxwell.cli.common import EXIT_FAILURE, EXIT_USAGE, fail
from maxwell.economy.ledger import (
    TREASURY,
    Audit,
    IdempotencyConflictError,
    InvalidEntryError,
    agent_account,
)
from maxwell.economy.store import (
    DB_NAME,
    LedgerSchemaError,
    LedgerStore,
    NotALedgerError,
    StateDirError,
)
from maxwell.errors import MaxwellError, UsageError
from maxwell.units import Money, money_to_tokens, tokens_to_money

PROG = "maxwell ledger"

DESCRIPTION = f"""\
The $JOULE ledger: double-entry accounts in integer micro-$J, kept as an append-only journal in
SQLite at DIR/{DB_NAME}. Money enters only by funding (minted from the treasury, which therefore
goes negative) and the sum of all accounts is always zero.
"""

VERIFY_DESCRIPTION = """\
Replay the journal from scratch and check it: sequence numbers contiguous, idempotency keys
unique, every entry balanced (its legs sum to zero), no account without credit below zero, the
stored balances equal to the replay, and all accounts summing to zero. Prints the first
violation, or the counts when the ledger is sound.
"""

VERIFY_EPILOG = """\
exit status:
  0    the ledger is sound
  1    the ledger is unsound; the first violation is named (entry number and reason)
  2    usage error: no such state directory, or it holds no Maxwell ledger
  125  Maxwell itself failed (e.g. the database is damaged or unreadable)
"""

# Status for the commands that change or read the ledger (not verify).
COMMON_EPILOG = """\
exit status:
  0    done
  2    usage error (bad amount or agent id, missing state directory, key reused)
  125  Maxwell itself failed
"""


def _add_state(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state", required=True, metavar="DIR", help=f"state directory holding {DB_NAME}"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `verify`, `balances` and `fund` under `parser` (the `ledger` subcommand's parser)."""
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    actions = parser.add_subparsers(dest="ledger_command", metavar="ACTION", required=True)

    verify = actions.add_parser(
        "verify",
        help="replay the journal and check every invariant",
        description=VERIFY_DESCRIPTION,
        epilog=VERIFY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_state(verify)

    balances = actions.add_parser(
        "balances",
        help="every account's balance",
        description="Print every account's stored balance in $J (and µ$J with --json).",
        epilog=COMMON_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_state(balances)

    fund = actions.add_parser(
        "fund",
        help="mint $J from the treasury into an agent's account",
        description=(
            "Open agent AGENT's account if needed and move AMOUNT $J into it from the treasury. "
            "Creates the state directory and the ledger if missing."
        ),
        epilog=COMMON_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_state(fund)
    fund.add_argument("agent", metavar="AGENT", help="agent id, e.g. alice or job-42")
    fund.add_argument("amount", metavar="AMOUNT", help="amount in $J, e.g. 10 or 0.5")
    fund.add_argument(
        "--key",
        metavar="KEY",
        help="idempotency key: funding again with the same key applies once (default: a new one)",
    )


def run(args: argparse.Namespace) -> int:
    command: str = args.ledger_command
    prog = f"{PROG} {command}"
    try:
        if command == "verify":
            return _verify(args)
        if command == "balances":
            return _balances(args)
        if command == "fund":
            return _fund(args)
    except (UsageError, StateDirError, NotALedgerError, LedgerSchemaError) as exc:
        return fail(prog, str(exc), EXIT_USAGE)
    except MaxwellError as exc:
        return fail(prog, str(exc), EXIT_FAILURE)
    return fail(prog, f"unknown ledger action {command!r}", EXIT_USAGE)


def _tokens(amount: int) -> str:
    return f"{money_to_tokens(amount):.6f} $J"


def verdict_line(result: Audit) -> str:
    """One line: the counts when sound, the first violation when not."""
    if result.violation is not None:
        return f"unsound: {result.violation}"
    return (
        f"sound: {result.entries} entries ({result.transfers} moving money, {result.events} "
        f"events), {result.accounts} accounts, minted {_tokens(result.minted)}, "
        f"to grid {_tokens(result.to_grid)}, to landauer {_tokens(result.to_landauer)}"
    )


def _verify(args: argparse.Namespace) -> int:
    with LedgerStore.open(args.state, create=False) as store:
        result = store.verify()
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        print(verdict_line(result))
    return 0 if result.ok else 1


def _balances(args: argparse.Namespace) -> int:
    with LedgerStore.open(args.state, create=False) as store:
        accounts = store.accounts()
    total = sum(account.balance for account in accounts.values())
    if args.json:
        rows = [
            {
                "account": account.name,
                "allow_credit": account.allow_credit,
                "balance_micro": account.balance,
                "balance": money_to_tokens(account.balance),
            }
            for account in accounts.values()
        ]
        print(json.dumps({"accounts": rows, "total_micro": total}))
        return 0
    width = max((len(name) for name in accounts), default=7)
    for account in accounts.values():
        credit = "  (credit)" if account.allow_credit else ""
        print(f"{account.name:<{width}}  {money_to_tokens(account.balance):>20.6f} $J{credit}")
    print(f"{'total':<{width}}  {money_to_tokens(total):>20.6f} $J")
    return 0


def _parse_amount(text: str) -> Money:
    try:
        tokens = float(text)
    except ValueError:
        raise UsageError(f"cannot read amount {text!r}: expected a number of $J") from None
    if not math.isfinite(tokens) or tokens <= 0:
        raise UsageError(f"amount must be a positive finite number of $J, got {text!r}")
    amount = tokens_to_money(tokens)
    if amount <= 0:
        raise UsageError(f"amount {text!r} is below one micro-$J")
    return amount


def _fund(args: argparse.Namespace) -> int:
    amount = _parse_amount(args.amount)
    try:
        account = agent_account(args.agent)
    except InvalidEntryError as exc:
        raise UsageError(str(exc)) from None
    key: str = args.key if args.key is not None else f"fund:{uuid.uuid4().hex}"
    with LedgerStore.open(args.state, create=True) as store:
        repeated = store.entry(key) is not None
        try:
            store.open_account(account)
            entry = store.transfer(key, TREASURY, account, amount, kind="fund")
        except (IdempotencyConflictError, InvalidEntryError) as exc:
            raise UsageError(str(exc)) from None
        balance = store.balance(account)
    if args.json:
        print(
            json.dumps(
                {
                    "agent": args.agent,
                    "account": account,
                    "entry": entry.seq,
                    "key": key,
                    "repeated": repeated,
                    "amount_micro": amount,
                    "amount": money_to_tokens(amount),
                    "balance_micro": balance,
                    "balance": money_to_tokens(balance),
                }
            )
        )
    else:
        done = "already funded" if repeated else "funded"
        print(
            f"{done} {account} with {_tokens(amount)} (entry {entry.seq}, key {key}); "
            f"balance {_tokens(balance)}"
        )
    return 0
