"""Maxwell: a thermodynamic compute market for Linux.

A map of the package (each folder is one layer of shared/ARCHITECTURE.md):

- `units`, `physics`, `clock`, `errors`: typed quantities, Landauer and the die's RC model, the
  injected clock, and the error tree. Pure.
- `procfs`: the few /proc readers the meter needs (root injected).
- `sensors`: one facade (`Sensors`) over RAPL (powercap, MSR), hwmon, thermal zones, NVML and the
  labelled model fallback.
- `cgroups`: one interface over cgroup v2, v1 and hybrid hosts, plus a /proc process-tree fallback
  for machines where Maxwell may not use cgroups.
- `meter`: pure attribution of measured energy to workloads (`house` takes the rest).
- `runner`: `maxwell run --budget`: a pure budget policy and the loop that enforces it.
- `economy`: the $JOULE ledger (and its SQLite store), order book, mechanisms, spot price,
  billing by the core equation, the apoptosis policy and the price coupling between nodes
  (`coupling`). Pure but for the store.
- `store`: the state database's named, versioned migrations, per owner of its tables (the
  ledger's, the node's), and the runner that applies them in place.
- `node`: the daemon: a pure tick plan, `NodeDaemon` (agents in cgroups, billed every tick), its
  HTTP API, Prometheus metrics and the `top` view, all behind the `facade` contract.
- `gossip`: Serf underneath the nodes' heat gossip: the node's own `serf agent` (`agent`), an
  asyncio client of Serf's msgpack RPC (`rpc`), the signed heat record (`record`) and who is
  believed (`trust`). The records and trust are pure.
- `users`: running a command as another user (`setpriv`), who started a root command, and the
  dynamic uids a root daemon gives its agents; `runtime_copy`: Maxwell's own Python programs
  made runnable by any such uid (a public copy of the package and an interpreter).
- `client`: the SDK an agent (or an admin) uses to talk to a node.
- `cli`: the `maxwell` command.
- `cluster`: beyond one machine: the placement rule, money across nodes, jobs on Ray; `ray`:
  the decorator that runs a Python function as an agent where it is cheapest.
- `sim`: the digital twin: the daemon's pure tick on virtual time beside a fair-share baseline,
  one node or many (gossip, price coupling, placement), scenarios in TOML (`sim.scenario`).
- `experiments`: the evidence: each claim of the vision measured beside fair share, and the
  report that gathers them.
- `bench`: benchmarks that print JSON.
- `samples`: the demonstrations' workloads (looper, bloat, useful, cheater, inference, hoarder).
"""

from maxwell.errors import MaxwellError

__version__ = "0.1.0"

__all__ = ["MaxwellError", "__version__"]
