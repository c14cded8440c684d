"""A node's side of money across nodes (issue 13, 3): the four halves of `maxwell.cluster.
transfers` against this node's ledger, each under the daemon's lock, each idempotent.

- `send` (home): the job's funds leave the payer (a local user's account, or the treasury for
  the admin) for `outbound:<runner>`; the answer is the node's signed voucher for them. Sending
  the same job again returns a voucher for the same transfer (a retry); another amount or
  runner for that job is refused (409).
- `spawn` (runner): an agent funded by a home node's voucher: `inbound:<home>` pays it (the
  `xfer-in` half, in the spawn's own unit of work). A voucher spends once: a job already
  received is refused (409) naming its agent.
- `settle` (runner): once the job's agent is dead or exited, what is left of its money (at most
  what it received) goes back to `inbound:<home>` (`xfer-back`), and the answer is the node's
  voucher for it; while the agent lives, 409. Settling again returns the same amount.
- `refund` (home): a runner's voucher for what came back moves it from `outbound:<runner>` to
  the payer that this node's own `xfer-out` entry names, at most what was sent (`xfer-home`).
- `report`: the node's halves and its `outbound:`/`inbound:` balances, for
  `maxwell cluster ledger verify`.

A node takes part only with a gossip identity (`--node-key`, `--authority`): its vouchers are
signed by its node key, and it believes those of nodes the authority certified.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable

from maxwell.cluster.transfers import (
    Direction,
    Transfer,
    TransferError,
    Voucher,
    VoucherError,
    check,
    declined,
    halves,
    refunded,
    returned,
    sent,
    sign,
)
from maxwell.economy.ledger import (
    TREASURY,
    Entry,
    agent_account,
)
from maxwell.economy.store import LedgerStore
from maxwell.gossip.keys import NodeIdentity
from maxwell.gossip.trust import Admission
from maxwell.node.accounts import ledger_refusals
from maxwell.node.facade import (
    AgentState,
    NodeError,
    TransferHalf,
    TransferReceipt,
    TransfersReport,
    UnknownJobError,
)
from maxwell.units import Money

ENDED = (AgentState.DEAD, AgentState.EXITED)


class TransferConflictError(NodeError):
    """A job whose half this node already holds, for another transfer or agent; or one that
    cannot be settled yet."""

    status = 409


class NodeTransfers:
    """This node's halves of cross-node transfers (see the module)."""

    def __init__(
        self,
        identity: NodeIdentity,
        admission: Admission,
        ledger: LedgerStore,
        lock: Callable[[], contextlib.AbstractContextManager[object]],
        wall: Callable[[], float],
    ) -> None:
        self._identity = identity
        self._admission = admission
        self._ledger = ledger
        self._lock = lock
        self._wall = wall

    @property
    def node(self) -> str:
        return self._identity.node

    def send(self, job: str, runner: str, amount: Money, payer: str = TREASURY) -> TransferReceipt:
        """The home half: `amount` from `payer` to `outbound:<runner>`, and its voucher."""
        transfer = _transfer("out", job, self.node, runner, int(amount))
        with self._lock(), _refusals(f"xfer-out:{job}"), self._ledger.unit_of_work():
            for request in sent(transfer, payer):  # one by one: a refusal keeps its cause
                self._ledger.submit(request, at=self._wall())
        return TransferReceipt(job, runner, amount, payer, self._voucher(transfer))

    def received(self, wire: str) -> Transfer:
        """The transfer a home node's voucher (for this node) pays in; a 409 if its job was
        received already (naming its agent)."""
        transfer = self._checked(wire, "out").transfer
        earlier = self._ledger.entry(f"xfer-in:{transfer.job}")
        if earlier is not None:
            agent = earlier.detail.get("agent")
            raise TransferConflictError(f"job {transfer.job} was received: agent {agent} runs it")
        return transfer

    def decline(self, wire: str) -> TransferReceipt:
        """A home node's job this node received and cannot run: all of its funds back at once
        (`cluster.transfers.declined`), and this node's voucher for them. Declining again
        answers the same; a job that runs here is not declined (409)."""
        transfer = self._checked(wire, "out").transfer
        earlier = self._ledger.entry(f"xfer-in:{transfer.job}")
        if earlier is not None and not earlier.detail.get("declined"):
            raise TransferConflictError(f"job {transfer.job} runs here: settle it, not decline")
        requests, back = declined(transfer)
        with self._lock(), _refusals(f"xfer-in:{transfer.job}"), self._ledger.unit_of_work():
            for request in requests:
                self._ledger.submit(request, at=self._wall())
        return TransferReceipt(transfer.job, back.recipient, Money(back.amount), None,
                               self._voucher(back))  # fmt: skip

    def settle(self, job: str, state: Callable[[str], AgentState]) -> TransferReceipt:
        """The runner half of the way back, once the job's agent has ended, and its voucher."""
        arrived = self._entry(f"xfer-in:{job}")
        if arrived.detail.get("declined"):
            back = self._entry(f"xfer-back:{job}")
            amount, home = int(str(back.detail["amount"])), str(back.detail["node"])
            transfer = _transfer("back", job, self.node, home, amount)
            return TransferReceipt(job, home, Money(amount), None, self._voucher(transfer))
        agent, home = str(arrived.detail["agent"]), str(arrived.detail["node"])
        if state(agent) not in ENDED:
            raise TransferConflictError(f"job {job}'s agent {agent} still runs")
        with self._lock(), _refusals(f"xfer-back:{job}"):
            earlier = self._ledger.entry(f"xfer-back:{job}")
            if earlier is not None:
                left = int(str(earlier.detail["amount"]))
            else:
                held = int(self._ledger.balances().get(agent_account(agent), Money(0)))
                left = max(0, min(held, int(str(arrived.detail["amount"]))))
            transfer = _transfer("back", job, self.node, home, left)
            self._ledger.submit(returned(transfer, agent), at=self._wall())
        return TransferReceipt(job, home, Money(left), None, self._voucher(transfer))

    def refund(self, wire: str) -> TransferReceipt:
        """The home half of the way back: what a runner's voucher returns, to the job's payer."""
        transfer = self._checked(wire, "back").transfer
        out = self._entry(f"xfer-out:{transfer.job}")
        payer, runner = str(out.detail["payer"]), str(out.detail["node"])
        if runner != transfer.sender or transfer.amount > int(str(out.detail["amount"])):
            raise TransferConflictError(
                f"job {transfer.job} went to {runner} with {out.detail['amount']} µ$J: "
                f"{transfer.sender} cannot return {transfer.amount}"
            )
        with self._lock(), _refusals(f"xfer-home:{transfer.job}"):
            self._ledger.submit(refunded(transfer, payer), at=self._wall())
        return TransferReceipt(transfer.job, runner, Money(transfer.amount), payer, None)

    def report(self) -> TransfersReport:
        balances = {
            name: int(balance)
            for name, balance in self._ledger.balances().items()
            if name.startswith(("outbound:", "inbound:"))
        }
        journal = halves((e.kind, e.detail, e.legs) for e in self._ledger.entries())
        rows = tuple(TransferHalf(h.kind, h.job, h.peer, h.amount, h.payer) for h in journal)
        return TransfersReport(self.node, balances, rows)

    def _voucher(self, transfer: Transfer) -> str:
        identity = self._identity
        wire = sign(transfer, self._wall(), identity.key, identity.certificate).encode()
        return base64.b64encode(wire).decode()

    def _checked(self, text: str, direction: Direction) -> Voucher:
        try:
            wire = base64.b64decode(text, validate=True)
        except ValueError:
            raise NodeError("voucher refused (malformed): not base64") from None
        try:
            return check(wire, self._admission, me=self.node, direction=direction)
        except VoucherError as exc:
            raise NodeError(f"voucher refused ({exc.reason}): {exc}") from None

    def _entry(self, key: str) -> Entry:
        entry = self._ledger.entry(key)
        if entry is None:
            raise UnknownJobError(f"no {key.split(':')[0]} half of job {key.split(':', 1)[1]}")
        return entry


def _transfer(direction: Direction, job: str, sender: str, recipient: str, amount: int) -> Transfer:
    try:
        return Transfer(direction, job, sender, recipient, amount)
    except TransferError as exc:
        raise NodeError(str(exc)) from None


def _refusals(key: str) -> contextlib.AbstractContextManager[None]:
    """The ledger's refusals of a half, as the API's errors."""
    return ledger_refusals(TransferConflictError(f"{key} was recorded for another transfer"))
