"""RAPL through powercap sysfs, on fake trees laid out as the kernel documents them."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from maxwell.clock import FakeClock
from maxwell.errors import SensorError, SensorPermissionError
from maxwell.sensors import Sensors, powercap
from sensors_support import as_nobody, copy_fixture, fixture, write_text

LAPTOP_SYS = fixture("intel_laptop") / "sys"
SERVER_SYS = fixture("intel_server_2s") / "sys"


def test_laptop_zones_names_and_ranges() -> None:
    zones = {z.zone_id: z for z in powercap.find_zones(LAPTOP_SYS)}
    assert list(zones) == [
        "intel-rapl:0",
        "intel-rapl:0:0",
        "intel-rapl:0:1",
        "intel-rapl:0:2",
        "intel-rapl:1",
        "intel-rapl-mmio:0",
    ]  # the control-type dirs `intel-rapl` and `intel-rapl-mmio` are not zones
    assert [zones[z].name for z in zones] == [
        "package-0", "core", "uncore", "dram", "psys", "package-0",
    ]  # fmt: skip
    assert zones["intel-rapl:0"].max_energy_range_uj == 262_143_328_850
    assert zones["intel-rapl:0"].max_power_uw == 28_000_000
    assert zones["intel-rapl:0"].plausible_max_power_w == pytest.approx(56.0)
    assert zones["intel-rapl:1"].plausible_max_power_w == 1000.0  # limit 0: documented default
    assert powercap.read_energy_uj(zones["intel-rapl:0"]) == 81_234_567_890


def test_mmio_zone_is_marked_as_a_duplicate_of_the_msr_backed_package() -> None:
    zones = {z.zone_id: z for z in powercap.find_zones(LAPTOP_SYS)}
    assert zones["intel-rapl-mmio:0"].duplicate_of == "intel-rapl:0"
    assert zones["intel-rapl:0"].duplicate_of is None


def test_psys_alone_is_node_energy_when_present() -> None:
    node = powercap.node_zones(powercap.find_zones(LAPTOP_SYS))
    assert [z.zone_id for z in node] == ["intel-rapl:1"]


def test_without_psys_node_energy_is_package_plus_dram_never_core_or_mmio(tmp_path: Path) -> None:
    sysfs = copy_fixture("intel_laptop", tmp_path) / "sys"
    shutil.rmtree(sysfs / "class" / "powercap" / "intel-rapl:1")
    node = powercap.node_zones(powercap.find_zones(sysfs))
    assert [(z.zone_id, z.name) for z in node] == [
        ("intel-rapl:0", "package-0"),
        ("intel-rapl:0:2", "dram"),
    ]


def test_mmio_zone_without_a_twin_is_used(tmp_path: Path) -> None:
    sysfs = copy_fixture("intel_laptop", tmp_path) / "sys"
    for zone in (
        "intel-rapl:0",
        "intel-rapl:0:0",
        "intel-rapl:0:1",
        "intel-rapl:0:2",
        "intel-rapl:1",
    ):
        shutil.rmtree(sysfs / "class" / "powercap" / zone)
    node = powercap.node_zones(powercap.find_zones(sysfs))
    assert [z.zone_id for z in node] == ["intel-rapl-mmio:0"]


def test_two_socket_server_counts_each_package_and_dram_once() -> None:
    node = powercap.node_zones(powercap.find_zones(SERVER_SYS))
    assert [(z.zone_id, z.name) for z in node] == [
        ("intel-rapl:0", "package-0"),
        ("intel-rapl:0:0", "dram"),
        ("intel-rapl:1", "package-1"),
        ("intel-rapl:1:0", "dram"),
    ]
    assert node[1].max_energy_range_uj == 65_712_999_613


def test_zones_reached_through_symlinks_as_on_a_real_kernel(tmp_path: Path) -> None:
    # /sys/class/powercap/intel-rapl:0 -> ../../devices/virtual/powercap/intel-rapl/intel-rapl:0
    devices = tmp_path / "sys" / "devices" / "virtual" / "powercap" / "intel-rapl"
    shutil.copytree(LAPTOP_SYS / "class" / "powercap" / "intel-rapl:0", devices / "intel-rapl:0")
    shutil.copytree(
        LAPTOP_SYS / "class" / "powercap" / "intel-rapl:0:2",
        devices / "intel-rapl:0" / "intel-rapl:0:2",
    )
    klass = tmp_path / "sys" / "class" / "powercap"
    klass.mkdir(parents=True)
    (klass / "intel-rapl:0").symlink_to("../../devices/virtual/powercap/intel-rapl/intel-rapl:0")
    (klass / "intel-rapl:0:2").symlink_to(
        "../../devices/virtual/powercap/intel-rapl/intel-rapl:0/intel-rapl:0:2"
    )
    zones = powercap.find_zones(tmp_path / "sys")
    assert [(z.zone_id, z.name) for z in zones] == [
        ("intel-rapl:0", "package-0"),
        ("intel-rapl:0:2", "dram"),
    ]
    assert powercap.read_energy_uj(zones[1]) == 5_678_901_234


def test_absent_powercap_says_why(tmp_path: Path) -> None:
    with pytest.raises(SensorError, match=r"no .*class/powercap$"):
        powercap.find_zones(fixture("vm") / "sys")
    (tmp_path / "class" / "powercap").mkdir(parents=True)
    with pytest.raises(SensorError, match="no intel-rapl zones"):
        powercap.find_zones(tmp_path)


def test_garbage_energy_is_a_sensor_error(tmp_path: Path) -> None:
    sysfs = copy_fixture("intel_laptop", tmp_path) / "sys"
    write_text(sysfs / "class" / "powercap" / "intel-rapl:0" / "energy_uj", "oops")
    zone = powercap.find_zones(sysfs)[0]
    with pytest.raises(SensorError, match="not an integer"):
        powercap.read_energy_uj(zone)


@pytest.fixture
def world_readable_laptop() -> Iterator[Path]:
    """A copy of the laptop tree that user nobody can traverse (pytest's tmp_path is 0700)."""
    top = Path(tempfile.mkdtemp(prefix="maxwell-powercap-"))
    try:
        top.chmod(0o755)
        shutil.copytree(fixture("intel_laptop"), top / "laptop")
        for path in (top / "laptop").rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        # Every RAPL zone's energy_uj as the CVE-2020-8694 fix left it: root-only.
        for energy in (top / "laptop").glob("sys/class/powercap/*/energy_uj"):
            energy.chmod(0o400)
        yield top / "laptop"
    finally:
        shutil.rmtree(top)


def test_root_only_energy_uj_read_as_non_root_gives_one_clear_line(
    world_readable_laptop: Path,
) -> None:
    sysfs = world_readable_laptop / "sys"
    energy = sysfs / "class" / "powercap" / "intel-rapl:0" / "energy_uj"
    zone = powercap.find_zones(sysfs)[0]
    if os.geteuid() == 0:
        outcome = as_nobody(lambda: f"read {powercap.read_energy_uj(zone)}")
        assert outcome.startswith("SensorPermissionError: "), outcome
        message = outcome.removeprefix("SensorPermissionError: ")
    else:
        energy.chmod(0o000)
        with pytest.raises(SensorPermissionError) as caught:
            powercap.read_energy_uj(zone)
        message = str(caught.value)
    assert message == (
        f"cannot read {energy}: root-only since CVE-2020-8694; "
        "run as root or use the model fallback"
    )
    assert "\n" not in message


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to fork a child that drops to nobody")
def test_facade_as_non_root_says_why_it_falls_back(world_readable_laptop: Path) -> None:
    def detect() -> str:
        sensors = Sensors.detect(
            sysfs_root=world_readable_laptop / "sys",
            dev_root=world_readable_laptop / "dev",
            procfs_root=world_readable_laptop / "proc",
            clock=FakeClock(),
            nvml=None,
        )
        return json.dumps([str(sensors.energy_source), sensors.describe()[0]])

    source, line = json.loads(as_nobody(detect))
    assert source == "model"  # no silent fallback: describe() says why
    assert line == (
        "rapl-powercap: unreadable (cannot read "
        f"{world_readable_laptop}/sys/class/powercap/intel-rapl:1/energy_uj: "
        "root-only since CVE-2020-8694; run as root or use the model fallback)"
    )
