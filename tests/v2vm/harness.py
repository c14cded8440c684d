"""A pure cgroup v2 kernel under qemu, with this machine's root (checkout and virtualenv
included) visible read-only, to run the real-cgroup tests where most users run Maxwell.

- `Kernel.ensure()` builds the kernel and initramfs from Debian packages (`apt-get download` of
  `linux-image-amd64`'s kernel and of `busybox-static`, nothing else from the network) into a
  cache outside the checkout (`$MAXWELL_V2VM_CACHE`, default `~/.cache/maxwell/v2vm`), once, under
  a name that changes with the initramfs's recipe; a cache with a file missing is rebuilt.
- `boot(kernel, command, out_dir)` runs qemu (software emulation: these machines have no KVM;
  `-cpu max`, or numpy's builds die of an illegal instruction) with the host's `/` over
  virtio-9p read-only and `out_dir` writable at `/tmp/v2vm-out`; the VM's `/init` (`init.sh`)
  mounts tmpfs on `/tmp`, `/run`, `/var/tmp` and `/dev/shm`, the unified hierarchy alone on
  `/sys/fs/cgroup` (`cgroup_no_v1=all`), and runs `command` as root in a chroot of the host's
  root. The VM runs in its own session; past `timeout_s` the whole session is killed, so
  nothing is left running on the host.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

MODULES = (  # virtio-9p and what it needs, in load order (all modules in Debian's kernel)
    "virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
    "netfs", "fscache", "9pnet", "9pnet_virtio", "9p",
)  # fmt: skip
INIT = Path(__file__).with_name("init.sh")
EXIT_LINE = re.compile(r"^v2vm-exit-status: (\d+)\s*$", re.MULTILINE)
TOOLS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "cpio": "cpio",
    "apt-get": "apt",
    "dpkg-deb": "dpkg",
}


class HarnessError(RuntimeError):
    """The VM cannot be built or booted here (says why)."""


def missing_tools() -> list[str]:
    """The Debian packages to install before the harness can run (none when all are there)."""
    return sorted({package for tool, package in TOOLS.items() if shutil.which(tool) is None})


def cache_dir() -> Path:
    configured = os.environ.get("MAXWELL_V2VM_CACHE")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "maxwell" / "v2vm"


def _run(argv: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise HarnessError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def kernel_package() -> str:
    """The versioned kernel package `linux-image-amd64` depends on (linux-image-6.1.0-50-amd64)."""
    for line in _run(["apt-cache", "depends", "linux-image-amd64"]).splitlines():
        found = re.match(r"\s*Depends: (linux-image-\S+)$", line.strip())
        if found:
            return found.group(1)
    raise HarnessError("apt-cache names no kernel package for linux-image-amd64")


def build_name(package: str, init: bytes | None = None) -> str:
    """The cache entry's name: the kernel package and a digest of what the harness puts in the
    initramfs (its /init, the modules), so a changed /init is never booted from an old cache."""
    recipe = (INIT.read_bytes() if init is None else init) + "\n".join(MODULES).encode()
    return f"{package}-{hashlib.sha256(recipe).hexdigest()[:12]}"


@dataclass(frozen=True)
class Kernel:
    """A kernel and its initramfs, cached."""

    directory: Path

    @property
    def vmlinuz(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initramfs(self) -> Path:
        return self.directory / "initramfs.gz"

    @classmethod
    def ensure(cls, cache: Path | None = None) -> Kernel:
        """The cached kernel for the package `linux-image-amd64` names, built if missing."""
        package = kernel_package()
        kernel = cls((cache or cache_dir()) / build_name(package))
        if not (kernel.vmlinuz.is_file() and kernel.initramfs.is_file()):
            kernel.build(package)
        return kernel

    def build(self, package: str) -> None:
        """Download `package` and busybox-static, then write vmlinuz and initramfs.gz."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="v2vm-build-") as scratch:
            work = Path(scratch)
            os.chmod(work, 0o755)  # apt-get download drops to _apt where it can
            _run(["apt-get", "download", "-q", package, "busybox-static"], cwd=work)
            tree = work / "tree"
            for deb in sorted(work.glob("*.deb")):
                _run(["dpkg-deb", "-x", str(deb), str(tree)])
            vmlinuz = next(iter(sorted((tree / "boot").glob("vmlinuz-*"))), None)
            if vmlinuz is None:
                raise HarnessError(f"{package} holds no /boot/vmlinuz-*")
            root = work / "initramfs"
            _initramfs_tree(tree, root)
            archive = work / "initramfs.gz"
            _write_archive(root, archive)
            shutil.copyfile(vmlinuz, self.directory / "vmlinuz.new")
            shutil.copyfile(archive, self.directory / "initramfs.gz.new")
        # Last, and by rename: a build cut short leaves no half-written kernel in the cache.
        os.replace(self.directory / "vmlinuz.new", self.vmlinuz)
        os.replace(self.directory / "initramfs.gz.new", self.initramfs)


