"""A root workload of `maxwell run` (issue 11, 1): measured before, a workload that wrote its pid
to another group's `cgroup.procs` outlived apoptosis (2.89 CPU-s burned after it, unbilled).

Dropping capabilities does not help: a uid-0 process with an empty bounding set, no effective
capability and `no_new_privs` still moves itself out of its group (the first test shows it on
this machine), since the cgroup files are root's own. So `maxwell run` started by root runs the
command as the user who started it through sudo, or as `--user USER`; a command that must run as
root still may, with a warning that its group cannot hold it."""

from __future__ import annotations

import os
import pwd
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import last_json, maxwell
from maxwell.cli.run_cmd import workload_user
from maxwell.errors import UsageError
from maxwell.users import RunAs

NOBODY = "nobody"
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 24, 38

# Tries to move itself to the root of every cgroup hierarchy it can see: prints each outcome.
ESCAPE = r"""
id -u > "$OUT/uid"
for procs in $(awk '$9 ~ /^cgroup2?$/ {print $5 "/cgroup.procs"}' /proc/self/mountinfo); do
  if (echo $$ > "$procs") 2>/dev/null; then echo "escaped $procs"; else echo "held $procs"; fi
done > "$OUT/attempts"
"""


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: a root workload and a drop to another user")
    try:
        pwd.getpwnam(NOBODY)
    except KeyError:
        pytest.skip(f"needs the user {NOBODY!r}")


@pytest.fixture
def out() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="mx-escape-", dir="/tmp") as directory:
        os.chmod(directory, 0o777)  # the workload, as another user, writes its findings here
        yield Path(directory)


def _attempts(out: Path) -> list[str]:
    return (out / "attempts").read_text().split("\n")[:-1]


# Drops every capability from the bounding set (and so from what exec grants root), sets
# no_new_privs, then runs the escape attempts.
DROP_THEN_ESCAPE = f"""
import ctypes, os, subprocess
libc = ctypes.CDLL(None)
for capability in range(64):
    libc.prctl({PR_CAPBSET_DROP}, capability, 0, 0, 0)
libc.prctl({PR_SET_NO_NEW_PRIVS}, 1, 0, 0, 0)
subprocess.run(["sh", "-c", {ESCAPE!r}], check=True)
"""


@pytest.mark.root
def test_control_a_root_process_without_capabilities_still_leaves_its_group(out: Path) -> None:
    _need_root()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUDO_")} | {"OUT": str(out)}
    result = maxwell(
        "run", "--budget", "1000J", "--json", "--", sys.executable, "-c", DROP_THEN_ESCAPE, env=env
    )
    assert result.returncode == 0, result.stderr
    assert last_json(result.stdout)["user"] is None  # root: no user to drop to was named
    assert (out / "uid").read_text().strip() == "0"
    assert any(line.startswith("escaped ") for line in _attempts(out)), _attempts(out)
    assert "could leave its cgroup" in result.stderr


@pytest.mark.root
@pytest.mark.parametrize("how", ["sudo", "--user"])
def test_a_workload_started_by_root_runs_as_a_user_and_stays_in_its_group(
    out: Path, how: str
) -> None:
    _need_root()
    entry = pwd.getpwnam(NOBODY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUDO_")} | {"OUT": str(out)}
    flags: list[str] = []
    if how == "sudo":
        env |= {"SUDO_UID": str(entry.pw_uid), "SUDO_GID": str(entry.pw_gid), "SUDO_USER": NOBODY}
    else:
        flags = ["--user", NOBODY]
    result = maxwell(
        "run", "--budget", "1000J", "--json", *flags, "--", "sh", "-c", ESCAPE, env=env
    )
    assert result.returncode == 0, result.stderr
    report = last_json(result.stdout)
    assert report["user"] == NOBODY
    assert (out / "uid").read_text().strip() == str(entry.pw_uid)
    attempts = _attempts(out)
    assert attempts and all(line.startswith("held ") for line in attempts), attempts
    assert "could leave its cgroup" not in result.stderr


def test_an_unknown_user_is_a_usage_error() -> None:
    result = maxwell("run", "--budget", "1J", "--user", "no-such-user-xyz", "--", "true")
    assert result.returncode == 2
    assert result.stderr.strip() == "maxwell run: error: no such user 'no-such-user-xyz'"


def test_whom_the_command_runs_as() -> None:
    nobody = pwd.getpwnam(NOBODY) if _has(NOBODY) else None
    if nobody is None:
        pytest.skip(f"needs the user {NOBODY!r}")
    sudo = {"SUDO_UID": str(nobody.pw_uid), "SUDO_GID": str(nobody.pw_gid), "SUDO_USER": NOBODY}
    assert workload_user(None, sudo, euid=0) == RunAs(nobody.pw_uid, nobody.pw_gid, NOBODY)
    assert workload_user(None, {}, euid=0) is None  # root, not through sudo: warned
    assert workload_user(None, {"SUDO_UID": "0", "SUDO_GID": "0"}, euid=0) is None
    assert workload_user(None, sudo, euid=1000) is None  # not root: runs as it is
    assert workload_user(NOBODY, {}, euid=0) == RunAs(nobody.pw_uid, nobody.pw_gid, NOBODY)
    assert workload_user(str(nobody.pw_uid), {}, euid=0) == RunAs.named(NOBODY)
    assert workload_user("root", sudo, euid=0) is None  # root named: root, as asked
    with pytest.raises(UsageError, match="--user needs root"):
        workload_user(NOBODY, {}, euid=1000)


def _has(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True
