"""Work counters for the sample agents of `maxwell experiment fairshare`: how many units of
work (batches of inference) an agent has done, in the file `work` of its own directory
(`MAXWELL_AGENT_DIR`), so that the experiment reads the same counter whether the agent ran under
the Maxwell daemon (which sets that directory) or under plain fair share (where the experiment
sets it). Written at most every `period_s` and on close, atomically (a reader never sees half a
number). Outside such a directory it does nothing."""

from __future__ import annotations

import os
import time
from pathlib import Path

WORK_FILE = "work"  # in the agent's directory: the units done so far, a decimal integer


class WorkCounter:
    def __init__(self, *, period_s: float = 0.2) -> None:
        directory = os.environ.get("MAXWELL_AGENT_DIR")
        self._path = Path(directory) / WORK_FILE if directory else None
        self.period_s = period_s
        self._next = 0.0
        self._written = -1

    def count(self, units: int) -> None:
        """Record `units` done so far, if a period has passed since the last write."""
        now = time.monotonic()
        if self._path is not None and now >= self._next:
            self._next = now + self.period_s
            self._write(units)

    def close(self, units: int) -> None:
        """Record the final count."""
        if self._path is not None and units != self._written:
            self._write(units)

    def _write(self, units: int) -> None:
        assert self._path is not None
        partial = self._path.with_name(f".{WORK_FILE}.{os.getpid()}")
        partial.write_text(f"{units}\n")
        os.replace(partial, self._path)
        self._written = units
