"""NVIDIA GPUs through an injected NVML module (a small fake with pynvml's functions)."""

from __future__ import annotations

from maxwell.clock import FakeClock
from maxwell.sensors import Kind, Sensors, Source
from maxwell.sensors.nvml import NvmlBackend
from sensors_support import FakeNvml, fixture

VM = fixture("vm")

GPUS: list[dict[str, object]] = [
    {
        "name": b"NVIDIA A100-SXM4-40GB",
        "energy_mj": 123_456_789,
        "power_mw": 61_250,
        "temperature_c": 34,
        "slowdown_c": 88,
    },
    # A pre-Volta card: no energy counter (NVMLError "Not Supported"), no slowdown threshold.
    {"name": "Tesla P4", "energy_mj": None, "power_mw": 23_000, "temperature_c": 41},
]


def _detect(nvml: object | None) -> Sensors:
    return Sensors.detect(
        sysfs_root=VM / "sys",
        dev_root=VM / "dev",
        procfs_root=VM / "proc",
        clock=FakeClock(),
        nvml=nvml,
    )


def test_backend_reads_each_gpu_and_omits_what_is_not_supported() -> None:
    fake = FakeNvml(GPUS)
    backend = NvmlBackend(fake)
    first, second = backend.read()
    assert (first.name, first.energy_mj, first.power_mw) == (
        "GPU 0 NVIDIA A100-SXM4-40GB",
        123_456_789,
        61_250,
    )
    assert (first.temperature_c, first.slowdown_c) == (34.0, 88.0)
    assert (second.energy_mj, second.slowdown_c, second.power_mw) == (None, None, 23_000)
    backend.close()
    assert fake.shut_down


def test_facade_readings_for_gpus_are_measured_but_not_node_energy() -> None:
    fake = FakeNvml(GPUS)
    sensors = _detect(fake)
    assert "nvml: found GPU 0 NVIDIA A100-SXM4-40GB, GPU 1 Tesla P4" in sensors.describe()
    readings = {r.id: r for r in sensors.readings()}
    energy = readings["nvml:0"]
    assert (energy.kind, energy.unit, energy.value, energy.measured) == (
        Kind.ENERGY, "J", 123_456.789, True,
    )  # fmt: skip
    assert energy.extra["in_node_energy"] is False
    assert readings["nvml:0/power"].value == 61.25
    assert readings["nvml:0/temp"].extra == {"slowdown_c": 88.0}
    assert "nvml:1" not in readings  # no energy counter before Volta
    assert readings["nvml:1/power"].value == 23.0
    assert readings["nvml:1/temp"].extra == {}
    # GPU energy never enters the node's CPU energy.
    assert sensors.energy_source == Source.MODEL
    sensors.close()
    assert fake.shut_down


def test_nvml_absent_with_its_reason() -> None:
    failing = _detect(FakeNvml([], init_error="Driver Not Loaded"))
    assert "nvml: absent (NVML init failed: Driver Not Loaded)" in failing.describe()
    no_gpus = _detect(FakeNvml([]))
    assert "nvml: absent (NVML found no GPUs)" in no_gpus.describe()
    disabled = _detect(None)
    assert "nvml: absent (disabled)" in disabled.describe()
    assert not any(r.source == Source.NVML for r in disabled.readings())
