"""Dynamic users (issue 11, 1): the range of uids a root daemon gives its agents, how one is
picked, how a stored one is read back, and the check that an agent's uid can reach its command
and its directory (`maxwell.users`)."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maxwell.node.config import NodeConfig, NodeConfigError
from maxwell.users import (
    DEFAULT_DYNAMIC_UIDS,
    DYNAMIC_PREFIX,
    RunAs,
    UidRange,
    UidRangeError,
    UidsExhaustedError,
    UnknownUserError,
    dynamic_uid,
    obstacle,
)


def test_the_default_range_lies_between_the_16_bit_uids_and_the_subordinate_ones() -> None:
    uids = UidRange.parse(DEFAULT_DYNAMIC_UIDS)
    assert uids == UidRange(70000, 99999) and len(uids) == 30000
    assert UidRange.parse("none") is None


@pytest.mark.parametrize(
    "text",
    ["", "70000", "70000-", "-99999", "a-b", "99999-70000", "0-999", "60000-70000", "65534-65534",
     "1000-4294967295", "70000 - 99999"],
)  # fmt: skip
def test_a_range_that_cannot_be_used_is_refused_by_name(text: str) -> None:
    with pytest.raises(UidRangeError, match="dynamic uids"):
        UidRange.parse(text)
    with pytest.raises(NodeConfigError, match="--dynamic-uids"):
        NodeConfig(dynamic_uids=text)


def test_the_daemon_config_takes_the_range_from_a_flag_or_its_table() -> None:
    assert NodeConfig().uid_range == UidRange(70000, 99999)
    assert NodeConfig.from_sources({}, {"daemon": {"dynamic_uids": "none"}}).uid_range is None
    flags = {"dynamic_uids": "80000-80009"}
    config = NodeConfig.from_sources(flags, {"daemon": {"dynamic_uids": "none"}})
    assert config.uid_range == UidRange(80000, 80009)
    with pytest.raises(NodeConfigError, match="dynamic_uids must be a string"):
        NodeConfig.from_sources({}, {"daemon": {"dynamic_uids": 70000}})


@given(
    taken=st.sets(st.integers(80000, 80009), max_size=9),
    start=st.integers(0, 9),
)
def test_a_uid_given_is_in_the_range_and_not_taken(taken: set[int], start: int) -> None:
    uids = UidRange(80000, 80009)
    user = uids.allocate(taken, lambda n: start % n)
    assert user.uid not in taken and uids.first <= user.uid <= uids.last
    assert (user.gid, user.label) == (user.uid, f"{DYNAMIC_PREFIX}{user.uid}")
    if start + uids.first not in taken:  # the draw is where the search starts
        assert user.uid == uids.first + start


def test_a_uid_the_user_database_knows_is_never_given() -> None:
    known = pwd.getpwnam("nobody").pw_uid  # 65534 on Debian
    around = UidRange.__new__(UidRange)
    object.__setattr__(around, "first", known)  # past `parse`, which refuses nobody outright
    object.__setattr__(around, "last", known + 1)
    assert around.allocate(set(), lambda n: 0).uid == known + 1


def test_a_full_range_says_so() -> None:
    with pytest.raises(UidsExhaustedError, match="all 2 dynamic uids 80000-80001 are taken"):
        UidRange(80000, 80001).allocate({80000, 80001}, lambda n: 0)


def test_a_stored_label_reads_back_as_the_same_user() -> None:
    assert RunAs.parse("dynamic:70123") == RunAs(70123, 70123, "dynamic:70123")
    assert RunAs.parse("root") == RunAs(0, 0, "root")
    for label in ("dynamic:", "dynamic:x", "dynamic:-1", "no-such-user-xyz"):
        with pytest.raises(UnknownUserError):
            RunAs.parse(label)
    with pytest.raises(UnknownUserError):  # a spawn may not name one: they are the node's
        RunAs.named("dynamic:70123")
    # The registry's reading of a label (`AgentRegistry.dynamic_uids`): the same rule.
    assert dynamic_uid("dynamic:70123") == 70123
    assert [dynamic_uid(x) for x in ("root", "70123", "dynamic:", "dynamic:x")] == [None] * 4


def _tree(base: Path) -> tuple[Path, Path]:
    """base/open (0755) holding a tool (0755) and a note (0600); base/closed (0700)."""
    opened, closed = base / "open", base / "closed"
    opened.mkdir(mode=0o755)
    closed.mkdir(mode=0o700)
    for directory in (opened, closed):
        tool = directory / "tool"
        tool.write_text("#!/bin/sh\n")
        tool.chmod(0o755)
    (opened / "note").write_text("private")
    (opened / "note").chmod(0o600)
    return opened, closed


def test_what_keeps_a_uid_from_a_path_is_named(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    opened, closed = _tree(tmp_path)
    stranger = RunAs.dynamic(70123)
    owner = RunAs(os.geteuid(), os.getegid())
    base_reachable = obstacle(stranger, tmp_path, execute=True)
    if base_reachable is not None:  # a parent of pytest's temp directory is private
        pytest.skip(f"the temporary directory is not reachable here: {base_reachable}")
    assert obstacle(stranger, opened / "tool", execute=True) is None
    assert obstacle(stranger, closed / "tool", execute=True) == (
        f"{closed} is closed to dynamic:70123 (no search permission)"
    )
    assert (
        obstacle(stranger, opened / "note") == f"{opened / 'note'} is not readable by dynamic:70123"
    )
    assert obstacle(owner, opened / "note") is None  # the owner's class of the mode
    assert obstacle(owner, closed / "tool", execute=True) is None
    (opened / "link").symlink_to(closed / "tool")  # followed, as exec follows it
    assert obstacle(stranger, opened / "link", execute=True) == (
        f"{closed} is closed to dynamic:70123 (no search permission)"
    )
    assert obstacle(stranger, opened / "missing", execute=True) is None
    group = RunAs(70123, os.stat(closed).st_gid, "dynamic:70123")
    closed.chmod(0o710)  # the group's class
    assert obstacle(group, closed / "tool", execute=True) is None
