"""Random funding, transfers, bills, events and retries against the store and the pure ledger.

Invariants after every step: money is conserved (balances sum to zero), no account without credit
is negative, and the SQLite store agrees exactly with the in-memory ledger (same entries, same
balances, same refusals), compactions included. At the end, `verify` finds the stored journal
sound.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from maxwell.economy.ledger import (
    GRID,
    LANDAUER,
    SLASHING,
    TREASURY,
    EntryRequest,
    Ledger,
    LedgerError,
    Movement,
    agent_account,
    batch_request,
    event_request,
    open_request,
    stake_account,
    transfer_request,
)
from maxwell.economy.store import LedgerStore

AGENTS = ["a", "b", "c"]
ACCOUNTS = [*(agent_account(a) for a in AGENTS), *(stake_account(a) for a in AGENTS)]
SINKS = [GRID, LANDAUER, SLASHING]
amounts = st.integers(min_value=1, max_value=5_000_000)


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="maxwell-ledger-"))
        self.store = LedgerStore.open(self.directory / "state", now=lambda: 0.0)
        self.model = Ledger.genesis(at=0.0)
        self.time = 1.0
        self.sent: list[EntryRequest] = []
        self.counter = 0

    def teardown(self) -> None:
        try:
            result = self.store.verify()
            assert result.ok, result.violation
            assert Ledger.replay(self.store.entries()).balances() == self.model.balances()
        finally:
            self.store.close()
            shutil.rmtree(self.directory, ignore_errors=True)

    def submit(self, request: EntryRequest) -> None:
        """The same request to both; both must accept it alike or refuse it alike."""
        self.time += 1.0
        try:
            expected = self.model.submit(request, at=self.time)
        except LedgerError as refused:
            before = self.store.entries()
            try:
                self.store.submit(request, at=self.time)
            except LedgerError as also_refused:
                assert type(also_refused) is type(refused)
            else:
                raise AssertionError(f"the store accepted what the rules refused: {refused}")
            assert self.store.entries() == before
            return
        assert self.store.submit(request, at=self.time) == expected
        self.sent.append(request)

    def key(self) -> str:
        self.counter += 1
        return f"k{self.counter}"

    @rule(account=st.sampled_from(ACCOUNTS), credit=st.booleans())
    def open_account(self, account: str, credit: bool) -> None:
        self.submit(open_request(account, allow_credit=credit))

    @rule(account=st.sampled_from(ACCOUNTS), amount=amounts)
    def fund(self, account: str, amount: int) -> None:
        self.submit(transfer_request(self.key(), TREASURY, account, amount, kind="fund"))

    @rule(
        debit=st.sampled_from(ACCOUNTS),
        credit=st.sampled_from(ACCOUNTS + SINKS),
        amount=amounts,
    )
    def transfer(self, debit: str, credit: str, amount: int) -> None:
        if debit != credit:
            self.submit(transfer_request(self.key(), debit, credit, amount))

    @rule(agent=st.sampled_from(ACCOUNTS), energy=amounts, tax=amounts)
    def bill(self, agent: str, energy: int, tax: int) -> None:
        movements = [Movement(agent, GRID, energy), Movement(agent, LANDAUER, tax)]
        self.submit(batch_request(self.key(), movements, kind="bill"))

    @rule(agent=st.sampled_from(AGENTS), kind=st.sampled_from(["frozen", "thawed", "killed"]))
    def decide(self, agent: str, kind: str) -> None:
        self.submit(event_request(self.key(), kind, {"agent": agent}))

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        """A retry of something already applied: same entry back, nothing applied twice."""
        request = data.draw(st.sampled_from(self.sent))
        before = self.model.balances()
        self.submit(request)
        assert self.model.balances() == before

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data(), amount=amounts)
    def conflicting_retry(self, data: st.DataObject, amount: int) -> None:
        """An old key with new content: refused by both (IdempotencyConflictError)."""
        request = data.draw(st.sampled_from(self.sent))
        self.submit(transfer_request(request.key, TREASURY, GRID, amount, memo="conflict"))

    @rule(back=st.floats(min_value=0.0, max_value=15.0))
    def compact(self, back: float) -> None:
        """Fold the entries older than a moment ago: both fold the same, no balance moves, and
        later retries of folded keys (rules above) are answered as before."""
        before, balances = self.time - back, self.model.balances()
        plan = self.model.compact(before=before)
        done = self.store.compact(before)
        assert (plan is None) == (done.checkpoint is None)
        assert self.store.entries() == list(self.model.entries())
        assert self.store.folded_keys() == list(self.model.folded_keys())
        assert self.model.balances() == balances

    @invariant()
    def money_is_conserved(self) -> None:
        assert sum(self.store.balances().values()) == 0

    @invariant()
    def no_account_without_credit_is_negative(self) -> None:
        for account in self.store.accounts().values():
            assert account.allow_credit or account.balance >= 0, account

    @invariant()
    def store_equals_the_pure_ledger(self) -> None:
        assert self.store.accounts() == self.model.accounts()


LedgerMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
TestLedgerMachine = LedgerMachine.TestCase
