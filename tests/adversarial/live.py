"""A live daemon for the attacks that need one: real cgroups (skips without root), its API on
its socket (agents reach it through the SDK), and its own tick loop in a thread."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from maxwell.economy.store import LedgerStore
from maxwell.node.api import create_app, serve
from maxwell.node.config import NodeConfig
from maxwell.node.daemon import NodeDaemon
from test_node_daemon import cgroups_or_skip


@contextlib.contextmanager
def live_daemon(config: NodeConfig) -> Iterator[NodeDaemon]:
    """The daemon of `config`, serving and ticking; stopped, its agents killed, afterwards."""
    cgroups_or_skip()
    daemon = NodeDaemon(config)
    server = serve(create_app(daemon), socket_path=config.socket, listen=None)
    stop = threading.Event()
    ticking = threading.Thread(target=daemon.run_forever, args=(stop,), daemon=True)
    ticking.start()
    try:
        yield daemon
    finally:
        stop.set()
        ticking.join(30)
        server.stop()
        daemon.shutdown(kill_agents=True)


def ledger_verifies(daemon: NodeDaemon) -> bool:
    """Whether the live daemon's ledger verifies, read as `maxwell ledger verify` reads it: on a
    connection of its own, one committed snapshot. (The daemon's own connection is its tick's:
    read from another thread, it may see a tick's unit of work half done.)"""
    with LedgerStore.open(daemon.config.state_dir, create=False) as store:
        return store.verify().ok
