"""`maxwell ledger verify|balances|fund`, through the same argparse wiring `maxwell` uses."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from maxwell.cli import ledger_cmd
from maxwell.cli.common import OneLineParser
from maxwell.economy.store import DB_NAME


def ledger(*argv: str) -> int:
    """Parse `argv` as `maxwell ledger ARGV` would and run it; the exit status."""
    root = OneLineParser(prog="maxwell")
    commands = root.add_subparsers(dest="command_name", required=True)
    ledger_cmd.add_arguments(commands.add_parser("ledger"))
    try:
        args = root.parse_args(["ledger", *argv])
    except SystemExit as exc:
        assert isinstance(exc.code, int)
        return exc.code
    return ledger_cmd.run(args)


def json_out(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1, lines
    value = json.loads(lines[0])
    assert isinstance(value, dict)
    return value


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


def test_fund_then_balances_then_verify(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ledger("fund", "--state", str(state), "alice", "10", "--key", "k1") == 0
    assert "funded agent:alice with 10.000000 $J" in capsys.readouterr().out
    assert ledger("fund", "--state", str(state), "alice", "10", "--key", "k1", "--json") == 0
    retried = json_out(capsys)
    assert retried["repeated"] is True
    assert retried["balance_micro"] == 10_000_000
    assert ledger("fund", "--state", str(state), "bob", "0.25", "--json") == 0
    assert json_out(capsys)["balance_micro"] == 250_000

    assert ledger("balances", "--state", str(state), "--json") == 0
    balances = json_out(capsys)
    rows = {row["account"]: row["balance_micro"] for row in balances["accounts"]}  # type: ignore[attr-defined]
    assert rows == {
        "agent:alice": 10_000_000,
        "agent:bob": 250_000,
        "grid": 0,
        "house": 0,
        "landauer": 0,
        "slashing": 0,
        "treasury": -10_250_000,
    }
    assert balances["total_micro"] == 0
    assert ledger("balances", "--state", str(state)) == 0
    assert "treasury" in capsys.readouterr().out

    assert ledger("verify", "--state", str(state)) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("sound: 9 entries") and "minted 10.250000 $J" in line
    assert ledger("verify", "--state", str(state), "--json") == 0
    report = json_out(capsys)
    assert report["ok"] is True and report["violation"] is None
    assert (report["entries"], report["accounts"], report["minted_micro"]) == (9, 7, 10_250_000)


def test_verify_exits_1_naming_the_first_violation(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ledger("fund", "--state", str(state), "alice", "3", "--key", "k1") == 0
    connection = sqlite3.connect(state / DB_NAME, isolation_level=None)
    connection.execute("DROP TRIGGER legs_append_only_update")
    connection.execute("UPDATE legs SET delta = 1 WHERE account = 'agent:alice'")
    connection.close()
    capsys.readouterr()
    assert ledger("verify", "--state", str(state)) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["unsound: entry 7: unbalanced: legs sum to -2999999 µ$J, not 0"]
    assert ledger("verify", "--state", str(state), "--json") == 1
    report = json_out(capsys)
    assert report["ok"] is False
    assert report["violation"] == {
        "entry": 7,
        "account": None,
        "reason": "unbalanced: legs sum to -2999999 µ$J, not 0",
    }
    assert report["entries"] == 7


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["verify", "--state", "{missing}"], "does not exist"),
        (["verify", "--state", "{empty}"], "no Maxwell ledger"),
        (["verify", "--state", "{garbage}"], "not a Maxwell ledger"),
        (["verify", "--state", "{file}"], "not a directory"),
        (["balances", "--state", "{missing}"], "does not exist"),
        (["fund", "--state", "{empty}", "alice", "-3"], "positive"),
        (["fund", "--state", "{empty}", "alice", "nan"], "positive"),
        (["fund", "--state", "{empty}", "alice", "ten"], "cannot read amount"),
        (["fund", "--state", "{empty}", "alice", "0.0000001"], "below one micro"),
        (["fund", "--state", "{empty}", "a b", "1"], "agent id"),
    ],
)
def test_usage_errors_exit_2_in_one_line(
    tmp_path: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / DB_NAME).write_bytes(b"not a database " * 100)
    (tmp_path / "file").write_text("x")
    paths = {name: str(tmp_path / name) for name in ("missing", "empty", "garbage", "file")}
    assert ledger(*[arg.format(**paths) for arg in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"maxwell ledger {argv[0]}: error:")
    assert message in err[0]
    assert not (tmp_path / "missing").exists()


def test_a_reused_key_is_a_usage_error(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ledger("fund", "--state", str(state), "alice", "1", "--key", "k") == 0
    assert ledger("fund", "--state", str(state), "alice", "2", "--key", "k") == 2
    assert "already used" in capsys.readouterr().err


def test_bad_flags_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert ledger("verify") == 2
    assert ledger("audit", "--state", "x") == 2
    assert ledger() == 2


def test_help_documents_the_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    assert ledger("verify", "--help") == 0
    out = capsys.readouterr().out
    for code in ("0 ", "1 ", "2 ", "125"):
        assert code in out
