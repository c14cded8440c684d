"""The store's failure paths, each injected for real rather than simulated: another connection
holding the write lock, a COMMIT on a filesystem that is full (a small tmpfs of the test's own),
a database file with a damaged page.

Each fails with the store's named error (`LedgerStoreError` or a subclass), in one line naming
the file; leaves nothing half-written (the journal, the balances and the node's rows are what they
were before the failed unit of work, and `verify` passes); and, once the cause is gone, the same
unit of work applies exactly once (its idempotency keys find it the second time). A damaged file
is refused by `verify`, `compact` and `maxwell ledger verify` (exit 125) and left as it was.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

from maxwell.cli import ledger_cmd
from maxwell.cli.common import EXIT_FAILURE, OneLineParser
from maxwell.economy.ledger import (
    GRID,
    LANDAUER,
    TREASURY,
    Entry,
    EntryRequest,
    Movement,
    agent_account,
    batch_request,
    transfer_request,
)
from maxwell.economy.store import (
    DB_NAME,
    LedgerBusyError,
    LedgerDamagedError,
    LedgerStore,
    LedgerStoreError,
)
from maxwell.node.state import AgentRow, ClaimRow, hash_token
from maxwell.node.store import NodeStore
from maxwell.units import Money

ALICE = agent_account("alice")
BOB = agent_account("bob")
T = TypeVar("T")
PAD = 1500  # bytes of detail per bill: a tick's worth of rows, a few pages of WAL per unit


class Ticks:
    """A fake wall clock for entries written without `at`."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def fund(store: LedgerStore) -> None:
    store.open_account(ALICE)
    store.open_account(BOB)
    store.transfer("fund-alice", TREASURY, ALICE, 10_000_000, kind="fund")
    store.transfer("fund-bob", TREASURY, BOB, 2_000_000, kind="fund")


def bills(tick: int, pad: int = 0) -> list[EntryRequest]:
    """A tick's bills: alice's energy and tax in one entry, bob's energy in another."""
    note = {"agent": "alice", "tick": tick, "note": "x" * pad}
    return [
        batch_request(
            f"bill:alice:{tick}",
            [Movement(ALICE, GRID, 100 + tick), Movement(ALICE, LANDAUER, 1)],
            kind="bill",
            detail=note,
        ),
        transfer_request(
            f"bill:bob:{tick}", BOB, GRID, 50, kind="bill", detail={**note, "agent": "bob"}
        ),
    ]


def journal(store: LedgerStore) -> tuple[list[Entry], dict[str, Money]]:
    return store.entries(), store.balances()


def assert_one_line_naming(error: LedgerStoreError, db: Path) -> None:
    assert "\n" not in str(error), str(error)
    assert str(db) in str(error)
    assert error.path == str(db)


