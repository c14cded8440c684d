"""RAPL through the model-specific registers: `<dev>/cpu/N/msr` (the `msr` module; root only).

A register is read as 8 little-endian bytes at offset = register number (`pread`). Registers
(shared/REFERENCE.md, Energy sensors):

- Intel: 0x606 MSR_RAPL_POWER_UNIT, 0x611 package, 0x639 PP0 (core), 0x619 DRAM, 0x64D PSYS.
- AMD:   0xC0010299 units, 0xC001029B package, 0xC001029A core.

The energy status unit is bits 12:8 of the units register: one count is 1/2^ESU J (ESU 16:
15.3 µJ, typical; ESU 14: 61 µJ on some servers). Energy registers count in their low 32 bits and
wrap (in about a minute at high power).

One reading per physical package: the package of each CPU comes from `physical id` in
`<proc>/cpuinfo`, else `<sysfs>/devices/system/cpu/cpuN/topology/physical_package_id`, else a
single package is assumed. PSYS is platform-wide and read once. A register that errors or reads 0
when the backend starts is treated as not implemented on this CPU.

Node energy follows the powercap rule: PSYS alone if present, else packages + DRAM.

Failure modes: no `<dev>/cpu/*/msr` (module not loaded) means the backend is absent; EIO on a read
is what a hypervisor's #GP (Xen) looks like, reported as a `SensorError` saying so.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from maxwell.errors import SensorError, SensorPermissionError
from maxwell.sensors._sysfs import read_optional_int
from maxwell.units import UJ_PER_J

ENERGY_MASK = 0xFFFF_FFFF
ENERGY_RANGE_UNITS = 2**32

INTEL = "GenuineIntel"
AMD = "AuthenticAMD"

INTEL_POWER_UNIT = 0x606
INTEL_PKG_ENERGY = 0x611
INTEL_PP0_ENERGY = 0x639
INTEL_DRAM_ENERGY = 0x619
INTEL_PSYS_ENERGY = 0x64D

AMD_POWER_UNIT = 0xC0010299
AMD_CORE_ENERGY = 0xC001029A
AMD_PKG_ENERGY = 0xC001029B


@dataclass(frozen=True)
class _Register:
    domain: str  # "package", "core", "dram", "psys"
    address: int
    platform_wide: bool = False


_REGISTERS: dict[str, tuple[int, tuple[_Register, ...]]] = {
    INTEL: (
        INTEL_POWER_UNIT,
        (
            _Register("package", INTEL_PKG_ENERGY),
            _Register("core", INTEL_PP0_ENERGY),
            _Register("dram", INTEL_DRAM_ENERGY),
            _Register("psys", INTEL_PSYS_ENERGY, platform_wide=True),
        ),
    ),
    AMD: (
        AMD_POWER_UNIT,
        (
            _Register("package", AMD_PKG_ENERGY),
            _Register("core", AMD_CORE_ENERGY),
        ),
    ),
}


@dataclass(frozen=True)
class MsrDomain:
    domain_id: str  # "msr:package-0", "msr:core-0", "msr:dram-1", "msr:psys"
    domain: str
    package: int
    cpu: int
    register: int
    joules_per_unit: float

    @property
    def label(self) -> str:
        return self.domain if self.domain == "psys" else f"{self.domain}-{self.package}"

    @property
    def uj_per_unit(self) -> float:
        return self.joules_per_unit * UJ_PER_J


def energy_joules_per_unit(units_register: int) -> float:
    """Joules per count from a RAPL power-unit register: 1/2^ESU, ESU in bits 12:8."""
    esu = (units_register >> 8) & 0x1F
    return 1.0 / (1 << esu)


def msr_path(dev_root: str | Path, cpu: int) -> Path:
    return Path(dev_root) / "cpu" / str(cpu) / "msr"


def read_msr(path: Path, register: int) -> int:
    """The 64-bit value of `register` read from an msr device file."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except PermissionError as exc:
        raise SensorPermissionError(
            f"cannot open {path}: the msr device is root-only (and needs CAP_SYS_RAWIO)",
            path=str(path),
        ) from exc
    except OSError as exc:
        raise SensorError(f"cannot open {path}: {exc.strerror}", path=str(path)) from exc
    try:
        data = os.pread(fd, 8, register)
    except OSError as exc:
        if exc.errno == errno.EIO:
            raise SensorError(
                f"reading MSR {register:#x} from {path} failed with EIO: this CPU or its "
                "hypervisor (Xen raises #GP in guests) does not provide it",
                path=str(path),
            ) from exc
        raise SensorError(
            f"reading MSR {register:#x} from {path} failed: {exc.strerror}", path=str(path)
        ) from exc
    finally:
        os.close(fd)
    if len(data) != 8:
        raise SensorError(
            f"reading MSR {register:#x} from {path} returned {len(data)} bytes, not 8",
            path=str(path),
        )
    return int.from_bytes(data, "little")


