"""Directories this user may not read: each backend says "unreadable (why)" and the facade falls
back; never a `PermissionError` traceback (STYLE #8: `OSError` is translated at one boundary).

Run as root, each check forks a child that drops to user nobody; otherwise it runs as this user,
whom mode 000 keeps out just the same.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from maxwell.clock import FakeClock
from maxwell.errors import SensorError, SensorPermissionError
from maxwell.sensors import Sensors, _sysfs, cli, hwmon, msr, powercap, thermal
from sensors_support import unprivileged, world_readable_copy, write_text


@pytest.fixture
def laptop() -> Iterator[Path]:
    with world_readable_copy("intel_laptop") as root:
        (root / "dev").mkdir(mode=0o755)  # no msr devices: rapl-msr is absent, not unreadable
        yield root


def _detect(root: Path) -> Sensors:
    return Sensors.detect(
        sysfs_root=root / "sys",
        dev_root=root / "dev",
        procfs_root=root / "proc",
        clock=FakeClock(),
        nvml=None,
    )


def _describe_as_unprivileged(root: Path) -> dict[str, object]:
    def detect() -> str:
        with _detect(root) as sensors:
            readings = sensors.readings()
            return json.dumps(
                {
                    "describe": sensors.describe(),
                    "energy_source": str(sensors.energy_source),
                    "temperature_source": str(sensors.temperature_source),
                    "ids": [r.id for r in readings],
                }
            )

    outcome = unprivileged(detect)
    assert outcome.startswith("{"), outcome  # not "PermissionError: ..."
    result: dict[str, object] = json.loads(outcome)
    return result


def _line(result: dict[str, object], backend: str) -> str:
    describe = result["describe"]
    assert isinstance(describe, list)
    lines = [line for line in describe if line.startswith(f"{backend}: ")]
    assert len(lines) == 1, describe
    return str(lines[0])


@pytest.mark.parametrize(
    ("directory", "backend", "falls_back_to"),
    [
        ("class/powercap", "rapl-powercap", ("energy_source", "model")),
        ("class/hwmon", "hwmon", ("temperature_source", "thermal")),
        ("class/thermal", "thermal", ("temperature_source", "hwmon")),
    ],
)
def test_an_unlistable_backend_directory_is_reported_unreadable_and_skipped(
    laptop: Path, directory: str, backend: str, falls_back_to: tuple[str, str]
) -> None:
    (laptop / "sys" / directory).chmod(0o000)
    result = _describe_as_unprivileged(laptop)
    assert _line(result, backend) == (
        f"{backend}: unreadable (cannot list {laptop}/sys/{directory}: permission denied)"
    )
    field, source = falls_back_to
    assert result[field] == source


def test_an_unsearchable_parent_is_unreadable_not_a_crash_in_path_exists(laptop: Path) -> None:
    # On Python 3.11 Path.exists()/is_dir() raise PermissionError here instead of answering.
    (laptop / "sys" / "class").chmod(0o000)
    result = _describe_as_unprivileged(laptop)
    for backend, directory in (
        ("rapl-powercap", "powercap"),
        ("hwmon", "hwmon"),
        ("thermal", "thermal"),
    ):
        assert _line(result, backend) == (
            f"{backend}: unreadable (cannot look up {laptop}/sys/class/{directory}: "
            "permission denied)"
        )
    assert (result["energy_source"], result["temperature_source"]) == ("model", "model")


def test_one_unreadable_thermal_zone_is_skipped_and_named(laptop: Path) -> None:
    zone2 = laptop / "sys" / "class" / "thermal" / "thermal_zone2"
    zone2.chmod(0o000)
    result = _describe_as_unprivileged(laptop)
    assert _line(result, "thermal") == (
        "thermal: found thermal_zone1 x86_pkg_temp, thermal_zone0 acpitz; "
        f"skipped thermal_zone2 (cannot list {zone2}: permission denied)"
    )
    assert result["temperature_source"] == "thermal"
    ids = result["ids"]
    assert isinstance(ids, list)
    assert "thermal_zone1" in ids and "thermal_zone2" not in ids


def test_one_unreadable_hwmon_device_is_skipped_and_named(laptop: Path) -> None:
    device = laptop / "sys" / "class" / "hwmon" / "hwmon4"
    device.chmod(0o000)
    result = _describe_as_unprivileged(laptop)
    assert _line(result, "hwmon") == (
        "hwmon: found 1 channels on hwmon0 acpitz; "
        f"skipped hwmon4 (cannot list {device}: permission denied)"
    )


def test_an_unlistable_msr_directory_is_unreadable(laptop: Path) -> None:
    (laptop / "dev" / "cpu" / "0").mkdir(parents=True)
    (laptop / "dev" / "cpu").chmod(0o000)
    outcome = unprivileged(
        lambda: str(msr.find_domains(dev_root=laptop / "dev", procfs_root=laptop / "proc"))
    )
    assert outcome == f"SensorPermissionError: cannot list {laptop}/dev/cpu: permission denied"


def test_readers_raise_sensor_permission_errors_never_permission_error(laptop: Path) -> None:
    sysfs = laptop / "sys"
    (sysfs / "class" / "powercap").chmod(0o000)
    (sysfs / "class" / "hwmon").chmod(0o000)
    (sysfs / "class" / "thermal").chmod(0o000)

    def each_reader() -> str:
        outcomes = []
        for find in (powercap.find_zones, hwmon.find_channels, thermal.find_zones):
            try:
                find(sysfs)
            except SensorPermissionError as error:
                outcomes.append(type(error).__name__)
        return ",".join(outcomes)

    assert unprivileged(each_reader) == ",".join(["SensorPermissionError"] * 3)


def test_cli_as_an_unprivileged_user_lists_what_it_can(laptop: Path) -> None:
    """The finding: `maxwell sensors --sysfs-root ...` exited 1 with a PermissionError."""
    (laptop / "sys" / "class" / "hwmon").chmod(0o000)
    argv = [
        "--json",
        "--sysfs-root",
        str(laptop / "sys"),
        "--procfs-root",
        str(laptop / "proc"),
        "--dev-root",
        str(laptop / "dev"),
    ]

    def run() -> str:
        import argparse

        parser = argparse.ArgumentParser()
        cli.add_arguments(parser)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = cli.run(parser.parse_args(argv), clock=FakeClock())
        return json.dumps({"code": code, "document": json.loads(out.getvalue())})

    outcome = unprivileged(run)
    assert outcome.startswith("{"), outcome
    result = json.loads(outcome)
    assert result["code"] == 0
    assert any(
        line.startswith("hwmon: unreadable (cannot list ")
        for line in result["document"]["backends"]
    )


# --- the translation itself, without any privileges ---------------------------------------------


def test_list_dir_translates_every_os_error(tmp_path: Path) -> None:
    write_text(tmp_path / "file", 1)
    (tmp_path / "dir").mkdir()
    write_text(tmp_path / "dir" / "b", 2)
    write_text(tmp_path / "dir" / "a", 3)
    assert [p.name for p in _sysfs.list_dir(tmp_path / "dir")] == ["a", "b"]
    with pytest.raises(SensorError, match=r"cannot list .*/missing: No such file or directory"):
        _sysfs.list_dir(tmp_path / "missing")
    with pytest.raises(SensorError, match=r"cannot list .*/file: Not a directory"):
        _sysfs.list_dir(tmp_path / "file")


def test_exists_and_is_dir_answer_for_absent_paths(tmp_path: Path) -> None:
    write_text(tmp_path / "file", 1)
    assert _sysfs.exists(tmp_path / "file") and not _sysfs.is_dir(tmp_path / "file")
    assert _sysfs.is_dir(tmp_path)
    assert not _sysfs.exists(tmp_path / "missing")
    assert not _sysfs.exists(tmp_path / "file" / "below")  # ENOTDIR: absent, not an error
    assert _sysfs.read_optional_int(tmp_path / "file" / "below") is None