@contextmanager
def write_lock_held(db: Path) -> Iterator[sqlite3.Connection]:
    """Another connection (a daemon in the middle of a tick) holding the write lock."""
    other = sqlite3.connect(db, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield other
    finally:
        other.close()  # rolls back whatever it still holds


# --- a busy lock ---------------------------------------------------------------------------------


@pytest.mark.parametrize("release", ["COMMIT", "ROLLBACK"])
def test_a_write_refused_for_a_busy_lock_leaves_nothing_then_applies_once(
    tmp_path: Path, release: str
) -> None:
    db = tmp_path / DB_NAME
    with LedgerStore.open(tmp_path, now=Ticks(), busy_timeout_s=0.05) as store:
        fund(store)
        before = journal(store)
        with write_lock_held(db) as other:
            with pytest.raises(LedgerBusyError) as caught:
                store.submit_many(bills(1))
            assert_one_line_naming(caught.value, db)
            assert str(caught.value).endswith("database is locked (another writer?)")
            with pytest.raises(LedgerBusyError):
                store.transfer("fund-alice-2", TREASURY, ALICE, 1, kind="fund")
            assert journal(store) == before  # WAL: reads go on while the lock is held
            other.execute(release)
        entries = store.submit_many(bills(1))
        assert store.submit_many(bills(1)) == entries  # the retry finds them: applied once
        assert [entry.key for entry in store.entries()[len(before[0]) :]] == [
            "bill:alice:1",
            "bill:bob:1",
        ]
        assert store.balance(ALICE) == before[1][ALICE] - 102
        assert store.balance(BOB) == before[1][BOB] - 50
        assert store.verify().ok


def agent(agent_id: str = "a1") -> AgentRow:
    return AgentRow(
        id=agent_id,
        name="worker",
        argv=("sleep", "1"),
        user=None,
        pid=None,
        cgroup={"kind": "v2", "path": "/sys/fs/cgroup/x"},
        token_hash=hash_token(agent_id),
        state="running",
        bid=1.5,
        demand=0.5,
        bid_seq=0,
        created_at=1.0,
    )


def open_node(state: Path, *, busy_timeout_s: float = 30.0) -> NodeStore:
    """A node store with alice and bob funded and agent a1 spawned."""
    node = NodeStore.open(state, Ticks(), busy_timeout_s=busy_timeout_s)
    with node.unit_of_work():
        fund(node.ledger)
        node.state.insert_agent(agent())
    return node


def node_tick(node: NodeStore, tick: int, pad: int = 0) -> None:
    """One unit of work as a tick makes one: the agent's counters, its claim and `last_tick`
    (node rows), and the tick's bills (ledger entries), in one transaction."""
    with node.unit_of_work():
        node.state.commit_tick(
            tick,
            float(tick),
            {"a1": {"energy_uj": 1000 * tick, "cpu_ns": 10 * tick}},
            [],
            {"a1": ClaimRow(cpu_ns=10 * tick, freed_bytes=0, shadow=tick)},
        )
        node.ledger.submit_many(bills(tick, pad))


def node_rows(node: NodeStore) -> tuple[object, ...]:
    """Everything a unit of work may change: the node's rows, the journal, the balances."""
    state = node.state
    return (
        state.agents(),
        state.claims(),
        state.pending(),
        state.last_tick(),
        *journal(node.ledger),
    )


def test_a_node_unit_of_work_refused_for_a_busy_lock_is_all_or_none(tmp_path: Path) -> None:
    db = tmp_path / DB_NAME
    node = open_node(tmp_path, busy_timeout_s=0.05)
    try:
        before, written = node_rows(node), len(node.ledger.entries())
        with write_lock_held(db):
            with pytest.raises(LedgerBusyError) as caught:
                node_tick(node, 1)
            assert_one_line_naming(caught.value, db)
            with pytest.raises(LedgerBusyError) as outside:  # a node table's write on its own
                node.state.update_agent("a1", state="frozen")
            assert_one_line_naming(outside.value, db)
            assert node_rows(node) == before
        node_tick(node, 1)
        after = node_rows(node)
        node_tick(node, 1)
        assert node_rows(node) == after
        assert node.state.last_tick() == (1, 1.0)
        assert node.state.claims()["a1"] == ClaimRow(10, 0, 1)
        added = [entry.key for entry in node.ledger.entries()[written:]]
        assert added == ["bill:alice:1", "bill:bob:1"]
        assert node.ledger.verify().ok
    finally:
        node.close()


# --- a full filesystem ---------------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs of the test's own, so that filling it fills nothing else."""
    if os.geteuid() != 0:
        pytest.skip("needs root: mounts a 1 MiB tmpfs to fill")
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("needs mount(8) and umount(8) to mount a 1 MiB tmpfs")
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1M,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs at {mount_point}: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


def fill(filesystem: Path, *, leave: int) -> Path:
    """Fill `filesystem` with one file until about `leave` bytes are free; that file."""
    usage = os.statvfs(filesystem)
    filler = filesystem / "filler"
    filler.write_bytes(b"\0" * max(usage.f_bavail * usage.f_frsize - leave, 0))
    return filler


def until_full(
    unit: Callable[[int], object], snapshot: Callable[[], T]
) -> tuple[int, LedgerStoreError, T]:
    """Run `unit(1)`, `unit(2)`, ... until one fails: its number, its error, and `snapshot()`
    as it was just before it."""
    for number in range(1, 200):
        before = snapshot()
        try:
            unit(number)
        except LedgerStoreError as exc:
            return number, exc, before
    pytest.fail("200 units of work fitted on a filesystem left with 64 KiB free")


def assert_full(error: LedgerStoreError, db: Path) -> None:
    """The COMMIT failed for want of space, and SQLite said so (SQLITE_FULL)."""
    assert str(error) == f"cannot commit to {db}: database or disk is full"
    assert_one_line_naming(error, db)
    cause = error.__cause__
    assert isinstance(cause, sqlite3.OperationalError)
    assert cause.sqlite_errorcode == sqlite3.SQLITE_FULL


@pytest.mark.root
def test_a_commit_on_a_full_filesystem_fails_whole_then_applies_once(small_fs: Path) -> None:
    state = small_fs / "state"
    db = state / DB_NAME
    with LedgerStore.open(state, now=Ticks()) as store:
        fund(store)
        filler = fill(small_fs, leave=64 * 1024)
        failed, error, before = until_full(
            lambda tick: store.submit_many(bills(tick, PAD)), lambda: journal(store)
        )
        assert_full(error, db)
        assert journal(store) == before and store.verify().ok
        with LedgerStore.open(state, create=False) as other:  # what is on disk, not in a cache
            assert journal(other) == before and other.verify().ok
        filler.unlink()
        entries = store.submit_many(bills(failed, PAD))
        assert store.submit_many(bills(failed, PAD)) == entries  # applied once
        after = journal(store)
    assert [entry.key for entry in after[0][len(before[0]) :]] == [
        f"bill:alice:{failed}",
        f"bill:bob:{failed}",
    ]
    assert after[1][BOB] == before[1][BOB] - 50
    with LedgerStore.open(state, create=False) as reopened:
        assert journal(reopened) == after and reopened.verify().ok


@pytest.mark.root
def test_a_node_unit_of_work_on_a_full_filesystem_is_all_or_none(small_fs: Path) -> None:
    state = small_fs / "state"
    db = state / DB_NAME
    node = open_node(state)
    try:
        written = len(node.ledger.entries())
        filler = fill(small_fs, leave=64 * 1024)
        failed, error, before = until_full(
            lambda tick: node_tick(node, tick, PAD), lambda: node_rows(node)
        )
        assert_full(error, db)
        assert node_rows(node) == before and node.ledger.verify().ok
        filler.unlink()
        node_tick(node, failed, PAD)
        after = node_rows(node)
        node_tick(node, failed, PAD)
        assert node_rows(node) == after
        assert node.state.last_tick() == (failed, float(failed))
        assert node.state.claims()["a1"] == ClaimRow(10 * failed, 0, failed)
        added = [entry.key for entry in node.ledger.entries()[written:]]
        assert added[-2:] == [f"bill:alice:{failed}", f"bill:bob:{failed}"]
        assert len(added) == 2 * failed  # each tick's bills once, the failed one's included
    finally:
        node.close()
    with LedgerStore.open(state, create=False) as reopened:
        assert reopened.verify().ok


# --- a damaged file ------------------------------------------------------------------------------


def table_leaves(data: bytes, page: int, page_size: int) -> list[int]:
    """The leaf pages, left to right, of the table b-tree whose root is `page` (SQLite's file
    format: a page header of 8 bytes, 12 on an interior page, then 2-byte cell pointers; an
    interior cell starts with its left child's page number)."""
    start = (page - 1) * page_size
    header = start + (100 if page == 1 else 0)
    if data[header] == 0x0D:  # a table leaf
        return [page]
    assert data[header] == 0x05, f"page {page} is not a table b-tree page"
    cells = int.from_bytes(data[header + 3 : header + 5], "big")
    pointers = [header + 12 + 2 * cell for cell in range(cells)]
    children = [
        int.from_bytes(data[start + offset : start + offset + 4], "big")
        for offset in (int.from_bytes(data[p : p + 2], "big") for p in pointers)
    ]
    children.append(int.from_bytes(data[header + 8 : header + 12], "big"))
    return [leaf for child in children for leaf in table_leaves(data, child, page_size)]


def damage(db: Path, root: int, how: str) -> int:
    """Overwrite, in place, part of the middle leaf page of the table rooted at `root`: the end
    of its cells ("cells") or its page header ("header"). The page's number."""
    data = bytearray(db.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    leaves = table_leaves(bytes(data), root, page_size)
    assert len(leaves) >= 3, leaves
    page = leaves[len(leaves) // 2]
    end = page * page_size
    if how == "cells":
        data[end - 1024 : end] = b"\xa5" * 1024
    else:
        data[end - page_size : end - page_size + 8] = b"\xff" * 8
    db.write_bytes(bytes(data))
    return page


def ledger(*argv: str) -> int:
    """Parse `argv` as `maxwell ledger ARGV` would and run it; the exit status."""
    root = OneLineParser(prog="maxwell")
    commands = root.add_subparsers(dest="command_name", required=True)
    ledger_cmd.add_arguments(commands.add_parser("ledger"))
    return ledger_cmd.run(root.parse_args(["ledger", *argv]))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def long_journal(tmp_path: Path) -> tuple[Path, int]:
    """A closed ledger of 300 bills (the journal spans several leaf pages); the root page of its
    `entries` table."""
    state = tmp_path / "original"
    with LedgerStore.open(state, now=Ticks()) as store:
        fund(store)
        for tick in range(0, 150, 50):
            store.submit_many([bill for t in range(tick, tick + 50) for bill in bills(t, 40)])
        assert store.verify().ok
    with closing(sqlite3.connect(state / DB_NAME)) as connection:
        (root,) = connection.execute(
            "SELECT rootpage FROM sqlite_schema WHERE name = 'entries'"
        ).fetchone()
    return state, int(root)


@pytest.mark.parametrize(
    ("how", "said"),
    [
        (
            "cells",
            r"is damaged: SQLite's quick_check says On tree page {page} cell \d+: .+ more\)$",
        ),
        ("header", r"^cannot use \S+: database disk image is malformed$"),
    ],
)
def test_a_damaged_file_is_refused_by_name_and_left_as_it_was(
    tmp_path: Path,
    long_journal: tuple[Path, int],
    how: str,
    said: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    original, root = long_journal
    copy = tmp_path / "damaged"
    copy.mkdir(mode=0o700)
    db = copy / DB_NAME
    shutil.copyfile(original / DB_NAME, db)
    page = damage(db, root, how)
    damaged = digest(db)
    with LedgerStore.open(copy, create=False) as store:  # the schema is intact: it opens
        with pytest.raises(LedgerDamagedError) as caught:
            store.verify()
        with pytest.raises(LedgerDamagedError):
            store.compact(1e12)
    assert_one_line_naming(caught.value, db)
    assert re.search(said.format(page=page), str(caught.value)), str(caught.value)
    assert ledger("verify", "--state", str(copy)) == EXIT_FAILURE == 125
    assert ledger("compact", "--state", str(copy), "--before", "999999999999") == EXIT_FAILURE
    out, err = capsys.readouterr()
    assert out == ""
    for line, command in zip(err.splitlines(), ["verify", "compact"], strict=True):
        assert line.startswith(f"maxwell ledger {command}: error: ") and str(db) in line
    assert digest(db) == damaged and sorted(os.listdir(copy)) == [DB_NAME]
    with LedgerStore.open(original, create=False) as store:
        assert store.verify().ok  # the damage done to the copy is all there is
