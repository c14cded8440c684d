"""The guard in conftest.py: with MAXWELL_REQUIRE_ROOT_TESTS=1 (`.ci/run` as root), a test marked
`root` that skips fails the session, however it skipped; without it, a skip is only a skip.

Each case runs pytest in a subprocess on a throwaway project that uses this suite's conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py")

INI = """
[pytest]
addopts = -ra --strict-markers
markers =
    root: needs root and a writable cgroup hierarchy
"""

SKIPPING = """
import pytest

@pytest.fixture
def refusing_fixture():
    pytest.skip("the fixture found no nobody")

@pytest.mark.root
def test_skips_in_its_body():
    pytest.skip("no writable cgroup hierarchy")

@pytest.mark.root
@pytest.mark.skipif(True, reason="a skipif said so")
def test_skipped_by_skipif():
    pass

@pytest.mark.root
def test_skipped_by_its_fixture(refusing_fixture):
    pass

@pytest.mark.root
def test_runs():
    pass

@pytest.mark.root
@pytest.mark.xfail(reason="known broken", strict=True)
def test_expected_to_fail():
    raise AssertionError

def test_not_root_may_skip():
    pytest.skip("an optional tool is missing")
"""

MODULE_MARKED = """
import pytest

pytestmark = pytest.mark.root

def test_marked_through_its_module():
    pytest.skip("needs the v1 freezer controller")
"""

ROOT_SKIPS = {
    "test_skipping.py::test_skips_in_its_body": "no writable cgroup hierarchy",
    "test_skipping.py::test_skipped_by_skipif": "a skipif said so",
    "test_skipping.py::test_skipped_by_its_fixture": "the fixture found no nobody",
    "test_module_marked.py::test_marked_through_its_module": "needs the v1 freezer controller",
}


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini(INI)
    pytester.makepyfile(test_skipping=SKIPPING, test_module_marked=MODULE_MARKED)
    return pytester


def test_a_skipped_root_test_fails_the_run_when_required(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAXWELL_REQUIRE_ROOT_TESTS", "1")
    result = project.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, skipped=5, xfailed=1)
    result.stdout.fnmatch_lines(
        ["*= 4 root tests skipped with MAXWELL_REQUIRE_ROOT_TESTS=1: the run fails =*"]
    )
    lines = result.stdout.lines
    start = next(i for i, line in enumerate(lines) if "root tests skipped with" in line) + 1
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("="))
    assert sorted(lines[start:end]) == sorted(f"{test}: {why}" for test, why in ROOT_SKIPS.items())


def test_skips_are_only_skips_when_not_required(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MAXWELL_REQUIRE_ROOT_TESTS", raising=False)
    result = project.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, skipped=5, xfailed=1)
    assert "root tests skipped" not in result.stdout.str()


def test_no_skipped_root_test_passes_when_required(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAXWELL_REQUIRE_ROOT_TESTS", "1")
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini(INI)
    pytester.makepyfile(
        test_clean="""
        import pytest

        @pytest.mark.root
        def test_runs():
            pass

        def test_not_root_may_skip():
            pytest.skip("an optional tool is missing")
        """
    )
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, skipped=1)
    assert "root tests skipped" not in result.stdout.str()
