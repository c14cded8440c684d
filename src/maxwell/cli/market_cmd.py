"""`maxwell market clear --mechanism M --capacity CORES [--reserve P] [--seed N] [--bids FILE|-]`.

Reading the bids (`parse_bids`) is pure and raises `UsageError` naming the line; the clearing is
`maxwell.economy.mechanisms`; this module only reads the file, renders and sets the exit status.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from maxwell.cli.common import EXIT_USAGE, fail, print_json
from maxwell.economy.mechanisms import MECHANISM_NAMES, Clearing, make_mechanism
from maxwell.economy.orderbook import BidSet
from maxwell.errors import UsageError

PROG = "maxwell market clear"
COLUMNS = ("agent", "price", "demand")

DESCRIPTION = """\
Clear one round of bids for CPU cores with a market mechanism and print who gets what.

Bids are CSV with a header line `agent,price,demand` (more columns are ignored), or JSON
lines `{"agent": "a", "price": 0.5, "demand": 1.5}`: price is the limit in $J per J, demand
in cores. Ties in price go to the earlier line. The result is deterministic (--seed drives
the lottery).
"""

EPILOG = """\
mechanisms:
  uniform   everyone served pays the highest price not completely filled (or the reserve)
  vcg       allocation as uniform; each winner pays the value its cores displace
  kelly     proportional share of budgets (price x demand), capped at demand
  lottery   quanta of --quantum cores drawn in proportion to budgets (Kelly on average)
  posted    a controller moves one posted price until demand meets supply

money: a price is $J per J; a payment is price x cores, charged per joule those cores burn.

