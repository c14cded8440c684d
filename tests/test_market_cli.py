"""`maxwell market clear`: through `run()` with our own parser, and as a subprocess."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from maxwell.cli import market_cmd
from maxwell.cli.common import OneLineParser

SRC = Path(__file__).resolve().parent.parent / "src"
BIDS = "agent,price,demand\na,5,1\nb,4,1\nc,3,1\nd,2,1\n"


def _parser() -> argparse.ArgumentParser:
    root = OneLineParser(prog="maxwell")
    commands = root.add_subparsers(dest="command_name", required=True)
    market_cmd.add_arguments(commands.add_parser("market"))
    return root


def _run(
    argv: list[str], stdin: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    try:
        code = market_cmd.run(_parser().parse_args(["market", "clear", *argv]))
    except SystemExit as exc:  # argparse refusing a flag
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_json_report_for_uniform(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(
        ["--mechanism", "uniform", "--capacity", "2.5", "--json"], BIDS, monkeypatch, capsys
    )
    assert code == 0, err
    report = json.loads(out)
    assert {"mechanism", "clearing_price", "allocations", "welfare", "revenue"} <= set(report)
    assert report["mechanism"] == "uniform"
    assert report["clearing_price"] == 3.0
    assert [(a["agent"], a["cores"], a["price"]) for a in report["allocations"]] == [
        ("a", 1.0, 3.0),
        ("b", 1.0, 3.0),
        ("c", 0.5, 3.0),
        ("d", 0.0, 0.0),
    ]
    assert report["welfare"] == 10.5 and report["revenue"] == 7.5


def test_vcg_price_is_payment_per_core(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(
        ["--mechanism", "vcg", "--capacity", "2.5", "--json"], BIDS, monkeypatch, capsys
    )
    assert code == 0
    report = json.loads(out)
    prices = {a["agent"]: a["price"] for a in report["allocations"]}
    assert prices == pytest.approx({"a": 2.5, "b": 2.5, "c": 2.0, "d": 0.0})
    assert report["revenue"] == pytest.approx(6.0)


@pytest.mark.parametrize("mechanism", market_cmd.MECHANISM_NAMES)
def test_every_mechanism_is_deterministic_and_reads_json_lines(
    mechanism: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines = "\n".join(
        json.dumps({"agent": agent, "price": float(price), "demand": float(demand)})
        for agent, price, demand in (row.split(",") for row in BIDS.splitlines()[1:])
    )
    path = tmp_path / "bids.jsonl"
    path.write_text("\n" + lines + "\n")
    argv = ["--mechanism", mechanism, "--capacity", "2.5", "--seed", "7", "--bids", str(path)]
    first = _run([*argv, "--json"], "", monkeypatch, capsys)
    second = _run([*argv, "--json"], "", monkeypatch, capsys)
    assert first[0] == 0 and first[1] == second[1]
    from_csv = _run(
        ["--mechanism", mechanism, "--capacity", "2.5", "--seed", "7", "--json"],
        BIDS,
        monkeypatch,
        capsys,
    )
    assert json.loads(from_csv[1])["allocations"] == json.loads(first[1])["allocations"]
    assert sum(a["cores"] for a in json.loads(first[1])["allocations"]) <= 2.5 + 1e-9
    human = _run(argv, "", monkeypatch, capsys)
    assert human[0] == 0
    assert "clearing price" in human[1] and "welfare" in human[1] and "revenue" in human[1]


@pytest.mark.parametrize(
    ("bids", "message"),
    [
        (
            "agent,price,demand\na,1,1\nb,1,1\nc,-1,1\n",
            "bids line 4: price must be a finite number >= 0, got '-1'",
        ),
        (
            "agent,price,demand\na,nan,1\n",
            "bids line 2: price must be a finite number >= 0, got 'nan'",
        ),
        ("agent,price,demand\na,inf,1\n", "bids line 2: price must be"),
        (
            "agent,price,demand\na,1,0\n",
            "bids line 2: demand must be a finite number of cores > 0, got '0'",
        ),
        ("agent,price,demand\na,1,-3\n", "bids line 2: demand must be"),
        (
            "agent,price,demand\na,cheap,1\n",
            "bids line 2: price must be a finite number >= 0, got 'cheap'",
        ),
        ("agent,price\na,1\n", "bids line 1: missing column demand"),
        (
            "agent,price,demand\na,1,1\n\nb,1,1\na,2,1\n",
            "bids line 5: duplicate agent 'a' (first on line 2)",
        ),
        ("agent,price,demand\na,1\n", "bids line 2: 2 fields"),
        ("agent,price,demand\n,1,1\n", "bids line 2: agent must be a non-empty name"),
        ("", "bids: empty input"),
        ("  \n\n", "bids: empty input"),
        (
            '{"agent": "a", "price": 1, "demand": 1}\n{"agent": "b", "price": NaN, "demand": 1}\n',
            "bids line 2: price must be",
        ),
        ('{"agent": "a", "price": 1}\n', "bids line 1: missing column demand"),
        ('{"agent": "a", "price": 1, "demand": 1}\n{oops\n', "bids line 2: not valid JSON"),
        ('{"agent": "a", "price": "x", "demand": 1}\n', "bids line 1: price must be"),
        ('{"agent": "a", "price": 1, "demand": true}\n', "bids line 1: demand must be"),
    ],
)  # fmt: skip
def test_bad_bids_get_one_line_naming_the_line_and_status_2(
    bids: str,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = _run(["--mechanism", "uniform", "--capacity", "1"], bids, monkeypatch, capsys)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith(f"maxwell market clear: error: {message}"), err


@pytest.mark.parametrize(
    "argv",
    [
        ["--mechanism", "dutch", "--capacity", "1"],
        ["--mechanism", "uniform", "--capacity", "-1"],
        ["--mechanism", "uniform", "--capacity", "lots"],
        ["--mechanism", "uniform", "--capacity", "1", "--reserve", "nan"],
        ["--mechanism", "lottery", "--capacity", "1", "--quantum", "0"],
        ["--mechanism", "uniform", "--capacity", "1", "--bids", "/nonexistent/bids.csv"],
        ["--capacity", "1"],
    ],
)
def test_bad_flags_get_one_line_and_status_2(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(argv, BIDS, monkeypatch, capsys)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and "error:" in err, err


def test_header_only_clears_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(
        ["--mechanism", "uniform", "--capacity", "2", "--reserve", "0.5", "--json"],
        "agent,price,demand\n",
        monkeypatch,
        capsys,
    )
    assert code == 0
    assert json.loads(out)["allocations"] == []
    assert json.loads(out)["clearing_price"] == 0.5


def _maxwell(*argv: str, stdin: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run(
        [sys.executable, "-m", "maxwell.cli.main", *argv],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_subprocess_market_clear() -> None:
    """End to end through the `maxwell` entry point (needs `market` wired into main.py)."""
    done = _maxwell("market", "clear", "--mechanism", "uniform", "--capacity", "2.5", "--json",
                    stdin=BIDS)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["clearing_price"] == 3.0
    bad = _maxwell("market", "clear", "--mechanism", "uniform", "--capacity", "1",
                   stdin="agent,price,demand\na,nan,1\n")  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr == (
        "maxwell market clear: error: bids line 2: price must be a finite number >= 0, got 'nan'\n"
    )
