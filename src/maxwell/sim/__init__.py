"""The digital twin (issue 14): the daemon's pure cores driven on virtual time, beside a
fair-share baseline, deterministic under a seed.

- `behaviours`: what simulated agents do with the cores they get (useful, looper, bloat,
  hoarder, bursty, cheater, malicious).
- `audits`: a reporting agent billed by its claims and audited, by the daemon's own policy
  cores (bond, bill by claim, verdict, slash and claw-back).
- `engine`: one node under the market (`maxwell.node.tick.plan_tick`, the daemon's own tick) or
  under fair share (CFS-like equal weights, no prices), with the same agents; `NodeRun` steps
  one node tick by tick.
- `gossip`: how long a heat record takes to reach each node (Serf's epidemic: interval, fanout,
  loss), calibrated against `maxwell bench gossip`'s real Serf figures.
- `cluster`: many engine nodes, each priced by its own thermal controller and, when coupled,
  its neighbours' heat as gossip lets it hear it; jobs placed by the placement rule; heat spikes.
- `scenario`: scenarios in TOML (`maxwell sim FILE`), checked, drawn from a seed.
"""
