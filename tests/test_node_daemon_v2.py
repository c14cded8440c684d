"""`NodeDaemon` on the cgroup v2 (unified) hierarchy alone, with whatever controllers it offers.

`maxwell daemon --cgroup v2` builds `CgroupManager.detect(kind="v2", require_controllers=False)`:
on a hybrid host (v1 controllers plus a cgroup2 hierarchy offering none of cpu, memory, pids) the
agents live in the unified hierarchy only, metered from the core `cpu.stat`, frozen through
`cgroup.freeze`, killed through `cgroup.kill`, without CPU quotas or memory limits, and the daemon
says so. The first tests run anywhere; those marked `root` run real agents and skip with the
reason where no writable cgroup2 hierarchy is mounted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import maxwell, wait_until
from maxwell.cgroups import CgroupManager, V2Group, read_layout
from maxwell.cgroups._fs import CgroupFs
from maxwell.cli import daemon_cmd
from maxwell.clock import SystemClock
from maxwell.errors import CgroupUnavailableError, UsageError
from maxwell.node.config import NodeConfig
from maxwell.node.daemon import NodeDaemon
from maxwell.node.facade import AgentState, NodeError
from maxwell.node.supervisor import PRIVATE_PREFIX, group_record, private_name, rebuild_group
from maxwell.units import Money
from test_node_daemon import (
    BUSY,
    J,
    alive,
    assert_adopted_once,
    group_cpu_ns,
    kinds_for,
    node_warnings,
    recorded,
    tick_until,
    tree_dirs,
)

SRC = Path(__file__).resolve().parent.parent / "src"
ENFORCING = ("cpu", "memory", "pids")


def daemon_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="maxwell daemon")
    daemon_cmd.add_arguments(parser)
    return parser.parse_args(list(argv))


# --- anywhere -------------------------------------------------------------------------------


def test_the_cgroup_flag_and_config_key(tmp_path: Path) -> None:
    assert daemon_cmd.options_from(daemon_args()).cgroup == "auto"
    assert daemon_cmd.options_from(daemon_args("--cgroup", "v2")).cgroup == "v2"
    config = tmp_path / "node.toml"
    config.write_text('[daemon]\ncgroup = "v1"\n')
    assert daemon_cmd.options_from(daemon_args("--config", str(config))).cgroup == "v1"
    flag_wins = daemon_args("--config", str(config), "--cgroup", "v2")
    assert daemon_cmd.options_from(flag_wins).cgroup == "v2"
    config.write_text('[daemon]\ncgroup = "v3"\n')
    with pytest.raises(UsageError, match=r"--cgroup 'v3': unknown, use one of auto, v1, v2, none"):
        daemon_cmd.options_from(daemon_args("--config", str(config)))
    config.write_text("[daemon]\ncgroup = 2\n")
    with pytest.raises(UsageError, match="cgroup must be a string"):
        daemon_cmd.options_from(daemon_args("--config", str(config)))
    refused = maxwell("daemon", "--state", str(tmp_path / "state"), "--cgroup", "v3")
    assert refused.returncode == 2 and "invalid choice: 'v3'" in refused.stderr


def test_a_v2_group_is_rebuilt_from_its_record_with_its_controllers(tmp_path: Path) -> None:
    """What a restarted daemon does with the record kept at spawn (plain files stand in for the
    group: `rebuild_group` reads its directory through the real filesystem)."""
    directory = tmp_path / "maxwell-node-x" / "agent"
    directory.mkdir(parents=True)
    for name, text in {
        "cgroup.controllers": "memory pids\n",
        "cgroup.freeze": "0\n",
        "cgroup.events": "populated 0\nfrozen 0\n",
        "cpu.stat": "usage_usec 1234\n",
    }.items():
        (directory / name).write_text(text)
    group = V2Group("agent", str(directory), layout="hybrid")
    record = group_record(group)
    assert record == {"kind": "v2", "layout": "hybrid", "path": str(directory)}
    rebuilt = rebuild_group("agent", json.loads(json.dumps(record)), SystemClock())
    assert isinstance(rebuilt, V2Group)
    assert (rebuilt.path, rebuilt.layout) == (str(directory), "hybrid")
    assert rebuilt.controllers == frozenset({"memory", "pids"}) and rebuilt.supports_freeze
    assert rebuilt.cpu_ns() == 1_234_000
    with pytest.raises(CgroupUnavailableError, match="cpu controller is not enabled"):
        rebuilt.set_cpu_quota(0.5)
    for file in list(directory.iterdir()):
        file.unlink()
    directory.rmdir()
    assert rebuild_group("agent", record, SystemClock()) is None  # gone: not re-adopted


# --- root: the unified hierarchy of this host -----------------------------------------------


def v2_or_skip() -> list[str]:
    """The controllers this host delegates to Maxwell's v2 cgroup among cpu, memory, pids."""
    if os.geteuid() != 0:
        pytest.skip("needs root: creates cgroups under /sys/fs/cgroup")
    layout = read_layout()
    if layout.v2 is None:
        pytest.skip(f"needs a cgroup2 hierarchy; this host's layout is {layout.name}")
    if layout.v2.readonly:
        pytest.skip(f"needs a writable cgroup2 hierarchy; {layout.v2.mountpoint} is read-only")
    try:
        CgroupManager.detect(prefix="maxwell-probe", kind="v2", require_controllers=False).close()
    except CgroupUnavailableError as exc:
        pytest.skip(f"needs a usable cgroup2 hierarchy: {exc}")
    available = Path(layout.v2.own_dir, "cgroup.controllers").read_text().split()
    return [c for c in ENFORCING if c in available]


