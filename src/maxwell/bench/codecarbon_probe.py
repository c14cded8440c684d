"""The CodeCarbon side of `maxwell bench meter`, run as its own process.

Run as `python -m maxwell.bench.codecarbon_probe [--tracker]`. CodeCarbon's process mode tracks
the pid that created the tracker and its descendants, so this process owns the workload it
tracks: it spawns one busy loop as its child. With `--tracker` it also runs CodeCarbon's
`OfflineEmissionsTracker`; without it, it does the same work with no tracker (the baseline whose
CPU is subtracted). Its CPU is read with `getrusage(RUSAGE_SELF)`, which counts every thread of
this process and none of the busy child's.

Protocol on stdin/stdout, one JSON object a line, so the parent can run the window it measures:

1. start-up (import, spawn the child, build and start the tracker), then print
   `{"event": "ready", "startup_wall_s", "startup_cpu_s"}`;
2. read `go` on stdin: the window begins; read `stop`: the window ends;
3. stop the tracker, kill the child, print `{"event": "result", ...}` and exit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import time
from typing import Any

BUSY_LOOP_ARGV = ("sh", "-c", "while :; do :; done")
KWH_TO_J = 3_600_000.0


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _emit(message: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _await_line(expected: str) -> None:
    line = sys.stdin.readline()
    if line.strip() != expected:
        raise SystemExit(f"codecarbon probe: expected {expected!r} on stdin, got {line!r}")


def _tracker_assumptions(tracker: Any) -> dict[str, object]:
    """What CodeCarbon assumed about this machine: read from its private state, so guarded."""
    found: dict[str, object] = {}
    described: list[str] = []
    for hardware in getattr(tracker, "_hardware", []):
        name = type(hardware).__name__
        if name == "CPU":
            found["cpu_mode"] = getattr(hardware, "_mode", None)
            found["cpu_tdp_w"] = getattr(hardware, "_tdp", None)
            found["cpu_tdp_is_generic"] = getattr(hardware, "_is_generic_tdp", None)
        described.append(repr(hardware))
    found["hardware"] = described
    return found


def _build_tracker(country: str) -> Any:
    """CodeCarbon's offline tracker in process mode, built but not started."""
    from codecarbon import OfflineEmissionsTracker  # slow (~1 s): part of start-up

    return OfflineEmissionsTracker(
        country_iso_code=country,
        tracking_mode="process",
        measure_power_secs=1,
        save_to_file=False,
        log_level="error",
        allow_multiple_runs=True,
    )


def _measure_window() -> tuple[float, float]:
    """Wall and CPU seconds between `go` and `stop` on stdin."""
    _await_line("go")
    window_wall = time.monotonic()
    window_cpu = _cpu_s()
    _await_line("stop")
    return time.monotonic() - window_wall, _cpu_s() - window_cpu


def _tracker_result(tracker: Any) -> dict[str, object]:
    """Stop the tracker and report what it measured and assumed, energies in joules."""
    tracker.stop()
    data = tracker.final_emissions_data
    return {
        "version": _codecarbon_version(),
        "mode": data.tracking_mode,
        "duration_s": data.duration,
        "cpu_energy_j": data.cpu_energy * KWH_TO_J,
        "ram_energy_j": data.ram_energy * KWH_TO_J,
        "energy_j": data.energy_consumed * KWH_TO_J,
        "cpu_power_w": data.cpu_power,
        "ram_power_w": data.ram_power,
        "cpu_model": data.cpu_model,
        "cpu_count": data.cpu_count,
        "on_cloud": data.on_cloud,
        **_tracker_assumptions(tracker),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m maxwell.bench.codecarbon_probe")
    parser.add_argument("--tracker", action="store_true", help="run CodeCarbon's tracker")
    parser.add_argument("--country", default="USA", help="ISO code: offline mode needs one")
    args = parser.parse_args(argv)

    started_wall = time.monotonic()
    started_cpu = _cpu_s()
    tracker: Any = _build_tracker(args.country) if args.tracker else None
    busy = subprocess.Popen(BUSY_LOOP_ARGV)
    try:
        if tracker is not None:
            tracker.start()
        _emit(
            {
                "event": "ready",
                "startup_wall_s": time.monotonic() - started_wall,
                "startup_cpu_s": _cpu_s() - started_cpu,
                "busy_pid": busy.pid,
            }
        )
        window_wall_s, window_cpu_s = _measure_window()
        result: dict[str, object] = {
            "event": "result",
            "tracker": tracker is not None,
            "window_wall_s": window_wall_s,
            "window_cpu_s": window_cpu_s,
        }
        if tracker is not None:
            result.update(_tracker_result(tracker))
        _emit(result)
    finally:
        busy.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            busy.wait(timeout=5)
    return 0


def _codecarbon_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("codecarbon")


if __name__ == "__main__":
    raise SystemExit(main())
