"""Audits of code in the daemon: agents that declare their code at spawn have their threads'
instruction pointers checked against it (ptrace); an injected miner fails and is slashed."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import AGENTS_AS_DAEMON, cpu_ticks, wait_until
from maxwell.audit.ipsample import tracer_of
from maxwell.node.config import NodeConfig
from maxwell.node.daemon import NodeDaemon
from maxwell.node.facade import NodeError
from maxwell.units import Money

J = 1_000_000

MINER = """
import ctypes, mmap, os, sys, threading, time
trigger = sys.argv[1]
open(trigger + ".looping", "w").close()
while not os.path.exists(trigger):
    for _ in range(200):  # mostly in the interpreter, now and then a stat()
        sum(range(10_000))
page = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE,
                 prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(b"\\xeb\\xfe")  # x86-64: jmp to itself, the miner's inner loop
spin = ctypes.CFUNCTYPE(None)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
threading.Thread(target=spin, daemon=True).start()
open(trigger + ".mined", "w").close()
while True:  # the main thread idles; the injected thread is the one to catch
    time.sleep(1)
"""


def _ptrace_refused() -> str | None:
    if platform.machine() != "x86_64":
        return f"the injected miner is x86-64 machine code; this is {platform.machine()}"
    try:
        scope = int(Path("/proc/sys/kernel/yama/ptrace_scope").read_text())
    except (OSError, ValueError):
        return None
    if scope >= 3 or (scope >= 2 and os.geteuid() != 0):
        return f"ptrace is restricted here (kernel.yama.ptrace_scope = {scope})"
    return None


pytestmark = pytest.mark.skipif(_ptrace_refused() is not None, reason=str(_ptrace_refused()))


def code_python_maps() -> list[str]:
    """What a Python process running the miner script maps executable: its declared code."""
    probe = subprocess.run(
        [sys.executable, "-c", "import ctypes, mmap, threading; "
         "print(open('/proc/self/maps').read())"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    paths = set()
    for line in probe.stdout.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and "x" in fields[1] and fields[5].startswith("/"):
            paths.add(fields[5])
    return sorted(paths)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[NodeDaemon]:
    node = NodeDaemon(
        NodeConfig(
            dynamic_uids=AGENTS_AS_DAEMON, state_dir=tmp_path / "state", tick_s=0.1, cgroup="none"
        )
    )
    try:
        yield node
    finally:
        node.shutdown(kill_agents=True)


def wait_for(path: Path) -> None:
    wait_until(path.exists, interval_s=0.02, what=f"{path} to appear")


def spinning_thread(pid: int) -> bool:
    """Whether a thread of `pid` other than its main one has run 30 ms (3 clock ticks)."""
    threads = [int(tid) for tid in os.listdir(f"/proc/{pid}/task") if int(tid) != pid]
    return any(cpu_ticks(pid, tid) >= 3 for tid in threads)


def traced_by(pid: int) -> bool:
    """Whether a child of `pid` has `pid` for its tracer."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return any(tracer_of(int(child)) == pid for child in children)


def test_an_agent_running_its_declared_code_passes_and_a_miner_is_caught(
    daemon: NodeDaemon, tmp_path: Path
) -> None:
    script = tmp_path / "miner.py"
    script.write_text(MINER)
    trigger = tmp_path / "inject"
    spawned = daemon.spawn(
        [sys.executable, str(script), str(trigger)],
        fund=Money(100 * J),
        bid=5.0,
        code=code_python_maps(),
        name="miner",
    )
    wait_for(Path(f"{trigger}.looping"))  # its interpreter is up and looping in Python
    clean = daemon.audit(spawned.agent)
    assert clean.honest, clean.findings
    assert clean.checked == ("code",) and clean.samples >= 1
    assert any("python" in module for module in clean.modules), clean.modules
    assert clean.pause_us is not None and clean.pause_us > 0
    trigger.touch()
    wait_for(Path(str(trigger) + ".mined"))
    wait_until(lambda: spinning_thread(spawned.pid), what="the injected thread to spin")
    caught = daemon.audit(spawned.agent)
    assert not caught.honest
    assert any("[anon]: anonymous executable memory" in f for f in caught.findings)
    assert "[anon]" in caught.modules
    slashed = [e for e in daemon.events() if e.kind == "slashed"]
    assert [e.agent for e in slashed] == [spawned.agent]
    assert slashed[0].detail["checked"] == ["code"]
    assert daemon.ledger().verify().ok


def test_without_declared_code_an_audit_shows_where_but_checks_nothing(
    daemon: NodeDaemon,
) -> None:
    spawned = daemon.spawn([sys.executable, "-c", "while True: pass"], fund=Money(100 * J), bid=5.0)
    wait_until(lambda: cpu_ticks(spawned.pid) >= 10, what="the agent to loop")
    result = daemon.audit(spawned.agent)
    assert result.honest and result.checked == ()
    assert result.samples >= 1 and result.modules
    audited = [e for e in daemon.events() if e.kind == "audited"][-1]
    assert "no code declared" in str(audited.detail["code"])


def test_declared_code_that_is_not_there_or_not_elf_is_refused(
    daemon: NodeDaemon, tmp_path: Path
) -> None:
    with pytest.raises(NodeError, match="does not exist"):
        daemon.spawn(["true"], fund=Money(J), bid=1.0, code=["/no/such/library.so"])
    text = tmp_path / "notes.txt"
    text.write_text("not code")
    with pytest.raises(NodeError, match="cannot hash"):
        daemon.spawn(["true"], fund=Money(J), bid=1.0, code=[str(text)])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NodeError, match="no ELF file"):
        daemon.spawn(["true"], fund=Money(J), bid=1.0, code=[str(empty)])
    assert daemon.agents() == []


TRACES_ITSELF = """
import ctypes, os, sys, time
child = os.fork()
if child == 0:
    ctypes.CDLL(None, use_errno=True).ptrace(0, 0, None, None)  # PTRACE_TRACEME: parent traces
    while True:
        sum(range(10_000))
open(sys.argv[1], "w").close()
os.waitpid(child, 0)  # it stops at its first signal, if ever; the parent keeps it traced
while True:  # the tracer idles, its tracee loops
    time.sleep(1)
"""


def test_an_agent_that_traces_its_own_threads_fails_the_code_audit(
    daemon: NodeDaemon, tmp_path: Path
) -> None:
    script = tmp_path / "shield.py"
    script.write_text(TRACES_ITSELF)
    ready = tmp_path / "ready"
    spawned = daemon.spawn(
        [sys.executable, str(script), str(ready)],
        fund=Money(100 * J),
        bid=5.0,
        code=code_python_maps(),
    )
    wait_for(ready)
    wait_until(lambda: traced_by(spawned.pid), what="its child to call PTRACE_TRACEME")
    result = daemon.audit(spawned.agent)
    assert not result.honest
    assert any("traced by its own process" in finding for finding in result.findings)