def v2_mount() -> Path:
    layout = read_layout()
    assert layout.v2 is not None
    return Path(layout.v2.mountpoint)


def v2_manager(state: Path, fs: CgroupFs | None = None) -> CgroupManager:
    """The manager `maxwell daemon --cgroup v2` builds for `state`."""
    return CgroupManager.detect(
        prefix=PRIVATE_PREFIX,
        private_name=private_name(state),
        fs=fs,
        kind="v2",
        require_controllers=False,
    )


def usage_usec(directory: str) -> int:
    for line in (Path(directory) / "cpu.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value)
    raise AssertionError(f"no usage_usec in {directory}/cpu.stat")


def events(directory: str) -> dict[str, str]:
    words = (Path(directory) / "cgroup.events").read_text().split()
    return dict(zip(words[::2], words[1::2], strict=True))


def proc_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


class RecordingFs(CgroupFs):
    """The real cgroupfs, remembering every write (to see which file killed an agent)."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, str]] = []

    def write_text(self, path: str, text: str) -> None:
        self.writes.append((path, text))
        super().write_text(path, text)


def nothing_left(state: Path, pids: list[int]) -> None:
    """No directory of the daemon's tree in any hierarchy, v1 included, and no agent alive."""
    assert tree_dirs(state) == []
    wait_until(lambda: not any(alive(pid) for pid in pids), what="the agents to die")


def cli_options(state: Path, daemon_table: dict[str, object]) -> NodeConfig:
    """What `maxwell daemon --state STATE --tick 0.2 --cgroup v2` reads, with `[daemon]` keys."""
    flags = {"state": str(state), "tick_s": 0.2, "cgroup": "v2"}
    return NodeConfig.from_sources(flags, {"daemon": daemon_table})


@pytest.fixture
def cli_v2_daemon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Iterator[tuple[NodeDaemon, str]]:
    """The daemon `maxwell daemon --cgroup v2 --tick 0.2` builds (grace 0.6 s), and what it
    printed on stderr."""
    v2_or_skip()
    state = tmp_path / "state"
    _node, made = daemon_cmd._make_node(cli_options(state, {"grace_s": 0.6}))
    assert isinstance(made, NodeDaemon)
    try:
        yield made, capsys.readouterr().err
    finally:
        pids = [agent.pid for agent in made.agents() if agent.pid is not None]
        made.shutdown(kill_agents=True)
        nothing_left(state, pids)


@pytest.mark.root
def test_a_daemon_that_fails_to_start_closes_the_v2_manager_built_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    v2_or_skip()
    state = tmp_path / "state"
    with pytest.raises(UsageError, match="fraction"):  # refused before anything is made
        cli_options(state, {"min_capacity_fraction": 2.0})

    def recovery_fails(self: NodeDaemon) -> None:
        raise NodeError("recovery failed on purpose")

    monkeypatch.setattr(NodeDaemon, "_recover", recovery_fails)
    with pytest.raises(NodeError, match="on purpose"):
        daemon_cmd._make_node(cli_options(state, {}))
    assert tree_dirs(state) == []
    # The state directory's lock went with it: the next daemon starts.
    monkeypatch.undo()
    _node, again = daemon_cmd._make_node(cli_options(state, {}))
    assert isinstance(again, NodeDaemon)
    again.shutdown(kill_agents=True)
    assert tree_dirs(state) == []


@pytest.mark.root
def test_agents_on_v2_are_metered_frozen_and_thawed(
    cli_v2_daemon: tuple[NodeDaemon, str], caplog: pytest.LogCaptureFixture
) -> None:
    daemon, stderr = cli_v2_daemon
    delegated = v2_or_skip()
    missing = [c for c in ENFORCING if c not in delegated]
    # The status says v2; the daemon (and `maxwell daemon` on stderr) says what is not enforced.
    assert daemon.status().cgroup == "v2"
    if missing:
        assert daemon.degraded is not None
        assert daemon.degraded.startswith(f"cgroup v2 without the {missing[0]} controller: ")
        assert f"maxwell daemon: degraded: {daemon.degraded}\n" == stderr
    else:
        assert daemon.degraded is None and stderr == ""
    if "cpu" in missing:
        assert "CPU quotas and weights are not enforced" in str(daemon.degraded)
    mount = v2_mount()
    busy = daemon.spawn(BUSY, fund=Money(1000 * J), bid=5.0, demand=0.5, name="busy")
    low = daemon.spawn(BUSY, fund=Money(1000 * J), bid=0.5, demand=0.5, name="low")
    busy_dir, low_dir = daemon.group_dirs(busy.agent)[0], daemon.group_dirs(low.agent)[0]
    # One directory each, beneath the daemon's tree in the unified hierarchy; none in v1.
    assert daemon.group_dirs(busy.agent) == [busy_dir]
    assert Path(busy_dir).parent == mount / private_name(daemon.config.state_dir)
    assert [str(d) for d in tree_dirs(daemon.config.state_dir)] == [str(Path(busy_dir).parent)]
    assert str(busy.pid) in (Path(busy_dir) / "cgroup.procs").read_text().split()
    cpu_max = Path(busy_dir) / "cpu.max"
    if "cpu" in delegated:
        assert cpu_max.read_text().strip() == "50000 100000"
    else:
        assert not cpu_max.exists()  # the quota asked for at spawn was tolerated, not enforced

    # Metered from cpu.stat: energy grows tick after tick, CPU time as the group counts it.
    tick_until(daemon, lambda: daemon.agent(busy.agent).energy_uj > 500_000)
    first = daemon.agent(busy.agent)
    tick_until(daemon, lambda: daemon.agent(busy.agent).energy_uj > first.energy_uj)
    metered = daemon.agent(busy.agent)
    assert 0 < metered.cpu_s <= usage_usec(busy_dir) / 1e6
    assert metered.state is AgentState.RUNNING and metered.paid > 0
    assert metered.share == 0.5

    # Bid below the reserve (the spot price, >= 1): frozen through cgroup.freeze.
    assert daemon.agent(low.agent).state is AgentState.FROZEN
    assert (Path(low_dir) / "cgroup.freeze").read_text().strip() == "1"
    assert events(low_dir) == {"populated": "1", "frozen": "1"}
    # The v2 freezer parks tasks in an interruptible sleep (not T); they burn no CPU.
    assert proc_state(low.pid) in ("S", "D")
    before = usage_usec(low_dir)
    time.sleep(0.3)  # a real sleep: the window in which a frozen group must burn nothing
    assert usage_usec(low_dir) == before
    frozen = [e for e in daemon.events() if e.agent == low.agent and e.kind == "frozen"]
    assert "below the reserve" in str(frozen[0].detail["reason"])
    # Outbid no more: thawed, and it runs again.
    daemon.bid(low.agent, 5.0)
    daemon.tick_once()
    assert daemon.agent(low.agent).state is AgentState.RUNNING
    assert events(low_dir)["frozen"] == "0"
    assert "thawed" in kinds_for(daemon, low.agent)
    wait_until(lambda: usage_usec(low_dir) > before + 50_000, what="the thawed agent to run")
    # Killed on request: its group goes.
    assert daemon.kill(low.agent).state is AgentState.DEAD
    daemon.tick_once()
    wait_until(lambda: not alive(low.pid), what="the killed agent to die")
    assert not os.path.exists(low_dir)
    assert node_warnings(caplog) == []
    assert daemon.ledger().verify().ok


@pytest.mark.root
def test_an_underfunded_agent_on_v2_dies_by_apoptosis_through_cgroup_kill(tmp_path: Path) -> None:
    v2_or_skip()
    state = tmp_path / "state"
    fs = RecordingFs()
    daemon = NodeDaemon(
        NodeConfig(state_dir=state, tick_s=0.2, grace_s=0.6), cgroups=v2_manager(state, fs)
    )
    pids: list[int] = []
    try:
        poor = daemon.spawn(BUSY, fund=Money(J // 5), bid=5.0, demand=0.5, name="poor")
        pids.append(poor.pid)
        [group_dir] = daemon.group_dirs(poor.agent)
        tick_until(daemon, lambda: daemon.agent(poor.agent).state is AgentState.FROZEN)
        assert events(group_dir)["frozen"] == "1"
        assert alive(poor.pid)
        # Still broke once the grace has run out: killed, by cgroup.kill, its group removed.
        tick_until(daemon, lambda: daemon.agent(poor.agent).state is AgentState.DEAD)
        assert kinds_for(daemon, poor.agent)[-1] == "apoptosis"
        assert (os.path.join(group_dir, "cgroup.kill"), "1") in fs.writes
        wait_until(lambda: not alive(poor.pid), what="the poor agent to die")
        assert not os.path.exists(group_dir)
        info = daemon.agent(poor.agent)
        assert info.exit_code == -signal.SIGKILL
        assert info.paid + info.balance == J // 5  # it paid what it had, no more
        assert daemon.ledger().verify().ok
    finally:
        pids += [agent.pid for agent in daemon.agents() if agent.pid is not None]
        daemon.shutdown(kill_agents=True)
    nothing_left(state, pids)


def socket_ready(state: Path, daemon: subprocess.Popen[str]) -> None:
    def socket_open() -> bool:
        assert daemon.poll() is None, daemon.communicate()
        return (state / "maxwell.sock").exists()

    wait_until(socket_open, timeout_s=30, what="the daemon to open its socket")


@pytest.mark.root
def test_maxwell_daemon_on_v2_killed_with_sigkill_is_recovered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    delegated = v2_or_skip()
    state = tmp_path / "state"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    child = subprocess.Popen(
        [sys.executable, "-m", "maxwell.cli.main", "daemon", "--state", str(state),
         "--tick", "0.1", "--cgroup", "v2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )  # fmt: skip
    daemon: NodeDaemon | None = None
    pid = 0
    try:
        socket_ready(state, child)
        spawned = maxwell(
            "spawn", "--state", str(state), "--fund", "1000J", "--bid", "5", "--demand", "0.5",
            "--json", "--", *BUSY, env=env,
        )  # fmt: skip
        assert spawned.returncode == 0, spawned.stderr
        started = json.loads(spawned.stdout)
        agent, pid = started["agent"], started["pid"]
        wait_until(lambda: recorded(state, agent)[0] > 0.2e9, what="ticks to bill the agent")
        child.send_signal(signal.SIGKILL)
        _, stderr = child.communicate(timeout=10)
        if len(delegated) < len(ENFORCING):
            assert "maxwell daemon: degraded: cgroup v2 without the " in stderr
        assert alive(pid), "the agent outlives its daemon"
        billed_up_to, cgroup = recorded(state, agent)
        assert cgroup["kind"] == "v2"
        group_dir = Path(str(cgroup["path"]))
        assert group_dir.parent == v2_mount() / private_name(state)
        assert str(pid) in (group_dir / "cgroup.procs").read_text().split()
        wait_until(  # the agent keeps burning CPU while no daemon watches it
            lambda: group_cpu_ns(cgroup) - billed_up_to > 0.2e9,
            what="the unwatched agent to burn 0.2 s of CPU",
        )
        counter_before = group_cpu_ns(cgroup)

        daemon = NodeDaemon(
            NodeConfig(state_dir=state, tick_s=0.1, grace_s=30), cgroups=v2_manager(state)
        )
        info = assert_adopted_once(daemon, agent, pid, billed_up_to, counter_before, cgroup)
        assert daemon.status().cgroup == "v2"
        tick_until(daemon, lambda: daemon.agent(agent).energy_uj > info.energy_uj)
        after = daemon.agent(agent)
        assert after.state is AgentState.RUNNING and after.energy_uj > info.energy_uj
        daemon.tick_once(settle_all=True)  # the ledger takes what the ticks accrued
        after = daemon.agent(agent)
        bills = [e for e in daemon.ledger().entries() if e.kind == "bill"]
        assert sum(int(str(e.detail["energy_uj"])) for e in bills) == after.energy_uj
        assert node_warnings(caplog) == []
        assert daemon.ledger().verify().ok
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
        if daemon is None:
            daemon = NodeDaemon(NodeConfig(state_dir=state, tick_s=0.1), cgroups=v2_manager(state))
        daemon.shutdown(kill_agents=True)
    nothing_left(state, [pid] if pid else [])
