"""Instruction-pointer samples of an agent's threads, checked against its code manifest.

An IP audit stops every thread of the agent's processes for a few tens of microseconds, one at
a time: PTRACE_SEIZE (attach, not stopping), PTRACE_INTERRUPT, waitpid for the stop, read the
instruction pointer, read the 4 KiB code page it points into from /proc/PID/mem, PTRACE_DETACH.
(`/proc/PID/stat`'s instruction-pointer fields read 0 for other processes, so ptrace it is.) The
pointer is then mapped through /proc/PID/maps (the PROCMAP_QUERY ioctl on Linux 6.11+, the
text before) to a module (a file, `[vdso]`, `[anon]`, ...) and the page's offset in it, and
the page's sha256 is compared with the manifest (`maxwell.audit.manifest`).

Rules of the pure part (`check`, `module_histogram`), which take samples and a manifest:

- A sample passes when its module is declared and its page's digest is the manifest's digest for
  that module at that offset, or when its module is a kernel page allowed by name
  (`[vsyscall]`, `[uprobes]`).
- Otherwise it is a `Violation`, with one `Finding`: anonymous executable memory (no file at
  all: an injected payload, or a JIT), a file the manifest does not declare, a page of a declared
  file outside its declared code, a page whose content differs, a page that could not be read,
  or an address in no mapping.
- It is evidence, not proof: a sample shows where a thread was, not that its work was useful.
  An agent that calls a declared BLAS library on junk looks exactly like one doing inference.

Rules of the OS part (`sample_threads`):

- Every thread of every given process (`/proc/PID/task/*`) is sampled once per call; a thread
  (or process) that exits meanwhile is skipped, not an error; so is one in uninterruptible
  sleep (`D`: it could not stop until its I/O ends) or already dead.
- A thread is never left stopped or attached: the detach is in a `finally`, retried until the
  kernel lets go, and a Ctrl-C arriving meanwhile is re-raised only after it. A signal that
  reached the thread during the stop is handed back at the detach, not swallowed.
- `pause_ns` is from just before PTRACE_INTERRUPT to just after PTRACE_DETACH returns: an upper
  bound on how long the thread was stopped. On a node whose cores are all busy it also holds
  the time the thread was runnable but waiting for a CPU before it could take the stop, and
  the time the woken auditor waited for one: milliseconds, at the scheduler's slice.
- The auditor must be the only one waiting on the agent while it samples (ptrace stops are
  reported to waitpid; a child watcher calling `waitpid(pid)` at that moment could take one).
- A process cannot trace itself: sampling the caller's own pid is refused.
"""

from __future__ import annotations

import enum
import errno
import os
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from maxwell.audit import _ptrace
from maxwell.audit.manifest import (
    KERNEL_ALLOWED,
    PAGE_SIZE,
    CodeManifest,
    page_sha256,
    read_page,
)
from maxwell.audit.maps import (
    Backing,
    MapsQuery,
    MemoryMapping,
    ProcessGoneError,
    ProcfsPermissionError,
    ProcmapQueryUnsupportedError,
    read_maps,
)
from maxwell.errors import ProcessError

UNMAPPED = "[unmapped]"
SKIPPED_STATES = frozenset("DZX")  # uninterruptible sleep, zombie, dead
RELEASE_POLL_S = 50e-6
RELEASE_POLL_MAX_S = 1e-3
ZOMBIE_REAP_TIMEOUT_S = 1.0


class SampleError(ProcessError):
    """An instruction-pointer sample failed for a reason other than the thread exiting."""


class SelfSampleError(SampleError):
    """The caller asked to sample its own process, which ptrace cannot do (and must not)."""


class PtraceDeniedError(SampleError):
    """ptrace was refused (EPERM): not root or no CAP_SYS_PTRACE, Yama's ptrace_scope, a
    security module, or (see `AlreadyTracedError`) another tracer holds the thread."""


class AlreadyTracedError(PtraceDeniedError):
    """Another process (a debugger, or the agent's own watchdog) already traces the thread."""

    def __init__(self, message: str, *, pid: int, tid: int, tracer_pid: int) -> None:
        super().__init__(message, pid=pid)
        self.tid = tid
        self.tracer_pid = tracer_pid


# --- the pure part ----------------------------------------------------------------------------


