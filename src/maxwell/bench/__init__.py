"""Benchmarks that print JSON (`maxwell bench ...`).

- `meter`: the meter's own CPU per workload sample on live cgroups, against the floor of one
  cgroup file read and against CodeCarbon's process mode, plus what each attributes.
- `codecarbon_probe`: the CodeCarbon side of `meter`, run as its own process.

Kept import-light: the probe process imports this package, and its start-up is measured.
"""
