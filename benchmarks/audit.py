"""`maxwell bench audit` without the CLI: `python benchmarks/audit.py [--json] [--quick]`."""

from __future__ import annotations

import argparse

from maxwell.bench.audit import add_arguments, run


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/audit.py",
        description="What an instruction-pointer audit costs the agent and the auditor.",
    )
    add_arguments(parser)
    return run(parser.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
