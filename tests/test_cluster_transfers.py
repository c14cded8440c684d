"""Money across nodes (`maxwell.cluster.transfers`, issue 13, 3): vouchers, the four halves and
reconciliation, pure, on two in-memory ledgers."""

from __future__ import annotations

import dataclasses
import random

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from maxwell.cluster.transfers import (
    DOMAIN,
    VOUCHER_REFUSALS,
    Half,
    PairReport,
    Transfer,
    TransferError,
    VoucherError,
    check,
    halves,
    inbound_account,
    outbound_account,
    received,
    reconcile,
    reconcile_all,
    refunded,
    returned,
    sent,
    sign,
)
from maxwell.economy.ledger import (
    TREASURY,
    EntryRequest,
    Ledger,
    agent_account,
    open_request,
    transfer_request,
)
from maxwell.gossip.trust import Admission, NodeCertificate, certify

AUTHORITY = Ed25519PrivateKey.generate()
ADMISSION = Admission(authority=AUTHORITY.public_key())
KEYS = {node: Ed25519PrivateKey.generate() for node in ("home", "runner")}
CERTS = {node: certify(AUTHORITY, node, key.public_key()) for node, key in KEYS.items()}
AT = 1_800_000_000.0


def _voucher(transfer: Transfer) -> bytes:
    return sign(transfer, AT, KEYS[transfer.sender], CERTS[transfer.sender]).encode()


OUT = Transfer("out", "job-1", "home", "runner", 5_000_000)


# --- vouchers ------------------------------------------------------------------------------------


def test_a_voucher_is_believed_by_its_recipient() -> None:
    voucher = check(_voucher(OUT), ADMISSION, me="runner", direction="out")
    assert voucher.transfer == OUT and voucher.at == AT and voucher.certificate == CERTS["home"]


def _resigned(body: list[object], key: Ed25519PrivateKey, cert: NodeCertificate) -> bytes:
    packed = msgpack.packb(body)
    return msgpack.packb([packed, cert.encode(), key.sign(DOMAIN + packed)])


def test_a_voucher_is_refused_unless_the_senders_admitted_key_signed_it_for_this_node() -> None:
    body = [1, "out", "job-1", "home", "runner", 5_000_000, AT]
    stranger = Ed25519PrivateKey.generate()
    altered = msgpack.unpackb(_voucher(OUT))
    altered[0] = msgpack.packb([*body[:5], 9_000_000, AT])  # the amount raised after signing
    cases = {
        "forged": [
            msgpack.packb(altered),
            _resigned(body, KEYS["runner"], CERTS["runner"]),  # the runner signs for home
        ],
        "not-admitted": [
            _resigned(body, stranger, certify(stranger, "home", stranger.public_key())),
        ],
        "misdirected": [_voucher(dataclasses.replace(OUT, recipient="elsewhere"))],
        "malformed": [b"", b"\x93\x01\x02\x03", b"x" * 601, msgpack.packb([b"", b"", b""])],
    }
    for reason, wires in cases.items():
        for wire in wires:
            with pytest.raises(VoucherError) as refused:
                check(wire, ADMISSION, me="runner", direction="out")
            assert refused.value.reason == reason, wire
    with pytest.raises(VoucherError) as refused:
        check(_voucher(OUT), ADMISSION, me="runner", direction="back")
    assert refused.value.reason == "wrong-kind"


@given(st.binary(max_size=700))
def test_any_bytes_at_all_are_refused_with_a_reason_never_raised_otherwise(wire: bytes) -> None:
    with pytest.raises(VoucherError) as refused:
        check(wire, ADMISSION, me="runner", direction="out")
    assert refused.value.reason in VOUCHER_REFUSALS


def test_a_transfer_names_accounts_a_ledger_can_hold() -> None:
    with pytest.raises(TransferError, match="cannot cross nodes"):
        Transfer("out", "job 1", "home", "runner", 1)
    with pytest.raises(TransferError, match="to itself"):
        Transfer("out", "job-1", "home", "home", 1)
    with pytest.raises(TransferError, match="more than 0"):
        Transfer("out", "job-1", "home", "runner", 0)
    with pytest.raises(TransferError, match="whole number"):
        Transfer("back", "job-1", "runner", "home", -1)
    with pytest.raises(TransferError, match="cannot sign for"):
        sign(OUT, AT, KEYS["runner"], CERTS["runner"])
    assert outbound_account("runner") == "outbound:runner"
    assert inbound_account("home") == "inbound:home"


# --- the halves on two ledgers -------------------------------------------------------------------


class Pair:
    """A home and a runner ledger, and the halves applied so far (each may be retried)."""

    def __init__(self) -> None:
        self.home = Ledger.genesis(at=AT)
        self.runner = Ledger.genesis(at=AT)
        self.home.open_account("user:1000", at=AT)
        self.home.transfer("fund-user", TREASURY, "user:1000", 10**12, at=AT)

    def apply(self, ledger: Ledger, requests: list[EntryRequest]) -> None:
        for request in requests:
            ledger.submit(request, at=AT)

    def report(self) -> PairReport:
        def of(ledger: Ledger) -> list[Half]:
            return halves((e.kind, e.detail, e.legs) for e in ledger.entries())

        return reconcile(
            "home", "runner", (self.home.balances(), self.runner.balances()),
            (of(self.home), of(self.runner)),
        )  # fmt: skip


def _steps(pair: Pair, job: str, fund: int, spent: int) -> list[tuple[Ledger, list[EntryRequest]]]:
    """A job's four halves in order; the runner's agent spends `spent` of `fund` in between."""
    out = Transfer("out", job, "home", "runner", fund)
    back = Transfer("back", job, "runner", "home", fund - spent)
    agent = f"a-{job}"
    return [
        (pair.home, sent(out, "user:1000")),
        (pair.runner, [open_request(agent_account(agent)), *received(out, agent)]),
        (pair.runner, [_spend(agent, spent, job)] if spent else []),
        (pair.runner, [returned(back, agent)]),
        (pair.home, [refunded(back, "user:1000")]),
    ]


