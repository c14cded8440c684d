"""An agent's token (issue 11, 1): it reaches the agent in a file only the agent's user may read,
named in its environment, never in it (an environment leaks to every child the agent starts and
to every crash report). Another local user, another agent included, cannot read it."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from helpers import wait_until
from maxwell.node.config import NodeConfig
from maxwell.node.daemon import NodeDaemon
from maxwell.node.paths import AGENT_TOKEN_FILE
from maxwell.units import Money

J = 1_000_000
AGENT_USER, OTHER_USER = "nobody", "daemon"  # two unprivileged users Debian always has


def _uid(user: str) -> int:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        pytest.skip(f"needs the user {user!r}")


@pytest.mark.root
def test_an_agent_s_token_is_a_file_of_its_own_user_and_not_in_its_environment() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: runs an agent as user nobody and reads as user daemon")
    agent_uid, other_uid = _uid(AGENT_USER), _uid(OTHER_USER)
    # Not below pytest's tmp_path (mode 0700 all the way): the agent's user must reach it.
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="mx-tokens-") as base:
        os.chmod(base, 0o711)
        _check_token_delivery(Path(base) / "state", agent_uid, other_uid)


def _check_token_delivery(state: Path, agent_uid: int, other_uid: int) -> None:
    daemon = NodeDaemon(NodeConfig(state_dir=state, tick_s=0.1, cgroup="none"))
    try:
        spawned = daemon.spawn(
            # No `exec`: the shell's own environment is read below, and a process in the middle
            # of an exec shows an empty one for a moment (seen under qemu's emulation).
            ["sh", "-c", 'cat "$MAXWELL_AGENT_TOKEN_FILE"; echo; sleep 30'],
            fund=Money(J), bid=1.0, user=AGENT_USER,
        )  # fmt: skip
        token_file = state / "work" / spawned.agent / AGENT_TOKEN_FILE
        found = token_file.stat()
        assert (found.st_uid, stat.S_IMODE(found.st_mode)) == (agent_uid, 0o600)
        log = state / "agents" / f"{spawned.agent}.log"
        wait_until(  # the agent itself reads it
            lambda: log.exists() and spawned.token in log.read_text(), what="the agent's log"
        )
        environ = Path(f"/proc/{spawned.pid}/environ").read_bytes().split(b"\0")
        assert not any(v.startswith(b"MAXWELL_AGENT_TOKEN=") for v in environ)
        assert f"MAXWELL_AGENT_TOKEN_FILE={token_file}".encode() in environ
        assert spawned.token.encode() not in b"\0".join(environ)
        other = subprocess.run(
            ["cat", str(token_file)], user=other_uid, capture_output=True, check=False
        )
        assert other.returncode != 0 and spawned.token.encode() not in other.stdout
        listing = subprocess.run(
            ["ls", str(state)], user=other_uid, capture_output=True, check=False
        )
        assert listing.returncode != 0  # passing through is all another user may do
    finally:
        daemon.shutdown(kill_agents=True)
