"""Attacks on proof intake (issue 11, 6): what an agent leaves in its directory cannot stall,
exhaust or fool the node. Each attack was seen to work before: a FIFO froze the daemon, a sparse
2 GiB `.npy` got it OOM-killed, a small bundle that unpacks to 1 GiB held its lock for seconds,
a symbolic link swapped in a loop was followed. Every refusal is a `NodeError` (an HTTP 400)."""

from __future__ import annotations

import io
import os
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from helpers import AGENTS_AS_DAEMON
from maxwell.node.bounties import MAX_BUNDLE_BYTES, MAX_TENSOR_BYTES
from maxwell.node.config import NodeConfig
from maxwell.node.daemon import NodeDaemon
from maxwell.node.facade import NodeError
from maxwell.node.intake import read_agent_file
from maxwell.samples.useful import make_weights, mlp_onnx
from maxwell.units import Money
from test_node_bounty import TOKENS, WIDTH, post, prove

J = 1_000_000


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[NodeDaemon, str, Path]]:
    """A daemon, an agent with a bounty, and the agent's directory holding a valid proof."""
    model = tmp_path / "mlp.onnx"
    model.write_bytes(mlp_onnx(make_weights(WIDTH, 2, np.random.default_rng(1)), TOKENS))
    daemon = NodeDaemon(
        NodeConfig(
            dynamic_uids=AGENTS_AS_DAEMON, state_dir=tmp_path / "state", tick_s=0.1, cgroup="none"
        )
    )
    try:
        spawned = daemon.spawn(
            ["sleep", "30"], fund=Money(J), bid=1.0, bounty=Money(J), model=str(model)
        )
        directory = tmp_path / "state" / "work" / spawned.agent
        post(daemon, model, [1])
        prove(model, directory, seed=1)
        yield daemon, spawned.agent, directory
    finally:
        daemon.shutdown(kill_agents=True)


def refused(daemon: NodeDaemon, agent: str, files: tuple[str, str, str], says: str) -> None:
    with pytest.raises(NodeError, match=says):
        daemon.submit_proof(agent, *files)
    assert daemon.agent(agent).proofs == 0


def test_a_fifo_is_refused_at_once_and_stalls_nothing(
    agent: tuple[NodeDaemon, str, Path],
) -> None:
    daemon, agent_id, directory = agent
    os.mkfifo(directory / "pipe.npy")  # no writer: a blocking open would wait forever
    started = time.monotonic()
    refused(daemon, agent_id, ("pipe.npy", "y.npy", "proof.mxp"), "not a regular file")
    assert time.monotonic() - started < 5.0
    daemon.tick_once()  # the node goes on


def test_a_sparse_giant_is_refused_before_a_byte_is_read(
    agent: tuple[NodeDaemon, str, Path],
) -> None:
    daemon, agent_id, directory = agent
    with (directory / "huge.npy").open("wb") as handle:
        handle.truncate(2 << 30)  # 2 GiB apparent size, no block written
    refused(daemon, agent_id, ("huge.npy", "y.npy", "proof.mxp"), "over the limit")


def test_a_header_that_claims_more_than_the_file_holds_is_refused(
    agent: tuple[NodeDaemon, str, Path],
) -> None:
    """A 100-byte `.npy` whose header says (2^32, 4) float32: numpy's own reader would try to
    allocate 64 GiB first."""
    daemon, agent_id, directory = agent
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (1 << 32, 4)}
    )
    (directory / "liar.npy").write_bytes(header.getvalue() + b"\0" * 16)
    refused(daemon, agent_id, ("liar.npy", "y.npy", "proof.mxp"), "header says")


def test_a_zip_bomb_is_refused_before_it_is_unpacked(
    agent: tuple[NodeDaemon, str, Path],
) -> None:
    daemon, agent_id, directory = agent
    bomb = directory / "bomb.mxp"
    with (
        zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("activations/0000.npy", "w", force_zip64=True) as member,
    ):
        zeros = bytes(1 << 20)
        for _ in range(MAX_BUNDLE_BYTES // len(zeros) + 1):
            member.write(zeros)
    assert (directory / "bomb.mxp").stat().st_size < MAX_BUNDLE_BYTES // 100
    refused(daemon, agent_id, ("x.npy", "y.npy", "bomb.mxp"), "unpacks to")


def test_links_of_every_kind_are_refused(
    agent: tuple[NodeDaemon, str, Path], tmp_path: Path
) -> None:
    daemon, agent_id, directory = agent
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.npy").write_bytes((directory / "x.npy").read_bytes())
    os.symlink(outside, directory / "via")  # a directory link on the way
    refused(daemon, agent_id, ("via/x.npy", "y.npy", "proof.mxp"), "symbolic link")
    os.link(directory / "x.npy", directory / "second.npy")  # two links: whose file is it?
    refused(daemon, agent_id, ("x.npy", "y.npy", "proof.mxp"), "2 links")


def test_a_link_swapped_in_a_loop_is_never_followed(
    agent: tuple[NodeDaemon, str, Path], tmp_path: Path
) -> None:
    """The agent swaps `x.npy` between its own file and a link to a secret while the node reads:
    every read gives the agent's own file, or is refused as a link, or (replaced after it was
    opened) as a file with no link left."""
    _, _, directory = agent
    secret = tmp_path / "secret.npy"
    secret.write_bytes(b"the node must never read this")
    own = (directory / "x.npy").read_bytes()
    stop = threading.Event()

    def swap() -> None:
        target = directory / "x.npy"
        while not stop.is_set():
            os.replace(_linked(directory, secret), target)
            (directory / "own.tmp").write_bytes(own)
            os.replace(directory / "own.tmp", target)

    swapper = threading.Thread(target=swap)
    swapper.start()
    outcomes = set()
    try:
        for _ in range(200):
            try:
                read = read_agent_file(directory, "x.npy", uid=os.geteuid(), limit=MAX_TENSOR_BYTES)
            except NodeError as exc:
                outcomes.add("link" if "symbolic link" in str(exc) else str(exc))
                continue
            assert read == own
            outcomes.add("own")
    finally:
        stop.set()
        swapper.join()
    replaced = "x.npy: has 0 links; the node reads only files with one"
    assert outcomes <= {"own", "link", replaced}


def _linked(directory: Path, target: Path) -> Path:
    link = directory / "link.tmp"
    link.unlink(missing_ok=True)
    os.symlink(target, link)
    return link


def test_a_file_of_another_uid_is_refused(agent: tuple[NodeDaemon, str, Path]) -> None:
    daemon, agent_id, directory = agent
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file to another uid")
    os.chown(directory / "x.npy", 65534, 65534)
    refused(daemon, agent_id, ("x.npy", "y.npy", "proof.mxp"), "owned by uid 65534")
