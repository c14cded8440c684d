"""The node's own Serf agent: a child process that cannot outlive Maxwell.

Rules:

- Secrets never go on the command line (`/proc/PID/cmdline` is world-readable): the RPC token
  and the cluster's encryption key go in a config file only this user can read. (This Serf's
  `agent` has no `-rpc-auth` flag at all: a config file's `rpc_auth` is the only way to set it.)
  The file is removed once the agent is ready; Serf reads it again only on SIGHUP, which Maxwell
  never sends.
- The child asks the kernel for SIGTERM when the thread that started it ends
  (`PR_SET_PDEATHSIG`, set between fork and exec), so a SIGKILLed Maxwell leaves no serf behind.
  Start agents from the event loop's thread, which lives as long as Maxwell does.
- The child leads its own process group, so signals reach whatever it spawns, and a Ctrl-C at
  Maxwell's terminal does not reach it.
- Ready means the RPC port answers a handshake and our token, and, when told to join, the agent
  sees another member. Serf opens its RPC port before it joins and exits 1 when every join fails
  (a wrong encryption key reads "No installed keys could decrypt the message").
- `stop` leaves gracefully over RPC, then sends SIGTERM, then SIGKILL, and always reaps the child.

`agent_argv`, `agent_config` and `decode_encrypt_key` are pure; `SerfAgent` is the adapter, and
the one place where `OSError` about the child becomes `SerfAgentError`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import ctypes
import functools
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from maxwell.errors import MaxwellError, ProcessError, UsageError
from maxwell.gossip.rpc import SerfRpc, SerfRpcError

log = logging.getLogger(__name__)

SERF_MISSING: Final = (
    "serf is not installed: apt-get install serf (Debian/Ubuntu)"
    " or https://github.com/hashicorp/serf/releases"
)
ENCRYPT_KEY_BYTES: Final = (16, 24, 32)  # AES-128, -192, -256
LOOPBACK: Final = "127.0.0.1"
_PR_SET_PDEATHSIG: Final = 1  # <linux/prctl.h>
_READY_POLL_S: Final = 0.05
_OUTPUT_LINES: Final = 12
_CONFIG_NAME: Final = "serf.json"


class SerfMissingError(MaxwellError):
    """No serf executable: on the PATH, or where we were told to look."""


class EncryptKeyError(UsageError):
    """The cluster's encryption key is not base64 of 16, 24 or 32 bytes."""


class SerfAgentError(ProcessError):
    """The serf agent could not be started, or died before it was ready; carries its pid."""


