"""`maxwell run --budget`: run a command in its own group, meter it live, apoptosis at the budget.

The adapter around the pure `BudgetPolicy` and `attribute`: it owns the child process, the
workload group and the sensors, and guarantees that nothing is left behind (no process, no
cgroup) whatever happens: normal exit, apoptosis, an error, or Maxwell itself being signalled
(the CLI records SIGINT/SIGTERM/SIGHUP in a `StopSource`, which this loop checks at safe
points: a signal never interrupts the making or the killing of a group half-way).
"""

from __future__ import annotations

import enum
import os
import select
import shutil
import signal
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from maxwell.cgroups import WorkloadGroup
from maxwell.clock import Clock
from maxwell.errors import MaxwellError
from maxwell.meter import LiveMeter
from maxwell.runner.policy import Action, BudgetPolicy
from maxwell.sensors import Sensors
from maxwell.units import uj_to_joules
from maxwell.users import RunAs, setpriv_argv

EXIT_BUDGET_EXHAUSTED = 124  # as timeout(1) does for time
EXIT_MAXWELL_FAILED = 125
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127
EXIT_USAGE = 2

WORKLOAD = "run"  # the one workload a budgeted run meters


class Outcome(enum.StrEnum):
    EXITED = "exited"  # the command ended by itself with an exit status
    APOPTOSIS = "apoptosis"  # the budget ran out and Maxwell killed the group
    SIGNALLED = "signalled"  # the command died of a signal Maxwell did not send
    INTERRUPTED = "interrupted"  # Maxwell itself was told to stop (Ctrl-C, SIGTERM, SIGHUP)


class StopSource(Protocol):
    """Where a request to stop comes from: the first terminating signal, and a descriptor that
    becomes readable when it arrives (`maxwell.cli.common.StopRequest`)."""

    @property
    def signum(self) -> int | None: ...

    def fileno(self) -> int: ...


class CommandNotFoundError(MaxwellError):
    exit_code = EXIT_NOT_FOUND


class CommandNotExecutableError(MaxwellError):
    exit_code = EXIT_NOT_EXECUTABLE


@dataclass(frozen=True)
class TickView:
    """What the live display shows after each observation."""

    elapsed_s: float
    used_uj: int
    budget_uj: int
    power_w: float
    temperature_c: float
    temperature_measured: bool
    energy_source: str
    energy_measured: bool
    cpu_cores: float
    memory_bytes: int
    phase: str


