"""Audits of what an agent's processes actually run.

- `maps`: /proc/PID/maps parsed into typed mappings, with lookup by address.
- `manifest`: `CodeManifest`, the sha256 of every code page an agent may execute, from its
  declared ELF files or from what a process has mapped at spawn; JSON for storage.
- `ipsample`: stop each thread for tens of microseconds (ptrace), read its instruction pointer
  and code page, `check` the samples against the manifest, `module_histogram` of where they
  were. Evidence of what ran, not proof that the work was useful.
- `_ptrace`: the ctypes layer under `ipsample` (x86_64 and aarch64).
"""

from __future__ import annotations

from maxwell.audit._ptrace import UnsupportedArchitectureError
from maxwell.audit.ipsample import (
    UNMAPPED,
    AlreadyTracedError,
    AuditVerdict,
    Finding,
    IpSample,
    PtraceDeniedError,
    SampleError,
    SelfSampleError,
    Violation,
    check,
    module_histogram,
    sample_threads,
    tracer_of,
)
from maxwell.audit.manifest import (
    KERNEL_ALLOWED,
    PAGE_SIZE,
    VDSO,
    VSYSCALL,
    CodeFileUnreadableError,
    CodeManifest,
    ManifestError,
    ManifestFormatError,
    ModuleCode,
    NotElfError,
)
from maxwell.audit.maps import (
    ANONYMOUS,
    Backing,
    MapsFormatError,
    MemoryMap,
    MemoryMapping,
    ProcessGoneError,
    ProcfsPermissionError,
    parse_maps,
    read_maps,
)

__all__ = [
    "ANONYMOUS",
    "KERNEL_ALLOWED",
    "PAGE_SIZE",
    "UNMAPPED",
    "VDSO",
    "VSYSCALL",
    "AlreadyTracedError",
    "AuditVerdict",
    "Backing",
    "CodeFileUnreadableError",
    "CodeManifest",
    "Finding",
    "IpSample",
    "ManifestError",
    "ManifestFormatError",
    "MapsFormatError",
    "MemoryMap",
    "MemoryMapping",
    "ModuleCode",
    "NotElfError",
    "ProcessGoneError",
    "ProcfsPermissionError",
    "PtraceDeniedError",
    "SampleError",
    "SelfSampleError",
    "UnsupportedArchitectureError",
    "Violation",
    "check",
    "module_histogram",
    "parse_maps",
    "read_maps",
    "sample_threads",
    "tracer_of",
]