def decode_encrypt_key(encrypt_key: str) -> bytes:
    """The key's bytes, or `EncryptKeyError` saying what is wrong with it."""
    try:
        key = base64.b64decode(encrypt_key, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EncryptKeyError(
            "the serf encryption key is not base64: make one with `serf keygen`"
        ) from exc
    if len(key) not in ENCRYPT_KEY_BYTES:
        raise EncryptKeyError(
            f"the serf encryption key is {len(key)} bytes; it must be 16, 24 or 32"
            " (`serf keygen` makes 32)"
        )
    return key


def agent_argv(
    serf: str,
    node: str,
    bind: str,
    *,
    rpc_address: str,
    config_file: str,
    join: Sequence[str] = (),
    log_level: str = "warn",
) -> list[str]:
    """The command line of a serf agent; its secrets are in `config_file` (`agent_config`)."""
    argv = [
        serf,
        "agent",
        f"-node={node}",
        f"-bind={bind}",
        f"-rpc-addr={rpc_address}",
        f"-config-file={config_file}",
        f"-log-level={log_level}",
    ]
    return argv + [f"-join={address}" for address in join]


def agent_config(auth_token: str, encrypt_key: str) -> dict[str, str]:
    """The agent's secrets, as Serf's JSON config file names them."""
    return {"rpc_auth": auth_token, "encrypt_key": encrypt_key}


def find_serf(serf: str | None = None) -> str:
    """The serf executable: `serf` when given, else the one on the PATH."""
    if serf is None:
        found = shutil.which("serf")
        if found is None:
            raise SerfMissingError(SERF_MISSING)
        return found
    if not (os.path.isfile(serf) and os.access(serf, os.X_OK)):
        raise SerfMissingError(f"{serf} is not an executable serf; {SERF_MISSING}")
    return serf


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 free right now (another process may take it before serf does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def free_gossip_port(host: str = LOOPBACK) -> int:
    """A port on `host` free for both TCP and UDP right now (Serf's gossip binds both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port: int = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return port


@functools.cache
def _prctl() -> Callable[[int, int], int]:
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = (ctypes.c_int, ctypes.c_ulong)
    prctl.restype = ctypes.c_int
    call: Callable[[int, int], int] = prctl
    return call


def die_with_parent(parent_pid: int) -> Callable[[], None]:
    """A `preexec_fn` asking for SIGTERM when the parent dies; ctypes is resolved before fork."""
    prctl = _prctl()

    def set_death_signal() -> None:
        if prctl(_PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent_pid:  # the parent died before prctl: no signal will come
            os._exit(1)

    return set_death_signal


def _write_config(directory: Path, config: dict[str, str]) -> Path:
    path = directory / _CONFIG_NAME
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as config_file:
        json.dump(config, config_file)
    return path


def _remove_config(directory: Path) -> None:
    try:
        shutil.rmtree(directory)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot remove the serf config directory %s: %s", directory, exc.strerror)


def _level_of(line: str) -> int:
    if "[ERR]" in line:
        return logging.ERROR
    if "[WARN]" in line:
        return logging.WARNING
    return logging.DEBUG


class _OutputTail:
    """The child's output, each line logged; the last few kept for error messages."""

    def __init__(self, node: str, output: asyncio.StreamReader) -> None:
        self._node = node
        self._lines: collections.deque[str] = collections.deque(maxlen=_OUTPUT_LINES)
        self._pumping = asyncio.create_task(self._pump(output), name=f"serf {node} output")

    async def _pump(self, output: asyncio.StreamReader) -> None:
        while True:
            try:
                raw = await output.readline()
            except ValueError:  # a line over the reader's limit: it was discarded
                raw = b"(an over-long line)\n"
            if not raw:
                return
            line = raw.decode("utf-8", errors="replace").strip()
            if line:
                self._lines.append(line)
                log.log(_level_of(line), "serf %s: %s", self._node, line)

    def text(self) -> str:
        return " | ".join(" ".join(line.split()) for line in self._lines) or "(no output)"

    async def finish(self, timeout_s: float) -> None:
        """Wait for the end of the output (the child has exited), then stop reading it."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._pumping), timeout_s)
        self._pumping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pumping


async def _exec_agent(argv: list[str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # this Serf writes its log, and its errors, to stdout
        process_group=0,
        preexec_fn=die_with_parent(os.getpid()),
    )


class SerfAgent:
    """A running `serf agent`, this node's, started by `start` and ended by `stop`."""

    def __init__(
        self,
        node: str,
        bind: str,
        process: asyncio.subprocess.Process,
        *,
        rpc_address: tuple[str, int],
        auth_token: str,
        config_dir: Path,
    ) -> None:
        assert process.stdout is not None
        self.node = node
        self.bind = bind
        self.rpc_address = rpc_address
        self.auth_token = auth_token
        self._process = process
        self._config_dir = config_dir
        self._output = _OutputTail(node, process.stdout)

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """The agent's exit status once it has exited (and been reaped), else None."""
        return self._process.returncode

    @classmethod
    async def start(
        cls,
        node: str,
        bind: str,
        *,
        join: Sequence[str] = (),
        encrypt_key: str,
        rpc_port: int | None = None,
        serf: str | None = None,
        timeout_s: float = 10.0,
    ) -> SerfAgent:
        """Start the agent and wait until it is ready (see the module); `bind` is HOST:PORT."""
        executable = find_serf(serf)
        decode_encrypt_key(encrypt_key)
        agent = await cls._launch(executable, node, bind, join, encrypt_key, rpc_port)
        try:
            await agent._wait_ready(joining=bool(join), timeout_s=timeout_s)
        except BaseException:
            await agent._kill()
            raise
        finally:
            _remove_config(agent._config_dir)
        return agent

    @classmethod
    async def _launch(
        cls,
        executable: str,
        node: str,
        bind: str,
        join: Sequence[str],
        encrypt_key: str,
        rpc_port: int | None,
    ) -> SerfAgent:
        rpc_address = (LOOPBACK, free_loopback_port() if rpc_port is None else rpc_port)
        auth_token = secrets.token_hex(16)  # 128 random bits
        config_dir = Path(tempfile.mkdtemp(prefix="maxwell-serf-"))
        try:
            config_file = _write_config(config_dir, agent_config(auth_token, encrypt_key))
            argv = agent_argv(
                executable,
                node,
                bind,
                rpc_address=f"{rpc_address[0]}:{rpc_address[1]}",
                config_file=str(config_file),
                join=join,
            )
            process = await _exec_agent(argv)
        except (OSError, subprocess.SubprocessError) as exc:
            _remove_config(config_dir)
            raise SerfAgentError(f"cannot start serf agent {node}: {exc}") from exc
        log.info("serf agent %s started (pid %d, rpc port %d)", node, process.pid, rpc_address[1])
        return cls(
            node,
            bind,
            process,
            rpc_address=rpc_address,
            auth_token=auth_token,
            config_dir=config_dir,
        )

    async def connect(self, timeout_s: float = 5.0) -> SerfRpc:
        """A new RPC connection to this agent, authenticated."""
        host, port = self.rpc_address
        return await SerfRpc.connect(host, port, auth_key=self.auth_token, timeout_s=timeout_s)

    async def stop(
        self, *, leave: bool = True, leave_timeout_s: float = 3.0, term_timeout_s: float = 3.0
    ) -> int:
        """End the agent, by force if need be, and return its exit status.

        With `leave`, it first leaves the cluster gracefully (about a second on a healthy cluster,
        up to Serf's 5 s broadcast timeout on a broken one); without, the others see it fail.
        """
        if leave and self._process.returncode is None:
            await self._leave(leave_timeout_s)
        if not await self._exited_within(leave_timeout_s if leave else 0.0):
            if leave:
                log.warning("serf agent %s (pid %d) still runs: SIGTERM", self.node, self.pid)
            self._signal_group(signal.SIGTERM)
            if not await self._exited_within(term_timeout_s):
                log.warning("serf agent %s (pid %d) ignored SIGTERM: SIGKILL", self.node, self.pid)
                await self._kill()
        await self._output.finish(1.0)
        _remove_config(self._config_dir)
        status = await self._process.wait()
        log.info("serf agent %s (pid %d) exited with status %d", self.node, self.pid, status)
        return status

    async def _wait_ready(self, *, joining: bool, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        last_failure: SerfRpcError | None = None
        while loop.time() < deadline:
            if self._process.returncode is not None:
                await self._output.finish(1.0)
                raise SerfAgentError(
                    f"serf agent {self.node} exited with status {self._process.returncode}"
                    f" before it was ready: {self._output.text()}",
                    pid=self.pid,
                )
            try:
                if await self._answers(joining):
                    return
            except SerfRpcError as exc:  # not up yet, or not our agent on that port
                last_failure = exc
            await asyncio.sleep(_READY_POLL_S)
        raise SerfAgentError(
            f"serf agent {self.node} (pid {self.pid}) was not ready within {timeout_s:g} s"
            f" ({last_failure or 'it had not joined'}): {self._output.text()}",
            pid=self.pid,
        )

    async def _answers(self, joining: bool) -> bool:
        """Whether the RPC port takes our token (and the agent has joined, when `joining`)."""
        async with await self.connect(timeout_s=1.0) as rpc:
            return not joining or len(await rpc.members()) > 1

    async def _leave(self, timeout_s: float) -> None:
        try:
            async with await self.connect(timeout_s=timeout_s) as rpc:
                await rpc.leave(timeout_s=timeout_s)
        except SerfRpcError as exc:
            log.warning(
                "serf agent %s (pid %d) did not leave gracefully: %s", self.node, self.pid, exc
            )

    async def _exited_within(self, timeout_s: float) -> bool:
        if self._process.returncode is not None:
            return True
        try:
            await asyncio.wait_for(self._process.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def _kill(self) -> None:
        """SIGKILL the agent's process group and reap the agent."""
        self._signal_group(signal.SIGKILL)
        await self._process.wait()
        await self._output.finish(1.0)

    def _signal_group(self, signum: signal.Signals) -> None:
        # Only while the leader is unreaped: after that its pid, the group's id, may be reused.
        if self._process.returncode is not None:
            return
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            pass
        except OSError as exc:
            raise SerfAgentError(
                f"cannot signal serf agent {self.node}: {exc.strerror}", pid=self.pid
            ) from exc
