"""Entry point of the `maxwell` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from maxwell import __version__
from maxwell.cli.common import OneLineParser

Handler = Callable[[argparse.Namespace], int]


def _build_parser() -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    from maxwell.bench import meter as bench_meter
    from maxwell.cli import run_cmd
    from maxwell.sensors import cli as sensors_cli

    parser = OneLineParser(
        prog="maxwell",
        description="Maxwell: a thermodynamic compute market for Linux.",
    )
    parser.add_argument("--version", action="version", version=f"maxwell {__version__}")
    commands = parser.add_subparsers(dest="command_name", metavar="COMMAND", required=True)
    handlers: dict[str, Handler] = {}

    run_parser = commands.add_parser("run", help="run a command on an energy budget")
    run_cmd.add_arguments(run_parser)
    handlers["run"] = run_cmd.run

    sensors_parser = commands.add_parser("sensors", help="list energy and temperature sensors")
    sensors_cli.add_arguments(sensors_parser)
    handlers["sensors"] = sensors_cli.run

    bench_parser = commands.add_parser("bench", help="benchmarks that print JSON")
    benches = bench_parser.add_subparsers(dest="bench_name", metavar="BENCH", required=True)
    meter_parser = benches.add_parser("meter", help="the meter's own CPU cost vs CodeCarbon")
    bench_meter.add_arguments(meter_parser)
    handlers["bench"] = bench_meter.run
    return parser, handlers


def main(argv: Sequence[str] | None = None) -> int:
    parser, handlers = _build_parser()
    args = parser.parse_args(argv)
    return handlers[args.command_name](args)


if __name__ == "__main__":
    sys.exit(main())
