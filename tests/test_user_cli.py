"""`maxwell user show|fund` as real subprocesses against a served fake node: the admin funds a
local user's account from the treasury and reads it; what a user names is checked first."""

from __future__ import annotations

import pytest

from fake_node import ADMIN_TOKEN, FakeNode, serving
from helpers import last_json, maxwell
from maxwell import __version__
from maxwell.cli.user_cmd import uid_of
from maxwell.errors import UsageError

NOBODY_UID = 65534


def test_the_admin_funds_a_user_s_account_and_reads_it() -> None:
    node = FakeNode()
    with serving(node) as server:
        assert server.socket_path is not None
        connection = ["--socket", server.socket_path, "--token", ADMIN_TOKEN]
        funded = maxwell("user", "fund", *connection, "nobody", "5kJ", "--json")
        assert funded.returncode == 0, funded.stderr
        assert last_json(funded.stdout) == {
            "uid": NOBODY_UID, "user": "nobody", "balance": 5000.0, "version": __version__
        }  # fmt: skip
        shown = maxwell("user", "show", *connection, str(NOBODY_UID))
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.strip() == "nobody (uid 65534): 5000 $J"
        # the admin has no account of its own to show
        own = maxwell("user", "show", *connection)
        assert own.returncode == 1 and "only a local user" in own.stderr
        unknown = maxwell("user", "fund", *connection, "no-such-user-xyz", "1J")
        assert unknown.returncode == 2
        assert unknown.stderr.strip() == "maxwell user fund: error: no such user 'no-such-user-xyz'"
    assert node.user_balances == {NOBODY_UID: 5000 * 1_000_000}
    node.check_invariants()


def test_a_user_is_named_or_numbered() -> None:
    assert uid_of("nobody") == NOBODY_UID
    assert uid_of("4242") == 4242  # a uid as it stands, known to the system or not
    with pytest.raises(UsageError, match="no such user"):
        uid_of("no-such-user-xyz")
