"""`maxwell experiment fairshare`: the mix and its figures (pure), the OS readers on fake
trees, the refusal without root, and, as root, the two real runs end to end (no agent ran as
root, in either) and a SIGTERM in the middle of one, after which no process, no cgroup and no
file of the experiment is left.

The real runs share this machine with whatever else runs (CI, other tests): no assertion here
depends on absolute CPU figures or timing, only on ratios the mechanism makes large (the useful
job's share of the CPU under the market against fair share) and on what must hold exactly
(structure, accounting, clean-up).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from helpers import maxwell, maxwell_cgroup_dirs, wait_until
from maxwell.cli.main import main as cli
from maxwell.experiments import fairshare
from maxwell.experiments._realmix import (
    SHARE_TOLERANCE,
    AgentMeasure,
    RunMeasure,
    agreement,
    mix,
    run_figures,
    twin_scenario,
)
from maxwell.experiments._realruns import (
    IdleWatch,
    MachineUnfitError,
    UidWatch,
    read_throttled_ns,
    read_units,
)
from maxwell.samples._workcount import WORK_FILE, WorkCounter
from maxwell.sim.engine import run as simulate
from maxwell.users import DEFAULT_DYNAMIC_UIDS, UidRange

NEEDS_ROOT = "needs root: the agents run in cgroups of their own"
TAG_ENV = "FAIRSHARE_TEST_TAG"  # not MAXWELL_*: the daemon passes it on to its agents


def _measures(policy: str, shares: dict[str, float], **outcomes: str) -> RunMeasure:
    agents = tuple(
        AgentMeasure(
            name,
            cpu_s=10 * share,
            energy_j=27.6 * share,
            units=5000 if name in ("useful", "bursty") else 0,
            outcome=outcomes.get(name, "running"),
            paid_j=None if policy == "fairshare" else 1.0,
        )
        for name, share in shares.items()
    )
    return RunMeasure(policy, 10.0, agents, idle_wanted_core_s=0.5, mean_spot=None)


EVEN = {"useful": 0.2, "hoarder": 0.02, "bursty": 0.18, "cheater": 0.2, "bloat": 0.2, "looper": 0.2}


def test_the_mix_is_the_seeds_and_its_demands_fill_the_two_cores() -> None:
    assert mix(3, 50) == mix(3, 50)
    assert mix(3, 50) != mix(4, 50)  # the looper's and the bloat's funds are drawn
    agents = {agent.name: agent for agent in mix(0, 50)}
    assert set(agents) == {"useful", "hoarder", "bursty", "cheater", "bloat", "looper"}
    assert sum(a.demand for a in agents.values()) == pytest.approx(2.0)
    assert all(a.demand <= a.want for a in agents.values())
    assert agents["useful"].bid == max(a.bid for a in agents.values())
    # Funds scale with the run, so a short run shows the fates of a long one.
    short = {agent.name: agent for agent in mix(0, 10)}
    assert agents["useful"].fund_j == 5 * short["useful"].fund_j
    assert {a.name for a in agents.values() if a.value_per_unit > 0} == {"useful", "bursty"}


def test_run_figures_add_up() -> None:
    agents = mix(0, 10)
    run = _measures("maxwell", EVEN, looper="apoptosis", bloat="killed", cheater="slashed")
    figures = run_figures(run, agents)
    assert figures["killed"] == ["bloat", "looper"]  # slashed but alive is not killed
    assert figures["value"] == 10_000
    assert figures["energy_j"] == pytest.approx(27.6)
    assert figures["value_per_j"] == pytest.approx(10_000 / 27.6, rel=1e-3)
    low = 27.6 * (0.02 + 0.2 + 0.2 + 0.2)
    assert figures["low_value_energy_j"] == pytest.approx(low, rel=1e-3)
    shares = [agent["cpu_share"] for agent in figures["agents"].values()]
    assert sum(shares) == pytest.approx(1.0, abs=1e-3)
    assert figures["agents"]["useful"]["paid_j"] == 1.0
    fair = run_figures(_measures("fairshare", EVEN), agents)
    assert fair["killed"] == [] and fair["agents"]["useful"]["paid_j"] is None


def test_the_twin_is_calibrated_on_the_runs() -> None:
    agents = mix(0, 10)
    slashed = AgentMeasure("cheater", 1.0, 2.76, 0, "slashed", paid_j=1.0, slashed_j=4.0)
    others = [m for m in _measures("maxwell", EVEN).agents if m.name != "cheater"]
    market = RunMeasure("maxwell", 10.0, (*others, slashed), 0.0, mean_spot=1.5)
    scenario = twin_scenario(agents, (market,), policy="maxwell", cores=2.0, duration_s=10.0,
                             w_per_core=2.76, spot_price=1.5)  # fmt: skip
    specs = {spec.name: spec for spec in scenario.agents}
    assert specs["useful"].behaviour.units_per_core_s == pytest.approx(5000 / 2.0)
    assert specs["cheater"].fund_j == pytest.approx(30 + 5 - 4.0)
    assert specs["looper"].behaviour.demand == 0.1  # what it bids for, under the market
    assert scenario.spot_price == 1.5 and scenario.w_per_core == 2.76
    fair = twin_scenario(agents, (market,), policy="fairshare", cores=1.0, duration_s=10.0,
                         w_per_core=2.76, spot_price=1.0)  # fmt: skip
    fair_specs = {spec.name: spec for spec in fair.agents}
    assert fair_specs["looper"].behaviour.demand == 1.0  # what it would use, under fair share
    hoarder = fair_specs["hoarder"].behaviour  # the cores it burned: 0.2 s over 10 s
    assert hoarder.uses(hoarder.demand, hoarder.demand) == pytest.approx(0.02)


def test_agreement_is_the_largest_gap_in_cpu_share_and_who_died() -> None:
    agents = mix(0, 10)
    fair = _measures("fairshare", EVEN)
    scenario = twin_scenario(agents, (fair,), policy="fairshare", cores=2.0, duration_s=10.0,
                             w_per_core=2.76, spot_price=1.0)  # fmt: skip
    twin = simulate(scenario, "fairshare")
    found = agreement(fair, twin)
    gaps = [share["gap"] for share in found["shares"].values()]
    assert found["max_share_gap"] == max(gaps)
    assert found["shares_agree"] is (max(gaps) <= SHARE_TOLERANCE)
    assert found["killed_real"] == found["killed_twin"] == [] and found["deaths_agree"]
    assert sum(share["twin"] for share in found["shares"].values()) == pytest.approx(1, abs=1e-3)
    dead = _measures("fairshare", EVEN, looper="apoptosis")
    assert agreement(dead, twin)["deaths_agree"] is False
    assert agreement(fair, twin, tolerance=0.0)["shares_agree"] is (max(gaps) == 0)


def test_throttled_time_is_read_from_v1_and_v2_and_a_gone_group_is_none(tmp_path: Path) -> None:
    v1, v2, empty = tmp_path / "v1", tmp_path / "v2", tmp_path / "empty"
    for directory in (v1, v2, empty):
        directory.mkdir()
    (v1 / "cpu.stat").write_text("nr_periods 10\nnr_throttled 3\nthrottled_time 2500000\n")
    (v2 / "cpu.stat").write_text("usage_usec 100\nthrottled_usec 40\n")
    assert read_throttled_ns([str(empty), str(v1)]) == 2_500_000
    assert read_throttled_ns([str(v2)]) == 40_000
    assert read_throttled_ns([str(tmp_path / "gone"), str(empty)]) is None


def test_idle_while_wanted_is_the_lesser_of_idle_and_throttled(tmp_path: Path) -> None:
    proc, group = tmp_path / "proc", tmp_path / "group"
    proc.mkdir()
    group.mkdir()
    hz = os.sysconf("SC_CLK_TCK")

    def machine(idle_ticks: int, throttled_ns: int) -> None:
        (proc / "stat").write_text(f"cpu  100 0 100 {idle_ticks} 0 0 0 0 0 0\ncpu0 0\ncpu1 0\n")
        (group / "cpu.stat").write_text(f"throttled_time {throttled_ns}\n")

    machine(1000, 0)
    watch = IdleWatch(str(proc))
    watch.sample({"a": [str(group)]})  # the group's first reading: nothing before it
    machine(1000 + hz, 300_000_000)  # a second idle, 0.3 s throttled
    watch.sample({"a": [str(group)]})
    assert watch.idle_wanted_core_s == pytest.approx(0.3)
    machine(1000 + hz + hz // 10, 2_300_000_000)  # 0.1 s idle, 2 s throttled
    watch.sample({"a": [str(group)], "gone": [str(tmp_path / "gone")]})
    assert watch.idle_wanted_core_s == pytest.approx(0.4)
    watch.close()


def test_the_users_of_each_groups_processes_are_gathered(tmp_path: Path) -> None:
    proc, group, gone = tmp_path / "proc", tmp_path / "group", tmp_path / "gone"
    for directory in (proc / "7", proc / "8", proc / "9", group):
        directory.mkdir(parents=True)
    for pid, uid in ((7, 71000), (8, 0), (9, 71000)):
        status = f"Name:\tpython3\nUid:\t{uid}\t{uid + 1}\t{uid}\t{uid}\nGid:\t1\t1\t1\t1\n"
        (proc / str(pid) / "status").write_text(status)
    (group / "cgroup.procs").write_text("7\n9\n12\n")  # 12 ended since: no status
    watch = UidWatch(str(proc))
    watch.sample({"a": [str(gone), str(group)], "b": [str(gone)]})
    (group / "cgroup.procs").write_text("8\n")
    watch.sample({"a": [str(group)]})
    assert watch.of("a") == (1, 71001)  # the effective uids, each once
    assert watch.of("b") == () and watch.of("never") == ()


def test_work_counter_writes_to_the_agents_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    me = os.geteuid()
    assert read_units(tmp_path, me) == 0  # counts nothing: worth nothing
    monkeypatch.setenv("MAXWELL_AGENT_DIR", str(tmp_path))
    counter = WorkCounter(period_s=3600)
    counter.count(5)
    counter.count(6)  # within the period: not written yet
    assert read_units(tmp_path, me) == 5
    counter.close(7)
    assert read_units(tmp_path, me) == 7
    assert [path.name for path in tmp_path.iterdir()] == [WORK_FILE]  # no partial file left


def test_without_root_it_refuses_in_one_line_with_status_125(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(MachineUnfitError, match="needs root"):
        fairshare.run(0, quick=True)
    assert cli(["experiment", "fairshare", "--duration", "5", "--out", str(tmp_path)]) == 125
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and error.startswith(
        "maxwell experiment: error: fairshare: needs root"
    )
    assert not list(tmp_path.iterdir())


def test_duration_is_refused_for_an_experiment_of_the_twin(tmp_path: Path) -> None:
    assert cli(["experiment", "apoptosis", "--duration", "5", "--out", str(tmp_path)]) == 2
    assert cli(["experiment", "fairshare", "--duration", "0", "--out", str(tmp_path)]) == 2


def _tagged(tag: str, within: str = "") -> list[int]:
    """Live processes whose environment carries `tag` (the experiment's agents), in a cgroup
    whose path holds `within`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes()
                cgroup = Path(f"/proc/{entry}/cgroup").read_text()
                state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if f"{TAG_ENV}={tag}".encode() in environ and within in cgroup and state != "Z":
                found.append(int(entry))
    return found


def _euid(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return None
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[2])


def _agents_not_root(tag: str, within: str) -> set[int]:
    """The uids of the experiment's agents in groups whose path holds `within` where there are
    six of them, none root (an empty set otherwise)."""
    uids = {uid for pid in _tagged(tag, within) if (uid := _euid(pid)) is not None}
    return uids if len(uids) >= 6 and 0 not in uids else set()


def _node_dirs() -> set[str]:
    """The daemons' cgroup directories (`maxwell-node-*`) in every hierarchy."""
    found: set[str] = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.startswith(("cgroup ", "cgroup2 ")):
            for dirpath, dirnames, _files in os.walk(left.split()[4]):
                found.update(os.path.join(dirpath, n) for n in dirnames
                             if n.startswith("maxwell-node-"))  # fmt: skip
    return found


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason=NEEDS_ROOT)
def test_both_runs_on_real_processes_leave_nothing_behind(tmp_path: Path) -> None:
    tag, daemons = uuid.uuid4().hex, _node_dirs()
    env = {**os.environ, TAG_ENV: tag}
    result = maxwell("experiment", "fairshare", "--duration", "8", "--json", "--out",
                     str(tmp_path), timeout=120, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.splitlines()[-1])
    assert found.pop("version")  # what the command prints adds it to what it writes
    assert json.loads((tmp_path / "fairshare.json").read_text()) == found
    assert (tmp_path / "fairshare.png").stat().st_size > 0
    assert "--duration 8" in (tmp_path / "fairshare.md").read_text()
    assert "real processes" in found["measured_on"]
    mine, theirs = found["maxwell"], found["baseline"]
    names = {"useful", "hoarder", "bursty", "cheater", "bloat", "looper"}
    assert set(mine["agents"]) == set(theirs["agents"]) == names
    assert theirs["killed"] == [] and all(a["paid_j"] is None for a in theirs["agents"].values())
    assert all(a["paid_j"] is not None for a in mine["agents"].values())
    for figures in (mine, theirs):
        assert figures["agents"]["useful"]["units"] > 0  # its work file, read in both runs
        assert figures["energy_j"] == pytest.approx(
            sum(a["energy_j"] for a in figures["agents"].values()), abs=0.01)  # fmt: skip
        assert figures["twin"]["tolerance"] == SHARE_TOLERANCE
    # The market gives the best-funded useful job its core; fair share splits the CPU evenly.
    assert mine["agents"]["useful"]["cpu_share"] > 1.5 * theirs["agents"]["useful"]["cpu_share"]
    assert len({c["claim"] for c in found["claims"]}) == 8
    verdicts = {c["claim"]: c["holds"] for c in found["claims"]}  # each what its figures say
    assert verdicts["Cheating the energy market is statistically impossible over long runtimes."] \
        is (mine["agents"]["cheater"]["slashed_j"] > 0)
    assert verdicts["An agent doing useful work, funded by its user, outbids everyone: value per "
                    "joule rises."] is (mine["value_per_j"] > theirs["value_per_j"])
    # No agent ran as root: each, in both runs, a dynamic uid of its own, seen running.
    ran_as, dynamic = mine["setup"]["agents_ran_as"], UidRange.parse(DEFAULT_DYNAMIC_UIDS)
    assert dynamic is not None and ran_as["dynamic_uids"] == DEFAULT_DYNAMIC_UIDS
    for run in ("fairshare", "maxwell"):
        seen = ran_as[run]
        assert set(seen) == names and all(seen.values()), seen
        uids = [uid for name in names for uid in seen[name]]
        assert all(dynamic.first <= uid <= dynamic.last for uid in uids), seen
        assert len(set(uids)) == len(uids) == 6, seen  # one each, shared with no other agent
    assert _tagged(tag) == []
    assert maxwell_cgroup_dirs() == set()
    wait_until(lambda: _node_dirs() <= daemons, what="the daemon's cgroups to be gone")


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason=NEEDS_ROOT)
@pytest.mark.parametrize("run", ["fair share", "maxwell"])
def test_sigterm_mid_run_leaves_no_process_and_no_cgroup(tmp_path: Path, run: str) -> None:
    tag, daemons = uuid.uuid4().hex, _node_dirs()
    env = {**os.environ, TAG_ENV: tag}
    command = [sys.executable, "-m", "maxwell.cli.main", "experiment", "fairshare",
               "--duration", "20", "--out", str(tmp_path)]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    where = "/maxwell-node-" if run == "maxwell" else f"/maxwell-{process.pid}/"
    try:
        wait_until(lambda: len(_tagged(tag, where)) >= 6, what=f"six agents in {run}'s groups",
                   timeout_s=90)  # fmt: skip
        # Observed, not reported: each agent's processes run as a uid of its own, never root
        # (a moment after spawning, setpriv itself has yet to drop root).
        uids = wait_until(lambda: _agents_not_root(tag, where), what="six agents, none root",
                          timeout_s=10)  # fmt: skip
        assert len(uids) == 6, uids
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 128 + signal.SIGTERM, err
    assert b"everything it started is gone" in err
    assert _tagged(tag) == []
    assert maxwell_cgroup_dirs() == set()
    wait_until(lambda: _node_dirs() <= daemons, what="the daemon's cgroups to be gone")
    assert not list(tmp_path.iterdir())  # nothing written: the run did not end
    # The agents' copy of Maxwell and numpy went too.
    assert not list(Path(tempfile.gettempdir()).glob(f"maxwell-runtime-{process.pid}-*"))
