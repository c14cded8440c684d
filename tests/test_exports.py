"""The public API, pinned: a change here is a change users' code will feel."""

from __future__ import annotations

import importlib

import pytest

PUBLIC = {
    "maxwell": ["MaxwellError", "__version__"],
    "maxwell.sensors": ["Kind", "ModelConfig", "NodeSample", "Reading", "Sensors", "Source"],
    "maxwell.cgroups": [
        "CgroupLayout",
        "CgroupManager",
        "GroupStats",
        "ProcTreeGroup",
        "V1Group",
        "V2Group",
        "WorkloadGroup",
        "open_workload_group",
        "read_layout",
        "read_sched_ext_state",
    ],
    "maxwell.meter": ["Attribution", "LiveMeter", "WorkloadUsage", "attribute"],
    "maxwell.testing": ["FakeGroup", "FakeProcess", "FakeSensors", "FakeSupervisor"],
    "maxwell.store": [
        "Migration",
        "MigrationError",
        "MigrationHistoryError",
        "SchemaTooNewError",
        "apply_missing",
        "migrate",
        "missing",
    ],
    "maxwell.audit": [
        "ANONYMOUS",
        "AlreadyTracedError",
        "AuditVerdict",
        "Backing",
        "CodeFileUnreadableError",
        "CodeManifest",
        "Finding",
        "IpSample",
        "KERNEL_ALLOWED",
        "ManifestError",
        "ManifestFormatError",
        "MapsFormatError",
        "MemoryMap",
        "MemoryMapping",
        "ModuleCode",
        "NotElfError",
        "PAGE_SIZE",
        "ProcessGoneError",
        "ProcfsPermissionError",
        "PtraceDeniedError",
        "SampleError",
        "SelfSampleError",
        "UNMAPPED",
        "UnsupportedArchitectureError",
        "VDSO",
        "VSYSCALL",
        "Violation",
        "check",
        "module_histogram",
        "parse_maps",
        "read_maps",
        "sample_threads",
        "tracer_of",
    ],
    "maxwell.proof": [
        "DEFAULT_ROUNDS",
        "DEFAULT_TOLERANCE",
        "InputShapeError",
        "Model",
        "ModelFormatError",
        "Node",
        "Proof",
        "ProofFormatError",
        "ProofInputError",
        "TensorFileError",
        "Tolerance",
        "UnsupportedModelError",
        "Verdict",
        "VerifierKey",
        "make_key",
        "make_proof",
        "model_from_bytes",
        "read_proof",
        "run",
        "verify",
        "write_proof",
    ],
    "maxwell.client": [
        "BudgetExhausted",
        "BudgetWatch",
        "Client",
        "ClientError",
        "NodeUnreachableError",
        "SelfMeter",
        "budget",
        "process_tree_cpu_s",
    ],
}


@pytest.mark.parametrize("module_name", sorted(PUBLIC))
def test_public_names_are_exactly_the_pinned_ones(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert sorted(module.__all__) == sorted(PUBLIC[module_name])
    for name in module.__all__:
        assert hasattr(module, name), name


def test_errors_derive_from_one_root() -> None:
    from maxwell import errors

    for name in dir(errors):
        value = getattr(errors, name)
        if (
            isinstance(value, type)
            and issubclass(value, Exception)
            and value.__module__ == errors.__name__
        ):
            assert issubclass(value, errors.MaxwellError), name
