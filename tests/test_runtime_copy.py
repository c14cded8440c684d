"""`maxwell.runtime_copy`: Maxwell and its agents' imports copied where any uid may read them,
an interpreter any uid may run, and, as root, a sample agent's imports run as a stranger uid."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from helpers import OPTIONAL_PACKAGES, copy_for_anyone
from maxwell import runtime_copy
from maxwell.runtime_copy import (
    STRANGER,
    AgentRuntimeError,
    MissingPackageError,
    agent_runtime,
    copy_runtime,
    public_python,
)
from maxwell.users import setpriv_argv


def _modes(root: Path) -> set[tuple[bool, int]]:
    return {(path.is_dir(), stat.S_IMODE(path.stat().st_mode)) for path in [root, *root.rglob("*")]}


def test_the_copy_is_open_to_anyone_and_gone_after() -> None:
    try:
        with agent_runtime() as runtime:
            root = runtime.path
            assert (root / "maxwell" / "samples" / "inference.py").is_file()
            assert (root / "numpy" / "__init__.py").is_file()
            assert (root / "pydantic_core").is_dir()
            assert _modes(root) == {(True, 0o755), (False, 0o644)}
            assert runtime.command[-2:] == (f"PYTHONPATH={root}", runtime.python)
            if os.geteuid() == 0:  # the stranger itself imports what an agent does
                probe = "import os, numpy, maxwell.samples.inference; print(os.geteuid())"
                argv = setpriv_argv(STRANGER, [*runtime.command, "-c", probe])
                said = subprocess.run(argv, capture_output=True, text=True, cwd="/", check=False)
                assert said.returncode == 0, said.stderr
                assert said.stdout.strip() == str(STRANGER.uid)
    except AgentRuntimeError as exc:
        if os.geteuid() == 0 and os.environ.get("MAXWELL_REQUIRE_ROOT_TESTS") == "1":
            pytest.fail(f"CI's machine has a public python3, yet: {exc}")
        pytest.skip(f"no Python any uid may run here: {exc}")
    assert not root.exists()


def test_without_a_public_python_it_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime_copy, "_candidates", lambda: [])
    with pytest.raises(AgentRuntimeError, match=r"no Python 3\.[0-9]+ .* install python3"):
        public_python()
    with pytest.raises(AgentRuntimeError), agent_runtime():
        pass


def test_a_missing_package_is_named(tmp_path: Path) -> None:
    with pytest.raises(MissingPackageError, match="no_such_distribution_") as caught:
        copy_runtime(tmp_path, ["no_such_distribution_"])
    assert caught.value.package == "no_such_distribution_"
    copy_runtime(tmp_path / "optional", [], optional=["no_such_distribution_"])  # skipped
    assert (tmp_path / "optional" / "maxwell" / "__init__.py").is_file()


def test_the_suites_copy_holds_the_cli_and_the_sdk(tmp_path: Path) -> None:
    assert copy_for_anyone(tmp_path) is None
    for name in ("maxwell", "rich", "pydantic", "pydantic_core"):
        assert (tmp_path / name / "__init__.py").is_file(), name
    assert (tmp_path / "typing_extensions.py").is_file()  # a module of one file
    assert all((tmp_path / name).is_dir() for name in OPTIONAL_PACKAGES if _installed(name))
    assert _modes(tmp_path) == {(True, 0o755), (False, 0o644)}


def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
