"""`maxwell ledger {verify,balances,fund,compact} --state DIR`: the $JOULE ledger from the shell."""

from __future__ import annotations

import argparse
import math
import re
import uuid
from datetime import UTC, datetime

from maxwell.cli.common import EXIT_FAILURE, EXIT_USAGE, fail, print_json
from maxwell.economy.ledger import (
    TREASURY,
    Audit,
    IdempotencyConflictError,
    InvalidEntryError,
    agent_account,
)
from maxwell.economy.store import (
    DB_NAME,
    Compaction,
    LedgerBusyError,
    LedgerSchemaError,
    LedgerStore,
    LedgerUnsoundError,
    NotALedgerError,
    StateDirError,
)
from maxwell.errors import MaxwellError, UsageError
from maxwell.units import Money, money_to_tokens, tokens_to_money

PROG = "maxwell ledger"

DESCRIPTION = f"""\
The $JOULE ledger: double-entry accounts in integer micro-$J, kept as an append-only journal in
SQLite at DIR/{DB_NAME}. Money enters only by funding (minted from the treasury, which therefore
goes negative) and the sum of all accounts is always zero. `compact` folds old entries into a
checkpoint so the journal stays bounded; `verify` still proves every balance.
"""

VERIFY_DESCRIPTION = """\
Replay the journal from scratch and check it: sequence numbers contiguous, idempotency keys
unique, every entry balanced (its legs sum to zero), no account without credit below zero, the
stored balances equal to the replay, and all accounts summing to zero. A compacted journal
starts with its checkpoint: its summary must add up to its legs, the replay starts from the
accounts and balances it keeps, and the keys it folded must be one per folded entry and never
used again. Prints the first violation, or the counts when the ledger is sound. SQLite's own
check of the file (quick_check) comes first: a damaged file is a failure (125), not a violation.
"""

EXIT_BUSY = 75  # sysexits' EX_TEMPFAIL: try again later

COMPACT_DESCRIPTION = """\
Fold the journal's oldest entries, those before TIME, into one checkpoint entry, in one SQLite
transaction, so the journal stays bounded while `verify` still proves every balance.

Which entries: the longest run from the start of the journal whose time is before TIME (an entry
at or after TIME ends it: entry times come from their writers, and only a prefix can be folded
without changing what replaying the rest decides). A checkpoint left by an earlier compaction is
folded again with them. Compacting again with the same TIME changes nothing.

The checkpoint takes the number of the last entry it folds (later entries keep theirs). Its legs
are each account's net over the folded legs, so it is balanced and no balance changes; its detail
lists the accounts the folded entries opened and, per agent and kind, how many entries and, per
account, how many legs and their positive and negative sums, so per-agent totals computed from the
journal are the same before and after. The idempotency key of every folded entry is kept (with a
digest of its content): a retry is still answered once, never applied again.

An unsound ledger is refused (run `verify`): folding would hide the damage. The journal is
audited again before COMMIT; a failure or a crash at any point leaves it as it was.

TIME is a Unix timestamp in seconds (digits, optionally a fraction: 1717200000, 1717200000.5) or
an ISO-8601 date or date-time (2024-06-01, 2024-06-01T12:00:00, 2024-06-01T12:00:00+02:00,
2024-06-01T10:00:00Z); one without a UTC offset is read as UTC.
"""

COMPACT_EPILOG = f"""\
exit status:
  0    compacted, or nothing to compact (said on stdout)
  1    the ledger is unsound: nothing was compacted (the first violation is named)
  2    usage error: a bad TIME or --busy-timeout, no such state directory, no Maxwell ledger
  {EXIT_BUSY}   the ledger is busy: another writer (a running daemon) held its lock longer than
       --busy-timeout; nothing was compacted, try again
  125  Maxwell itself failed (e.g. the database is damaged or unreadable)
"""