def read_vendor(procfs_root: str | Path = "/proc") -> str | None:
    path = Path(procfs_root) / "cpuinfo"
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "vendor_id":
            return value.strip()
    return None


def _cpuinfo_packages(procfs_root: str | Path) -> dict[int, int]:
    """cpu number -> `physical id`, from /proc/cpuinfo blocks (empty when it has none)."""
    try:
        text = (Path(procfs_root) / "cpuinfo").read_text()
    except OSError:
        return {}
    packages: dict[int, int] = {}
    cpu: int | None = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        try:
            if key == "processor":
                cpu = int(value)
            elif key == "physical id" and cpu is not None:
                packages[cpu] = int(value)
        except ValueError:
            continue
    return packages


def package_of_cpus(
    cpus: Iterable[int], *, procfs_root: str | Path = "/proc", sysfs_root: str | Path = "/sys"
) -> dict[int, int]:
    """cpu -> physical package: cpuinfo `physical id`, else sysfs topology, else package 0."""
    from_cpuinfo = _cpuinfo_packages(procfs_root)
    result: dict[int, int] = {}
    for cpu in cpus:
        package = from_cpuinfo.get(cpu)
        if package is None:
            topology = Path(sysfs_root) / "devices" / "system" / "cpu" / f"cpu{cpu}" / "topology"
            package = read_optional_int(topology / "physical_package_id")
        result[cpu] = package if package is not None and package >= 0 else 0
    return result


def _msr_cpus(dev_root: str | Path) -> list[int]:
    base = Path(dev_root) / "cpu"
    if not base.is_dir():
        return []
    cpus = [int(e.name) for e in base.iterdir() if e.name.isdigit() and (e / "msr").exists()]
    return sorted(cpus)


def find_domains(
    *,
    dev_root: str | Path = "/dev",
    procfs_root: str | Path = "/proc",
    sysfs_root: str | Path = "/sys",
) -> list[MsrDomain]:
    """Every readable RAPL energy register, one set per package; `SensorError` says why none."""
    vendor = read_vendor(procfs_root)
    if vendor not in _REGISTERS:
        raise SensorError(f"no RAPL MSRs known for CPU vendor {vendor or 'unknown'!r}")
    cpus = _msr_cpus(dev_root)
    if not cpus:
        raise SensorError(f"no {Path(dev_root) / 'cpu' / '*' / 'msr'} (msr module not loaded?)")
    units_register, registers = _REGISTERS[vendor]
    first_cpu_of_package: dict[int, int] = {}
    for cpu, package in package_of_cpus(
        cpus, procfs_root=procfs_root, sysfs_root=sysfs_root
    ).items():
        first_cpu_of_package.setdefault(package, cpu)
    domains: list[MsrDomain] = []
    for package, cpu in sorted(first_cpu_of_package.items()):
        path = msr_path(dev_root, cpu)
        # The units register must read: otherwise nothing else from this CPU can be trusted.
        joules_per_unit = energy_joules_per_unit(read_msr(path, units_register))
        for register in registers:
            if register.platform_wide and package != min(first_cpu_of_package):
                continue
            try:
                if read_msr(path, register.address) & ENERGY_MASK == 0:
                    continue  # unimplemented registers read 0 on some parts
            except SensorPermissionError:
                raise
            except SensorError:
                if register.domain == "package":
                    raise
                continue  # DRAM/PSYS raise #GP on CPUs without them
            domain_id = "msr:psys" if register.platform_wide else f"msr:{register.domain}-{package}"
            domains.append(
                MsrDomain(
                    domain_id=domain_id,
                    domain=register.domain,
                    package=package,
                    cpu=cpu,
                    register=register.address,
                    joules_per_unit=joules_per_unit,
                )
            )
    return domains


def node_domains(domains: list[MsrDomain]) -> list[MsrDomain]:
    psys = [d for d in domains if d.domain == "psys"]
    if psys:
        return psys
    return [d for d in domains if d.domain in ("package", "dram")]


def read_energy_units(domain: MsrDomain, dev_root: str | Path = "/dev") -> int:
    """The domain's 32-bit energy counter, in its energy units."""
    return read_msr(msr_path(dev_root, domain.cpu), domain.register) & ENERGY_MASK
