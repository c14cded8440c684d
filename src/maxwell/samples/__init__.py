"""Sample workloads for demonstrations and tests (real processes, no Maxwell imports needed)."""
