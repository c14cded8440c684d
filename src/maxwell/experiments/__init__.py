"""The evidence (issue 14, 4): each experiment measures claims of the vision against fair share
and writes what it found under `--out`: `<name>.json`, `<name>.png` (matplotlib), `<name>.md`.

JSON: `{"experiment", "seed", "measured_on", "maxwell": {...}, "baseline": {...}, "claims":
[{"claim", "holds", "figure"}]}`. Each claim is a sentence of the vision; `holds` is what was
measured, true or false: a claim that does not hold is reported, never hidden. `measured_on`
says where the figures come from (`twin`: the simulated node of `maxwell.sim`, not this
machine's processes).

Experiments: `fairshare` (this machine's processes), `apoptosis`, `landauer`, `audit`,
`mechanisms`, `overhead`, `thermal` and `limits` (`maxwell.experiments.<name>`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

TWIN: Final = "twin (maxwell.sim: a simulated node, not this machine's processes)"


@dataclass(frozen=True)
class Claim:
    """A sentence of the vision, whether it held, and the figure that says so."""

    claim: str
    holds: bool
    figure: str


@dataclass(frozen=True)
class Result:
    """What an experiment found, and how to draw it (`plot` writes the PNG)."""

    experiment: str
    seed: int
    measured_on: str
    maxwell: Mapping[str, Any]
    baseline: Mapping[str, Any]
    claims: tuple[Claim, ...]
    plot: Callable[[Path], None]

    def to_json(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment, "seed": self.seed, "measured_on": self.measured_on,
            "maxwell": dict(self.maxwell), "baseline": dict(self.baseline),
            "claims": [asdict(claim) for claim in self.claims],
        }  # fmt: skip

    def write(self, out: Path, command: str) -> list[Path]:
        """`<name>.json`, `<name>.png` and `<name>.md` under `out` (made if missing)."""
        out.mkdir(parents=True, exist_ok=True)
        base = out / self.experiment
        paths = [base.with_suffix(".json"), base.with_suffix(".png"), base.with_suffix(".md")]
        paths[0].write_text(json.dumps(self.to_json(), indent=2) + "\n")
        self.plot(paths[1])
        paths[2].write_text(self.markdown(command, paths[1].name))
        return paths

    def markdown(self, command: str, picture: str) -> str:
        rows = "\n".join(
            f"| {c.claim} | {'holds' if c.holds else 'does not hold'} | {c.figure} |"
            for c in self.claims
        )
        return (
            f"# Experiment: {self.experiment}\n\nMeasured on: {self.measured_on}. Seed "
            f"{self.seed}. Reproduce: `{command}`.\n\n| claim | measured | figure |\n"
            f"|---|---|---|\n{rows}\n\n![{self.experiment}]({picture})\n"
        )


Experiment = Callable[[int, bool], Result]  # (seed, quick) -> what it found


def experiments() -> dict[str, Experiment]:
    """Name -> the experiment: its seed and whether to run its quick form (for CI) in, its
    result out."""
    from maxwell.experiments import (
        apoptosis,
        audit,
        fairshare,
        landauer,
        limits,
        mechanisms,
        overhead,
        thermal,
    )

    return {
        "fairshare": fairshare.run, "apoptosis": apoptosis.run, "landauer": landauer.run,
        "audit": audit.run, "mechanisms": mechanisms.run, "overhead": overhead.run,
        "thermal": thermal.run, "limits": limits.run,
    }  # fmt: skip
