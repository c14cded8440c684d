"""The digital twin (issue 14): the daemon's pure cores driven on virtual time, beside a
fair-share baseline, deterministic under a seed.

- `behaviours`: what simulated agents do with the cores they get (useful, looper, bloat,
  hoarder, bursty).
- `engine`: one node under the market (`maxwell.node.tick.plan_tick`, the daemon's own tick) or
  under fair share (CFS-like equal weights, no prices), with the same agents.
"""