VERIFY_EPILOG = """\
exit status:
  0    the ledger is sound
  1    the ledger is unsound; the first violation is named (entry number and reason)
  2    usage error: no such state directory, or it holds no Maxwell ledger
  125  Maxwell itself failed (e.g. the database is damaged, SQLite's quick_check fails, or
       unreadable); nothing was written
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
    """Add `verify`, `balances`, `fund` and `compact` under `parser` (`ledger`'s parser)."""
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
    _add_compact(actions)


def _add_compact(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    compact = actions.add_parser(
        "compact",
        help="fold the entries before a time into a checkpoint (verify still proves all)",
        description=COMPACT_DESCRIPTION,
        epilog=COMPACT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_state(compact)
    compact.add_argument(
        "--before",
        required=True,
        metavar="TIME",
        help="fold entries before TIME: Unix seconds or ISO-8601 date/time (UTC if no offset)",
    )
    compact.add_argument(
        "--busy-timeout",
        default="30",
        metavar="SECONDS",
        help="how long to wait for a running daemon's write lock before giving up (default 30)",
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
        if command == "compact":
            return _compact(args, prog)
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
    folded = f"; the first, a checkpoint, folds {result.folded}" if result.folded else ""
    return (
        f"sound: {result.entries} entries ({result.transfers} moving money, {result.events} "
        f"events{folded}), {result.accounts} accounts, minted {_tokens(result.minted)}, "
        f"to grid {_tokens(result.to_grid)}, to landauer {_tokens(result.to_landauer)}"
    )


def _verify(args: argparse.Namespace) -> int:
    with LedgerStore.open(args.state, create=False) as store:
        result = store.verify()
    if args.json:
        print_json(result.to_json())
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
        print_json({"accounts": rows, "total_micro": total})
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
        repeated = store.key_used(key)
        try:
            store.open_account(account)
            entry = store.transfer(key, TREASURY, account, amount, kind="fund")
        except (IdempotencyConflictError, InvalidEntryError) as exc:
            raise UsageError(str(exc)) from None
        balance = store.balance(account)
    if args.json:
        print_json(
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
    else:
        done = "already funded" if repeated else "funded"
        print(
            f"{done} {account} with {_tokens(amount)} (entry {entry.seq}, key {key}); "
            f"balance {_tokens(balance)}"
        )
    return 0


_UNIX_TIME = re.compile(r"^[0-9]+(?:\.[0-9]+)?$")


def parse_time(text: str) -> float:
    """A Unix timestamp (digits, optional fraction) or an ISO-8601 date/time (UTC if naive)."""
    if _UNIX_TIME.match(text):
        value = float(text)
        if math.isfinite(value):
            return value
        raise UsageError(f"time {text!r} is out of range")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"cannot read time {text!r}: expected a Unix timestamp (1717200000) or an ISO-8601 "
            "date/time (2024-06-01, 2024-06-01T12:00:00+02:00)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _parse_busy_timeout(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise UsageError(f"--busy-timeout must be a number of seconds >= 0, got {text!r}")
    return seconds


def _iso(timestamp: float) -> str:
    try:
        return datetime.fromtimestamp(timestamp, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return f"{timestamp} (Unix time)"


def _compact(args: argparse.Namespace, prog: str) -> int:
    before = parse_time(args.before)
    busy_timeout_s = _parse_busy_timeout(args.busy_timeout)
    try:
        with LedgerStore.open(args.state, create=False, busy_timeout_s=busy_timeout_s) as store:
            done = store.compact(before)
    except LedgerBusyError as exc:
        return fail(
            prog,
            f"{exc}; nothing was compacted (retry, stop the daemon, or raise --busy-timeout)",
            EXIT_BUSY,
        )
    except LedgerUnsoundError as exc:
        return fail(prog, f"{exc} (see `maxwell ledger verify`)", 1)
    if args.json:
        print_json(_compaction_json(done))
    else:
        print(_compaction_line(done))
    return 0


def _compaction_json(done: Compaction) -> dict[str, object]:
    return {
        "compacted": done.checkpoint is not None,
        "before": done.before,
        "before_iso": _iso(done.before),
        "checkpoint": None if done.checkpoint is None else done.checkpoint.seq,
        "replaced": done.replaced,
        "folded": done.folded,
        "folded_keys": done.folded_keys,
        "entries": done.entries,
    }


def _compaction_line(done: Compaction) -> str:
    when = _iso(done.before)
    if done.checkpoint is None:
        return (
            f"nothing to compact: no entry before {when} left to fold; the journal holds "
            f"{done.entries} entries"
        )
    last = done.checkpoint.seq
    first = last - done.replaced + 1
    return (
        f"compacted: entries {first}-{last} (before {when}) folded into checkpoint entry {last}, "
        f"{done.folded_keys} more keys kept for retries; the journal now holds {done.entries} "
        "entries; sound, no balance changed"
    )
