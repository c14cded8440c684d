"""The agents' processes: where they run, how they start, stop, freeze and end.

`Supervisor` is what the daemon needs of the machine's processes and cgroups; `CgroupSupervisor`
is the real one (cgroups through `CgroupManager` where they are usable, process trees without
limits where not), and `maxwell.testing.FakeSupervisor` keeps everything in memory, so the
daemon's bookkeeping is tested without real processes.

Rules:

- Each agent runs in its own group, made under the daemon's private cgroup directory (its name
  is stable for a state directory, so a restarted daemon finds its agents' groups again through
  the record kept at spawn: `record` then `rebuild`).
- An agent started under a `user` drops its privileges with `setpriv` (util-linux), which execs
  the command in place: the pid the supervisor returns is the agent's own.
- The agent's standard output and error go to its log file, opened without following links.
- The kernel's OOM killer takes agents first: each starts with its `oom_score_adj` raised to
  `AGENT_OOM_SCORE_ADJ` (set in its child before exec, inherited by all it forks), and the
  daemon lowers its own where it may (`protect_daemon`). A group's memory limit already keeps an
  agent's OOM inside its group; this orders the machine-wide one.
- Freezing uses the cgroup freezer where the group has one, else SIGSTOP/SIGCONT to its
  processes; killing kills the whole group (a frozen task still dies on SIGKILL).
- Which started processes ended (`ended`) is asked once a tick for all of them. The real
  supervisor asks the kernel which children wait to be reaped (`waitid` with `WNOWAIT`, which
  reaps nothing), so a tick of a thousand running agents costs one call, not a thousand polls;
  a child it does not know (not an agent's) makes it poll each process instead.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from maxwell.cgroups import CgroupManager, ProcTreeGroup, V1Group, V2Group, WorkloadGroup
from maxwell.clock import Clock
from maxwell.errors import CgroupUnavailableError, MaxwellError
from maxwell.log import logged
from maxwell.node.facade import NodeError
from maxwell.users import RunAs, SetprivMissingError, UnknownUserError, obstacle, setpriv_argv

log = logging.getLogger(__name__)

PRIVATE_PREFIX = "maxwell-node"
# The OOM killer's order (`oom_score_adj`, -1000..1000): agents are raised in their forked child
# before exec (no privilege needed), and the daemon lowers itself where it may.
AGENT_OOM_SCORE_ADJ = 500
DAEMON_OOM_SCORE_ADJ = -900
_WAIT_S = 5.0  # for a killed or ended process to be reaped


class CommandError(NodeError):
    """The agent's command cannot be started (not found, not executable, too long)."""


# What the kernel's refusal to exec a command says about the command (a 400, not a 500).
_EXEC_REFUSALS = {
    errno.E2BIG: "its arguments are too long for the kernel (E2BIG)",
    errno.ENAMETOOLONG: "a name too long for the kernel (ENAMETOOLONG)",
    errno.ENOEXEC: "not an executable format (ENOEXEC)",
    errno.ELOOP: "too many symbolic links (ELOOP)",
    errno.ENOTDIR: "a path component is not a directory (ENOTDIR)",
}


class AgentProcess(Protocol):
    """A started agent's main process (`subprocess.Popen` is one)."""

    pid: int

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


class Supervisor(Protocol):
    kind: str  # "v1", "v2" or "none"
    degraded: str | None  # what it cannot enforce, if anything

    @property
    def private_dirs(self) -> list[str]: ...

    def create(self, agent: str) -> WorkloadGroup: ...

    def record(self, group: WorkloadGroup) -> dict[str, object]: ...

    def rebuild(self, agent: str, record: Mapping[str, object]) -> WorkloadGroup | None: ...

    def start(
        self,
        group: WorkloadGroup,
        argv: Sequence[str],
        *,
        user: str | None,
        env: Mapping[str, str],
        log_path: Path,
    ) -> AgentProcess: ...

    def freeze(self, group: WorkloadGroup, frozen: bool) -> None: ...

    def ended(self, processes: Mapping[str, AgentProcess]) -> list[str]: ...

    def kill(self, group: WorkloadGroup, process: AgentProcess | None) -> int | None: ...

    def finish(self, group: WorkloadGroup, process: AgentProcess | None) -> int | None: ...

    def close(self, failure: BaseException | None = None) -> None: ...


