"""Instruction-pointer sampling: the pure check and histogram, then real processes under ptrace.

The real-process tests stop live threads (a Python loop, a numpy matmul, an injected miner, a
multi-threaded process) and skip with the reason when ptrace is not allowed here (not root,
Yama's ptrace_scope 3, a security module) or the machine is neither x86_64 nor aarch64. Every
process started is killed on the way out.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import NOBODY, NobodyPython
from helpers import cpu_ticks, wait_until
from maxwell.audit import _ptrace, ipsample
from maxwell.audit.ipsample import (
    UNMAPPED,
    AlreadyTracedError,
    Finding,
    IpSample,
    SelfSampleError,
    check,
    module_histogram,
    sample_threads,
    tracer_of,
)
from maxwell.audit.manifest import VDSO, VSYSCALL, CodeManifest, ModuleCode
from maxwell.audit.maps import (
    Backing,
    MapsQuery,
    MemoryMapping,
    ProcmapQueryUnsupportedError,
)

LIBPYTHON = "/usr/lib/libpython3.11.so.1.0"
LIBC = "/usr/lib/libc.so.6"
MANIFEST = CodeManifest(
    {
        LIBPYTHON: ModuleCode(LIBPYTHON, {0x1000: "11" * 32, 0x2000: "22" * 32}),
        LIBC: ModuleCode(LIBC, {0x3000: "33" * 32}, text_relocations=True),
        VDSO: ModuleCode(VDSO, {0: "44" * 32}, source="memory"),
    }
)


def sample(
    module: str,
    *,
    backing: Backing | None = Backing.FILE,
    offset: int | None = 0x1000,
    digest: str | None = "11" * 32,
    state: str = "R",
    tid: int = 101,
) -> IpSample:
    return IpSample(
        pid=100,
        tid=tid,
        ip=0x7F0000001234,
        module=module,
        backing=backing,
        page_offset=offset,
        page_sha256=digest,
        pause_ns=20_000,
        state=state,
    )


# --- the pure part ----------------------------------------------------------------------------


def test_samples_inside_the_manifest_pass() -> None:
    verdict = check(
        [
            sample(LIBPYTHON),
            sample(LIBPYTHON, offset=0x2000, digest="22" * 32),
            sample(VDSO, backing=Backing.KERNEL, offset=0, digest="44" * 32),
            sample(VSYSCALL, backing=Backing.KERNEL, offset=0, digest=None),  # allowed by name
        ],
        MANIFEST,
    )
    assert verdict.passed and verdict.violations == ()
    assert verdict.describe() == "4 samples, all inside the manifest"


@pytest.mark.parametrize(
    ("bad", "finding"),
    [
        (sample("[anon]", backing=Backing.ANONYMOUS, offset=0, digest="ab" * 32), "ANONYMOUS_CODE"),
        (sample("[heap]", backing=Backing.ANONYMOUS, offset=0), "ANONYMOUS_CODE"),
        (sample("/tmp/miner.so"), "UNDECLARED_MODULE"),
        (sample("/memfd:payload"), "UNDECLARED_MODULE"),
        (sample(LIBPYTHON, offset=0x9000), "PAGE_OUTSIDE_CODE"),
        (sample(LIBPYTHON, digest="ff" * 32), "PAGE_MISMATCH"),
        (sample(LIBPYTHON, digest=None), "PAGE_UNREADABLE"),
        (sample(VDSO, backing=Backing.KERNEL, offset=0, digest="ff" * 32), "PAGE_MISMATCH"),
        (sample(UNMAPPED, backing=None, offset=None, digest=None), "UNMAPPED"),
    ],
)
def test_each_way_out_of_the_manifest(bad: IpSample, finding: str) -> None:
    verdict = check([sample(LIBPYTHON), bad], MANIFEST)
    assert not verdict.passed
    assert [(v.sample, v.finding) for v in verdict.violations] == [(bad, Finding[finding])]
    assert verdict.modules_outside == (bad.module,)
    assert verdict.describe().startswith("1 of 2 samples outside: " + bad.module)


def test_a_vdso_not_in_the_manifest_is_undeclared() -> None:
    verdict = check([sample(VDSO, backing=Backing.KERNEL, offset=0)], CodeManifest())
    assert [v.finding for v in verdict.violations] == [Finding.UNDECLARED_MODULE]


def test_a_mismatch_in_a_module_with_text_relocations_says_so() -> None:
    verdict = check([sample(LIBC, offset=0x3000, digest="00" * 32)], MANIFEST)
    assert "text relocations" in verdict.violations[0].detail


def test_no_samples_pass_with_nothing_sampled() -> None:
    verdict = check([], MANIFEST)
    assert verdict.passed and verdict.samples == ()


def test_histogram_shares_by_file_name_largest_first() -> None:
    samples = (
        [sample(LIBPYTHON)] * 3
        + [sample(LIBC, state="S")]
        + [sample("[anon]", backing=Backing.ANONYMOUS)] * 4
    )
    assert module_histogram(samples) == {
        "[anon]": 0.5,
        "libpython3.11.so.1.0": 0.375,
        "libc.so.6": 0.125,
    }
    assert module_histogram(samples, running_only=True) == {
        "[anon]": 4 / 7,
        "libpython3.11.so.1.0": 3 / 7,
    }
    assert module_histogram([]) == {}


def test_wait_statuses() -> None:
    interrupt_stop = (_ptrace.PTRACE_EVENT_STOP << 16) | (signal.SIGTRAP << 8) | 0x7F
    assert _ptrace.decode_wait_status(interrupt_stop) == _ptrace.Stop(False, 0)
    group_stop = (_ptrace.PTRACE_EVENT_STOP << 16) | (signal.SIGSTOP << 8) | 0x7F
    assert _ptrace.decode_wait_status(group_stop) == _ptrace.Stop(False, 0)
    signal_delivery = (signal.SIGUSR1 << 8) | 0x7F
    assert _ptrace.decode_wait_status(signal_delivery) == _ptrace.Stop(False, signal.SIGUSR1)
    assert _ptrace.decode_wait_status(3 << 8) == _ptrace.Stop(True, 0)  # exited with 3
    assert _ptrace.decode_wait_status(signal.SIGKILL) == _ptrace.Stop(True, 0)  # killed
    assert _ptrace.decode_wait_status(0xFFFF) is None  # continued


def test_own_process_is_refused() -> None:
    with pytest.raises(SelfSampleError) as caught:
        sample_threads([12345678, os.getpid()])
    assert caught.value.pid == os.getpid()


def test_a_process_that_is_gone_has_no_samples(tmp_path: Path) -> None:
    with subprocess.Popen(["true"]) as gone:
        gone.wait()
    assert sample_threads(gone.pid) == []
    assert sample_threads(4242, procfs_root=tmp_path) == []


# --- real processes ---------------------------------------------------------------------------


@contextlib.contextmanager
def spawn_python(code: str, **env: str) -> Iterator[subprocess.Popen[str]]:
    """A Python running `code`, which prints "ready" when set up; killed on the way out."""
    with subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    ) as child:
        try:
            assert child.stdout is not None and child.stdout.readline() == "ready\n"
            yield child
        finally:
            child.kill()


@pytest.fixture(scope="module")
def ptrace_allowed() -> None:
    """Skip unless this process may ptrace a child of its own here."""
    try:
        _ptrace.architecture()
    except _ptrace.UnsupportedArchitectureError as exc:
        pytest.skip(str(exc))
    with spawn_python("print('ready', flush=True); import sys; sys.stdin.read()") as child:
        try:
            sample_threads(child.pid)
        except ipsample.PtraceDeniedError as exc:
            scope = Path("/proc/sys/kernel/yama/ptrace_scope")
            setting = scope.read_text().strip() if scope.exists() else "absent"
            pytest.skip(f"ptrace not permitted (uid {os.geteuid()}, ptrace_scope {setting}): {exc}")


def sample_rounds(pid: int | list[int], rounds: int, gap_s: float = 0.002) -> list[IpSample]:
    samples: list[IpSample] = []
    for _ in range(rounds):
        samples.extend(sample_threads(pid))
        time.sleep(gap_s)  # a real gap: the rounds must land at different points of the run
    return samples


def thread_ids(pid: int) -> set[int]:
    return {int(tid) for tid in os.listdir(f"/proc/{pid}/task")}


def assert_released(pid: int) -> None:
    """No thread of `pid` is stopped or traced."""
    for tid in thread_ids(pid):
        task = Path(f"/proc/{pid}/task/{tid}")
        state = (task / "stat").read_text().rpartition(")")[2].split()[0]
        assert state not in ("t", "T"), (tid, state)
        tracer = next(
            line for line in (task / "status").read_text().splitlines() if "TracerPid" in line
        )
        assert tracer.split() == ["TracerPid:", "0"], tid


def thread_state(tid: int) -> str:
    """The state letter in /proc/TID/stat: `t` for a tracing stop."""
    return Path(f"/proc/{tid}/stat").read_text().rpartition(")")[2].split()[0]


def wait_until_spinning(pid: int, tid: int) -> None:
    """Until the thread has run 30 ms (3 ticks): past its start-up, into its loop."""
    wait_until(lambda: cpu_ticks(pid, tid) >= 3, interval_s=0.005, what=f"thread {tid} to spin")


BUSY_LOOP = "print('ready', flush=True)\nwhile True: pass"
MATMUL = (
    "import numpy as np\n"
    "a = np.random.default_rng(0).random((384, 384))\n"
    "a @ a\n"
    "print('ready', flush=True)\n"
    "while True: a @ a\n"
)


@pytest.mark.usefixtures("ptrace_allowed")
def test_python_loop_runs_in_libpython_and_keeps_running() -> None:
    with spawn_python(BUSY_LOOP) as child:
        manifest = CodeManifest.from_process(child.pid)
        samples = sample_rounds(child.pid, 40)
        assert len(samples) == 40 and {s.tid for s in samples} == {child.pid}
        assert all(s.pause_ns > 0 and s.page_sha256 for s in samples)
        histogram = module_histogram(samples)
        top, share = next(iter(histogram.items()))
        assert top.startswith(("libpython", "python")), histogram
        assert share >= 0.9, histogram
        assert check(samples, manifest).passed, check(samples, manifest).describe()
        assert_released(child.pid)
        assert tracer_of(child.pid) == 0
        before = cpu_ticks(child.pid)
        wait_until(lambda: cpu_ticks(child.pid) > before, what="the child to run on, not stopped")


@pytest.mark.usefixtures("ptrace_allowed")
def test_numpy_matmul_runs_in_the_blas_library() -> None:
    with spawn_python(MATMUL) as child:
        manifest = CodeManifest.from_process(child.pid)
        samples = sample_rounds(child.pid, 25)
        histogram = module_histogram(samples)
        top, share = next(iter(histogram.items()))
        assert "openblas" in top, histogram
        assert share >= 0.7, histogram
        verdict = check(samples, manifest)
        assert verdict.passed, verdict.describe()
        assert_released(child.pid)


MACHINE_CODE_SPIN = {"x86_64": b"\xeb\xfe", "aarch64": b"\x00\x00\x00\x14"}  # jmp/b to itself
MINER = """
import ctypes, mmap, sys, threading
print('ready', flush=True)
sys.stdin.readline()
page = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE,
                 prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(CODE)
