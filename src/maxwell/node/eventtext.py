"""The node's events as people read them: money in $J, and one short sentence each.

Rules:

- The journal (and so `GET /events`) keeps money as the ledger does, integer µ$J. What the CLI
  prints, in JSON or as text, shows money in $J like every other answer of the API: a value under
  one of `MONEY_KEYS`, at any depth of an event's detail, is a µ$J integer, and `detail_in_j`
  turns it into a float of $J. Other values are left as they are.
- `sentence` says what an event means in a few words (`maxwell top`): the agent, what happened,
  and the money involved in $J; never a Python repr of the detail.
- Pure functions: nothing here reads the clock, a file or the network.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from maxwell.node.facade import Event
from maxwell.units import money_to_tokens

__all__ = ["MONEY_KEYS", "detail_in_j", "sentence", "show_j"]

# The detail fields that hold money (µ$J in the journal), in every kind of event.
MONEY_KEYS = frozenset(
    {"amount", "fund", "balance", "shortfall", "required", "bond", "clawback", "bounty", "fee"}
)


def detail_in_j(detail: Mapping[str, object]) -> dict[str, object]:
    """`detail` with its money in $J (see the module), nested mappings included."""
    shown: dict[str, object] = {}
    for key, value in detail.items():
        if isinstance(value, Mapping):
            shown[key] = detail_in_j(value)
        elif key in MONEY_KEYS and isinstance(value, int) and not isinstance(value, bool):
            shown[key] = money_to_tokens(value)
        else:
            shown[key] = value
    return shown


def show_j(micro: object) -> str:
    """A µ$J amount as people read it: `12.5 $J` (six significant digits)."""
    if isinstance(micro, int | float) and not isinstance(micro, bool):
        return f"{money_to_tokens(int(micro)):.6g} $J"
    return "? $J"


def _with(said: str, d: Mapping[str, object], key: str, then: str) -> str:
    """`said`, and `then` with the amount under `key` in $J where the detail has it."""
    amount = _int(d.get(key))
    return said if amount is None else f"{said}{then.format(show_j(amount))}"


def _spawned(d: Mapping[str, object]) -> str:
    said = _with("spawned", d, "fund", " with {}")
    return said if d.get("bid") is None else f"{said}, bid {d['bid']} $J/J"


def _exited(d: Mapping[str, object]) -> str:
    code = d.get("exit_code")
    return "exited" if code is None else f"exited with status {code}"


def _audited(d: Mapping[str, object]) -> str:
    return "passed an audit" if d.get("honest", True) else "failed an audit"


def _slashed(d: Mapping[str, object]) -> str:
    taken = (_int(d.get("bond")) or 0) + (_int(d.get("clawback")) or 0)
    return f"slashed: lost {show_j(taken)} (bond and claw-back)"


def _cores(d: Mapping[str, object]) -> str:
    cores = d.get("cores")
    return f"{cores:.3g}" if isinstance(cores, float | int) else "?"


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


_SENTENCES: Mapping[str, Callable[[Mapping[str, object]], str]] = {
    "spawned": _spawned,
    "adopted": lambda d: "re-adopted by a restarted daemon",
    "funded": lambda d: _with("funded", d, "amount", " {}"),
    "bid": lambda d: f"bids {d.get('price')} $J/J for {d.get('demand')} cores",
    "running": lambda d: f"runs on {_cores(d)} cores",
    "throttled": lambda d: f"throttled to {_cores(d)} cores",
    "frozen": lambda d: _with("frozen", d, "balance", ", balance {}"),
    "thawed": lambda d: "thawed",
    "insolvent": lambda d: _with("insolvent", d, "shortfall", ", {} short"),
    "apoptosis": lambda d: _with("died of apoptosis", d, "balance", ", balance {}"),
    "exited": _exited,
    "killed": lambda d: f"killed ({d.get('reason', 'on request')})",
    "bonded": lambda d: _with("posted a bond", d, "bond", " of {}"),
    "unbonded": lambda d: "cannot post a bond: billed by the meter",
    "released": lambda d: _with("bond released", d, "bond", ": {}"),
    "audited": _audited,
    "slashed": _slashed,
    "bounty": lambda d: _with("earned a bounty", d, "bounty", " of {}"),
    "rejected": lambda d: _with("proof rejected", d, "fee", ", fee {}"),
}


def sentence(event: Event) -> str:
    """What `event` means, in a few words (its agent is shown beside it, not in it)."""
    say = _SENTENCES.get(event.kind)
    if say is None:
        return event.kind.replace("_", " ")
    return say(event.detail)
