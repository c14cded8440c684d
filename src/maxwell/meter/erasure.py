"""The erasure meter: how many bytes a process re-wrote since it was last sampled.

Landauer's principle prices every bit erased; a process erases bits when it overwrites memory.
Linux marks each page a process writes with a soft-dirty bit (Documentation/admin-guide/mm/
soft-dirty.rst): writing "4" to /proc/PID/clear_refs clears the bit on every page of the process,
and the next write to a page sets bit 55 again in that page's 64-bit little-endian entry of
/proc/PID/pagemap (one 8-byte entry per virtual page, at offset `vaddr // page_size * 8`; bit 63:
present in RAM, bit 62: swapped out). A sample counts the soft-dirty pages that hold data (present
or swapped) in the process's writable mappings, then clears the bits for the next interval.

What the meter sees, and what it does not:

- Pages the process re-wrote since the previous sample (or, on the first sample of a process,
  since it started: a fresh address space is all soft-dirty), at page granularity. One byte
  written counts a whole page, and a transparent huge page counts all its 512 base pages, so
  `bits_erased` is an upper bound on the bits actually overwritten.
- Pages written for the first time count like re-written ones: a fresh anonymous page is
  zero-filled by the kernel and then written, which is an erasure too.
- Shared mappings (`rw-s`, shared memory, memfds) are counted for every process that maps and
  writes them; summing over processes that share memory counts that memory more than once.
- It cannot see writes that stay in CPU caches or registers (a tight loop over a few cache lines
  erases far more bits than the one dirty page it shows), memory of other processes, or the
  kernel's memory: data given to write(2) lands in the page cache, which is not in the writer's
  pagemap. Pages written between a sample's read of pagemap and its clear are missed (the
  interface offers no atomic read-and-clear; CRIU freezes the task to close that window).
- Kernels built without CONFIG_MEM_SOFT_DIRTY accept the "4" but never set bit 55: the meter
  then reads 0 for everyone. `soft_dirty_support` says which kind of kernel this is.

Cost: a sample reads 8 bytes of pagemap per virtual page of writable mappings (2 MiB per GiB
mapped, resident or not), in chunks of at most `CHUNK_ENTRIES` entries so that a huge sparse
reservation never allocates more than one chunk; the kernel walks the page tables to produce
them. The clear write-protects every page of the process, so its next write to each page takes
a minor fault.

Rules of the pure part (`count_soft_dirty_pages`, `count_dirty_entries`, `bits_erased`,
`config_has_soft_dirty`): they take the maps text, a `read(offset, length) -> bytes` callable
and the page size, and open nothing. Only writable mappings are counted, never the kernel's own
(`[vvar]`, `[vsyscall]`, ...). A read that comes back short (past the end of the address space
the kernel serves, or of a recorded file) ends that mapping; its unread pages are reported, not
counted. `SoftDirtyMeter` and `soft_dirty_support` are the OS adapters; both take the procfs root.
"""

from __future__ import annotations

import contextlib
import ctypes
import gzip
import logging
import mmap
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from maxwell.audit.maps import Backing, MemoryMapping, parse_maps
from maxwell.errors import ProcessError

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

PAGEMAP_ENTRY_BYTES = 8
SOFT_DIRTY_BIT = 55
SWAPPED_BIT = 62
PRESENT_BIT = 63
CHUNK_ENTRIES = 64 * 1024  # 512 KiB of pagemap per read
CLEAR_SOFT_DIRTY = b"4"  # clear_refs: clear the soft-dirty bits of every page
CONFIG_OPTION = "CONFIG_MEM_SOFT_DIRTY"
_SOFT_DIRTY = np.uint64(1 << SOFT_DIRTY_BIT)
_HOLDS_DATA = np.uint64((1 << PRESENT_BIT) | (1 << SWAPPED_BIT))
_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
# O_TRUNC as the shell's `echo 4 >` does (procfs accepts it); no O_CREAT: a vanished process's
# clear_refs must fail, not appear as a new file in a fake tree.
_CLEAR_FLAGS = os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW

PagemapRead = Callable[[int, int], bytes]
"""`read(offset, length)`: up to `length` bytes of a pagemap from byte `offset` (pread-like)."""