def _initramfs_tree(tree: Path, root: Path) -> None:
    """busybox, the modules (in load order) and /init, laid out in `root`."""
    for directory in ("bin", "modules", "proc", "sys", "dev", "host"):
        (root / directory).mkdir(parents=True)
    busybox = tree / "bin" / "busybox"
    if not busybox.is_file():
        raise HarnessError("busybox-static holds no /bin/busybox")
    shutil.copyfile(busybox, root / "bin" / "busybox")
    os.chmod(root / "bin" / "busybox", 0o755)
    found = {path.name.split(".ko")[0]: path for path in (tree / "lib").rglob("*.ko*")}
    for module in MODULES:
        if module not in found:
            raise HarnessError(f"the kernel package has no module {module}")
        source = found[module]
        if source.name.endswith((".xz", ".zst")):
            raise HarnessError(f"{source.name}: compressed modules are not supported yet")
        shutil.copyfile(source, root / "modules" / f"{module}.ko")
    (root / "modules" / "order").write_text("\n".join(MODULES) + "\n")
    shutil.copyfile(INIT, root / "init")
    os.chmod(root / "init", 0o755)


def _write_archive(root: Path, archive: Path) -> None:
    """`root` as a gzipped newc cpio archive (what the kernel unpacks as its initramfs)."""
    names = sorted(str(path.relative_to(root)) for path in root.rglob("*"))
    listing = "\n".join([".", *names]) + "\n"
    with archive.open("wb") as out:
        cpio = subprocess.Popen(
            ["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )  # fmt: skip
        gzip = subprocess.Popen(["gzip", "-1"], stdin=cpio.stdout, stdout=out)
        assert cpio.stdin is not None and cpio.stdout is not None
        cpio.stdout.close()
        cpio.stdin.write(listing.encode())
        cpio.stdin.close()
        if cpio.wait() != 0 or gzip.wait() != 0:
            raise HarnessError("cannot write the initramfs archive (cpio, gzip)")


@dataclass(frozen=True)
class Boot:
    """What a VM run gave: the command's exit status (None: it never reported one) and the
    console's output."""

    exit_status: int | None
    console: str
    timed_out: bool


def boot(
    kernel: Kernel,
    command: str,
    out_dir: Path,
    *,
    timeout_s: float = 1200.0,
    memory_mb: int = 2048,
    cpus: int = 2,
    keep: Path | None = None,
) -> Boot:
    """Run `command` (a shell script) as root in the VM; `out_dir` is `/tmp/v2vm-out` there.
    `keep`: a directory (no spaces) to show as it is on the host even below the VM's scratch
    mounts (a checkout under /tmp)."""
    (out_dir / "command").write_text(command)
    append = "console=ttyS0 quiet panic=-1 cgroup_no_v1=all"
    if keep is not None:
        append += f" v2vm.keep={keep}"
    argv = [
        "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", str(memory_mb),
        "-smp", str(cpus),
        "-kernel", str(kernel.vmlinuz), "-initrd", str(kernel.initramfs),
        "-append", append,
        "-nographic", "-no-reboot",
        "-virtfs", "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap",
        "-virtfs", f"local,path={out_dir},mount_tag=out,security_model=none",
    ]  # fmt: skip
    console = out_dir / "console.log"
    with console.open("wb") as log:
        vm = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        timed_out = False
        try:
            vm.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_session(vm)
    text = console.read_text(errors="replace")
    found = EXIT_LINE.findall(text)
    return Boot(int(found[-1]) if found else None, text, timed_out)


def _kill_session(vm: subprocess.Popen[bytes]) -> None:
    """The VM's whole session, killed and reaped (nothing of it outlives the run)."""
    if vm.poll() is None:
        with contextlib.suppress(ProcessLookupError):  # it ended between poll and kill
            os.killpg(vm.pid, signal.SIGKILL)
    vm.wait()
