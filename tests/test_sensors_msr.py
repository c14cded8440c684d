"""RAPL through /dev/cpu/N/msr: unit decoding, vendors, packages, wrap, and failure modes.

The msr files are sparse files built in tmp_path (AMD registers sit near 3 GiB).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from maxwell.clock import FakeClock
from maxwell.errors import SensorError
from maxwell.sensors import Sensors, Source, msr
from sensors_support import (
    copy_fixture,
    fixture,
    write_cpuinfo,
    write_msr,
    write_msr_bytes,
    write_stat,
)


def _units(esu: int) -> int:
    # Power unit 3 (bits 3:0), energy status unit in bits 12:8, time unit 10 (bits 19:16).
    return (10 << 16) | (esu << 8) | 3


def _intel_tree(
    root: Path, *, esu: int, packages: list[int], package_energy: int
) -> tuple[Path, Path]:
    dev, proc = root / "dev", root / "proc"
    write_cpuinfo(proc, "GenuineIntel", "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz", packages)
    write_stat(proc, busy_ticks=100, idle_ticks=900, cpus=len(packages))
    for cpu in range(len(packages)):
        write_msr(
            dev,
            cpu,
            {
                msr.INTEL_POWER_UNIT: _units(esu),
                msr.INTEL_PKG_ENERGY: package_energy + cpu,
                msr.INTEL_PP0_ENERGY: 0x1000 + cpu,
                msr.INTEL_DRAM_ENERGY: 0x2000 + cpu,
                msr.INTEL_PSYS_ENERGY: 0,  # not implemented on this part
            },
        )
    return dev, proc


def test_energy_unit_decoding() -> None:
    assert msr.energy_joules_per_unit(_units(14)) * 1e6 == pytest.approx(61.035, abs=1e-3)
    assert msr.energy_joules_per_unit(_units(16)) * 1e6 == pytest.approx(15.259, abs=1e-3)
    # Real Skylake-SP value 0x000A0E03: ESU 14.
    assert msr.energy_joules_per_unit(0x000A0E03) == 2**-14


def test_intel_domains_one_per_package(tmp_path: Path) -> None:
    dev, proc = _intel_tree(tmp_path, esu=14, packages=[0, 0, 1, 1], package_energy=0x10_0000)
    domains = msr.find_domains(dev_root=dev, procfs_root=proc, sysfs_root=tmp_path / "sys")
    assert [(d.domain_id, d.cpu) for d in domains] == [
        ("msr:package-0", 0),
        ("msr:core-0", 0),
        ("msr:dram-0", 0),
        ("msr:package-1", 2),  # the first CPU of package 1
        ("msr:core-1", 2),
        ("msr:dram-1", 2),
    ]  # psys read 0: treated as not implemented
    assert domains[0].uj_per_unit == pytest.approx(61.035, abs=1e-3)
    node = msr.node_domains(domains)
    assert [d.domain_id for d in node] == [
        "msr:package-0",
        "msr:dram-0",
        "msr:package-1",
        "msr:dram-1",
    ]
    assert msr.read_energy_units(domains[3], dev) == 0x10_0000 + 2


def test_energy_register_is_masked_to_32_bits(tmp_path: Path) -> None:
    dev, proc = _intel_tree(tmp_path, esu=16, packages=[0], package_energy=0xABCD_0000_1234_5678)
    domains = msr.find_domains(dev_root=dev, procfs_root=proc, sysfs_root=tmp_path / "sys")
    assert msr.read_energy_units(domains[0], dev) == 0x1234_5678


def test_package_from_sysfs_topology_when_cpuinfo_has_none(tmp_path: Path) -> None:
    _, proc = _intel_tree(tmp_path, esu=16, packages=[0, 0], package_energy=5)
    (proc / "cpuinfo").write_text("processor\t: 0\nvendor_id\t: GenuineIntel\n\nprocessor\t: 1\n")
    topology = tmp_path / "sys" / "devices" / "system" / "cpu"
    for cpu, package in ((0, 0), (1, 1)):
        (topology / f"cpu{cpu}" / "topology").mkdir(parents=True)
        (topology / f"cpu{cpu}" / "topology" / "physical_package_id").write_text(f"{package}\n")
    assert msr.package_of_cpus([0, 1], procfs_root=proc, sysfs_root=tmp_path / "sys") == {
        0: 0,
        1: 1,
    }


def test_amd_registers_and_units(tmp_path: Path) -> None:
    dev, proc = tmp_path / "dev", tmp_path / "proc"
    write_cpuinfo(proc, "AuthenticAMD", "AMD EPYC 7763 64-Core Processor", [0, 0, 1, 1])
    # Units (0x...299), core (0x...29A) and package (0x...29B) energy overlap in a flat file:
    # byte 1 is the units' ESU (16) and the core counter's low byte; bytes 2..5 are the package
    # counter's low 32 bits.
    package_counter = 0x0040_E240  # 4_252_224 counts
    data = bytes([0x03, 16]) + package_counter.to_bytes(4, "little") + bytes(4)
    for cpu in (0, 2):
        write_msr_bytes(dev, cpu, msr.AMD_POWER_UNIT, data)
    for cpu in (1, 3):  # the msr file exists for every CPU; siblings are never read
        write_msr_bytes(dev, cpu, msr.AMD_POWER_UNIT, bytes(16))
    assert (dev / "cpu" / "0" / "msr").stat().st_size > 3 * 2**30  # sparse, near 3 GiB
    domains = msr.find_domains(dev_root=dev, procfs_root=proc, sysfs_root=tmp_path / "sys")
    assert [(d.domain_id, d.register, d.cpu) for d in domains] == [
        ("msr:package-0", 0xC001029B, 0),
        ("msr:core-cpu0", 0xC001029A, 0),  # per core: the core of the CPU it was read on
        ("msr:package-1", 0xC001029B, 2),
        ("msr:core-cpu2", 0xC001029A, 2),
    ]
    assert domains[0].joules_per_unit == 2**-16  # ESU 16: 15.3 uJ
    assert domains[0].uj_per_unit == pytest.approx(15.2588, abs=1e-4)
    assert msr.read_energy_units(domains[0], dev) == package_counter
    assert msr.read_energy_units(domains[1], dev) == int.from_bytes(data[1:5], "little")
    assert [d.domain_id for d in msr.node_domains(domains)] == ["msr:package-0", "msr:package-1"]


def test_no_msr_device_means_absent() -> None:
    vm = fixture("vm")
    with pytest.raises(SensorError, match=r"msr module not loaded"):
        msr.find_domains(dev_root=vm / "dev", procfs_root=vm / "proc", sysfs_root=vm / "sys")


def test_unknown_vendor_means_absent(tmp_path: Path) -> None:
    write_cpuinfo(tmp_path / "proc", "CentaurHauls", "VIA Nano", [0])
    with pytest.raises(SensorError, match="CentaurHauls"):
        msr.find_domains(dev_root=tmp_path, procfs_root=tmp_path / "proc", sysfs_root=tmp_path)


def test_eio_reads_as_a_hypervisor_refusal(tmp_path: Path) -> None:
    # /proc/self/mem answers pread at an unmapped address with a genuine EIO, as Xen's #GP does.
    dev, proc = tmp_path / "dev", tmp_path / "proc"
    write_cpuinfo(proc, "GenuineIntel", "Intel(R) Xeon(R) CPU", [0])
    (dev / "cpu" / "0").mkdir(parents=True)
    (dev / "cpu" / "0" / "msr").symlink_to("/proc/self/mem")
    with pytest.raises(SensorError, match=r"MSR 0x606 .* failed with EIO: .*hypervisor"):
        msr.read_msr(dev / "cpu" / "0" / "msr", msr.INTEL_POWER_UNIT)
    with pytest.raises(SensorError, match="EIO"):
        msr.find_domains(dev_root=dev, procfs_root=proc, sysfs_root=tmp_path / "sys")


def test_facade_uses_msr_and_corrects_a_32_bit_wrap(tmp_path: Path) -> None:
    esu = 14
    dev, proc = _intel_tree(tmp_path, esu=esu, packages=[0], package_energy=2**32 - 1000)
    clock = FakeClock(100.0)
    sensors = Sensors.detect(
        sysfs_root=tmp_path / "sys", dev_root=dev, procfs_root=proc, clock=clock, nvml=None
    )
    assert sensors.energy_source == Source.RAPL_MSR and sensors.energy_measured
    assert any(
        line.startswith("rapl-msr: found package-0, core-0, dram-0") for line in sensors.describe()
    )
    # One second later the package counter wrapped past 2^32 and DRAM moved 500 units.
    write_msr(dev, 0, {msr.INTEL_PKG_ENERGY: 3000, msr.INTEL_DRAM_ENERGY: 0x2000 + 500})
    clock.advance(1.0)
    sample = sensors.sample()
    unit_uj = 1e6 / 2**esu
    assert sample.energy_uj == round(4000 * unit_uj) + round(500 * unit_uj)
    assert sample.warnings == ()


def test_facade_skips_msr_when_told(tmp_path: Path) -> None:
    dev, proc = _intel_tree(tmp_path, esu=16, packages=[0], package_energy=10)
    sensors = Sensors.detect(
        sysfs_root=tmp_path / "sys",
        dev_root=dev,
        procfs_root=proc,
        clock=FakeClock(),
        nvml=None,
        use_msr=False,
    )
    assert sensors.energy_source == Source.MODEL
    assert "rapl-msr: disabled" in sensors.describe()


def test_cpu_signature_from_cpuinfo(tmp_path: Path) -> None:
    assert msr.read_cpu_signature(fixture("intel_server_2s") / "proc") == (6, 0x55)
    write_cpuinfo(tmp_path, "GenuineIntel", "Intel(R) Xeon(R) CPU", [0])  # no family/model
    assert msr.read_cpu_signature(tmp_path) is None
    assert msr.read_cpu_signature(tmp_path / "missing") is None


def _server_msrs(root: Path, *, package: int, dram: int) -> None:
    """ESU 14 (61 µJ) in 0x606 on the first CPU of each socket of the 2-socket server tree."""
    for cpu in (0, 2):
        write_msr(
            root / "dev",
            cpu,
            {
                msr.INTEL_POWER_UNIT: _units(14),
                msr.INTEL_PKG_ENERGY: package,
                msr.INTEL_PP0_ENERGY: 0x1000,
                msr.INTEL_DRAM_ENERGY: dram,
                msr.INTEL_PSYS_ENERGY: 0,
            },
        )


def test_server_dram_counts_in_a_fixed_15_3_uj_not_the_package_unit(tmp_path: Path) -> None:
    # Cascade Lake-SP (family 6, model 0x55): Linux's rapl_defaults_hsw_server fixes DRAM at
    # 15.3 µJ while 0x606 says ESU 14 (61 µJ) for the package.
    root = copy_fixture("intel_server_2s", tmp_path)
    shutil.rmtree(root / "sys" / "class" / "powercap")  # so the facade reads the MSRs
    _server_msrs(root, package=1_000_000, dram=2_000_000)
    domains = {
        d.domain_id: d
        for d in msr.find_domains(
            dev_root=root / "dev", procfs_root=root / "proc", sysfs_root=root / "sys"
        )
    }
    assert domains["msr:package-0"].uj_per_unit == pytest.approx(61.035, abs=1e-3)
    assert domains["msr:core-1"].uj_per_unit == pytest.approx(61.035, abs=1e-3)
    assert domains["msr:dram-0"].uj_per_unit == pytest.approx(15.3)
    assert domains["msr:dram-1"].joules_per_unit == msr.HSW_SERVER_DRAM_UNIT_J
    clock = FakeClock()
    sensors = Sensors.detect(
        sysfs_root=root / "sys",
        dev_root=root / "dev",
        procfs_root=root / "proc",
        clock=clock,
        nvml=None,
    )
    assert sensors.energy_source == Source.RAPL_MSR
    assert any(
        line.startswith("rapl-msr: found ")
        and "(energy unit 61 uJ; dram 15.3 uJ (fixed for this CPU))" in line
        for line in sensors.describe()
    )
    _server_msrs(root, package=1_000_000 + 16_384, dram=2_000_000 + 100_000)  # on both sockets
    clock.advance(1.0)
    sample = sensors.sample()
    package_uj = 16_384 * 1e6 / 2**14  # 1 J per socket at 61 µJ a count
    dram_uj = 100_000 * 15.3  # 1.53 J per socket at 15.3 µJ a count
    assert sample.energy_uj == 2 * round(package_uj) + 2 * round(dram_uj)
    readings = {r.id: r for r in sensors.readings()}
    assert readings["msr:dram-0"].extra["energy_unit_uj"] == pytest.approx(15.3)
    assert readings["msr:dram-0"].value == pytest.approx(2_100_000 * 15.3e-6)


@pytest.mark.parametrize(
    ("model", "dram_uj"),
    [
        (0x3F, 15.3), (0x4F, 15.3), (0x56, 15.3), (0x55, 15.3), (0x6A, 15.3), (0x6C, 15.3),
        (0x57, 15.3), (0x85, 15.3),
        (0x8F, 61.035), (0xCF, 61.035),  # Sapphire/Emerald Rapids: DRAM follows the ESU again
        (0x8C, 61.035),  # Tiger Lake (client): the ESU
    ],
)  # fmt: skip
def test_fixed_dram_unit_by_cpu_model(tmp_path: Path, model: int, dram_uj: float) -> None:
    dev, proc = _intel_tree(tmp_path, esu=14, packages=[0], package_energy=5)
    write_cpuinfo(proc, "GenuineIntel", "Intel(R) Xeon(R) CPU", [0], signature=(6, model))
    domains = {d.domain: d for d in msr.find_domains(dev_root=dev, procfs_root=proc)}
    assert domains["dram"].uj_per_unit == pytest.approx(dram_uj, abs=1e-3)
    assert domains["package"].uj_per_unit == pytest.approx(61.035, abs=1e-3)


def test_sapphire_rapids_psys_counts_in_joules(tmp_path: Path) -> None:
    dev, proc = _intel_tree(tmp_path, esu=14, packages=[0, 1], package_energy=5)
    write_cpuinfo(
        proc, "GenuineIntel", "Intel(R) Xeon(R) Platinum 8480+", [0, 1], signature=(6, 0x8F)
    )
    write_msr(dev, 0, {msr.INTEL_PSYS_ENERGY: 1_234})
    domains = msr.find_domains(dev_root=dev, procfs_root=proc)
    psys = [d for d in domains if d.domain == "psys"]
    assert [(d.domain_id, d.joules_per_unit) for d in psys] == [("msr:psys", 1.0)]
    assert msr.node_domains(domains) == psys


def test_amd_core_energy_is_one_core_labelled_by_cpu_and_not_node_energy(tmp_path: Path) -> None:
    dev, proc = tmp_path / "dev", tmp_path / "proc"
    write_cpuinfo(proc, "AuthenticAMD", "AMD EPYC 7763 64-Core Processor", [0, 0, 1, 1])
    write_stat(proc, busy_ticks=100, idle_ticks=900, cpus=4)
    data = bytes([0x03, 16]) + (0x0040_E240).to_bytes(4, "little") + bytes(4)
    for cpu in range(4):
        write_msr_bytes(dev, cpu, msr.AMD_POWER_UNIT, data)
    sensors = Sensors.detect(
        sysfs_root=tmp_path / "sys", dev_root=dev, procfs_root=proc, clock=FakeClock(), nvml=None
    )
    assert any(
        line.startswith("rapl-msr: found package-0, core-cpu0, package-1, core-cpu2 ")
        and line.endswith("node energy = package-0 + package-1")
        for line in sensors.describe()
    )
    readings = {r.id: r for r in sensors.readings()}
    core = readings["msr:core-cpu2"]
    assert (core.label, core.extra["cpu"], core.extra["in_node_energy"]) == ("core-cpu2", 2, False)
    assert readings["msr:package-1"].extra["in_node_energy"] is True
    assert "cpu" not in readings["msr:package-1"].extra
