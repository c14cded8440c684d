"""`maxwell sensors`: the JSON shape, the human table, and the exit codes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from maxwell.clock import FakeClock
from maxwell.sensors import cli
from sensors_support import fixture


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="maxwell sensors")
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def _roots(name: str) -> list[str]:
    root = fixture(name)
    argv = ["--sysfs-root", str(root / "sys"), "--procfs-root", str(root / "proc")]
    if (root / "dev").is_dir():  # an absent --dev-root is a usage error, like the others
        argv += ["--dev-root", str(root / "dev")]
    return argv


def test_json_shape_on_the_laptop_tree(capsys: pytest.CaptureFixture[str]) -> None:
    clock = FakeClock()
    assert cli.run(_args("--json", *_roots("intel_laptop")), clock=clock) == 0
    assert clock.monotonic() == pytest.approx(0.2)  # sampled twice, 0.2 s apart
    document = json.loads(capsys.readouterr().out)
    assert set(document) == {
        "sensors", "energy_source", "temperature_source", "energy_measured",
        "temperature_measured", "backends", "warnings", "version",
    }  # fmt: skip
    assert document["energy_source"] == "rapl-powercap"
    assert document["energy_measured"] is True
    assert document["temperature_source"] == "thermal"
    for sensor in document["sensors"]:
        assert {"id", "source", "kind", "unit", "value", "measured", "label"} <= set(sensor)
        assert sensor["unit"] in {"J", "W", "C"}
    by_id = {s["id"]: s for s in document["sensors"]}
    assert by_id["intel-rapl:0"] == {
        "id": "intel-rapl:0",
        "source": "rapl-powercap",
        "kind": "energy",
        "unit": "J",
        "value": 81_234.56789,
        "measured": True,
        "label": "package-0",
        "max_energy_range_j": 262_143.32885,
        "in_node_energy": False,  # a JSON boolean, not "no"
        "max_power_w": 28.0,
    }
    assert by_id["thermal_zone1"]["value"] == 52.0
    assert document["backends"][0].startswith("rapl-powercap: found")


def test_json_on_a_vm_tree_is_modelled(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(_args("--json", *_roots("vm")), clock=FakeClock()) == 0
    document = json.loads(capsys.readouterr().out)
    assert (document["energy_source"], document["energy_measured"]) == ("model", False)
    assert (document["temperature_source"], document["temperature_measured"]) == ("model", False)
    kinds = {s["id"]: (s["kind"], s["unit"], s["measured"]) for s in document["sensors"]}
    assert kinds == {
        "model:cpu": ("energy", "J", False),
        "model:cpu/power": ("power", "W", False),
        "model:cpu/temp": ("temperature", "C", False),
    }
    model = next(s for s in document["sensors"] if s["id"] == "model:cpu")
    assert model["vcpus"] == 2 and isinstance(model["vcpus"], int)  # a count, not 2.0
    assert "rapl-powercap: absent (no " in document["backends"][0]


def test_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(_args(*_roots("amd_2s")), clock=FakeClock()) == 0
    out = capsys.readouterr().out
    assert "hwmon1/k10temp/Tctl" in out
    assert "61.5 °C" in out
    assert "measured" in out
    assert "energy source: hwmon (measured)" in out
    assert "warning: hwmon3/nvme/Sensor 1: dead channel" in out


def test_missing_sysfs_root_is_a_one_line_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere"
    code = cli.run(_args("--sysfs-root", str(missing)), clock=FakeClock())
    assert code == 2
    err = capsys.readouterr().err
    assert err == f"maxwell sensors: error: --sysfs-root {missing}: no such directory\n"


def test_a_maxwell_error_exits_125(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "proc").mkdir()  # exists, but has no stat
    args = _args("--sysfs-root", str(tmp_path), "--procfs-root", str(tmp_path / "proc"))
    assert cli.run(args, clock=FakeClock()) == 125
    err = capsys.readouterr().err
    assert err.startswith("maxwell sensors: error: cannot read ")
    assert err.count("\n") == 1
