"""`maxwell run --budget ENERGY [--interval S] [--grace S] [--user USER] [--json] -- CMD
[ARGS...]`."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Mapping

from rich.console import Console

from maxwell.cgroups import CgroupManager, open_workload_group, read_layout
from maxwell.cli.common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    StopRequest,
    check_root_dir,
    fail,
    load_config,
    print_json,
)
from maxwell.clock import SystemClock
from maxwell.errors import CgroupError, MaxwellError, UsageError
from maxwell.runner.display import LiveDisplay, summary_line
from maxwell.runner.run import (
    BudgetedRun,
    CommandNotExecutableError,
    CommandNotFoundError,
    RunOptions,
    RunReport,
)
from maxwell.sensors import ModelConfig, Sensors
from maxwell.units import parse_energy
from maxwell.users import RunAs, invoking_user

PROG = "maxwell run"

DESCRIPTION = """\
Run CMD in its own cgroup, meter the energy of its whole process tree live, and when the
energy budget is spent, apoptosis: SIGTERM to the group, then after --grace seconds freeze
and SIGKILL every process in it (descendants, SIGTERM-ignorers and fork loops included).
Energy is attributed to the group by its CPU time (idle power goes to the house, not to
CMD); it is measured where the machine has sensors (RAPL, hwmon) and modelled otherwise,
and the output says which. Without root it still runs, degraded (process tree via /proc,
no freeze), and says so. As root it runs CMD as the user who started it through sudo, or as
--user USER: a command running as root can leave any cgroup (capabilities dropped or not), so
a root command still runs, with a warning.
"""

EPILOG = """\
ENERGY: a number with a unit: J, kJ, mWh, Wh, kWh (a bare number is joules), e.g. 50J, 2kJ, 1Wh.

exit status:
  CMD's own     CMD exited by itself (128+N if it died of signal N)
  124           the energy budget ran out (apoptosis), as timeout(1) does for time
  125           Maxwell itself failed
  126           CMD was found but is not executable
  127           CMD was not found
  2             usage error (bad flag or value)
  128+N         Maxwell was stopped by signal N (Ctrl-C: 130); CMD's group is killed and removed
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--budget", required=True, metavar="ENERGY", help="energy budget")
    parser.add_argument(
        "--interval", type=float, default=0.5, metavar="S", help="metering interval (default 0.5 s)"
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds between SIGTERM and the kill when the budget is spent (default 0)",
    )
    parser.add_argument(
        "--user", metavar="USER",
        help="run CMD as USER, a name or uid (root only; as root the default is the user who ran "
        "sudo: a command running as root can leave its cgroup)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    parser.add_argument("--config", metavar="FILE", help="TOML config ([model] parameters)")
    parser.add_argument("--sysfs-root", default="/sys", metavar="DIR", help="default /sys")
    parser.add_argument("--dev-root", default="/dev", metavar="DIR", help="default /dev")
    parser.add_argument("--no-live", action="store_true", help="no live display even on a terminal")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")


def _options(args: argparse.Namespace) -> RunOptions:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError("no command given: maxwell run --budget ENERGY -- CMD [ARGS...]")
    if not math.isfinite(args.interval) or args.interval <= 0:
        raise UsageError(f"--interval must be a positive number of seconds, got {args.interval}")
    if not math.isfinite(args.grace) or args.grace < 0:
        raise UsageError(f"--grace must be zero or more seconds, got {args.grace}")
    check_root_dir("--sysfs-root", args.sysfs_root)
    check_root_dir("--dev-root", args.dev_root)
    return RunOptions(
        argv=command,
        budget_uj=parse_energy(args.budget),
        interval_s=args.interval,
        grace_s=args.grace,
        user=workload_user(args.user, os.environ, os.geteuid()),
    )


ROOT_WARNING = (
    "the command runs as root and could leave its cgroup (root may write any cgroup.procs, "
    "capabilities or not): name a user with --user USER, or start maxwell run through sudo"
)


def workload_user(named: str | None, environ: Mapping[str, str], euid: int) -> RunAs | None:
    """Whom the command runs as: `--user` (root only; root itself: None), else for root the
    user who ran sudo, else None (as this process)."""
    if named is not None:
        user = RunAs.named(named)
        if euid != 0 and user.uid != euid:
            raise UsageError(f"--user needs root: cannot run the command as {user.label}")
        return None if user.uid == euid else user
    return invoking_user(environ) if euid == 0 else None


def run(args: argparse.Namespace) -> int:
    try:
        options = _options(args)
        config = load_config(args.config)
        model_section = config.get("model", {})
        if not isinstance(model_section, dict):
            raise UsageError("config: [model] must be a table")
        model_config = ModelConfig.from_mapping(model_section) if model_section else None
    except UsageError as exc:
        return fail(PROG, str(exc), EXIT_USAGE)
    stderr = Console(stderr=True)
    # Installed before anything is made and kept until the report is out, so that a signal at
    # any moment ends in the same clean-up and the same report.
    with StopRequest() as stop:
        try:
            report = _run(options, args, model_config, stderr, stop)
        except (CommandNotFoundError, CommandNotExecutableError) as exc:
            return fail(PROG, str(exc), exc.exit_code)
        except UsageError as exc:
            return fail(PROG, str(exc), EXIT_USAGE)
        except MaxwellError as exc:
            return fail(PROG, str(exc), EXIT_FAILURE)
        if args.json:
            print_json(report.to_json())
        else:
            print(summary_line(report), file=sys.stderr)
        return report.exit_code


def _root_warning(options: RunOptions) -> list[str]:
    return [ROOT_WARNING] if options.user is None and os.geteuid() == 0 else []


def _sensor_warnings(sensors: Sensors) -> list[str]:
    """Why a sensor that exists was not used (e.g. root-only energy_uj): never a silent fallback."""
    return [line for line in sensors.describe() if ": unreadable (" in line]


def _host_layout() -> str:
    try:
        return read_layout().name
    except MaxwellError:
        return "none"


def _sweep_stale(manager: CgroupManager) -> None:
    """Remove the groups of earlier runs that were killed too hard to clean up (SIGKILL)."""
    try:
        swept = manager.sweep_stale()
    except CgroupError as exc:
        print(f"{PROG}: warning: could not remove a stale group: {exc}", file=sys.stderr)
        return
    if swept:
        print(f"{PROG}: removed {len(swept)} stale group(s) of killed runs", file=sys.stderr)


def _run(
    options: RunOptions,
    args: argparse.Namespace,
    model_config: ModelConfig | None,
    stderr: Console,
    stop: StopRequest,
) -> RunReport:
    clock = SystemClock()
    sensors = Sensors.detect(
        sysfs_root=args.sysfs_root, dev_root=args.dev_root, clock=clock, model_config=model_config
    )
    try:
        group, manager, degraded = open_workload_group("run")
        try:
            if degraded:
                print(f"{PROG}: degraded: {degraded}", file=sys.stderr)
            if manager is not None:
                _sweep_stale(manager)
            runner = BudgetedRun(
                options,
                sensors=sensors,
                group=group,
                clock=clock,
                layout=manager.layout if manager is not None else _host_layout(),
                degraded=degraded,
                stop=stop,
                warnings=_sensor_warnings(sensors) + _root_warning(options),
            )
            for warning in runner.warnings:
                print(f"{PROG}: warning: {warning}", file=sys.stderr)
            if stderr.is_terminal and not args.no_live:
                with LiveDisplay(stderr) as live:
                    runner.on_tick = live.update
                    return runner.execute()
            return runner.execute()
        finally:
            if manager is not None:
                manager.close()
    finally:
        sensors.close()
