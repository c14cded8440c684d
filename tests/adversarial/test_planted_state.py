"""Attack: a planted state directory (issue 11, 1). As `nobody`, `mkdir -m755 /tmp/mx-N; echo
TOKEN > /tmp/mx-N/admin.token`; root then ran `maxwell daemon --state /tmp/mx-N`, which took the
foreign directory and its token, and `nobody` spawned an agent that ran as uid 0. Now the daemon
refuses a state directory, token, database or lock that is not its own, or that others may
write, before it touches anything; and what it makes is private (the database 0600)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from helpers import maxwell
from maxwell.node.config import NodeConfig
from maxwell.node.daemon import NodeDaemon
from maxwell.node.paths import StateDirUnsafeError

NOBODY = 65534


def start(state: Path) -> None:
    NodeDaemon(NodeConfig(state_dir=state, tick_s=0.1, cgroup="none")).shutdown()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_what_the_daemon_makes_is_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    start(state)
    assert mode(state) == 0o700
    assert mode(state / "admin.token") == 0o600
    assert mode(state / "maxwell.db") == 0o600
    for extra in ("maxwell.db-wal", "maxwell.db-shm"):
        if (state / extra).exists():
            assert mode(state / extra) == 0o600


def test_a_directory_others_may_write_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    with pytest.raises(StateDirUnsafeError, match="writable by its group or others"):
        start(state)
    assert list(state.iterdir()) == []  # no lock, no token, no database


def test_a_database_of_an_older_release_readable_by_others_is_made_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    start(state)
    (state / "maxwell.db").chmod(0o644)
    start(state)
    assert mode(state / "maxwell.db") == 0o600


def test_a_token_others_may_write_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    start(state)
    (state / "admin.token").chmod(0o666)
    with pytest.raises(StateDirUnsafeError, match=r"admin\.token: writable by its group or others"):
        start(state)


def test_a_token_that_is_a_link_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (tmp_path / "elsewhere").write_text("planted\n")
    os.symlink(tmp_path / "elsewhere", state / "admin.token")
    with pytest.raises(StateDirUnsafeError, match="not a regular file"):
        start(state)


@pytest.mark.root
def test_a_directory_planted_by_another_user_is_refused_with_status_2(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to plant files as another uid")
    planted = tmp_path / "mx"
    planted.mkdir(mode=0o755)
    (planted / "admin.token").write_text("planted-by-nobody\n")
    os.chown(planted / "admin.token", NOBODY, NOBODY)
    os.chown(planted, NOBODY, NOBODY)
    refused = maxwell("daemon", "--state", str(planted), "--tick", "0.2")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"maxwell daemon: error: {planted}: owned by uid {NOBODY}, not by this daemon's user "
        "(uid 0): refusing what another user may have planted"
    ]
    assert sorted(p.name for p in planted.iterdir()) == ["admin.token"]
    # Their own directory, but a token another user owns (planted before it was locked down).
    os.chown(planted, 0, 0)
    with pytest.raises(StateDirUnsafeError, match=f"owned by uid {NOBODY}"):
        start(planted)