spin = ctypes.CFUNCTYPE(None)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
miner = threading.Thread(target=spin, daemon=True)
miner.start()
print(miner.native_id, flush=True)
sys.stdin.readline()
"""


@pytest.mark.usefixtures("ptrace_allowed")
def test_an_injected_miner_is_anonymous_code_outside_the_manifest() -> None:
    code = MACHINE_CODE_SPIN[_ptrace.architecture()]
    with spawn_python(MINER.replace("CODE", repr(code))) as child:
        assert child.stdin is not None and child.stdout is not None
        manifest = CodeManifest.from_process(child.pid)  # at spawn, before the injection
        child.stdin.write("inject\n")
        child.stdin.flush()
        miner_tid = int(child.stdout.readline())
        wait_until_spinning(child.pid, miner_tid)
        samples = sample_rounds(child.pid, 5)
        mined = [s for s in samples if s.tid == miner_tid]
        assert len(mined) == 5
        assert {(s.module, s.backing) for s in mined} == {("[anon]", Backing.ANONYMOUS)}
        assert all(s.page_sha256 not in manifest.digests() for s in mined)
        assert not any(label.startswith("[anon") for label in manifest.modules)
        verdict = check(samples, manifest)
        assert not verdict.passed
        assert verdict.modules_outside == ("[anon]",)
        assert {v.finding for v in verdict.violations} == {Finding.ANONYMOUS_CODE}
        assert {v.sample.tid for v in verdict.violations} == {miner_tid}
        assert "[anon]: anonymous executable memory" in verdict.describe()
        assert all(s.state == "R" for s in mined)
        assert next(iter(module_histogram(samples, running_only=True))) == "[anon]"
        assert_released(child.pid)


THREADS = """
import sys, threading
def spin():
    while True: pass