def protect_daemon(score: int = DAEMON_OOM_SCORE_ADJ) -> bool:
    """Lower the daemon's own `oom_score_adj`, so that the kernel's OOM killer takes agents (at
    `AGENT_OOM_SCORE_ADJ`) long before it: True if done. Lowering needs CAP_SYS_RESOURCE; without
    it the agents' raised score still puts them first, and a warning says so."""
    try:
        with open("/proc/self/oom_score_adj", "w") as handle:
            handle.write(str(score))
    except OSError as exc:
        log.warning(
            "cannot lower the daemon's oom_score_adj to %d (%s): agents, at +%d, are still the "
            "OOM killer's first choice",
            score, exc.strerror, AGENT_OOM_SCORE_ADJ,
        )  # fmt: skip
        return False
    return True


def private_name(state_dir: str | os.PathLike[str]) -> str:
    """The daemon's stable cgroup directory name for `state_dir`: the same after a restart,
    distinct for two daemons, and never one `maxwell run`'s sweep (`maxwell-<pid>`) matches."""
    digest = hashlib.sha256(os.fsencode(Path(state_dir).resolve())).hexdigest()[:12]
    return f"{PRIVATE_PREFIX}-{digest}"


def check_reach(user: RunAs, argv: Sequence[str], state_root: Path) -> None:
    """Refuse to start an agent whose user could not run its command or reach its directory
    below `state_root` (a command under /root, a state directory inside a private one), rather
    than start one that dies at once: setpriv, not the daemon, would exec the command."""
    command = shutil.which(argv[0])
    if command is None:
        raise CommandError(f"{argv[0]}: command not found")
    why = obstacle(user, command, execute=True)
    why = why or obstacle(user, state_root.resolve().parent, execute=True)
    if why is not None:
        raise CommandError(
            f"the agent's user cannot reach what it needs: {why}; install the command where "
            f"{user.label} may run it, or keep the state directory where it may pass"
        )


def as_user(user: str, argv: Sequence[str]) -> list[str]:
    """`argv` run as `user` (a name, or `dynamic:UID`) through setpriv (a `NodeError` when the
    user or setpriv is missing)."""
    try:
        return setpriv_argv(RunAs.parse(user), argv)
    except (UnknownUserError, SetprivMissingError) as exc:
        raise NodeError(str(exc)) from None


class CgroupSupervisor:
    """Agents in cgroups (`manager`), or in process trees without limits when it is None."""

    def __init__(self, manager: CgroupManager | None, clock: Clock, degraded: str | None) -> None:
        self._manager = manager
        self._clock = clock
        self.degraded = degraded if manager is None else manager.degraded
        self.kind = manager.kind if manager is not None else "none"

    @classmethod
    def open(cls, kind: str, state_dir: Path, clock: Clock) -> CgroupSupervisor:
        """The supervisor `kind` asks for ("auto", "v1", "v2", "none"). An explicit kind accepts a
        v2 parent's partial delegation and reports it; a kind it cannot honour fails."""
        if kind == "none":
            return cls(None, clock, "cgroups disabled: process trees, no limits")
        try:
            manager = CgroupManager.detect(
                prefix=PRIVATE_PREFIX,
                clock=clock,
                private_name=private_name(state_dir),
                kind=kind,
                require_controllers=kind == "auto",
            )
        except CgroupUnavailableError as exc:
            if kind != "auto":
                raise
            return cls(None, clock, f"no usable cgroups ({exc}): process trees, no limits")
        return cls(manager, clock, None)

    @property
    def private_dirs(self) -> list[str]:
        return self._manager.private_dirs if self._manager is not None else []

    def create(self, agent: str) -> WorkloadGroup:
        if self._manager is None:
            return ProcTreeGroup(agent, clock=self._clock)
        return self._manager.create(agent)

    def record(self, group: WorkloadGroup) -> dict[str, object]:
        return group_record(group)

    def rebuild(self, agent: str, record: Mapping[str, object]) -> WorkloadGroup | None:
        return rebuild_group(agent, record, self._clock)

    def start(
        self,
        group: WorkloadGroup,
        argv: Sequence[str],
        *,
        user: str | None,
        env: Mapping[str, str],
        log_path: Path,
    ) -> AgentProcess:
        command = list(argv) if user is None else as_user(user, argv)
        if user is not None:
            check_reach(RunAs.parse(user), argv, log_path.parent.parent)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        output = os.open(log_path, flags, 0o600)
        try:
            return group.spawn(
                command, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                oom_score_adj=AGENT_OOM_SCORE_ADJ,
            )  # fmt: skip
        except FileNotFoundError as exc:
            raise CommandError(f"{command[0]}: command not found") from exc
        except PermissionError as exc:
            raise CommandError(f"{command[0]}: permission denied (not executable)") from exc
        except IsADirectoryError as exc:
            raise CommandError(f"{command[0]}: is a directory") from exc
        except OSError as exc:
            said = _EXEC_REFUSALS.get(exc.errno or 0)
            if said is None:
                raise  # the node's trouble (no memory, no pids), not the command's
            raise CommandError(f"{command[0]}: {said}") from exc
        finally:
            os.close(output)  # the child has its own copy

    def freeze(self, group: WorkloadGroup, frozen: bool) -> None:
        if group.supports_freeze:
            if frozen:
                group.freeze()
            else:
                group.thaw()
        else:  # the /proc fallback: stop and continue the processes themselves
            group.signal(signal.SIGSTOP if frozen else signal.SIGCONT)

    def ended(self, processes: Mapping[str, AgentProcess]) -> list[str]:
        """Which of `processes` (by agent) have ended, reaped (`poll` gives their status)."""
        return ended_children(processes)

    def kill(self, group: WorkloadGroup, process: AgentProcess | None) -> int | None:
        """Kill the whole group; the main process's exit status, once reaped (None if not)."""
        group.kill()
        return _reap(process)

    def finish(self, group: WorkloadGroup, process: AgentProcess | None) -> int | None:
        """Remove an ended agent's group (logged if it cannot be) and reap its process."""
        try:
            group.remove()
        except MaxwellError:
            log.warning("group %s: cannot remove it", group.name, exc_info=True)
        return _reap(process)

    def close(self, failure: BaseException | None = None) -> None:
        if self._manager is not None:
            self._manager.close(failure=failure)