@dataclass(frozen=True)
class IpSample:
    """Where one thread was when it was stopped."""

    pid: int
    tid: int
    ip: int
    module: str  # a file's path, "[vdso]", "[anon]", "[heap]", ... or "[unmapped]"
    backing: Backing | None  # None: the address is in no mapping
    page_offset: int | None  # the page's offset in the module (file offset for a file)
    page_sha256: str | None  # None: the page could not be read
    pause_ns: int  # PTRACE_INTERRUPT to PTRACE_DETACH returned: an upper bound on the stop
    state: str  # the thread's state just before the stop: "R" running, "S" sleeping, ...

    @property
    def module_name(self) -> str:
        """The module's file name (`libc.so.6`), or its bracketed label."""
        return os.path.basename(self.module) if self.backing is Backing.FILE else self.module


class Finding(enum.Enum):
    """Why a sample is outside the manifest."""

    ANONYMOUS_CODE = "anonymous executable memory"
    UNDECLARED_MODULE = "module not declared in the manifest"
    PAGE_OUTSIDE_CODE = "page outside the module's declared code"
    PAGE_MISMATCH = "page content differs from the manifest"
    PAGE_UNREADABLE = "code page could not be read"
    UNMAPPED = "instruction pointer in no mapping"


@dataclass(frozen=True)
class Violation:
    sample: IpSample
    finding: Finding
    detail: str


@dataclass(frozen=True)
class AuditVerdict:
    """The outcome of checking samples against a manifest. No samples (every thread exited)
    is a pass with nothing sampled: the policy decides what that is worth."""

    samples: tuple[IpSample, ...]
    violations: tuple[Violation, ...]

    @property
    def passed(self) -> bool:
        return not self.violations

    @property
    def modules_outside(self) -> tuple[str, ...]:
        """The distinct modules named by violations, in the order first seen."""
        return tuple(dict.fromkeys(v.sample.module for v in self.violations))

    def describe(self) -> str:
        if self.passed:
            return f"{len(self.samples)} samples, all inside the manifest"
        reasons = "; ".join(
            dict.fromkeys(f"{v.sample.module}: {v.finding.value}" for v in self.violations)
        )
        return f"{len(self.violations)} of {len(self.samples)} samples outside: {reasons}"


def check(samples: Iterable[IpSample], manifest: CodeManifest) -> AuditVerdict:
    """Which samples are outside `manifest`, and why (see the module docstring)."""
    kept = tuple(samples)
    violations = [v for v in (_judge(sample, manifest) for sample in kept) if v is not None]
    return AuditVerdict(samples=kept, violations=tuple(violations))


def _judge(sample: IpSample, manifest: CodeManifest) -> Violation | None:
    def outside(finding: Finding, detail: str) -> Violation:
        return Violation(sample, finding, detail)

    where = f"thread {sample.tid} of process {sample.pid} at {sample.ip:#x}"
    if sample.backing is None or sample.page_offset is None:
        return outside(Finding.UNMAPPED, f"{where}: no mapping holds it")
    if sample.module in KERNEL_ALLOWED:
        return None
    if sample.backing is Backing.ANONYMOUS:
        return outside(Finding.ANONYMOUS_CODE, f"{where} in {sample.module}: no file backs it")
    if not manifest.declares(sample.module):
        return outside(Finding.UNDECLARED_MODULE, f"{where} in {sample.module}")
    if sample.page_sha256 is None:
        return outside(Finding.PAGE_UNREADABLE, f"{where} in {sample.module}")
    expected = manifest.expected_page(sample.module, sample.page_offset)
    if expected is None:
        return outside(
            Finding.PAGE_OUTSIDE_CODE,
            f"{where}: offset {sample.page_offset:#x} of {sample.module} is not in its "
            "executable segments",
        )
    if expected != sample.page_sha256:
        module = manifest.modules.get(sample.module)
        relocated = module is not None and module.text_relocations
        return outside(
            Finding.PAGE_MISMATCH,
            f"{where}: page at offset {sample.page_offset:#x} of {sample.module} differs"
            + (" (it has text relocations: file and memory may differ)" if relocated else ""),
        )
    return None


def module_histogram(
    samples: Iterable[IpSample], *, running_only: bool = False
) -> dict[str, float]:
    """Share of samples per module file name, largest first.

    `running_only`: count only threads that were running (state R) when stopped. A sleeping
    thread's pointer is where it entered the kernel (usually libc), which says where it waits,
    not where CPU time goes.
    """
    counts = Counter(
        sample.module_name for sample in samples if not running_only or sample.state == "R"
    )
    total = sum(counts.values())
    return {module: count / total for module, count in counts.most_common()}