stop = threading.Event()
threads = [threading.Thread(target=spin, daemon=True) for _ in range(2)]
threads += [threading.Thread(target=stop.wait, daemon=True) for _ in range(3)]
for thread in threads: thread.start()
print('ready', flush=True)
sys.stdin.readline()
"""


@pytest.mark.usefixtures("ptrace_allowed")
def test_every_thread_of_every_process_is_sampled() -> None:
    with spawn_python(THREADS) as threaded, spawn_python(BUSY_LOOP) as single:
        manifest = CodeManifest.from_process(threaded.pid)
        tids = thread_ids(threaded.pid)
        assert len(tids) == 6
        samples = sample_threads([threaded.pid, single.pid])
        assert {s.tid for s in samples if s.pid == threaded.pid} == tids
        assert [s.tid for s in samples if s.pid == single.pid] == [single.pid]
        assert len(samples) == 7
        assert check([s for s in samples if s.pid == threaded.pid], manifest).passed
        assert_released(threaded.pid)
        assert_released(single.pid)


@pytest.mark.usefixtures("ptrace_allowed")
def test_a_thread_already_traced_is_named_with_its_tracer() -> None:
    with spawn_python(BUSY_LOOP) as child:
        _ptrace.seize(child.pid)
        try:
            with pytest.raises(AlreadyTracedError) as caught:
                sample_threads(child.pid)
            assert caught.value.pid == child.pid
            assert caught.value.tracer_pid == _own_tid()
        finally:
            _ptrace.interrupt(child.pid)
            ipsample._release(child.pid, child.pid, None, "/proc")
        assert_released(child.pid)


def _own_tid() -> int:
    import threading

    return threading.get_native_id()


@pytest.mark.usefixtures("ptrace_allowed")
def test_ctrl_c_while_waiting_for_the_stop_still_detaches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_wait = _ptrace.wait_for_stop

    def interrupted_wait(tid: int, *, block: bool = True) -> _ptrace.Stop | None:
        if block:
            raise KeyboardInterrupt  # as if Ctrl-C landed before the stop was reported
        return real_wait(tid, block=block)

    monkeypatch.setattr(_ptrace, "wait_for_stop", interrupted_wait)
    with spawn_python(BUSY_LOOP) as child:
        with pytest.raises(KeyboardInterrupt):
            sample_threads(child.pid)
        assert_released(child.pid)
        before = cpu_ticks(child.pid)
        wait_until(lambda: cpu_ticks(child.pid) > before, what="the child to run on, not stopped")


SIGNALLED = """
import signal, sys
def handler(signum, frame):
    sys.stdout.write('usr1\\n'); sys.stdout.flush()
