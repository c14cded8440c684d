"""The ptrace(2) calls an instruction-pointer sample needs, through ctypes on libc.

Only what `ipsample` uses: PTRACE_SEIZE (attach without stopping), PTRACE_INTERRUPT (stop now),
waitpid(__WALL) for the stop, the instruction pointer of the stopped thread, PTRACE_DETACH
(resume, re-delivering a signal that arrived during the stop). Every call raises `OSError` with
the errno; `ipsample` translates errnos into Maxwell's errors at its one boundary.

ptrace binds a tracee to the calling OS thread: every call for one tracee must come from the
thread that seized it, which is why `ipsample` does a thread's whole sample in one function call.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from dataclasses import dataclass
from functools import cache

from maxwell.errors import MaxwellError

PTRACE_GETREGS = 12
PTRACE_DETACH = 17
PTRACE_GETREGSET = 0x4204
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_EVENT_STOP = 128
NT_PRSTATUS = 1
WALL = 0x40000000  # __WALL: wait for clone threads too, not only the thread-group leaders

# x86_64 `struct user_regs_struct`: 27 unsigned longs, rip is the 17th.
X86_64_REGS = 27
X86_64_RIP = 16
# aarch64 `struct user_pt_regs`: x0..x30, sp, pc, pstate; pc is the 33rd. An AArch32 tracee
# answers NT_PRSTATUS with 18 32-bit words, pc (r15) the 16th.
AARCH64_REGS = 34
AARCH64_PC = 32
ARM32_REGS = 18
ARM32_PC = 15

SUPPORTED_MACHINES = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "aarch64": "aarch64",
    "arm64": "aarch64",
}


class UnsupportedArchitectureError(MaxwellError):
    """Instruction-pointer sampling knows the register layout of x86_64 and aarch64 only."""


class _IoVec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


@dataclass(frozen=True)
class Stop:
    """What waitpid reported for a seized thread."""

    exited: bool  # the thread exited (or was killed) instead of stopping: nothing to detach
    signal_to_deliver: int  # a signal that arrived first (signal-delivery-stop); 0 if none


def architecture() -> str:
    """Our machine, "x86_64" or "aarch64", else `UnsupportedArchitectureError`."""
    machine = platform.machine().lower()
    if machine not in SUPPORTED_MACHINES:
        raise UnsupportedArchitectureError(
            f"instruction-pointer sampling supports x86_64 and aarch64, not {machine!r}"
        )
    return SUPPORTED_MACHINES[machine]


@cache
def _ptrace_function() -> ctypes._NamedFuncPointer:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    function = libc.ptrace
    function.argtypes = (ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
    function.restype = ctypes.c_long
    return function


def _ptrace(request: int, tid: int, address: int = 0, data: int | ctypes._CArgObject = 0) -> int:
    ctypes.set_errno(0)
    result: int = _ptrace_function()(request, tid, address, data)
    if result == -1:
        error = ctypes.get_errno()
        if error:
            raise OSError(error, f"ptrace({request:#x}, {tid}): {os.strerror(error)}")
    return result


def seize(tid: int) -> None:
    """Attach to one thread without stopping it."""
    _ptrace(PTRACE_SEIZE, tid)


def interrupt(tid: int) -> None:
    """Ask a seized thread to stop; `wait_for_stop` sees it stopped."""
    _ptrace(PTRACE_INTERRUPT, tid)


def detach(tid: int, signal_to_deliver: int = 0) -> None:
    """Resume and release a stopped thread, delivering `signal_to_deliver` if not 0."""
    _ptrace(PTRACE_DETACH, tid, 0, signal_to_deliver)


def decode_wait_status(status: int) -> Stop | None:
    """A waitpid status of a seized thread: `Stop`, or None if it is neither stopped nor gone
    (a `WIFCONTINUED` report)."""
    if os.WIFEXITED(status) or os.WIFSIGNALED(status):
        return Stop(exited=True, signal_to_deliver=0)
    if not os.WIFSTOPPED(status):
        return None
    stop_signal = os.WSTOPSIG(status)
    if status >> 16:
        # PTRACE_EVENT_STOP: the interrupt's own stop (SIGTRAP), or a group-stop (SIGSTOP and
        # friends) that the thread re-enters by itself after the detach. Nothing to re-deliver
        # either way (and no other event was asked for).
        return Stop(exited=False, signal_to_deliver=0)
    # A signal-delivery-stop: the signal reached the thread before our interrupt did, and is
    # suppressed unless handed back at the detach.
    return Stop(exited=False, signal_to_deliver=stop_signal)


def wait_for_stop(tid: int, *, block: bool = True) -> Stop | None:
    """Wait for a seized, interrupted thread to stop (or exit). None: not yet (`block=False`)."""
    while True:
        waited, status = os.waitpid(tid, WALL | (0 if block else os.WNOHANG))
        if waited == 0:
            return None
        stop = decode_wait_status(status)
        if stop is not None:
            return stop


def instruction_pointer(tid: int, arch: str) -> int:
    """The instruction pointer of a stopped thread."""
    if arch == "x86_64":
        # PTRACE_GETREGS answers a 64-bit layout for 32-bit tracees too (eip widened in rip).
        regs = (ctypes.c_ulong * X86_64_REGS)()
        _ptrace(PTRACE_GETREGS, tid, 0, ctypes.byref(regs))
        return int(regs[X86_64_RIP])
    if arch == "aarch64":
        words = (ctypes.c_uint64 * AARCH64_REGS)()
        iov = _IoVec(ctypes.cast(words, ctypes.c_void_p), ctypes.sizeof(words))
        _ptrace(PTRACE_GETREGSET, tid, NT_PRSTATUS, ctypes.byref(iov))
        if iov.iov_len == ARM32_REGS * 4:
            narrow = ctypes.cast(words, ctypes.POINTER(ctypes.c_uint32))
            return int(narrow[ARM32_PC])
        return int(words[AARCH64_PC])
    raise UnsupportedArchitectureError(f"no register layout for {arch!r}")
