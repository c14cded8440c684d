"""Posted work: bounties pay for proofs of inputs someone posted, never for inputs an agent chose
(an agent that picked its own had earned 30 $J for 30 near-zero one-row inputs, 0.13 CPU-s).

Rules:

- An admin posts a job (`maxwell job post --model M.onnx --inputs DIR --bounty ENERGY`): the
  model, the `.npy` inputs of DIR (float32 arrays, at most `MAX_JOB_INPUTS`, each at most
  `MAX_TENSOR_BYTES`, no two alike; read by the daemon, outside its lock), and a bounty per
  input. The bounties (bounty x inputs) move from the treasury into the job's account
  `job:<id>` in the same unit of work as the job's rows: what proofs earn is paid from there,
  so a job pays at most what was posted. The inputs are kept in `<state>/jobs/<id>/`.
- An agent spawned with the job's model (`--model`, the same bytes) takes an input
  (`POST /jobs/{id}/take`): the node leases it the lowest-numbered input that is neither paid
  nor leased to another agent, for `JOB_LEASE_S`, and writes a copy into the agent's directory
  (`job-<id>-<n>.npy`: a new file of the agent's uid, mode 0600, never through a link). An
  agent holds one lease per job: taking again returns the input it holds.
- A proof pays only for an input posted in a job of the agent's model and not paid yet: that is
  looked up from the input's digest before anything is verified, and a proof of anything else
  is refused at once (400, no verification, no fee). A valid proof is paid the job's bounty from
  the job's account, once per input (ledger key `bounty:<job>:<n>`), to whichever agent proves
  it first; the input is marked paid in the same unit of work. A lease is not required: the
  work is what is paid.
- A job whose inputs are all paid has an empty account. `jobs` and `job` read through the
  store's read-only connection: no lock, what was last committed.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from maxwell.economy.ledger import TREASURY, job_account, open_request, transfer_request
from maxwell.node.agents import AgentRecord
from maxwell.node.facade import (
    JobInfo,
    NodeError,
    NoInputLeftError,
    TakenInput,
    UnknownJobError,
)
from maxwell.node.intake import replace_agent_file
from maxwell.node.paths import StatePaths
from maxwell.node.processes import agent_uid, work_dir
from maxwell.node.state import NodeState
from maxwell.node.store import NodeStore
from maxwell.proof import ProofInputError
from maxwell.proof.commitment import tensor_digest
from maxwell.proof.files import read_model, tensor_from_bytes
from maxwell.units import Money

MAX_JOB_INPUTS = 10_000
MAX_TENSOR_BYTES = 64 << 20  # an input or output `.npy` (what proof intake takes too)
JOB_LEASE_S = 600.0


@dataclass(frozen=True)
class Posting:
    """A job read and checked (outside the lock), ready to post."""

    model_path: str
    model_sha256: str
    bounty: Money
    inputs: Sequence[tuple[bytes, str]]  # each input's `.npy` bytes and digest, in order


@dataclass(frozen=True)
class PayableInput:
    """An unpaid input of a job: what its first valid proof earns."""

    job: str
    n: int
    bounty: Money


class JobBoard:
    """Posts jobs, leases their inputs and finds what a proof may be paid for (see the module)."""

    def __init__(self, paths: StatePaths, store: NodeStore, wall: Callable[[], float]) -> None:
        self._paths = paths
        self._store = store
        self._wall = wall

    def read(self, model: str, inputs: str, bounty: Money) -> Posting:
        """The model and the inputs of a job to post, read and checked (a `NodeError` says
        why not). Takes no lock."""
        if isinstance(bounty, bool) or not isinstance(bounty, int) or bounty <= 0:
            raise NodeError(f"a job's bounty must be a positive integer of µ$J, got {bounty!r}")
        try:
            found = read_model(Path(model))
        except ProofInputError as exc:
            raise NodeError(str(exc)) from exc
        read = _read_inputs(Path(inputs))
        return Posting(os.path.abspath(model), found.sha256, bounty, read)

    def post(self, posting: Posting) -> JobInfo:
        """Keep the inputs, write the job's rows and move its bounties into escrow, together.
        Under the daemon's lock."""
        job = secrets.token_hex(4)
        at = self._wall()
        directory = self._paths.root / "jobs" / job
        directory.parent.mkdir(mode=0o700, exist_ok=True)
        directory.mkdir(mode=0o700)
        try:
            for n, (data, _) in enumerate(posting.inputs):
                _write_private(directory / f"{n}.npy", data)
            self._record(job, posting, at)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)  # nothing of a refused job is left
            raise
        return self.get(job)

    def _record(self, job: str, posting: Posting, at: float) -> None:
        """The job's rows, its account and its escrow, in one unit of work."""
        escrow = posting.bounty * len(posting.inputs)
        with self._store.unit_of_work():
            with self._store.state.transaction() as conn:
                conn.execute(
                    "INSERT INTO jobs (id, model_path, model_sha256, bounty, posted_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (job, posting.model_path, posting.model_sha256, posting.bounty, at),
                )
                conn.executemany(
                    "INSERT INTO job_inputs (job, n, sha256) VALUES (?, ?, ?)",
                    [(job, n, digest) for n, (_, digest) in enumerate(posting.inputs)],
                )
            ledger = self._store.ledger
            ledger.submit(open_request(job_account(job)), at=at)
            detail = {"job": job, "inputs": len(posting.inputs), "bounty": posting.bounty}
            ledger.submit(
                transfer_request(
                    f"job:{job}", TREASURY, job_account(job), escrow, kind="job", detail=detail
                ),
                at=at,
            )

    def all(self) -> list[JobInfo]:
        """Every job, oldest first (the store's reader: no lock)."""
        return _job_infos(self._store.reader, self._wall())

    def get(self, job: str) -> JobInfo:
        found = _job_infos(self._store.reader, self._wall(), job)
        if not found:
            raise UnknownJobError(f"no job {job!r}")
        return found[0]

    def lease(self, agent: AgentRecord, job: str) -> TakenInput:
        """Lease `agent` an input of `job` (see the module). Under the daemon's lock."""
        model = agent.model
        now = self._wall()
        with self._store.state.transaction() as conn:
            posted = conn.execute("SELECT model_sha256 FROM jobs WHERE id = ?", (job,)).fetchone()
            if posted is None:
                raise UnknownJobError(f"no job {job!r}")
            if model is None or model.sha256 != posted[0]:
                raise NodeError(
                    f"job {job} is for another model than the one agent {agent.id} proves"
                )
            row = conn.execute(
                "SELECT n, sha256 FROM job_inputs WHERE job = ? AND paid_to IS NULL "
                "AND (taken_by = ? OR taken_until IS NULL OR taken_until <= ?) "
                "ORDER BY (taken_by = ? AND taken_until > ?) DESC, n LIMIT 1",
                (job, agent.id, now, agent.id, now),
            ).fetchone()
            if row is None:
                raise NoInputLeftError(f"every input of job {job} is paid or leased")
            conn.execute(
                "UPDATE job_inputs SET taken_by = ?, taken_until = ? WHERE job = ? AND n = ?",
                (agent.id, now + JOB_LEASE_S, job, row[0]),
            )
        n, digest = int(row[0]), str(row[1])
        return TakenInput(job, n, f"job-{job}-{n}.npy", digest, JOB_LEASE_S)

    def deliver(self, agent: AgentRecord, taken: TakenInput) -> TakenInput:
        """Write the leased input into the agent's directory. Takes no lock."""
        data = (self._paths.root / "jobs" / taken.job / f"{taken.n}.npy").read_bytes()
        replace_agent_file(work_dir(self._paths, agent), taken.input, data, uid=agent_uid(agent))
        return taken

    def payable(self, model_sha256: str, input_sha256: str) -> PayableInput | None:
        """The first unpaid input with this digest in a job of this model, if any (the store's
        reader: no lock)."""
        with self._store.reader.transaction("DEFERRED") as conn:
            row = conn.execute(
                "SELECT i.job, i.n, j.bounty FROM job_inputs i JOIN jobs j ON j.id = i.job "
                "WHERE i.sha256 = ? AND j.model_sha256 = ? AND i.paid_to IS NULL "
                "ORDER BY j.posted_at, i.n LIMIT 1",
                (input_sha256, model_sha256),
            ).fetchone()
        return None if row is None else PayableInput(str(row[0]), int(row[1]), Money(row[2]))

    def was_paid(self, model_sha256: str, input_sha256: str) -> bool:
        """Whether a job of this model posted this input and paid for it already."""
        with self._store.reader.transaction("DEFERRED") as conn:
            row = conn.execute(
                "SELECT 1 FROM job_inputs i JOIN jobs j ON j.id = i.job WHERE i.sha256 = ? "
                "AND j.model_sha256 = ? AND i.paid_to IS NOT NULL LIMIT 1",
                (input_sha256, model_sha256),
            ).fetchone()
        return row is not None

    def mark_paid(self, payable: PayableInput, agent: str) -> None:
        """Record who was paid for the input (inside the payment's unit of work)."""
        with self._store.state.transaction() as conn:
            conn.execute(
                "UPDATE job_inputs SET paid_to = ? WHERE job = ? AND n = ?",
                (agent, payable.job, payable.n),
            )


