"""`maxwell experiment fairshare` reads each agent's work counter (`work` in its own
directory), as root. An agent that controls that file must not make the experiment read
another file, block, swallow memory or crash: what is not a count of its own counts 0."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from maxwell.experiments._realruns import read_units
from maxwell.samples._workcount import WORK_FILE


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    made = tmp_path / "agent"
    made.mkdir()
    return made


def test_a_link_to_a_secret_is_not_followed(directory: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("424242\n")
    (directory / WORK_FILE).symlink_to(secret)
    assert read_units(directory, os.geteuid()) == 0


def test_a_fifo_does_not_block_and_a_huge_file_is_not_read(directory: Path) -> None:
    os.mkfifo(directory / WORK_FILE)  # no writer: a blocking open would hang the run
    assert read_units(directory, os.geteuid()) == 0
    (directory / WORK_FILE).unlink()
    with (directory / WORK_FILE).open("wb") as huge:
        huge.truncate(1 << 30)  # sparse: 1 GiB of zeros claimed
    assert read_units(directory, os.geteuid()) == 0


@pytest.mark.parametrize("text", ["-5\n", "1e9\n", "12 monkeys\n", "\xff\xfe", "", "0x10"])
def test_what_is_not_a_count_counts_nothing(directory: Path, text: str) -> None:
    (directory / WORK_FILE).write_bytes(text.encode("latin-1"))
    assert read_units(directory, os.geteuid()) == 0


def test_a_file_of_someone_else_counts_nothing(directory: Path) -> None:
    (directory / WORK_FILE).write_text("99\n")
    assert read_units(directory, os.geteuid()) == 99
    assert read_units(directory, os.geteuid() + 1) == 0  # planted by another uid
