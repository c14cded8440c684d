"""The state directory's database, shared by several owners: named, versioned migrations per owner.

- `migrations`: `Migration`, the pure decision of which are missing (`missing`, `adopted`), and
  the runner that applies them in place (`migrate`, `apply_missing`), one transaction each.

The owners (the ledger in `maxwell.economy.store`, the node in `maxwell.node.state`) import this;
it imports neither, so both may use it without a cycle.
"""

from maxwell.store.migrations import (
    Migration,
    MigrationError,
    MigrationHistoryError,
    SchemaTooNewError,
    apply_missing,
    migrate,
    missing,
)

__all__ = [
    "Migration",
    "MigrationError",
    "MigrationHistoryError",
    "SchemaTooNewError",
    "apply_missing",
    "migrate",
    "missing",
]
