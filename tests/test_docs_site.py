"""The documentation: a short README that keeps the two Quick start commands, reference pages that
are current with the code they come from, and a site that MkDocs builds in strict mode."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from maxwell.cli.main import COMMANDS
from maxwell.gossip.metrics import CLUSTER_METRIC_NAMES
from maxwell.node.metrics import METRIC_NAMES

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_BYTES = 12 * 1024


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def test_the_readme_is_at_most_12_kb() -> None:
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes: move reference to docs/"


def test_the_quick_start_is_exactly_the_two_commands() -> None:
    quick_start = _readme().split("## Quick start", 1)[1]
    block = re.search(r"```sh\n(.*?)```", quick_start, re.S)
    assert block is not None
    assert block.group(1).splitlines() == ["make demo", "make test"]


def test_the_readme_keeps_its_sections() -> None:
    headings = re.findall(r"^## (.+)$", _readme(), re.M)
    assert headings[:2] == ["Quick start", "A tour"]
    assert "The evidence" in headings
    assert "Read on" in headings


def test_the_tour_names_only_commands_that_exist() -> None:
    toured = set(re.findall(r"\bmaxwell ([a-z][a-z-]*)", _readme()))
    toured -= {"demo", "bench"}  # `bench` has its own parser (maxwell.cli.main.BENCHES)
    assert toured, "the tour names no command"
    assert toured <= set(COMMANDS), f"not commands: {sorted(toured - set(COMMANDS))}"


def test_every_local_link_of_the_readme_exists() -> None:
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", _readme())
    local = [target for target in targets if "://" not in target]
    assert local
    missing = [target for target in local if not (ROOT / target).exists()]
    assert not missing, missing


def test_every_page_is_in_the_nav() -> None:
    nav = set(re.findall(r":\s+(\S+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M))
    pages = {str(page.relative_to(DOCS)) for page in DOCS.rglob("*.md")}
    assert pages == nav, f"pages not in the nav: {sorted(pages - nav)}; gone: {sorted(nav - pages)}"


def test_every_exported_metric_is_documented() -> None:
    page = (DOCS / "metrics.md").read_text(encoding="utf-8")
    missing = [name for name in (*METRIC_NAMES, *CLUSTER_METRIC_NAMES) if f"`{name}`" not in page]
    assert not missing, f"docs/metrics.md lacks {missing}"


def test_the_generated_reference_pages_are_current() -> None:
    # A clean environment: the pages must not depend on who generated them.
    env = {key: value for key, value in os.environ.items() if not key.startswith("MAXWELL_")}
    checked = subprocess.run(
        [sys.executable, str(DOCS / "gen_reference.py"), "--check"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr + " (regenerate with docs/gen_reference.py)"


def test_the_command_reference_lists_every_command() -> None:
    page = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    for name in (*COMMANDS, "bench"):
        assert f"## `maxwell {name}`" in page, name
    assert "exit status" in page


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None,
    reason="mkdocs and mkdocs-material are not installed (pip install -e '.[docs]'; make docs)",
)
def test_the_site_builds_strictly(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert (tmp_path / "index.html").exists()
    assert (tmp_path / "reference" / "cli" / "index.html").exists()
