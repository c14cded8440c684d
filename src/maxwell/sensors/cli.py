"""`maxwell sensors`: list every sensor, measured or modelled, and say which feeds the meter.

Exit codes: 0 listed; 2 a root directory given does not exist or cannot be read; 125 an
unexpected Maxwell error. Two samples ~0.2 s apart are taken so modelled power has an interval.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from maxwell import __version__
from maxwell.clock import Clock, SystemClock
from maxwell.errors import MaxwellError
from maxwell.sensors import Kind, Reading, Sensors

PROG = "maxwell sensors"
SAMPLE_GAP_S = 0.2
EXIT_USAGE = 2
EXIT_INTERNAL = 125
PIPE_WIDTH = 160


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--sysfs-root", default="/sys", metavar="DIR", help="default: /sys")
    parser.add_argument("--dev-root", default="/dev", metavar="DIR", help="default: /dev")
    parser.add_argument("--procfs-root", default="/proc", metavar="DIR", help="default: /proc")


def _check_root(flag: str, value: str) -> str | None:
    path = Path(value)
    if not path.is_dir():
        return f"{flag} {value}: no such directory"
    if not os.access(path, os.R_OK | os.X_OK):
        return f"{flag} {value}: cannot read the directory"
    return None


def _format_value(reading: Reading) -> str:
    digits = {Kind.ENERGY: 3, Kind.POWER: 2, Kind.TEMPERATURE: 1}[reading.kind]
    unit = "°C" if reading.unit == "C" else reading.unit
    return f"{reading.value:,.{digits}f} {unit}"


def _print_human(sensors: Sensors, readings: list[Reading]) -> None:
    console = Console(highlight=False)
    if not console.is_terminal:  # piped: no 80-column wrapping, so each id stays greppable
        console = Console(highlight=False, width=PIPE_WIDTH)
    table = Table(title="sensors")
    table.add_column("id", no_wrap=True)
    for column in ("label", "source", "kind"):
        table.add_column(column)
    table.add_column("value", justify="right")
    table.add_column("")
    for reading in readings:
        table.add_row(
            reading.id,
            reading.label,
            str(reading.source),
            str(reading.kind),
            _format_value(reading),
            "measured" if reading.measured else "modelled",
        )
    console.print(table)
    for line in sensors.describe():
        console.print(f"  {line}", markup=False, soft_wrap=True)
    for warning in sensors.warnings:
        console.print(f"warning: {warning}", markup=False, soft_wrap=True)
    how = {True: "measured", False: "modelled"}
    console.print(
        f"energy source: {sensors.energy_source} ({how[sensors.energy_measured]})",
        markup=False,
        soft_wrap=True,
    )
    console.print(
        f"temperature source: {sensors.temperature_source} ({how[sensors.temperature_measured]})",
        markup=False,
        soft_wrap=True,
    )


def run(args: argparse.Namespace, *, clock: Clock | None = None) -> int:
    for flag, value in (
        ("--sysfs-root", args.sysfs_root),
        ("--dev-root", args.dev_root),
        ("--procfs-root", args.procfs_root),
    ):
        problem = _check_root(flag, value)
        if problem is not None:
            print(f"{PROG}: error: {problem}", file=sys.stderr)
            return EXIT_USAGE
    clock = clock if clock is not None else SystemClock()
    try:
        with Sensors.detect(
            sysfs_root=args.sysfs_root,
            dev_root=args.dev_root,
            procfs_root=args.procfs_root,
            clock=clock,
        ) as sensors:
            sensors.sample()
            clock.sleep(SAMPLE_GAP_S)
            readings = sensors.readings()
            if args.json:
                document = {
                    "sensors": [reading.to_json() for reading in readings],
                    "energy_source": str(sensors.energy_source),
                    "temperature_source": str(sensors.temperature_source),
                    "energy_measured": sensors.energy_measured,
                    "temperature_measured": sensors.temperature_measured,
                    "backends": sensors.describe(),
                    "warnings": list(sensors.warnings),
                    "version": __version__,
                }
                print(json.dumps(document, indent=2))
            else:
                _print_human(sensors, readings)
    except MaxwellError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_INTERNAL
    return 0
