"""Heat gossip on a lossy network (`maxwell.gossip.lossy`, `maxwell.gossip.lossy_node`): node
processes in network namespaces losing 10 % of their packets still believe each other and hear a
hot node's distress; nothing is left behind. The harness's plan is checked without root."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest

from gossip_support import SERF, free_port, needs_serf
from helpers import pids_with_tag, process_state, wait_until
from maxwell.errors import UsageError
from maxwell.gossip.lossy import (
    LOSS_TABLE,
    NEEDS_ROOT,
    LossyNetwork,
    LossyNetworkError,
    link_bytes,
    loss_ruleset,
    lossy_obstacle,
    plan,
    setup_commands,
    stale_namespaces,
)
from maxwell.gossip.node_processes import KeyFiles, NodeProcess, NodeReports, running_nodes

# --- the plan, without root -------------------------------------------------------------------


def test_the_plan_names_namespaces_per_run_and_addresses_on_a_private_subnet() -> None:
    layout = plan(3, 10, pid=4321, serial=2)
    assert layout.hub == "mxg4321x2h"
    assert layout.namespaces == ("mxg4321x2n0", "mxg4321x2n1", "mxg4321x2n2")
    assert layout.addresses == ("10.77.93.1", "10.77.93.2", "10.77.93.3")
    with pytest.raises(UsageError, match="1 to 250 nodes"):
        plan(0, 10, pid=1, serial=0)
    with pytest.raises(UsageError, match="0 to 100 percent"):
        plan(2, 101, pid=1, serial=0)


def test_every_command_works_inside_the_run_s_namespaces_never_the_root_one() -> None:
    layout = plan(2, 10, pid=4321, serial=0)
    commands = setup_commands(layout)
    ours = {layout.hub, *layout.namespaces}
    for argv, _ in commands:
        assert argv[0] == "ip"
        inside = argv[2] if argv[1] == "-n" else argv[3]  # ip -n NS ... | ip netns exec NS ...
        assert argv[1] in ("-n", "netns") and inside in ours, argv
    veths = [argv for argv, _ in commands if "veth" in argv]
    assert veths[0][-4:] == ["name", "eth0", "netns", "mxg4321x0n0"]
    rulesets = [stdin for argv, stdin in commands if stdin is not None]
    assert len(rulesets) == 2 and all("< 10 drop" in r for r in rulesets)
    assert not any(stdin for _, stdin in setup_commands(plan(2, 0, pid=4321, serial=0)))


def test_the_loss_rule_drops_a_share_of_what_comes_in_on_the_veth_only() -> None:
    rules = loss_ruleset(10)
    assert f"table inet {LOSS_TABLE}" in rules
    assert "hook input" in rules
    assert 'iifname "eth0" numgen random mod 100 < 10 drop' in rules
    assert '"lo"' not in rules


def test_namespaces_of_dead_runs_are_found_and_no_others() -> None:
    listing = "mxg10x0h\nmxg10x0n1 (id: 3)\nmxg20x1n0\nmxgfoo\nother\nmxg30x0n2extra\n"
    assert stale_namespaces(listing, alive=lambda pid: pid == 20) == ["mxg10x0h", "mxg10x0n1"]


def test_link_bytes_come_from_ip_s_json() -> None:
    shown = '[{"ifname":"eth0","stats64":{"rx":{"bytes":120},"tx":{"bytes":340}}}]'
    assert link_bytes(shown) == (120, 340)
    with pytest.raises(LossyNetworkError, match="byte counters"):
        link_bytes("[]")


class FakeIp:
    """Records the commands; fails the one that contains `fail_on`."""

    def __init__(self, fail_on: str | None = None, listing: str = "") -> None:
        self.commands: list[list[str]] = []
        self.fail_on = fail_on
        self.listing = listing

    def __call__(self, argv: Sequence[str], stdin: str | None) -> str:
        self.commands.append(list(argv))
        if self.fail_on is not None and self.fail_on in argv:
            raise LossyNetworkError(f"{' '.join(argv)}: RTNETLINK answers: File exists")
        return self.listing if list(argv) == ["ip", "netns", "list"] else ""


def test_a_failure_half_way_removes_every_namespace_made_so_far() -> None:
    ip = FakeIp(fail_on="veth")
    network = LossyNetwork(3, 10, run=ip, obstacle=lambda: None)
    with pytest.raises(LossyNetworkError, match="File exists"), network:
        pass
    made = [argv[3] for argv in ip.commands if argv[:3] == ["ip", "netns", "add"]]
    deleted = [argv[3] for argv in ip.commands if argv[:3] == ["ip", "netns", "del"]]
    assert sorted(deleted) == sorted(made) and len(made) == 4  # the hub and three nodes


def test_namespaces_a_dead_run_left_are_deleted_and_nothing_in_them_is_killed() -> None:
    dead = 4_194_999  # above any pid_max: no such process
    ip = FakeIp(listing=f"mxg{dead}x0h\nmxg{dead}x0n0 (id: 1)\nmxg{os.getpid()}x99h\nother\n")
    with LossyNetwork(1, 0, run=ip, obstacle=lambda: None) as network:
        made = {network.plan.hub, *network.plan.namespaces}
    deleted = [argv[3] for argv in ip.commands if argv[:3] == ["ip", "netns", "del"]]
    assert deleted[:2] == [f"mxg{dead}x0h", f"mxg{dead}x0n0"]
    assert set(deleted[2:]) == made  # and this run's own, on leaving
    listed = [argv[3] for argv in ip.commands if argv[:3] == ["ip", "netns", "pids"]]
    assert set(listed) == made


def test_without_root_the_network_refuses_in_one_line() -> None:
    network = LossyNetwork(2, 10, run=FakeIp(), obstacle=lambda: NEEDS_ROOT)
    with pytest.raises(LossyNetworkError) as refused, network:
        pass
    assert str(refused.value) == NEEDS_ROOT and "\n" not in NEEDS_ROOT


def test_node_reports_keep_what_the_process_said() -> None:
    reports = NodeReports()
    for line in (
        '{"event": "ready", "node": "a", "pid": 10, "serf_pid": 11}',
        '{"event": "state", "members": 3, "verified": 2, "rejected": {"forged": 1}}',
        '{"event": "distress", "node": "b", "seq": 5, "made_at": 1.0, "seen_at": 1.2}',
        '{"event": "ping", "id": "p", "at": 2.0}',
        '{"event": "ping", "id": "p", "at": 3.0}',
        '{"event": "ping-sent", "id": "q", "at": 1.5}',
        "not json",
        '{"event": "stopped"}',
    ):
        reports.apply(line)
    assert reports.ready and (reports.pid, reports.serf_pid) == (10, 11)
    assert reports.verified() == 2 and reports.rejected() == 1
    assert reports.distress[0]["seen_at"] == 1.2
    assert reports.pings == {"p": 2.0} and reports.sent == {"q": 1.5}
    assert reports.stopped


# --- real node processes ----------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def _root_links() -> list[str]:
    shown = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return sorted(line.split(":")[1].strip() for line in shown.splitlines())


def _serfs(prefix: str) -> list[int]:
    """The serf agents of nodes whose names start with `prefix`."""
    return pids_with_tag(f"-node={prefix}")


def _heard(reports: NodeReports, hot: str) -> bool:
    return any(record["node"] == hot for record in reports.distress)


@pytest.mark.root
def test_four_nodes_losing_a_tenth_of_their_packets_believe_each_other_and_hear_distress(
    tmp_path: Path,
) -> None:
    reason = lossy_obstacle() or (None if SERF else "serf is not installed (apt-get install serf)")
    if reason is not None:
        pytest.skip(reason)
    prefix = f"mxl{uuid.uuid4().hex[:6]}"
    names = [f"{prefix}-{i}" for i in range(4)]
    keys = KeyFiles.write(tmp_path / "keys", names)
    links_before, children_before = _root_links(), _children(os.getpid())
    network = LossyNetwork(4, 10)
    with network, running_nodes(network, keys, names) as nodes:
        pids = [(node.pid, node.snapshot().serf_pid) for node in nodes]
        rules = subprocess.run(
            ["ip", "netns", "exec", network.plan.namespaces[1], "nft", "list", "ruleset"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert "numgen random mod 100 < 10 drop" in rules
        assert network.plan.hub in _namespaces()

        wait_until(
            lambda: all(node.snapshot().verified() == 4 for node in nodes),
            what="every node verifies all four",
            timeout_s=30,
        )
        hot, listeners = nodes[3], nodes[:3]
        hot.send("hot")
        wait_until(
            lambda: all(_heard(node.snapshot(), hot.name) for node in listeners),
            what=f"every other node verifies {hot.name}'s distress",
            timeout_s=15,
        )
        assert [node.snapshot().rejected() for node in nodes] == [0, 0, 0, 0]
        assert network.plan.hub in _namespaces()
    assert f"mxg{os.getpid()}x" not in _namespaces()
    assert _serfs(prefix) == []
    assert all(process_state(pid) is None for pair in pids for pid in pair if pid is not None)
    assert _children(os.getpid()) == children_before
    assert _root_links() == links_before


@needs_serf
def test_a_killed_parent_takes_its_node_processes_and_their_serfs_with_it(tmp_path: Path) -> None:
    name = f"mxl{uuid.uuid4().hex[:6]}-0"
    parent = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from maxwell.gossip.lossy import Loopback
        from maxwell.gossip.node_processes import KeyFiles, running_nodes
        keys = KeyFiles.write(Path({str(tmp_path)!r}), [{name!r}])
        with Loopback(1) as place, running_nodes(place, keys, [{name!r}]) as nodes:
            print(nodes[0].pid, nodes[0].snapshot().serf_pid, flush=True)
            time.sleep(120)
    """)
    process = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        node_pid, serf_pid = (int(pid) for pid in process.stdout.readline().split())
        assert _serfs(name) == [serf_pid]
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        wait_until(
            lambda: process_state(node_pid) in (None, "Z") and _serfs(name) == [],
            what="the node process and its serf end with their parent",
            timeout_s=20,
        )
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
    assert process_state(serf_pid) in (None, "Z")


def test_node_process_handle_reports_a_node_that_cannot_start(tmp_path: Path) -> None:
    keys = KeyFiles.write(tmp_path, ["mxl-x"])
    argv = keys.argv("mxl-x", f"127.0.0.1:{free_port()}", [], 5.0)
    argv[argv.index("--authority") + 1] = str(tmp_path / "missing.pub")
    node = NodeProcess("mxl-x", argv, tmp_path / "mxl-x.log")
    try:
        assert node.wait(30.0) == 1
        assert "missing.pub" in node.problem() and "\n" not in node.problem()
    finally:
        node.ask_to_stop()
        node.wait(5.0)
