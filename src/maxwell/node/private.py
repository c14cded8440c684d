"""A private node: a daemon on a state directory of its own, its API on its Unix socket and its
ticks on a thread, run for a while and ended whole, as `maxwell demo` and the real-process
experiment (`maxwell experiment fairshare`) run one.

`private_node(config)` opens the daemon and serves its API (its agents report there); the
caller spawns, then `start()`s the ticks, watches, and `finish()`es: the ticks stop and one last
tick bills whoever is still alive, so what the caller then reads is final. However the block
ends (an error, a signal), the ticks stop, the API stops and every agent is killed with its
group (`NodeDaemon.shutdown(kill_agents=True)`): nothing is left running.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from maxwell.node.api import create_app, serve
from maxwell.node.config import NodeConfig
from maxwell.node.daemon import NodeDaemon


@dataclass
class PrivateNode:
    """The daemon of a private run and its tick thread (see the module)."""

    node: NodeDaemon
    _stop: threading.Event = field(default_factory=threading.Event)
    _ticks: threading.Thread | None = None

    def start(self) -> None:
        """Tick every `tick_s` on a thread of its own."""
        self._ticks = threading.Thread(target=self.node.run_forever, args=(self._stop,),
                                       daemon=True)  # fmt: skip
        self._ticks.start()

    def stop(self) -> None:
        """Stop ticking (the tick in progress ends first)."""
        self._stop.set()
        if self._ticks is not None and self._ticks.is_alive():
            self._ticks.join()

    def finish(self) -> None:
        """Stop ticking, then bill the last interval of whoever is still alive."""
        self.stop()
        self.node.tick_once()


@contextlib.contextmanager
def private_node(config: NodeConfig) -> Iterator[PrivateNode]:
    """The daemon of `config`, its API served on `config.socket_path` (see the module)."""
    run = PrivateNode(NodeDaemon(config))
    api = None
    try:
        api = serve(create_app(run.node), socket_path=config.socket_path, listen=None)
        yield run
    finally:
        run.stop()
        if api is not None:
            api.stop()
        run.node.shutdown(kill_agents=True)
