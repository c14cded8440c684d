"""The systemd unit in contrib/ delegates its cgroup and starts a daemon command that parses."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

from maxwell.cli.main import _build_parser

UNIT = Path(__file__).resolve().parent.parent / "contrib" / "maxwell.service"


def test_unit_delegates_its_cgroup_and_keeps_agents_on_stop() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # keep the keys as written (Delegate, not delegate)
    unit.read(UNIT)
    service = unit["Service"]
    assert service["Delegate"] == "yes"
    assert service["KillMode"] == "process"
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/maxwell") and argv[1] == "daemon"
    parser, handler = _build_parser(argv[1:])
    args = parser.parse_args(argv[1:])
    assert handler is not None
    assert args.state == "/var/lib/maxwell"
    assert args.socket == "/run/maxwell/maxwell.sock"