class ErasureMeterError(ProcessError):
    """A process's maps, pagemap or clear_refs failed in a way other than the process being gone
    or unreadable to this user (EIO, a symlink where procfs has a file, ...)."""


@dataclass(frozen=True)
class DirtyPageCount:
    """One pass over a process's writable mappings."""

    dirty_pages: int  # soft-dirty and present or swapped
    scanned_pages: int  # pagemap entries read
    unread_pages: int  # pages of writable mappings whose entries a short read left out


def count_dirty_entries(entries: bytes | memoryview) -> int:
    """How many of the 8-byte pagemap `entries` are soft-dirty and present or swapped."""
    array = np.frombuffer(entries, dtype="<u8", count=len(entries) // PAGEMAP_ENTRY_BYTES)
    return int(np.count_nonzero(((array & _SOFT_DIRTY) != 0) & ((array & _HOLDS_DATA) != 0)))


def is_metered(mapping: MemoryMapping) -> bool:
    """Writable user memory: the kernel's own mappings have no pagemap entries worth reading."""
    return mapping.perms[1] == "w" and mapping.backing is not Backing.KERNEL


def pagemap_chunks(
    mapping: MemoryMapping, page_size: int, chunk_entries: int = CHUNK_ENTRIES
) -> Iterator[tuple[int, int]]:
    """(first page index, entry count) for each read covering `mapping`, in address order."""
    first = mapping.start // page_size
    end = -(-mapping.end // page_size)
    for index in range(first, end, chunk_entries):
        yield index, min(chunk_entries, end - index)


def _count_mapping(
    mapping: MemoryMapping, read: PagemapRead, page_size: int, chunk_entries: int
) -> DirtyPageCount:
    dirty = scanned = 0
    for index, entries in pagemap_chunks(mapping, page_size, chunk_entries):
        wanted = entries * PAGEMAP_ENTRY_BYTES
        data = read(index * PAGEMAP_ENTRY_BYTES, wanted)
        whole = len(data) - len(data) % PAGEMAP_ENTRY_BYTES
        dirty += count_dirty_entries(memoryview(data)[:whole])
        scanned += whole // PAGEMAP_ENTRY_BYTES
        if whole < wanted:
            break
    total = -(-mapping.end // page_size) - mapping.start // page_size
    return DirtyPageCount(dirty, scanned, total - scanned)


def count_soft_dirty_pages(
    maps_text: str, read: PagemapRead, *, page_size: int, chunk_entries: int = CHUNK_ENTRIES
) -> DirtyPageCount:
    """Soft-dirty pages holding data in the writable mappings listed in `maps_text`."""
    if page_size <= 0 or chunk_entries <= 0:
        raise ValueError(f"page_size {page_size} and chunk_entries {chunk_entries} must be > 0")
    dirty = scanned = unread = 0
    for mapping in parse_maps(maps_text):
        if not is_metered(mapping):
            continue
        counted = _count_mapping(mapping, read, page_size, chunk_entries)
        if counted.unread_pages:
            logger.debug(
                "pagemap read short in %x-%x %s: %d pages unread",
                mapping.start, mapping.end, mapping.label, counted.unread_pages,
            )  # fmt: skip
        dirty += counted.dirty_pages
        scanned += counted.scanned_pages
        unread += counted.unread_pages
    return DirtyPageCount(dirty, scanned, unread)


def bits_erased(pages: int, page_size: int) -> int:
    """The most bits `pages` re-written pages can have erased: every bit of every page."""
    if pages < 0 or page_size <= 0:
        raise ValueError(f"pages {pages} must be >= 0 and page_size {page_size} > 0")
    return pages * page_size * 8


# --- the OS: one process at a time ------------------------------------------------------------


def _read_all(descriptor: int) -> bytes:
    parts = []
    while part := os.read(descriptor, 1 << 16):
        parts.append(part)
    return b"".join(parts)


@contextlib.contextmanager
def _opened(path: str, flags: int, *, dir_fd: int | None = None) -> Iterator[int]:
    descriptor = os.open(path, flags, dir_fd=dir_fd)
    try:
        yield descriptor
    finally:
        os.close(descriptor)


class SoftDirtyMeter:
    """Samples the bytes processes re-wrote since their previous sample, through procfs.

    Each pid's files are opened relative to one descriptor of its /proc/PID directory, so the
    maps, pagemap and clear_refs read in a sample belong to the same process even if the pid is
    reused meanwhile (a stale directory's files answer ENOENT or ESRCH, read as gone).
    """

    def __init__(self, procfs_root: str | Path = "/proc", *, page_size: int | None = None) -> None:
        self._root = os.fspath(procfs_root)
        self.page_size = page_size if page_size is not None else mmap.PAGESIZE

    def sample(self, pid: int) -> int:
        """Bytes re-written by `pid` since its previous clear (pages x page size), then clears
        its soft-dirty bits. 0 for a process that is gone or that this user may not read."""
        pages = self._in_process(pid, "sample", self._count_and_clear)
        return 0 if pages is None else pages * self.page_size

    def sample_tree(self, pids: Iterable[int]) -> int:
        """The sum of `sample` over `pids` (an agent's processes); each pid is sampled once."""
        return sum(self.sample(pid) for pid in dict.fromkeys(pids))

    def clear(self, pid: int) -> bool:
        """Clears `pid`'s soft-dirty bits without counting, to start metering a process (a new
        one's pages are all soft-dirty). False when it is gone or not this user's to clear."""
        return self._in_process(pid, "clear", self._clear) is not None

    def _in_process(self, pid: int, action: str, operation: Callable[[int, int], _T]) -> _T | None:
        """`operation(pid, directory descriptor)`, with its `OSError`s translated: None for a
        process that is gone or unreadable (logged), `ErasureMeterError` for anything else."""
        try:
            with _opened(f"{self._root}/{pid}", _READ_FLAGS | os.O_DIRECTORY) as directory:
                return operation(pid, directory)
        except (FileNotFoundError, ProcessLookupError) as exc:
            logger.debug("erasure meter: process %d is gone (%s)", pid, exc)
        except PermissionError as exc:
            # A live process the meter is blind to: it would be billed for no erasure at all.
            logger.warning("erasure meter: may not %s process %d (%s)", action, pid, exc)
        except OSError as exc:
            raise ErasureMeterError(f"cannot {action} process {pid}: {exc}", pid=pid) from exc
        return None

    def _count_and_clear(self, pid: int, directory: int) -> int:
        with _opened("maps", _READ_FLAGS, dir_fd=directory) as maps:
            maps_text = os.fsdecode(_read_all(maps))
        with _opened("pagemap", _READ_FLAGS, dir_fd=directory) as pagemap:
            counted = count_soft_dirty_pages(
                maps_text,
                lambda offset, length: os.pread(pagemap, length, offset),
                page_size=self.page_size,
            )
        try:
            self._clear(pid, directory)
        except (FileNotFoundError, ProcessLookupError) as exc:
            # It exited after its pages were read: they were still written, so they count.
            logger.debug("erasure meter: process %d exited before its clear (%s)", pid, exc)
        return counted.dirty_pages

    @staticmethod
    def _clear(pid: int, directory: int) -> bool:
        with _opened("clear_refs", _CLEAR_FLAGS, dir_fd=directory) as clear_refs:
            os.write(clear_refs, CLEAR_SOFT_DIRTY)
        return True


# --- the OS: does this kernel have soft-dirty bits? -------------------------------------------


@dataclass(frozen=True)
class Support:
    """Whether the erasure meter can see anything on this kernel, and why."""

    available: bool
    reason: str


def config_has_soft_dirty(config_text: str) -> bool:
    """Whether a kernel config (`.config` text) builds soft-dirty tracking in."""
    return any(line.strip() == f"{CONFIG_OPTION}=y" for line in config_text.splitlines())


def _read_config(procfs_root: str, boot_root: str) -> tuple[str, str] | None:
    """(where, config text) from `<procfs>/config.gz`, else `<boot>/config-<release>`."""
    release = _kernel_release(procfs_root)
    for path in (f"{procfs_root}/config.gz", f"{boot_root}/config-{release}"):
        try:
            if path.endswith(".gz"):
                with gzip.open(path, "rt", errors="replace") as config:
                    return path, config.read()
            return path, Path(path).read_text(errors="replace")
        except FileNotFoundError:
            continue
        except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
            logger.warning("cannot read kernel config %s: %s", path, exc)
    return None


def _kernel_release(procfs_root: str) -> str:
    try:
        return Path(f"{procfs_root}/sys/kernel/osrelease").read_text().strip()
    except OSError as exc:
        logger.debug("no osrelease under %s (%s): using uname", procfs_root, exc)
        return os.uname().release


def probe_soft_dirty(procfs_root: str = "/proc") -> bool | None:
    """Whether a page this process writes after a clear gets bit 55 (None: no answer).

    Clears the calling process's own soft-dirty bits: never call it from a process that a
    `SoftDirtyMeter` is metering. Reading one's own pagemap flags needs no privilege (only the
    page frame numbers do), and neither does writing one's own clear_refs.
    """
    page_size = mmap.PAGESIZE
    page = mmap.mmap(-1, page_size)
    view = (ctypes.c_char * page_size).from_buffer(page)
    try:
        address = ctypes.addressof(view)
        page[0] = 1  # fault it in, so that it is present when read
        with (
            _opened(f"{procfs_root}/self/pagemap", _READ_FLAGS) as pagemap,
            _opened(f"{procfs_root}/self/clear_refs", _CLEAR_FLAGS) as clear_refs,
        ):
            os.write(clear_refs, CLEAR_SOFT_DIRTY)
            cleared = _entry(pagemap, address, page_size)
            page[0] = 2
            written = _entry(pagemap, address, page_size)
    except OSError as exc:
        logger.warning("soft-dirty probe on this process failed: %s", exc)
        return None
    finally:
        del view
        page.close()
    if not written >> PRESENT_BIT & 1 or cleared >> SOFT_DIRTY_BIT & 1:
        return None  # the page was not there to read, or the clear did not clear
    return bool(written >> SOFT_DIRTY_BIT & 1)


def _entry(pagemap: int, address: int, page_size: int) -> int:
    data = os.pread(pagemap, PAGEMAP_ENTRY_BYTES, address // page_size * PAGEMAP_ENTRY_BYTES)
    if len(data) != PAGEMAP_ENTRY_BYTES:
        raise OSError(f"short pagemap read at {address:#x}: {len(data)} bytes")
    return int.from_bytes(data, "little")


def soft_dirty_support(
    procfs_root: str | Path = "/proc", boot_root: str | Path = "/boot"
) -> Support:
    """Whether this kernel sets soft-dirty bits: a probe on this process when `procfs_root` is
    the real /proc (see `probe_soft_dirty`: it clears this process's bits), then the kernel
    config (`<procfs_root>/config.gz`, else `<boot_root>/config-<release>`)."""
    root, boot = os.fspath(procfs_root), os.fspath(boot_root)
    probed = probe_soft_dirty(root) if os.path.realpath(root) == "/proc" else None
    config = _read_config(root, boot)
    if config is None:
        where = f"{root}/config.gz or {boot}/config-{_kernel_release(root)}"
        return decide_support(probed, None, f"no kernel config at {where}")
    return decide_support(probed, config_has_soft_dirty(config[1]), config[0])


def decide_support(probed: bool | None, built_in: bool | None, config_where: str) -> Support:
    """The verdict from a probe (None: not run or no answer) and the kernel config (None: not
    found, `config_where` then says where it was looked for). A probe that saw the bit wins."""
    if probed:
        return Support(True, "a page written after clear_refs was marked soft-dirty (probe)")
    if built_in is False:
        return Support(
            False,
            f"this kernel has no soft-dirty bits ({CONFIG_OPTION} is not set in {config_where})",
        )
    if probed is False:
        config = f"{CONFIG_OPTION}=y in {config_where}" if built_in else config_where
        return Support(
            False, f"a page written after clear_refs was not marked soft-dirty ({config})"
        )
    if built_in:
        return Support(True, f"{CONFIG_OPTION}=y in {config_where} (not probed)")
    return Support(False, f"cannot tell whether {CONFIG_OPTION} is set: {config_where}, no probe")