exit status: 0 cleared; 2 bad input (a bad flag, or a bad bids line, named).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `clear` (and future market commands) under the `market` subparser."""
    commands = parser.add_subparsers(dest="market_command", metavar="COMMAND", required=True)
    clear = commands.add_parser(
        "clear",
        help="clear one round of bids with a mechanism",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    clear.add_argument("--mechanism", required=True, choices=MECHANISM_NAMES)
    clear.add_argument(
        "--capacity", required=True, type=float, metavar="CORES", help="cores for sale"
    )
    clear.add_argument(
        "--reserve", type=float, default=0.0, metavar="PRICE", help="lowest price, $J/J (0)"
    )
    clear.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (0)")
    clear.add_argument(
        "--quantum", type=float, default=0.01, metavar="CORES", help="lottery quantum (0.01)"
    )
    clear.add_argument(
        "--bids", default="-", metavar="FILE", help="CSV or JSON-lines bids; - is stdin (default)"
    )
    clear.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    if getattr(args, "market_command", None) != "clear":
        return fail("maxwell market", "use: maxwell market clear ...", EXIT_USAGE)
    try:
        for flag, value in (("--capacity", args.capacity), ("--reserve", args.reserve)):
            if not math.isfinite(value) or value < 0:
                raise UsageError(f"{flag} must be a finite number >= 0, got {value}")
        mechanism = make_mechanism(args.mechanism, quantum=args.quantum)
        bids = parse_bids(_read(args.bids))
        clearing = mechanism.clear(
            bids, args.capacity, args.reserve, np.random.default_rng(args.seed)
        )
    except UsageError as exc:
        return fail(PROG, str(exc), EXIT_USAGE)
    report = clearing_to_json(clearing)
    report["seed"] = args.seed
    if args.json:
        print_json(report)
    else:
        Console().print(render(clearing))
    return 0


def _read(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    try:
        return Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read bids {source}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"bids {source} is not UTF-8 text: {exc.reason}") from exc


def parse_bids(text: str) -> BidSet:
    """Bids from CSV (header `agent,price,demand`) or JSON lines; `UsageError` names the line.

    JSON lines are recognised by the first non-blank character being `{`. Blank lines are
    skipped; line numbers count every physical line from 1 (the CSV header is line 1).
    """
    stripped = text.lstrip()
    if not stripped:
        raise UsageError(
            "bids: empty input: expected a CSV header `agent,price,demand` or JSON lines"
        )
    rows = _json_rows(text) if stripped[0] == "{" else _csv_rows(text)
    agents: list[str] = []
    prices: list[float] = []
    demands: list[float] = []
    first_line: dict[str, int] = {}
    for line, agent, price_field, demand_field in rows:
        if not agent:
            raise UsageError(f"bids line {line}: agent must be a non-empty name")
        if agent in first_line:
            raise UsageError(
                f"bids line {line}: duplicate agent {agent!r} (first on line {first_line[agent]})"
            )
        first_line[agent] = line
        price = _number(price_field)
        if price is None or not math.isfinite(price) or price < 0:
            raise UsageError(
                f"bids line {line}: price must be a finite number >= 0, got {price_field!r}"
            )
        demand = _number(demand_field)
        if demand is None or not math.isfinite(demand) or demand <= 0:
            raise UsageError(
                f"bids line {line}: demand must be a finite number of cores > 0, "
                f"got {demand_field!r}"
            )
        agents.append(agent)
        prices.append(price)
        demands.append(demand)
    return BidSet(
        agents=tuple(agents),
        prices=np.array(prices, dtype=np.float64),
        demands=np.array(demands, dtype=np.float64),
        seqs=np.arange(len(agents), dtype=np.int64),
    )


Row = tuple[int, str, object, object]  # line number, agent, raw price, raw demand


def _csv_rows(text: str) -> list[Row]:
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    header_line = 0
    rows: list[Row] = []
    for record in reader:
        line = reader.line_num
        if not record or all(not cell.strip() for cell in record):
            continue
        if header is None:
            header = [cell.strip().lower() for cell in record]
            header_line = line
            missing = [column for column in COLUMNS if column not in header]
            if missing:
                raise UsageError(
                    f"bids line {line}: missing column {', '.join(missing)} "
                    f"(the header must name {','.join(COLUMNS)})"
                )
            continue
        if len(record) != len(header):
            raise UsageError(
                f"bids line {line}: {len(record)} fields, but the header on line "
                f"{header_line} has {len(header)}"
            )
        cells = dict(zip(header, (cell.strip() for cell in record), strict=True))
        rows.append((line, cells["agent"], cells["price"], cells["demand"]))
    return rows


def _json_rows(text: str) -> list[Row]:
    rows: list[Row] = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise UsageError(f"bids line {line}: not valid JSON: {exc.msg}") from exc
        if not isinstance(record, dict):
            raise UsageError(f"bids line {line}: expected a JSON object, got {raw.strip()!r}")
        missing = [column for column in COLUMNS if column not in record]
        if missing:
            raise UsageError(f"bids line {line}: missing column {', '.join(missing)}")
        agent = record["agent"]
        if not isinstance(agent, str | int) or isinstance(agent, bool):
            raise UsageError(f"bids line {line}: agent must be a string, got {agent!r}")
        rows.append((line, str(agent), record["price"], record["demand"]))
    return rows


def _number(field: object) -> float | None:
    """A float from a CSV cell or a JSON number; None when it is neither."""
    if isinstance(field, bool):
        return None
    if isinstance(field, int | float):
        return float(field)
    if isinstance(field, str):
        try:
            return float(field)
        except ValueError:
            return None
    return None


def clearing_to_json(clearing: Clearing) -> dict[str, object]:
    """The `--json` report: every bid listed, those not served with 0 cores at price 0."""
    return {
        "mechanism": clearing.mechanism,
        "clearing_price": clearing.clearing_price,
        "allocations": [
            {
                "agent": allocation.agent,
                "cores": allocation.cores,
                "price": allocation.price_per_joule,
                "payment": allocation.payment,
            }
            for allocation in clearing.all_allocations()
        ],
        "welfare": clearing.welfare,
        "revenue": clearing.revenue,
        "capacity": clearing.capacity,
        "reserve": clearing.reserve,
        "extra": dict(clearing.extra),
    }


def render(clearing: Clearing) -> Table:
    bids = clearing.bids
    table = Table(
        title=(
            f"{clearing.mechanism}: {clearing.capacity:g} cores, reserve {clearing.reserve:g} $J/J"
            f" -> clearing price {clearing.clearing_price:.6g} $J/J"
        ),
        caption=(
            f"welfare {clearing.welfare:.6g}, revenue {clearing.revenue:.6g} "
            "($J per J x cores)"
            + "".join(f"; {key} {_show(value)}" for key, value in clearing.extra.items())
        ),
    )
    for column in ("agent", "bid $J/J", "demand", "cores", "pays $J/J", "payment"):
        table.add_column(column, justify="left" if column == "agent" else "right")
    for index, allocation in enumerate(clearing.all_allocations()):
        table.add_row(
            allocation.agent,
            f"{float(bids.prices[index]):.6g}",
            f"{float(bids.demands[index]):.6g}",
            f"{allocation.cores:.6g}",
            f"{allocation.price_per_joule:.6g}",
            f"{allocation.payment:.6g}",
        )
    return table


def _show(value: object) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
