"""The live terminal view of `maxwell run` (rich), drawn on stderr so stdout stays the command's."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from maxwell.runner.run import RunReport, TickView
from maxwell.units import uj_to_joules


def _label(measured: bool) -> str:
    return "measured" if measured else "modelled"


def _mib(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:.1f} MiB"


def render_tick(view: TickView) -> Group:
    used_j = uj_to_joules(view.used_uj)
    budget_j = uj_to_joules(view.budget_uj)
    bar = ProgressBar(total=budget_j, completed=min(used_j, budget_j), width=40)
    head = Text.assemble(
        ("energy ", "bold"),
        f"{used_j:8.2f} J / {budget_j:.2f} J  ",
        (f"[{view.phase}]", "red" if view.phase != "running" else "green"),
    )
    table = Table.grid(padding=(0, 2))
    table.add_row(bar, "")
    table.add_row(
        f"power {view.power_w:6.2f} W", f"{_label(view.energy_measured)} ({view.energy_source})"
    )
    table.add_row(f"temp  {view.temperature_c:6.1f} °C", _label(view.temperature_measured))
    table.add_row(f"cpu   {view.cpu_cores:6.2f} cores", f"mem {_mib(view.memory_bytes)}")
    table.add_row(f"time  {view.elapsed_s:6.1f} s", "")
    return Group(head, table)


class LiveDisplay:
    """Context manager: a rich Live region updated by `update`, used as `on_tick`."""

    def __init__(self, console: Console) -> None:
        self._live = Live(console=console, auto_refresh=False, transient=False)

    def __enter__(self) -> LiveDisplay:
        self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._live.__exit__(exc_type, exc, traceback)

    def update(self, view: TickView) -> None:
        self._live.update(render_tick(view), refresh=True)


def summary_line(report: RunReport) -> str:
    """The one-line human summary printed when a run ends."""
    at = report.energy_at_apoptosis_uj
    struck = f", struck at {uj_to_joules(at):.2f} J" if at is not None else ""
    return (
        f"maxwell run: {report.outcome} (exit {report.exit_code}): "
        f"{uj_to_joules(report.energy_uj):.2f} J of "
        f"{uj_to_joules(report.budget_uj):.2f} J{struck}, "
        f"{report.cpu_ns / 1e9:.2f} cpu-s in {report.wall_s:.2f} s, "
        f"peak {_mib(report.peak_memory_bytes)}, freed {_mib(report.memory_freed_bytes)} "
        f"(Landauer {report.landauer_j:.3g} J), {report.temperature_c:.1f} °C; energy "
        f"{_label(report.measured)} ({report.energy_source}), cgroup {report.cgroup}"
    )
