"""Where a client finds its daemon (`maxwell.node.paths.locate_daemon`; issue 15): the flags,
then the environment, then one default layout that matches both the systemd unit's socket and a
plain `maxwell daemon`'s, and a message that says how to start what is missing."""

from __future__ import annotations

from pathlib import Path

from maxwell.node.paths import DaemonAddress, locate_daemon

SERVICE = "/run/maxwell/maxwell.sock"


def where(state: str | None = None, socket: str | None = None, exists: bool = False,
          **env: str) -> DaemonAddress:  # fmt: skip
    return locate_daemon(state=state, socket=socket, env=env, exists=lambda path: exists)


def test_flags_come_first_then_the_environment_then_the_default_layout() -> None:
    assert where("/s", "/x.sock", MAXWELL_SOCKET="/e.sock") == DaemonAddress("/x.sock", Path("/s"))
    assert where(None, "/x.sock", MAXWELL_STATE="/e") == DaemonAddress("/x.sock", None)
    assert where("/s", MAXWELL_SOCKET="/e.sock") == DaemonAddress("/s/maxwell.sock", Path("/s"))
    assert where(MAXWELL_SOCKET="/e.sock") == DaemonAddress("/e.sock", None)
    assert where(MAXWELL_SOCKET="/e.sock", MAXWELL_STATE="/e") == DaemonAddress(
        "/e.sock", Path("/e")
    )
    assert where(MAXWELL_STATE="/e") == DaemonAddress("/e/maxwell.sock", Path("/e"))
    assert where(MAXWELL_STATE="", MAXWELL_SOCKET="") == DaemonAddress(
        "/var/lib/maxwell/maxwell.sock", Path("/var/lib/maxwell")
    )  # empty variables count as unset
    assert where(exists=True) == DaemonAddress(SERVICE, Path("/var/lib/maxwell"))  # the unit's


def test_the_default_layout_matches_the_systemd_unit() -> None:
    unit = (Path(__file__).parents[1] / "contrib" / "maxwell.service").read_text()
    assert f"--state /var/lib/maxwell --socket {SERVICE}" in unit


def test_no_daemon_says_how_to_start_one() -> None:
    assert where("/srv/m").no_daemon() == (
        "no daemon at /srv/m: start it with 'maxwell daemon --state /srv/m'"
    )
    assert where(socket="/x.sock").no_daemon() == "no daemon at /x.sock"
