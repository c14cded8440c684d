"""Entry point of the `maxwell` command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from maxwell import __version__
from maxwell.cli.common import EXIT_FAILURE, OneLineParser, fail
from maxwell.errors import MaxwellError

Handler = Callable[[argparse.Namespace], int]


def _build_parser() -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    from maxwell.bench import meter as bench_meter
    from maxwell.cli import ledger_cmd, run_cmd
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

    ledger_parser = commands.add_parser("ledger", help="the $JOULE ledger: verify, balances, fund")
    ledger_cmd.add_arguments(ledger_parser)
    handlers["ledger"] = ledger_cmd.run

    bench_parser = commands.add_parser("bench", help="benchmarks that print JSON")
    benches = bench_parser.add_subparsers(dest="bench_name", metavar="BENCH", required=True)
    meter_parser = benches.add_parser("meter", help="the meter's own CPU cost vs CodeCarbon")
    bench_meter.add_arguments(meter_parser)
    handlers["bench"] = bench_meter.run
    return parser, handlers


def main(argv: Sequence[str] | None = None) -> int:
    parser, handlers = _build_parser()
    args = parser.parse_args(argv)
    try:
        return handlers[args.command_name](args)
    except MaxwellError as exc:
        return fail(f"maxwell {args.command_name}", str(exc), EXIT_FAILURE)
    except Exception as exc:  # a bug, still reported in one line with Maxwell's failure status
        if os.environ.get("MAXWELL_DEBUG"):
            raise
        message = f"internal error: {type(exc).__name__}: {exc} (MAXWELL_DEBUG=1 shows where)"
        return fail(f"maxwell {args.command_name}", message, EXIT_FAILURE)


if __name__ == "__main__":
    sys.exit(main())
