"""`maxwell report` (issue 14, 5): every experiment run once and gathered into one
self-contained HTML page (plots inlined, no file or network fetched when it is opened), with
each experiment's seed, where its figures come from, the time it took and the command that
reproduces it.

An experiment that cannot run here (the real-process `fairshare` needs root and cgroups) is
listed as not run, with its reason: a report never hides a missing part. The page is built from
the results alone (`render`), so what it says is what the JSON says.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maxwell.errors import MaxwellError
from maxwell.experiments import Experiment

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    """One experiment in the report: what it found, or why it did not run."""

    name: str
    command: str
    seconds: float
    result: Mapping[str, Any] | None = None  # its JSON
    picture: bytes = b""  # its PNG
    not_run: str = ""  # why, when it could not run here

    @property
    def claims(self) -> list[Mapping[str, Any]]:
        return list(self.result["claims"]) if self.result else []


def command_for(name: str, seed: int, quick: bool) -> str:
    """The command that reproduces one experiment of the report."""
    words = ["maxwell", "experiment", name, "--seed", str(seed)]
    return shlex.join([*words, "--quick"] if quick else words)


def run_all(
    experiments: Mapping[str, Experiment],
    *,
    seed: int,
    quick: bool,
    out: Path,
    clock: Callable[[], float],
) -> list[Entry]:
    """Run each experiment, writing its files under `out/NAME/`; one entry each, in order."""
    entries = []
    for name, experiment in experiments.items():
        command, started = command_for(name, seed, quick), clock()
        try:
            result = experiment(seed, quick)
        except MaxwellError as exc:  # it cannot run here: said in the report, never hidden
            log.warning("experiment %s did not run: %s", name, exc)
            entries.append(Entry(name, command, clock() - started, not_run=str(exc)))
            continue
        seconds = clock() - started
        paths = result.write(out / name, command)
        entries.append(Entry(name, command, seconds, result.to_json(), paths[1].read_bytes()))
    return entries


def write(entries: Iterable[Entry], out: Path, *, seed: int, quick: bool) -> Path:
    """`out/report.html` (and `out/report.json`, every result together); the page's path."""
    entries = list(entries)
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "seed": seed, "quick": quick,
        "experiments": {e.name: e.result or {"not_run": e.not_run} for e in entries},
    }  # fmt: skip
    (out / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
    page = out / "report.html"
    page.write_text(render(entries, seed=seed, quick=quick))
    return page


_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 980px; margin: 2em auto; padding: 0 1em;
       color: #1d232a; }
table { border-collapse: collapse; width: 100%; margin: .6em 0 1.2em; }
th, td { border: 1px solid #d0d7de; padding: .35em .55em; text-align: left; vertical-align: top; }
th { background: #f3f5f7; }
.holds { color: #116329; font-weight: 600; }
.fails { color: #a40e26; font-weight: 600; }
.notrun { color: #7d4e00; font-weight: 600; }
code, pre { background: #f3f5f7; padding: .1em .3em; border-radius: 3px; }
pre { padding: .6em; overflow-x: auto; font-size: 12px; }
img { max-width: 100%; border: 1px solid #d0d7de; }
"""


def render(entries: Iterable[Entry], *, seed: int, quick: bool) -> str:
    """The report as one HTML document (see the module)."""
    entries = list(entries)
    mode = "quick (reduced sizes, as in CI)" if quick else "full"
    sections = "\n".join(_section(entry) for entry in entries)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>Maxwell: the evidence</title>"
        f"<style>{_STYLE}</style></head><body>\n"
        "<h1>Maxwell: the evidence</h1>\n"
        "<p>Each claim of the vision, measured beside fair share (equal weights, no prices). "
        "A claim that does not hold is shown as such. "
        f"Seed {seed}; {mode}. Reproduce everything: "
        f"<code>{html.escape(_report_command(seed, quick))}</code>.</p>\n"
        f"{_overview(entries)}\n{sections}\n</body></html>\n"
    )


def _report_command(seed: int, quick: bool) -> str:
    words = ["maxwell", "report", "--seed", str(seed), "--out", "DIR"]
    return shlex.join([*words, "--quick"] if quick else words)


def _overview(entries: list[Entry]) -> str:
    rows = []
    for entry in entries:
        link = f'<a href="#{html.escape(entry.name)}">{html.escape(entry.name)}</a>'
        if entry.result is None:
            rows.append(f"<tr><td>{link}</td><td class=\"notrun\">not run</td>"
                        f"<td>{html.escape(entry.not_run)}</td></tr>")  # fmt: skip
            continue
        for claim in entry.claims:
            rows.append(f"<tr><td>{link}</td>{_verdict(claim)}"
                        f"<td>{html.escape(str(claim['claim']))}</td></tr>")  # fmt: skip
    return ("<h2>Claims</h2><table><tr><th>experiment</th><th>measured</th><th>claim</th></tr>"
            + "".join(rows) + "</table>")  # fmt: skip


def _verdict(claim: Mapping[str, Any]) -> str:
    holds = bool(claim["holds"])
    return (
        f'<td class="{"holds" if holds else "fails"}">{"holds" if holds else "does not hold"}</td>'
    )


def _section(entry: Entry) -> str:
    name = html.escape(entry.name)
    head = (f"<h2 id=\"{name}\">{name}</h2><p>Reproduce: <code>{html.escape(entry.command)}"
            f"</code> ({entry.seconds:.1f} s here).</p>")  # fmt: skip
    if entry.result is None:
        return head + f'<p class="notrun">Not run: {html.escape(entry.not_run)}</p>'
    claims = "".join(
        f"<tr><td>{html.escape(str(c['claim']))}</td>{_verdict(c)}"
        f"<td>{html.escape(str(c['figure']))}</td></tr>"
        for c in entry.claims
    )
    picture = base64.b64encode(entry.picture).decode("ascii")
    figures = html.escape(json.dumps(
        {"maxwell": entry.result["maxwell"], "baseline": entry.result["baseline"]}, indent=1
    ))  # fmt: skip
    return (
        head + f"<p>Measured on: {html.escape(str(entry.result['measured_on']))}.</p>"
        "<table><tr><th>claim</th><th>measured</th><th>figure</th></tr>" + claims + "</table>"
        f'<img alt="{name}" src="data:image/png;base64,{picture}">'
        f"<details><summary>all figures (JSON)</summary><pre>{figures}</pre></details>"
    )


def failed(entries: Iterable[Entry]) -> list[Entry]:
    """The experiments that did not run."""
    return [entry for entry in entries if entry.result is None]
