"""`maxwell cluster up [--ray-address ADDR]` and `maxwell cluster down`: this node in Ray.

`up` asks the local daemon its node id (its gossip identity: `GET /cluster/members`) and starts
a Ray node beside it with `ray start`: the head of a new cluster, or, with `--ray-address`, a
node of an existing one. The Ray node carries the label `maxwell-node` (the id) and its workers
find the daemon through `MAXWELL_STATE` (the state directory), so `maxwell submit` can place
jobs on it (`maxwell.cluster.jobs`). Ray's memory monitor, usage statistics and dashboard stay
off, and its cgroup isolation (`--enable-resource-isolation`) is never asked for: Maxwell owns
the cgroups and decides who dies. `--num-cpus` says how many CPUs Ray may
schedule (default: Ray's count of this machine's). `--agent-python CMD` is what runs the agents
of priced Python calls on this node (`maxwell.ray`; `MAXWELL_AGENT_PYTHON` for Ray's workers):
a Python the agents' own uids may run, with Maxwell and cloudpickle importable (default: the
interpreter that runs `maxwell`).

`down` stops the Ray processes of this machine (`ray stop`): this node leaves the cluster.

Exit status: 0 done; 1 Ray refused (its message follows); 2 usage error (no state directory,
a daemon without gossip, Ray not installed); 125 the daemon cannot be reached.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from maxwell.cli.agents_cmd import add_client_arguments, run_with_client
from maxwell.cli.common import EXIT_USAGE, fail, print_json
from maxwell.client import Client
from maxwell.errors import UsageError

RAY_MISSING = "Ray is not installed: pip install 'maxwell[cluster]'"


def _agent_python(said: str) -> str:
    try:
        words = shlex.split(said)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a command: {exc}") from None
    if not words:
        raise argparse.ArgumentTypeError("an empty command")
    return shlex.join(words)


def add_arguments(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = actions.add_parser("up", help="start or join Ray beside this node's daemon")
    add_client_arguments(up)
    up.description = __doc__
    up.add_argument("--ray-address", metavar="ADDR", help="join this Ray cluster (default: new)")
    up.add_argument("--num-cpus", type=int, metavar="N", help="CPUs Ray may schedule")
    up.add_argument(
        "--agent-python", metavar="CMD", type=_agent_python,
        help="what runs priced Python calls' agents (maxwell.ray): a Python any uid may run, "
        "with Maxwell and cloudpickle importable (default: this interpreter)",
    )  # fmt: skip
    down = actions.add_parser("down", help="stop this machine's Ray node (ray stop)")
    down.add_argument("--json", action="store_true", help="JSON for scripts")


def _ray_command() -> str:
    beside = Path(sys.executable).parent / "ray"
    found = str(beside) if beside.exists() else shutil.which("ray")
    if found is None:
        raise UsageError(RAY_MISSING)
    return found


def ray_start_argv(node: str, state: Path, address: str | None, num_cpus: int | None) -> list[str]:
    """`ray start`'s command line for node `node` (pure but for finding `ray`)."""
    from maxwell.cluster.jobs import LABEL

    argv = [_ray_command(), "start", "--disable-usage-stats", "--include-dashboard=false",
            "--labels", f"{LABEL}={node}"]  # fmt: skip
    argv += ["--address", address] if address else ["--head"]
    return argv + (["--num-cpus", str(num_cpus)] if num_cpus is not None else [])


def _up(client: Client, args: argparse.Namespace) -> int:
    from maxwell.cluster.jobs import PYTHON_ENV, RAY_ENV, STATE_ENV

    if not args.state:
        raise UsageError("maxwell cluster up needs --state DIR: Ray's workers find it there")
    node = client.cluster_members().node
    if not node:
        raise UsageError("the daemon has no cluster identity: start it with --gossip (and keys)")
    state = Path(args.state).resolve()
    argv = ray_start_argv(node, state, args.ray_address, args.num_cpus)
    env = os.environ | RAY_ENV | {STATE_ENV: str(state)}
    if args.agent_python is not None:
        env[PYTHON_ENV] = args.agent_python
    started = subprocess.run(argv, env=env, capture_output=True, text=True)
    if started.returncode != 0:
        tail = (started.stderr or started.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return fail("maxwell cluster up", f"ray start failed: {tail[0]}", 1)
    said = {"node": node, "state": str(state), "ray_address": args.ray_address or "head"}
    if args.json:
        print_json(said)
    else:
        print(f"{node} is in Ray ({said['ray_address']})")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.cluster_action == "down":
        try:
            stopped = subprocess.run([_ray_command(), "stop"], capture_output=True, text=True)
        except UsageError as exc:
            return fail("maxwell cluster down", str(exc), EXIT_USAGE)
        if stopped.returncode != 0:
            return fail("maxwell cluster down", f"ray stop failed: {stopped.stderr.strip()}", 1)
        if args.json:
            print_json({"stopped": True})
        else:
            print("this machine left the Ray cluster")
        return 0
    status = [0]

    def up(client: Client) -> None:
        status[0] = _up(client, args)

    return run_with_client("maxwell cluster up", args, up) or status[0]
