"""`maxwell user show|fund`: local users' accounts (`maxwell.node.accounts`).

A local user (anyone on the daemon's Unix socket who is not an administrator, known by the
kernel's word) spawns agents that run as itself, funded from its own account `user:<uid>`. The
admin funds that account from the treasury (`fund`); a user reads its own (`show` with no USER),
the admin anyone's.
"""

from __future__ import annotations

import argparse
import pwd
import uuid

from maxwell.cli.agents_cmd import (
    COMMON_EPILOG,
    add_client_arguments,
    dollars_j,
    run_with_client,
)
from maxwell.cli.common import print_json
from maxwell.client import Client
from maxwell.errors import UsageError
from maxwell.node.facade import UserAccount
from maxwell.node.wire import to_json
from maxwell.units import UJ_PER_J, parse_energy


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Local users' accounts: a local user's agents run as itself and are funded from its"
        " account, which the admin funds from the treasury."
    )
    parser.epilog = COMMON_EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    actions = parser.add_subparsers(dest="user_action", metavar="ACTION", required=True)
    show = actions.add_parser("show", help="a user's account (default: your own)")
    show.add_argument("user", nargs="?", metavar="USER", help="a name or a uid (admin)")
    fund = actions.add_parser("fund", help="fund a user's account from the treasury (admin)")
    fund.add_argument("user", metavar="USER", help="a name or a uid")
    fund.add_argument("energy", metavar="ENERGY")
    for sub in (show, fund):
        add_client_arguments(sub)


def uid_of(user: str) -> int:
    """A user named on the command line, as its uid (digits are a uid as they stand)."""
    if user.isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise UsageError(f"no such user {user!r}") from None


def _line(account: UserAccount) -> str:
    return f"{account.user} (uid {account.uid}): {dollars_j(account.balance)} $J"


def _show(client: Client, args: argparse.Namespace) -> None:
    account = client.user_account(None if args.user is None else uid_of(args.user))
    print_json(to_json(account)) if args.json else print(_line(account))


def _fund(client: Client, args: argparse.Namespace) -> None:
    amount_j = parse_energy(args.energy) / UJ_PER_J
    # One key per invocation: a lost answer retried with it never funds twice.
    account = client.fund_user(uid_of(args.user), amount_j, key=uuid.uuid4().hex)
    print_json(to_json(account)) if args.json else print(_line(account))


HANDLERS = {"show": _show, "fund": _fund}


def run(args: argparse.Namespace) -> int:
    action = args.user_action
    return run_with_client(
        f"maxwell user {action}", args, lambda client: HANDLERS[action](client, args)
    )