signal.signal(signal.SIGUSR1, handler)
print('ready', flush=True)
while True: pass
"""


@pytest.mark.usefixtures("ptrace_allowed")
def test_a_signal_that_arrives_while_attached_is_delivered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_seize: Callable[[int], None] = _ptrace.seize

    def seize_then_signal(tid: int) -> None:
        # Attached but not yet interrupted: the signal meets a tracee, which stops to report
        # it (a signal-delivery-stop) and would swallow it unless handed back at the detach.
        real_seize(tid)
        os.kill(tid, signal.SIGUSR1)
        wait_until(lambda: thread_state(tid) == "t", interval_s=0.002, what="the signal stop")

    monkeypatch.setattr(_ptrace, "seize", seize_then_signal)
    with spawn_python(SIGNALLED) as child:
        assert child.stdout is not None
        for _ in range(5):
            assert len(sample_threads(child.pid)) == 1
            assert child.stdout.readline() == "usr1\n"
        assert_released(child.pid)


@pytest.mark.usefixtures("ptrace_allowed")
def test_text_maps_stand_in_where_the_kernel_has_no_procmap_query(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def unsupported(self: MapsQuery, address: int) -> MemoryMapping | None:
        raise ProcmapQueryUnsupportedError("as before Linux 6.11")

    monkeypatch.setattr(MapsQuery, "mapping_for", unsupported)
    with spawn_python(BUSY_LOOP) as child:
        manifest = CodeManifest.from_process(child.pid)
        samples = sample_rounds(child.pid, 10)
        assert next(iter(module_histogram(samples))).startswith(("libpython", "python"))
        assert check(samples, manifest).passed


@pytest.mark.root
def test_another_users_process_is_denied_with_its_pid(nobody_python: NobodyPython) -> None:
    snippet = (
        "import sys\n"
        "from maxwell.audit import PtraceDeniedError, sample_threads\n"
        "try:\n"
        "    sample_threads(int(sys.argv[1]))\n"
        "except PtraceDeniedError as exc:\n"
        "    print('denied', exc.pid)\n"
    )
    with subprocess.Popen(["sleep", "30"]) as root_owned:
        try:
            result = subprocess.run(
                [nobody_python.python, "-c", snippet, str(root_owned.pid)],
                user=NOBODY,
                group=NOBODY,
                extra_groups=[],
                env=nobody_python.env,
                cwd="/",
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        finally:
            root_owned.kill()
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["denied", str(root_owned.pid)]