# --- the machine ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RawSample:
    tid: int
    ip: int
    page: bytes | None
    pause_ns: int
    state: str


def sample_threads(
    pids: int | Iterable[int], *, procfs_root: str | Path = "/proc"
) -> list[IpSample]:
    """One sample of every thread of each process in `pids` (see the module docstring).

    Raises `SelfSampleError` for the caller's own pid, `PtraceDeniedError` (with the pid) when
    ptrace is refused, `UnsupportedArchitectureError` off x86_64 and aarch64.
    """
    arch = _ptrace.architecture()
    chosen = [pids] if isinstance(pids, int) else list(pids)
    own = os.getpid()
    if own in chosen:
        raise SelfSampleError(f"process {own} cannot sample itself", pid=own)
    samples: list[IpSample] = []
    for pid in chosen:
        samples.extend(_sample_process(pid, arch, os.fspath(procfs_root)))
    return samples


def _sample_process(pid: int, arch: str, procfs_root: str) -> list[IpSample]:
    # Plain strings and os-level reads from here on: pathlib and text files cost more than the
    # stop itself when the auditor's caches are cold.
    denied = f"may not read the memory map or memory of process {pid}"
    try:
        locator = MapsQuery.open(pid, procfs_root=procfs_root)
    except ProcessGoneError:
        return []
    except ProcfsPermissionError as exc:
        raise PtraceDeniedError(denied, pid=pid) from exc
    with locator:
        try:
            mem = os.open(f"{procfs_root}/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, ProcessLookupError):
            return []
        except PermissionError as exc:
            raise PtraceDeniedError(denied, pid=pid) from exc
        raw: list[_RawSample] = []
        try:
            for tid in _thread_ids(pid, procfs_root):
                state = _thread_state(pid, tid, procfs_root)
                if state is None or state in SKIPPED_STATES:
                    continue
                sample = _sample_thread(pid, tid, state, mem, arch, procfs_root)
                if sample is not None:
                    raw.append(sample)
        finally:
            os.close(mem)
        try:
            mappings = _mappings_of(pid, [r.ip for r in raw], locator, procfs_root)
        except ProcessGoneError:
            return []  # exited since: as if it had before the stop
    return [_locate(pid, r, mappings[r.ip]) for r in raw]


def _mappings_of(
    pid: int, addresses: list[int], locator: MapsQuery, procfs_root: str
) -> dict[int, MemoryMapping | None]:
    """The mapping of each address: by PROCMAP_QUERY where the kernel has it, else (and for
    what it does not know: `[vsyscall]`) by the text of the maps file."""
    found: dict[int, MemoryMapping | None] = {}
    try:
        for address in addresses:
            found[address] = locator.mapping_for(address)
    except ProcmapQueryUnsupportedError:
        memory_map = read_maps(pid, procfs_root=procfs_root, executable_only=True)
        found = {address: memory_map.mapping_for(address) for address in addresses}
    missing = [address for address, mapping in found.items() if mapping is None]
    if missing:
        # The text knows [vsyscall], and non-executable mappings (a thread stopped on the
        # fault of a jump into data); anything still missing was unmapped since the stop.
        memory_map = read_maps(pid, procfs_root=procfs_root)
        found.update({address: memory_map.mapping_for(address) for address in missing})
    return found


def _locate(pid: int, raw: _RawSample, mapping: MemoryMapping | None) -> IpSample:
    page_start = raw.ip - raw.ip % PAGE_SIZE
    return IpSample(
        pid=pid,
        tid=raw.tid,
        ip=raw.ip,
        module=UNMAPPED if mapping is None else mapping.label,
        backing=None if mapping is None else mapping.backing,
        page_offset=None if mapping is None else mapping.file_offset_of(page_start),
        page_sha256=None if raw.page is None else page_sha256(raw.page),
        pause_ns=raw.pause_ns,
        state=raw.state,
    )


def _thread_ids(pid: int, procfs_root: str) -> list[int]:
    try:
        return sorted(int(entry) for entry in os.listdir(f"{procfs_root}/{pid}/task"))
    except (FileNotFoundError, ProcessLookupError):
        return []


def _thread_state(pid: int, tid: int, procfs_root: str) -> str | None:
    """The state letter of /proc/PID/task/TID/stat, or None if the thread is gone."""
    try:
        descriptor = os.open(f"{procfs_root}/{pid}/task/{tid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError):
        return None
    try:
        stat = os.read(descriptor, 512)  # the state is within the first ~40 bytes after comm
    except ProcessLookupError:
        return None
    finally:
        os.close(descriptor)
    after_comm = stat.rpartition(b")")[2].split(maxsplit=1)
    return after_comm[0].decode() if after_comm else None


def _tracer_pid(pid: int, tid: int, procfs_root: str) -> int:
    try:
        status = Path(f"{procfs_root}/{pid}/task/{tid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("TracerPid:"):
            return int(line.split()[1])
    return 0


def _sample_thread(
    pid: int, tid: int, state: str, mem: int, arch: str, procfs_root: str
) -> _RawSample | None:
    """Stop one thread, read its pointer and code page, release it. None if it exited."""
    stop: _ptrace.Stop | None = None
    ip: int | None = None
    page: bytes | None = None
    try:
        _ptrace.seize(tid)
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            return None
        if exc.errno == errno.EPERM:
            if _thread_state(pid, tid, procfs_root) in (None, "Z", "X"):
                return None  # died between the look and the seize: ptrace refuses the dead
            tracer = _tracer_pid(pid, tid, procfs_root)
            if tracer:
                raise AlreadyTracedError(
                    f"thread {tid} of process {pid} is already traced by process {tracer}",
                    pid=pid,
                    tid=tid,
                    tracer_pid=tracer,
                ) from exc
            raise PtraceDeniedError(
                f"ptrace refused for process {pid} (EPERM): needs root or CAP_SYS_PTRACE, "
                "and Yama's ptrace_scope below 3",
                pid=pid,
            ) from exc
        raise SampleError(f"cannot seize thread {tid} of process {pid}: {exc}", pid=pid) from exc
    try:
        started = time.perf_counter_ns()
        _ptrace.interrupt(tid)
        stop = _ptrace.wait_for_stop(tid)
        if stop is not None and not stop.exited:
            ip = _ptrace.instruction_pointer(tid, arch)
            try:
                page = read_page(mem, ip)
            except OSError:
                page = None  # execute-only or vanished: the check says so
    except OSError as exc:
        if exc.errno not in (errno.ESRCH, errno.ECHILD):
            raise SampleError(f"sampling thread {tid} of process {pid}: {exc}", pid=pid) from exc
        ip = None  # killed while we held it
    finally:
        if stop is None or not stop.exited:
            _release(pid, tid, stop, procfs_root)
    if ip is None:
        return None
    return _RawSample(tid, ip, page, time.perf_counter_ns() - started, state)


def _release(pid: int, tid: int, stop: _ptrace.Stop | None, procfs_root: str) -> None:
    """Detach from `tid`, however far the sample got; a Ctrl-C meanwhile waits until after."""
    interrupted: BaseException | None = None
    while True:
        try:
            _detach_until_released(pid, tid, stop, procfs_root)
            break
        except KeyboardInterrupt as exc:
            interrupted = exc
    if interrupted is not None:
        raise interrupted


def _detach_until_released(pid: int, tid: int, stop: _ptrace.Stop | None, procfs_root: str) -> None:
    signal_to_deliver = 0 if stop is None else stop.signal_to_deliver
    delay = RELEASE_POLL_S
    zombie_since: float | None = None
    while True:
        try:
            _ptrace.detach(tid, signal_to_deliver)
            return
        except OSError as exc:
            if exc.errno != errno.ESRCH:
                raise
        # ESRCH: not in a ptrace-stop yet (the interrupt is on its way), or not ours any more.
        try:
            late = _ptrace.wait_for_stop(tid, block=False)
        except ChildProcessError:
            return  # no longer our tracee: released or reaped
        if late is not None:
            if late.exited:
                return
            signal_to_deliver = late.signal_to_deliver or signal_to_deliver
            continue
        if _thread_state(pid, tid, procfs_root) in (None, "Z", "X"):
            # Dead and not yet reportable (a leader waits for its other threads): give it a
            # moment to be reaped by the wait above, then leave it to the kernel.
            zombie_since = zombie_since if zombie_since is not None else time.monotonic()
            if time.monotonic() - zombie_since > ZOMBIE_REAP_TIMEOUT_S:
                return
        time.sleep(delay)
        delay = min(delay * 2, RELEASE_POLL_MAX_S)


def tracer_of(pid: int, *, procfs_root: str | Path = "/proc") -> int:
    """The TracerPid of a process (0: not traced)."""
    return _tracer_pid(pid, pid, os.fspath(procfs_root))