def _read_inputs(directory: Path) -> list[tuple[bytes, str]]:
    """Every `.npy` file of `directory`, in name order: its bytes and its digest."""
    try:
        names = sorted(entry.name for entry in os.scandir(directory) if entry.name.endswith(".npy"))
    except OSError as exc:
        raise NodeError(f"--inputs {directory}: {exc.strerror}") from exc
    if not names:
        raise NodeError(f"--inputs {directory}: no .npy file in it")
    if len(names) > MAX_JOB_INPUTS:
        raise NodeError(f"--inputs {directory}: {len(names)} inputs, over {MAX_JOB_INPUTS}")
    read: list[tuple[bytes, str]] = []
    seen: set[str] = set()
    for name in names:
        data = _read_regular(directory / name)
        try:
            digest = tensor_digest(tensor_from_bytes(data, "input", name)).hex()
        except ProofInputError as exc:
            raise NodeError(str(exc)) from exc
        if digest in seen:
            raise NodeError(f"--inputs {directory}: {name} repeats an input (each pays once)")
        seen.add(digest)
        read.append((data, digest))
    return read


def _read_regular(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise NodeError(f"{path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as file:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode) or found.st_size > MAX_TENSOR_BYTES:
            raise NodeError(f"{path}: not a regular file of at most {MAX_TENSOR_BYTES} bytes")
        return file.read(MAX_TENSOR_BYTES + 1)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def _job_infos(state: NodeState, now: float, job: str | None = None) -> list[JobInfo]:
    with state.transaction("DEFERRED") as conn:
        rows = conn.execute(
            "SELECT j.id, j.model_path, j.model_sha256, j.bounty, j.posted_at, COUNT(i.n), "
            "SUM(i.paid_to IS NOT NULL), "
            "SUM(i.paid_to IS NULL AND i.taken_until IS NOT NULL AND i.taken_until > ?) "
            "FROM jobs j JOIN job_inputs i ON i.job = j.id "
            "WHERE ? IS NULL OR j.id = ? GROUP BY j.id ORDER BY j.posted_at, j.id",
            (now, job, job),
        ).fetchall()
    return [_job_info(row) for row in rows]


def _job_info(row: Sequence[object]) -> JobInfo:
    id_, path, digest, bounty, at, count, paid, taken = row
    assert isinstance(bounty, int) and isinstance(count, int) and isinstance(paid, int)
    return JobInfo(
        id=str(id_), model=str(path), model_sha256=str(digest), bounty=Money(bounty),
        inputs=count, paid=paid, taken=int(str(taken)), escrow=Money(bounty * (count - paid)),
        posted_at=float(str(at)),
    )  # fmt: skip