def _spend(agent: str, amount: int, job: str) -> EntryRequest:
    return transfer_request(f"energy:{job}", agent_account(agent), "grid", amount, kind="billed")


JOB = st.tuples(st.integers(1, 10**9), st.integers(0, 10**9)).map(lambda t: (max(t), min(t)))


@settings(max_examples=60, deadline=None)
@given(st.lists(JOB, min_size=1, max_size=6), st.randoms(use_true_random=False))
def test_money_is_conserved_whenever_the_halves_stop_and_once_retried_to_the_end(
    jobs: list[tuple[int, int]], rng: random.Random
) -> None:
    pair = Pair()
    plans = [_steps(pair, f"j{i}", fund, spent) for i, (fund, spent) in enumerate(jobs)]
    done = [rng.randrange(len(plan) + 1) for plan in plans]  # where each job's run stopped
    for plan, upto in zip(plans, done, strict=True):
        for ledger, requests in plan[:upto]:
            pair.apply(ledger, requests)
            if rng.random() < 0.3:
                pair.apply(ledger, requests)  # a retry: applies nothing twice
    report = pair.report()
    assert report.conserved and not report.broken
    # Half done: sent and not received (1 step), or returned and not refunded (4 of 5).
    assert set(report.pending) == {f"j{i}" for i, upto in enumerate(done) if upto in (1, 4)}
    for plan in plans:  # every job retried to its end
        for ledger, requests in plan:
            pair.apply(ledger, requests)
    final = pair.report()
    assert final.conserved and final.in_flight == 0 and final.pending == ()
    assert final.outbound == -final.inbound == sum(s for _, s in jobs)
    assert pair.home.balance("user:1000") == 10**12 - sum(s for _, s in jobs)
    for ledger in (pair.home, pair.runner):
        assert sum(ledger.balances().values()) == 0


def test_a_receipt_without_its_sending_or_of_another_amount_is_broken() -> None:
    pair = Pair()
    pair.apply(pair.runner, [open_request(agent_account("a1")), *received(OUT, "a1")])  # never sent
    assert pair.report().broken == ("job-1",)
    pair = Pair()
    pair.apply(pair.home, sent(OUT, "user:1000"))
    more = dataclasses.replace(OUT, amount=6_000_000)
    pair.apply(pair.runner, [open_request(agent_account("a1")), *received(more, "a1")])
    report = pair.report()
    assert report.broken == ("job-1",) and not report.conserved


def test_a_job_that_came_back_empty_still_closes() -> None:
    pair = Pair()
    back = Transfer("back", "job-1", "runner", "home", 0)
    pair.apply(pair.home, sent(OUT, "user:1000"))
    pair.apply(pair.runner, [open_request(agent_account("a1")), *received(OUT, "a1")])
    pair.apply(pair.runner, [_spend("a1", OUT.amount, "job-1")])
    pair.apply(pair.runner, [returned(back, "a1")])
    assert pair.report().pending == ("job-1",)
    pair.apply(pair.home, [refunded(back, "user:1000")])
    report = pair.report()
    assert report.pending == () and report.conserved
    assert report.outbound == OUT.amount


def test_every_pair_that_moved_money_is_reconciled_each_way_and_a_ledger_knows_its_node() -> None:
    pair = Pair()
    for ledger, requests in _steps(pair, "j1", 5_000, 1_000)[:2]:  # home -> runner, received
        pair.apply(ledger, requests)
    back_home = Transfer("out", "j2", "runner", "home", 700)  # and a job the other way
    pair.runner.open_account("user:7", at=AT)
    pair.runner.transfer("fund-7", TREASURY, "user:7", 700, at=AT)
    pair.apply(pair.runner, sent(back_home, "user:7"))

    def of(ledger: Ledger) -> tuple[dict[str, int], list[Half]]:
        found = halves((e.kind, e.detail, e.legs) for e in ledger.entries())
        return {k: int(v) for k, v in ledger.balances().items()}, found

    nodes = {"home": of(pair.home), "runner": of(pair.runner)}
    assert {h.here for h in nodes["home"][1]} == {"home"}
    assert {h.here for h in nodes["runner"][1]} == {"runner"}
    reports = reconcile_all(nodes)
    assert [(r.home, r.runner) for r in reports] == [("home", "runner"), ("runner", "home")]
    assert all(r.conserved for r in reports)
    assert reports[0].pending == () and reports[1].pending == ("j2",)
    assert reports[1].in_flight == 700


def test_jobs_are_listed_from_every_node_s_halves_at_their_furthest_state() -> None:
    from maxwell.cli.submit_cmd import job_rows

    def half(kind: str, job: str, node: str, amount: int) -> dict[str, object]:
        return {"kind": kind, "job": job, "node": node, "amount_uj": amount, "payer": "treasury"}

    rows = job_rows({
        "home": [half("xfer-out", "j1", "runner", 5_000_000), half("xfer-out", "j2", "runner", 1),
                 half("xfer-home", "j1", "runner", 2_000_000)],
        "runner": [half("xfer-in", "j1", "home", 5_000_000), half("xfer-back", "j1", "home",
                                                                  2_000_000)],
    })  # fmt: skip
    assert rows == [
        {"job": "j1", "home": "home", "node": "runner", "fund_j": 5.0, "returned_j": 2.0,
         "state": "closed"},
        {"job": "j2", "home": "home", "node": "runner", "fund_j": 1e-6, "returned_j": None,
         "state": "sent"},
    ]  # fmt: skip
