"""Money into a node's accounts: the local users (issue 11, 1), their accounts, what they own,
and every funding (an agent's, a user's, a spawn's payer).

A local user is a process on the Unix socket whose uid the kernel vouches for
(`maxwell.node.peers`) and that is not an administrator. It may spawn agents that run as
itself, funded from its own account `user:<uid>`, which only the admin funds (from the
treasury), and it sees and acts on its own agents alone: reads them, funds them from its account,
changes their bids, kills them. A dynamic uid (an agent's own, `--dynamic-uids`) is never a local
user: agents use their tokens, so an agent cannot spawn others to escape its budget or its group.
"""

from __future__ import annotations

import contextlib
import pwd
import secrets
from collections.abc import Callable, Iterator

from maxwell.economy.ledger import (
    TREASURY,
    EntryRequest,
    IdempotencyConflictError,
    InsufficientFundsError,
    LedgerError,
    agent_account,
    open_request,
    transfer_request,
    user_account,
)
from maxwell.economy.store import LedgerStore
from maxwell.node.agents import AgentRecord
from maxwell.node.facade import (
    FundKeyConflictError,
    NodeError,
    NotAllowedError,
    PaymentError,
    Principal,
    Role,
    UserAccount,
)
from maxwell.units import Money, money_to_tokens
from maxwell.users import RunAs, UidRange, UnknownUserError


class LocalUsers:
    """The node's local users and their accounts (see the module)."""

    def __init__(
        self, uids: UidRange | None, ledger: LedgerStore, wall: Callable[[], float]
    ) -> None:
        self._uids = uids
        self._ledger = ledger
        self._wall = wall

    def principal(self, uid: int) -> Principal | None:
        """A local user's principal; None for an agent's dynamic uid."""
        if self._uids is not None and self._uids.first <= uid <= self._uids.last:
            return None
        return Principal(Role.USER, uid=uid)

    def name(self, uid: int) -> str:
        """The user `uid` is in the user database: an agent runs as a user the system knows."""
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            raise NodeError(
                f"uid {uid} is not in the user database: it cannot run agents"
            ) from None

    def account(self, uid: int) -> UserAccount:
        """The user's account (a balance of 0 before the admin first funds it)."""
        balance = self._ledger.balances().get(user_account(uid), Money(0))
        try:
            name = self.name(uid)
        except NodeError:
            name = str(uid)
        return UserAccount(uid=uid, user=name, balance=Money(balance))

    def fund(self, uid: int, amount: Money, key: str | None = None) -> UserAccount:
        """Move `amount` from the treasury to the user's account (opened on its first funding);
        with the client's idempotency `key`, a retry funds once."""
        check_funding(amount)
        account = user_account(uid)
        funding = transfer_request(
            f"fund-user:{uid}:{key or secrets.token_hex(8)}", TREASURY, account, amount,
            kind="funded", detail={"user": uid, "amount": int(amount)},
        )  # fmt: skip
        with _ledger_refusals(key):
            self._ledger.submit_many([open_request(account), funding], at=self._wall())
        return self.account(uid)

    def fund_agent(
        self, agent: AgentRecord, amount: Money, key: str | None, owner: int | None
    ) -> None:
        """Fund a live agent from the treasury, or from the account of `owner`, a local user who
        owns it; with the client's idempotency `key`, a retry funds once. The next tick settles
        the agent."""
        payer = TREASURY
        if owner is not None:
            if not owns(owner, agent.user):
                raise NotAllowedError(f"agent {agent.id} is not uid {owner}'s")
            payer = self.check_pays(owner, amount)
        with _ledger_refusals(key):
            self._ledger.submit(funding_request(agent.id, amount, key, payer), at=self._wall())
        agent.settle_next = True

    def check_pays(self, uid: int, amount: Money) -> str:
        """The user's account, if it holds `amount` (else a `PaymentError` saying what it holds)."""
        account = user_account(uid)
        held = self._ledger.balances().get(account, Money(0))
        if held < amount:
            raise PaymentError(
                f"{account} holds {money_to_tokens(held):g} $J, less than the "
                f"{money_to_tokens(amount):g} $J asked: the admin funds it (maxwell user fund)"
            )
        return account


def check_funding(amount: object) -> None:
    """A funding is a positive integer of µ$J (a `NodeError` otherwise)."""
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise NodeError(f"funding must be a positive integer of µ$J, got {amount!r}")


def funding_request(
    agent_id: str, amount: int, key: str | None = None, payer: str = TREASURY
) -> EntryRequest:
    """The ledger entry that funds an agent from `payer` (the treasury, or the account of the
    local user who owns it), under the client's idempotency `key` (so a retry funds once) or a
    fresh one."""
    return transfer_request(
        f"fund:{agent_id}:{key or secrets.token_hex(8)}", payer, agent_account(agent_id), amount,
        kind="funded", detail={"agent": agent_id, "amount": int(amount)},
    )  # fmt: skip


def _ledger_refusals(key: str | None) -> contextlib.AbstractContextManager[None]:
    """The ledger's refusals of a funding, as the API's errors."""
    return ledger_refusals(FundKeyConflictError(f"key {key!r} funded another request"))


@contextlib.contextmanager
def ledger_refusals(conflict: NodeError) -> Iterator[None]:
    """The ledger's refusals of a request, as the API's errors: `conflict` for an idempotency
    key used for other content, a 402 for a payer short of money, a 400 for the rest."""
    try:
        yield
    except IdempotencyConflictError as exc:
        raise conflict from exc
    except InsufficientFundsError as exc:
        raise paid_short(exc) from exc
    except LedgerError as exc:
        raise NodeError(str(exc)) from exc


def owns(uid: int, user: str | None) -> bool:
    """Whether an agent that runs as `user` (its stored label) belongs to local user `uid`."""
    if user is None:
        return False
    try:
        return RunAs.parse(user).uid == uid
    except UnknownUserError:
        return False


def paid_short(exc: InsufficientFundsError) -> PaymentError:
    """The ledger's refusal, as the API's: the payer held too little."""
    return PaymentError(str(exc))
