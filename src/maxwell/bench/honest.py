"""`maxwell bench audit`'s `honest_audits`: how many honest agents the node's audits slash.

Real processes under a real daemon (optimistic billing, in real cgroups as root, else as process
trees, said in the report): each agent is an honest family, a parent and two busy children it
never reaps, the parent reporting what the SDK's self-meter reads (`Client.report_usage`) every
100 ms while its children burn the CPU. The daemon ticks at 100 ms; after every tick each agent
is audited (`NodeDaemon.audit`, the forced audit `maxwell audit` runs), and what the audits said
is counted: `audits`, and `falsely_slashed` (an honest agent found short). The audits start once
every agent has reported (an audit checks reports only once there is one). The agents are
always killed and the state directory removed.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path


def honest_family(children: int) -> str:
    """An honest agent's Python code: `children` busy loops it never reaps, and the parent
    reporting what the SDK's self-meter reads every 100 ms (the tests use it too)."""
    return f"""
import subprocess, sys, time
from maxwell.client import Client
children = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range({children})]
with Client() as node:
    while True:
        node.report_usage(work=1)
        time.sleep(0.1)
"""


J = 1_000_000
SRC = str(Path(__file__).resolve().parents[2])


def honest_audits(*, agents: int, rounds: int) -> dict[str, object]:
    """Audit `agents` honest families `rounds` times each (see the module)."""
    from maxwell.node.api import create_app, serve
    from maxwell.node.config import NodeConfig
    from maxwell.node.daemon import NodeDaemon
    from maxwell.units import Money
    from maxwell.users import uids_for_python_agents

    with tempfile.TemporaryDirectory(prefix="mx-honest-") as base:
        config = NodeConfig(
            dynamic_uids=uids_for_python_agents()[0],  # its agents are this Python's programs
            state_dir=Path(base) / "state", tick_s=0.1, billing="optimistic",
            audit_probability=0.0, grace_s=600.0, cgroup="auto" if os.geteuid() == 0 else "none",
        )  # fmt: skip
        daemon = NodeDaemon(config)
        server = None
        try:
            server = serve(create_app(daemon), socket_path=config.socket, listen=None)
            ids = [
                daemon.spawn(
                    ["env", f"PYTHONPATH={SRC}", sys.executable, "-c", honest_family(2)],
                    fund=Money(1_000_000 * J), bid=5.0, demand=0.5, name=f"honest-{n}",
                ).agent
                for n in range(agents)
            ]  # fmt: skip
            _until_reported(daemon, ids, config.tick_s)
            audits = slashed = 0
            findings: list[str] = []
            for _ in range(rounds):
                time.sleep(config.tick_s)
                daemon.tick_once()
                for agent in ids:
                    result = daemon.audit(agent)
                    audits += 1
                    if not result.honest:
                        slashed += 1
                        findings.extend(result.findings[:1])
            cgroup = daemon.status().cgroup
        finally:
            if server is not None:
                server.stop()
            daemon.shutdown(kill_agents=True)
    return {
        "agents": agents,
        "processes_per_agent": 3,
        "audits": audits,
        "falsely_slashed": slashed,
        "first_findings": findings[:3],
        "cgroup": cgroup,
        "tick_s": config.tick_s,
    }


def _until_reported(daemon: object, ids: list[str], tick_s: float, limit_s: float = 60.0) -> None:
    """Tick until every agent has reported once (Python and the SDK take a while to start)."""
    from maxwell.node.daemon import NodeDaemon

    assert isinstance(daemon, NodeDaemon)
    deadline = time.monotonic() + limit_s
    while any(daemon.agent(agent).reported is None for agent in ids):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the honest agents did not report within {limit_s:g} s")
        time.sleep(tick_s)
        daemon.tick_once()
