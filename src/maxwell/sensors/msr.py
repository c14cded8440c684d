"""RAPL through the model-specific registers: `<dev>/cpu/N/msr` (the `msr` module; root only).

A register is read as 8 little-endian bytes at offset = register number (`pread`). Registers
(shared/REFERENCE.md, Energy sensors):

- Intel: 0x606 MSR_RAPL_POWER_UNIT, 0x611 package, 0x639 PP0 (core), 0x619 DRAM, 0x64D PSYS.
- AMD:   0xC0010299 units, 0xC001029B package, 0xC001029A core.

The energy status unit is bits 12:8 of the units register: one count is 1/2^ESU J (ESU 16:
15.3 µJ, typical; ESU 14: 61 µJ on some servers). Some Intel server parts ignore the ESU for one
domain: DRAM counts in a fixed 15.3 µJ on Haswell-EP through Ice Lake-SP (and Xeon Phi), PSYS in
1 J on Sapphire/Emerald Rapids (`FIXED_ENERGY_UNITS_J`, chosen by `cpu family` and `model` in
`<proc>/cpuinfo`). Energy registers count in their low 32 bits and wrap (in about a minute at
high power).

Package, DRAM and Intel PP0 (core) counters cover a whole package: one reading per physical
package, from its first CPU. The package of each CPU comes from `physical id` in `<proc>/cpuinfo`,
else `<sysfs>/devices/system/cpu/cpuN/topology/physical_package_id`, else a single package is
assumed. PSYS is platform-wide and read once. AMD's core energy (0xC001029A) is per core: what is
reported is the core of the CPU it was read on (`core-cpuN`, the package's first CPU), a sample,
not the package's cores in total. A register that errors or reads 0 when the backend starts is
treated as not implemented on this CPU.

Node energy follows the powercap rule: PSYS alone if present, else packages + DRAM. Core energy
(Intel PP0, AMD per-core) is part of its package and is never added.

Failure modes: no `<dev>/cpu/*/msr` (module not loaded) means the backend is absent; EIO on a read
is what a hypervisor's #GP (Xen) looks like, reported as a `SensorError` saying so.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from maxwell.errors import SensorError, SensorPermissionError
from maxwell.sensors._sysfs import exists, is_dir, list_dir, read_optional_int
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


# Energy units (J per count) that replace the units register's ESU for one domain, by Intel
# family-6 model number. From Linux drivers/powercap/intel_rapl_common.c: `rapl_defaults_hsw_server`
# (.dram_domain_energy_unit = 15300, in nJ: 15.3 µJ) is used for HASWELL_X, BROADWELL_X,
# SKYLAKE_X (also Cascade Lake-SP and Cooper Lake, same model), ICELAKE_X, ICELAKE_D, XEON_PHI_KNL
# and XEON_PHI_KNM; `rapl_defaults_spr_server` (.psys_domain_energy_unit = NANOJOULE_PER_JOULE:
# 1 J) for SAPPHIRERAPIDS_X and EMERALDRAPIDS_X, whose DRAM follows the ESU again (Linux 6.1).
# BROADWELL_D: arch/x86/events/rapl.c gives it the same fixed DRAM unit (model_hsx), though
# powercap lists it with rapl_defaults_core; the perf driver is followed here.
HSW_SERVER_DRAM_UNIT_J = 15.3e-6
SPR_SERVER_PSYS_UNIT_J = 1.0
_HSW_SERVER = {"dram": HSW_SERVER_DRAM_UNIT_J}
_SPR_SERVER = {"psys": SPR_SERVER_PSYS_UNIT_J}
FIXED_ENERGY_UNITS_J: dict[int, dict[str, float]] = {
    0x3F: _HSW_SERVER,  # Haswell-X
    0x4F: _HSW_SERVER,  # Broadwell-X
    0x56: _HSW_SERVER,  # Broadwell-D
    0x55: _HSW_SERVER,  # Skylake-X, Cascade Lake-SP, Cooper Lake
    0x6A: _HSW_SERVER,  # Ice Lake-X
    0x6C: _HSW_SERVER,  # Ice Lake-D
    0x57: _HSW_SERVER,  # Xeon Phi Knights Landing
    0x85: _HSW_SERVER,  # Xeon Phi Knights Mill
    0x8F: _SPR_SERVER,  # Sapphire Rapids-X
    0xCF: _SPR_SERVER,  # Emerald Rapids-X
}


@dataclass(frozen=True)
class _Register:
    domain: str  # "package", "core", "dram", "psys"
    address: int
    scope: str = "package"  # what one register covers: "package", "core" or "platform"


_REGISTERS: dict[str, tuple[int, tuple[_Register, ...]]] = {
    INTEL: (
        INTEL_POWER_UNIT,
        (
            _Register("package", INTEL_PKG_ENERGY),
            _Register("core", INTEL_PP0_ENERGY),
            _Register("dram", INTEL_DRAM_ENERGY),
            _Register("psys", INTEL_PSYS_ENERGY, scope="platform"),
        ),
    ),
    AMD: (
        AMD_POWER_UNIT,
        (
            _Register("package", AMD_PKG_ENERGY),
            _Register("core", AMD_CORE_ENERGY, scope="core"),
        ),
    ),
}


@dataclass(frozen=True)
class MsrDomain:
    domain_id: str  # "msr:package-0", "msr:core-0", "msr:dram-1", "msr:psys", "msr:core-cpu2"
    domain: str
    package: int
    cpu: int
    register: int
    joules_per_unit: float
    scope: str = "package"  # "package", "core" (one core: the CPU read on) or "platform"

    @property
    def label(self) -> str:
        if self.scope == "platform":
            return self.domain
        if self.scope == "core":
            return f"{self.domain}-cpu{self.cpu}"
        return f"{self.domain}-{self.package}"

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


def read_cpu_signature(procfs_root: str | Path = "/proc") -> tuple[int, int] | None:
    """(`cpu family`, `model`) of the first CPU in /proc/cpuinfo, or None when it has none."""
    try:
        text = (Path(procfs_root) / "cpuinfo").read_text()
    except OSError:
        return None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() and fields:
            break  # the first processor's block is enough: every CPU of a machine is one model
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    try:
        return int(fields["cpu family"]), int(fields["model"])
    except (KeyError, ValueError):
        return None


def fixed_energy_units(vendor: str | None, signature: tuple[int, int] | None) -> dict[str, float]:
    """Domain -> J per count for domains whose unit is fixed on this CPU (not the ESU)."""
    if vendor != INTEL or signature is None or signature[0] != 6:
        return {}
    return dict(FIXED_ENERGY_UNITS_J.get(signature[1], {}))


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
    if not is_dir(base):
        return []
    cpus = [int(e.name) for e in list_dir(base) if e.name.isdigit() and exists(e / "msr")]
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
    fixed_units = fixed_energy_units(vendor, read_cpu_signature(procfs_root))
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
            if register.scope == "platform" and package != min(first_cpu_of_package):
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
            domain = MsrDomain(
                domain_id="",
                domain=register.domain,
                package=package,
                cpu=cpu,
                register=register.address,
                joules_per_unit=fixed_units.get(register.domain, joules_per_unit),
                scope=register.scope,
            )
            domains.append(replace(domain, domain_id=f"msr:{domain.label}"))
    return domains


def node_domains(domains: list[MsrDomain]) -> list[MsrDomain]:
    psys = [d for d in domains if d.domain == "psys"]
    if psys:
        return psys
    return [d for d in domains if d.domain in ("package", "dram")]


def read_energy_units(domain: MsrDomain, dev_root: str | Path = "/dev") -> int:
    """The domain's 32-bit energy counter, in its energy units."""
    return read_msr(msr_path(dev_root, domain.cpu), domain.register) & ENERGY_MASK
