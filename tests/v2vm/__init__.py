"""A pure cgroup v2 kernel under qemu, for the real-cgroup tests (see `harness`)."""