@dataclass
class RunReport:
    outcome: Outcome
    exit_code: int
    energy_uj: int
    budget_uj: int
    cpu_ns: int
    wall_s: float
    peak_memory_bytes: int
    memory_freed_bytes: int
    memory_freed_exact: bool
    landauer_j: float
    temperature_c: float
    temperature_source: str
    temperature_measured: bool
    energy_source: str
    measured: bool
    cgroup: str
    cgroup_layout: str
    node_energy_uj: int
    house_uj: int
    energy_at_apoptosis_uj: int | None
    max_interval_energy_uj: int
    apoptosis_after_s: float | None
    command_started: bool
    degraded: str | None
    warnings: list[str] = field(default_factory=list)
    user: str | None = None  # the user the command ran as, where it was dropped to one

    def to_json(self) -> dict[str, object]:
        at_apoptosis = self.energy_at_apoptosis_uj
        return {
            "outcome": str(self.outcome),
            "exit_code": self.exit_code,
            "energy_j": uj_to_joules(self.energy_uj),
            "budget_j": uj_to_joules(self.budget_uj),
            "energy_at_apoptosis_j": None if at_apoptosis is None else uj_to_joules(at_apoptosis),
            "max_interval_energy_j": uj_to_joules(self.max_interval_energy_uj),
            "apoptosis_after_s": self.apoptosis_after_s,
            "command_started": self.command_started,
            "cpu_seconds": self.cpu_ns / 1e9,
            "wall_seconds": round(self.wall_s, 6),
            "peak_memory_bytes": self.peak_memory_bytes,
            "memory_freed_bytes": self.memory_freed_bytes,
            "memory_freed_exact": self.memory_freed_exact,
            "landauer_j": self.landauer_j,
            "temperature_c": round(self.temperature_c, 3),
            "temperature_source": self.temperature_source,
            "temperature_measured": self.temperature_measured,
            "energy_source": self.energy_source,
            "measured": self.measured,
            "cgroup": self.cgroup,
            "cgroup_layout": self.cgroup_layout,
            "user": self.user,
            "node_energy_j": uj_to_joules(self.node_energy_uj),
            "house_j": uj_to_joules(self.house_uj),
            "degraded": self.degraded,
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class RunOptions:
    argv: Sequence[str]
    budget_uj: int
    interval_s: float = 0.5
    grace_s: float = 0.0
    user: RunAs | None = None  # run the command as this user (`maxwell.users`); None: as we are


class BudgetedRun:
    """One budgeted run. Call `execute()` once; it always cleans up the group it was given."""

    def __init__(
        self,
        options: RunOptions,
        *,
        sensors: Sensors,
        group: WorkloadGroup,
        clock: Clock,
        layout: str,
        degraded: str | None = None,
        on_tick: Callable[[TickView], None] | None = None,
        stop: StopSource | None = None,
        warnings: Sequence[str] = (),
    ) -> None:
        self.options = options
        self.sensors = sensors
        self.group = group
        self.clock = clock
        self.layout = layout
        self.degraded = degraded
        self.on_tick = on_tick
        self.stop = stop
        self.warnings = list(warnings)
        self.policy = BudgetPolicy(
            budget_uj=options.budget_uj, interval_s=options.interval_s, grace_s=options.grace_s
        )

    def execute(self) -> RunReport:
        try:
            return self._execute()
        finally:
            self.group.remove()

    def _spawn(self) -> subprocess.Popen[bytes]:
        argv, user = list(self.options.argv), self.options.user
        if user is not None:
            if shutil.which(argv[0]) is None:
                raise CommandNotFoundError(f"{argv[0]}: command not found")
            argv = setpriv_argv(user, argv)
        try:
            return self.group.spawn(argv)
        except FileNotFoundError as exc:
            raise CommandNotFoundError(f"{self.options.argv[0]}: command not found") from exc
        except PermissionError as exc:
            raise CommandNotExecutableError(
                f"{self.options.argv[0]}: permission denied (not executable)"
            ) from exc
        except IsADirectoryError as exc:
            raise CommandNotExecutableError(f"{self.options.argv[0]}: is a directory") from exc

    def _stop_signum(self) -> int | None:
        return None if self.stop is None else self.stop.signum

    def _execute(self) -> RunReport:
        start_s = self.clock.monotonic()
        meter = LiveMeter(self.sensors)
        meter.add(WORKLOAD, self.group)
        if self._stop_signum() is not None:  # stopped while Maxwell was still setting up
            return self._report(meter, None, start_s)
        child = self._spawn()
        pidfd = _pidfd_open(child.pid)
        try:
            self._supervise(child, pidfd, meter, start_s)
        finally:
            if pidfd is not None:
                os.close(pidfd)
        # The command has ended, been killed, or Maxwell was told to stop: whatever is left in
        # the group dies too (background descendants of a command that exited included).
        if not self.group.is_empty() or child.poll() is None:
            meter.read_memory()
            self.group.kill()
        child.wait()
        meter.tick(read_memory=True)
        self._show(meter, start_s)
        return self._report(meter, child.returncode, start_s)

    def _supervise(
        self, child: subprocess.Popen[bytes], pidfd: int | None, meter: LiveMeter, start_s: float
    ) -> None:
        """Meter until the command exits, the budget kills it, or a stop is requested."""
        next_check_s = self.policy.min_interval_s
        while child.poll() is None:
            self._wait(pidfd, next_check_s)
            if self._stop_signum() is not None:
                return
            meter.tick()
            usage = meter.usage(WORKLOAD)
            decision = self.policy.observe(
                now_s=self.clock.monotonic(), used_uj=usage.energy_uj, power_w=usage.power_w
            )
            next_check_s = decision.next_check_s
            self._show(meter, start_s)
            if decision.action is Action.TERMINATE:
                self.group.signal(signal.SIGTERM)
            elif decision.action is Action.KILL:
                meter.read_memory()  # the last figures of the living group
                self.group.kill()
                return

    def _wait(self, pidfd: int | None, seconds: float) -> None:
        """Sleep up to `seconds`, waking early when the child exits or a stop is requested."""
        descriptors = [] if pidfd is None else [pidfd]
        if self.stop is not None:
            descriptors.append(self.stop.fileno())
        if descriptors:
            select.select(descriptors, [], [], max(seconds, 0.0))
        else:
            self.clock.sleep(seconds)

    def _show(self, meter: LiveMeter, start_s: float) -> None:
        if self.on_tick is None:
            return
        node = meter.node
        usage = meter.usage(WORKLOAD)
        self.on_tick(
            TickView(
                elapsed_s=self.clock.monotonic() - start_s,
                used_uj=usage.energy_uj,
                budget_uj=self.options.budget_uj,
                power_w=usage.power_w,
                temperature_c=node.temperature_c,
                temperature_measured=node.temperature_measured,
                energy_source=str(node.energy_source),
                energy_measured=node.energy_measured,
                cpu_cores=usage.cpu_cores,
                memory_bytes=usage.memory_bytes,
                phase=self.policy.phase.value,
            )
        )

    def _report(self, meter: LiveMeter, returncode: int | None, start_s: float) -> RunReport:
        signum = self._stop_signum()
        if signum is not None:
            outcome, exit_code = Outcome.INTERRUPTED, 128 + signum
        elif self.policy.exhausted:
            # Budget spent: even if the command exited during its grace period, it was apoptosis.
            outcome, exit_code = Outcome.APOPTOSIS, EXIT_BUDGET_EXHAUSTED
        elif returncode is not None and returncode < 0:
            outcome, exit_code = Outcome.SIGNALLED, 128 - returncode
        else:
            outcome, exit_code = Outcome.EXITED, returncode or 0
        node, usage = meter.node, meter.usage(WORKLOAD)
        return RunReport(
            outcome=outcome,
            exit_code=exit_code,
            energy_uj=usage.energy_uj,
            budget_uj=self.options.budget_uj,
            cpu_ns=usage.cpu_ns,
            wall_s=self.clock.monotonic() - start_s,
            peak_memory_bytes=usage.peak_memory_bytes,
            memory_freed_bytes=usage.memory_freed_bytes,
            memory_freed_exact=usage.memory_freed_exact,
            landauer_j=usage.landauer_j,
            temperature_c=node.temperature_c,
            temperature_source=str(node.temperature_source),
            temperature_measured=node.temperature_measured,
            energy_source=str(node.energy_source),
            measured=node.energy_measured,
            cgroup=self.group.kind,
            cgroup_layout=self.layout,
            node_energy_uj=meter.node_energy_uj,
            house_uj=meter.house_uj,
            energy_at_apoptosis_uj=self.policy.energy_at_apoptosis_uj,
            max_interval_energy_uj=usage.max_interval_uj,
            apoptosis_after_s=(
                None if self.policy.apoptosis_at_s is None else self.policy.apoptosis_at_s - start_s
            ),
            command_started=returncode is not None,
            degraded=self.degraded,
            warnings=[*self.warnings, *meter.warnings],
            user=None if self.options.user is None else self.options.user.label,
        )


def _pidfd_open(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None