def ended_each(processes: Mapping[str, AgentProcess]) -> list[str]:
    """Which of `processes` have ended, polling each (and so reaping those that have)."""
    return [agent for agent, process in processes.items() if process.poll() is not None]


def ended_children(processes: Mapping[str, AgentProcess]) -> list[str]:
    """Which of `processes`, children of this process, have ended: the kernel names each child
    waiting to be reaped (`waitid(WNOWAIT)` reaps nothing), and only those are polled (reaped).
    A waiting child that is none of them (or one its poll leaves unreaped) is not ours to reap:
    then each process is polled, as `ended_each` does."""
    by_pid: dict[int, str] | None = None  # made once a child waits (most ticks: none does)
    ended: list[str] = []
    while True:
        try:
            child = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # no children at all
            return ended
        if child is None:
            return ended
        if by_pid is None:
            by_pid = {process.pid: agent for agent, process in processes.items()}
        agent = by_pid.pop(child.si_pid, None)
        if agent is None or processes[agent].poll() is None:
            return ended_each(processes)  # those reaped already answer their status again
        ended.append(agent)


def _reap(process: AgentProcess | None) -> int | None:
    if process is None:
        return None
    with logged(log, f"process {process.pid}: not reaped within {_WAIT_S:g} s",
                subprocess.TimeoutExpired, level=logging.WARNING):  # fmt: skip
        return process.wait(timeout=_WAIT_S)
    return None


def group_record(group: WorkloadGroup) -> dict[str, object]:
    """What a restarted daemon needs to find `group` again (JSON)."""
    if isinstance(group, V1Group):
        return {
            "kind": "v1",
            "layout": group.layout,
            "dirs": dict(group.dirs),
            "unified": group.unified_dir,
        }
    if isinstance(group, V2Group):
        return {"kind": "v2", "layout": group.layout, "path": group.path}
    if isinstance(group, ProcTreeGroup):  # its roots, once they run
        return {"kind": "none", "roots": [[pid, start] for pid, start in group.roots()]}
    return {"kind": "none"}


def rebuild_group(name: str, record: Mapping[str, object], clock: Clock) -> WorkloadGroup | None:
    """The group recorded at spawn, if its directories still exist (else None)."""
    kind = record.get("kind")
    layout = str(record.get("layout", kind))
    if kind == "v1":
        dirs = record.get("dirs")
        unified = record.get("unified")
        if not isinstance(dirs, dict) or not dirs:
            return None
        if not all(os.path.isdir(str(d)) for d in dirs.values()):
            return None
        return V1Group(
            name,
            {str(c): str(d) for c, d in dirs.items()},
            unified_dir=str(unified) if isinstance(unified, str) else None,
            layout=layout,
            clock=clock,
        )
    if kind == "v2":
        path = record.get("path")
        if not isinstance(path, str) or not os.path.isdir(path):
            return None
        return V2Group(name, path, layout=layout, clock=clock)
    if kind == "none":  # a process tree: its recorded roots, if they still run
        roots = record.get("roots")
        if not isinstance(roots, list):
            return None
        pairs = [
            (r[0], r[1]) for r in roots
            if isinstance(r, list) and len(r) == 2 and all(type(n) is int for n in r)
        ]  # fmt: skip
        return ProcTreeGroup.adopt(name, pairs, clock=clock)
    return None
