"""The node: the daemon that runs agents as real processes and clears the market every tick.

- `facade`: the `Node` protocol and the value types the API, the SDK, the CLI, metrics and `top`
  use; the one contract between the daemon and everything that talks to it, and the one
  definition of the API's answers (their fields say how they travel as JSON).
- `wire`: the rest of the wire contract (request bodies, envelopes, the shape of `/status`) and
  `to_json` / `from_json`, which pydantic derives from those definitions (checked field by field).
- `tick`: the pure plan of one tick: bills, apoptosis, the clearing, the enforcement to apply.
- `state`: the node's tables (agents, bids, pending entries) beside the ledger in one database.
- `daemon`: `NodeDaemon`, orchestration only: start-up, the `Node` methods handed to the parts
  below, shut-down. Its parts: `agents` (the live agent records and the `AgentRegistry` they share),
  `processes` (spawn, kill and finish the agents' processes in their groups), `ticker` (the tick
  on real sensors, cgroups and the ledger; roll-back of a failed one), `claims` (self-reports,
  bonds and claims), `audits` (sampled and on-demand audits, code sampling), `bounties` (proofs
  of inference), `recovery` (re-adoption, the down interval billed once), `views` (read models).
- `api`: the HTTP API (FastAPI) on a Unix socket, tokens and roles; `serve` runs it.
- `metrics`: Prometheus text from a status snapshot; `top`: the live terminal view.
- `policy`: pure policies that decide money (e.g. `policy.journal`: per-agent totals from the
  journal, compacted or not); no clock, file or database.
- `tickstats`: the tick loop's health (failures, last error, durations) the daemon records.
"""
