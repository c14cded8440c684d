"""A process's memory map (`/proc/PID/maps`): which file, if any, backs an address.

Rules of the pure part (`parse_maps`, `MemoryMap`):

- One line per mapping: `start-end perms offset dev inode [path]`, addresses and offset in hex,
  `end` exclusive. The path is everything after the inode, spaces included; it is empty for an
  anonymous mapping and names a kernel object in brackets (`[heap]`, `[stack]`, `[vdso]`,
  `[vsyscall]`, `[anon:NAME]` set by `prctl(PR_SET_VMA_ANON_NAME)`).
- A file unlinked (or replaced by a rename) since it was mapped keeps its mapping; the kernel
  appends ` (deleted)` to its path. `MemoryMapping.file_path` is the path without that suffix,
  which is how the file was known when it was mapped.
- Mappings never overlap and the kernel lists them in address order; `MemoryMap` keeps them
  sorted and finds the one holding an address by bisection.

`read_maps` and `MapsQuery` (the PROCMAP_QUERY ioctl, one address at a time, Linux 6.11+) touch
the OS; both take the procfs root.
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import enum
import errno
import fcntl
import os
import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from maxwell.errors import MaxwellError, ProcessError

DELETED_SUFFIX = " (deleted)"
ANONYMOUS = "[anon]"  # the label of a mapping with no path at all
# Mappings the kernel provides and fills: its vdso and vvar data, the legacy vsyscall page, the
# uprobes out-of-line area, and 32-bit ARM's vector and signal pages. Any other bracketed name
# (`[heap]`, `[stack]`, `[anon:NAME]`, `[anon_shmem:NAME]`) is user memory with no file.
KERNEL_MAPPINGS = frozenset(
    {"[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]", "[uprobes]", "[vectors]", "[sigpage]"}
)


_EXECUTABLE_LINE = re.compile(
    r"^([0-9a-f]+)-([0-9a-f]+) ([r-][w-]x[ps]) ([0-9a-f]+) ([0-9a-f]+:[0-9a-f]+) ([0-9]+) *(.*)$",
    re.MULTILINE,
)


class Backing(enum.Enum):
    """What holds the bytes of a mapping."""

    FILE = "file"
    ANONYMOUS = "anonymous"
    KERNEL = "kernel"


class MapsFormatError(MaxwellError, ValueError):
    """A line of a maps file is not in the kernel's format."""

    def __init__(self, message: str, *, line_number: int) -> None:
        super().__init__(f"maps line {line_number}: {message}")
        self.line_number = line_number


class ProcessGoneError(ProcessError):
    """The process exited (or never existed): its /proc directory is gone."""


class ProcfsPermissionError(ProcessError):
    """This user may not read the process's /proc files (another user's process, not root)."""


@dataclass(frozen=True)
class MemoryMapping:
    """One line of /proc/PID/maps. `end` is exclusive."""

    start: int
    end: int
    perms: str  # "r-xp": read, write, execute, p(rivate) or s(hared)
    offset: int  # file offset of `start` (0 for anonymous mappings)
    dev: str  # "major:minor" of the file's device, hex; "00:00" when there is no file
    inode: int  # 0 when there is no file
    path: str  # as the kernel prints it, " (deleted)" included; "" when anonymous

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def is_executable(self) -> bool:
        return self.perms[2] == "x"

    @property
    def is_deleted(self) -> bool:
        return self.path.endswith(DELETED_SUFFIX)

    @property
    def is_file_backed(self) -> bool:
        """Backed by a file with an inode (a memfd counts: `/memfd:NAME (deleted)`).

        Shared anonymous memory also has an inode on the kernel's internal shmem mount and
        prints as `/dev/zero (deleted)` or `[anon_shmem:NAME]`; it is anonymous here.
        """
        if self.inode == 0 or not self.path.startswith("/"):
            return False
        return self.file_path != "/dev/zero" or not self.is_deleted

    @property
    def file_path(self) -> str:
        """The path without the kernel's ` (deleted)` suffix."""
        return self.path.removesuffix(DELETED_SUFFIX)

    @property
    def backing(self) -> Backing:
        if self.is_file_backed:
            return Backing.FILE
        if self.path in KERNEL_MAPPINGS:
            return Backing.KERNEL
        return Backing.ANONYMOUS

    @property
    def label(self) -> str:
        """What a sample in this mapping is attributed to: the file's path for a file, the
        kernel's bracketed name (`[heap]`, `[vdso]`, ...) otherwise, `[anon]` for no name."""
        if self.is_file_backed:
            return self.file_path
        if not self.path or self.path == "/dev/zero (deleted)":
            return ANONYMOUS
        return self.path

    def contains(self, address: int) -> bool:
        return self.start <= address < self.end

    def file_offset_of(self, address: int) -> int:
        """The offset in the backing object of `address` (which must be inside the mapping)."""
        return self.offset + (address - self.start)


def parse_maps_line(line: str, *, line_number: int = 1) -> MemoryMapping:
    """One line of /proc/PID/maps."""
    fields = line.split(maxsplit=5)
    if len(fields) < 5:
        raise MapsFormatError(
            f"expected at least 5 fields, got {len(fields)}", line_number=line_number
        )
    span, perms, offset, dev, inode = fields[:5]
    # maxsplit keeps the path's inner spaces; the kernel pads before the path with spaces.
    path = fields[5].rstrip("\n") if len(fields) == 6 else ""
    start_text, dash, end_text = span.partition("-")
    if not dash or len(perms) != 4 or ":" not in dev:
        raise MapsFormatError(f"not a mapping: {line.rstrip()!r}", line_number=line_number)
    try:
        start, end = int(start_text, 16), int(end_text, 16)
        mapping = MemoryMapping(
            start=start,
            end=end,
            perms=perms,
            offset=int(offset, 16),
            dev=dev,
            inode=int(inode),
            path=path,
        )
    except ValueError as exc:
        raise MapsFormatError(f"bad number in {line.rstrip()!r}", line_number=line_number) from exc
    if end <= start:
        raise MapsFormatError(f"empty or inverted range {span}", line_number=line_number)
    return mapping


def parse_maps(text: str, *, executable_only: bool = False) -> MemoryMap:
    """The whole text of a /proc/PID/maps file.

    `executable_only`: keep only the executable mappings, found by one regular-expression scan
    (an IP audit needs only those, and a numpy process has hundreds of other lines). A line
    that does not match is skipped unread in that mode, so a malformed one shows up as an
    address in no mapping rather than as `MapsFormatError`.
    """
    if executable_only:
        return MemoryMap(
            MemoryMapping(
                start=int(match[1], 16),
                end=int(match[2], 16),
                perms=match[3],
                offset=int(match[4], 16),
                dev=match[5],
                inode=int(match[6]),
                path=match[7],
            )
            for match in _EXECUTABLE_LINE.finditer(text)
        )
    return MemoryMap(
        parse_maps_line(line, line_number=number)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    )


class MemoryMap:
    """A process's mappings in address order, with lookup by address."""

    def __init__(self, mappings: Iterable[MemoryMapping]) -> None:
        self._mappings = sorted(mappings, key=lambda mapping: mapping.start)
        self._starts = [mapping.start for mapping in self._mappings]

    def mapping_for(self, address: int) -> MemoryMapping | None:
        """The mapping that holds `address`, or None if no mapping does."""
        index = bisect.bisect_right(self._starts, address) - 1
        if index < 0:
            return None
        mapping = self._mappings[index]
        return mapping if address < mapping.end else None

    def executable(self) -> list[MemoryMapping]:
        return [mapping for mapping in self._mappings if mapping.is_executable]

    def __getitem__(self, index: int) -> MemoryMapping:
        return self._mappings[index]

    def __len__(self) -> int:
        return len(self._mappings)

    def __iter__(self) -> Iterator[MemoryMapping]:
        return iter(self._mappings)

    def __repr__(self) -> str:
        return f"MemoryMap({len(self._mappings)} mappings)"


def read_maps(
    process: int | str, *, procfs_root: str | Path = "/proc", executable_only: bool = False
) -> MemoryMap:
    """Read and parse `<procfs_root>/<process>/maps` (`process`: a pid, or "self")."""
    path = Path(procfs_root) / str(process) / "maps"
    with _translated_errors(process, path):
        # Paths are bytes to the kernel: decode them as the OS does (undecodable bytes kept).
        text = os.fsdecode(path.read_bytes())
    return parse_maps(text, executable_only=executable_only)


@contextlib.contextmanager
def _translated_errors(process: int | str, path: str | Path) -> Iterator[None]:
    pid = process if isinstance(process, int) else None
    try:
        yield
    except (FileNotFoundError, ProcessLookupError) as exc:  # ESRCH: it exited meanwhile
        raise ProcessGoneError(f"process {process} is gone ({path})", pid=pid) from exc
    except PermissionError as exc:
        raise ProcfsPermissionError(f"may not read {path}", pid=pid) from exc


# --- one address at a time: PROCMAP_QUERY -----------------------------------------------------

PROCMAP_QUERY = 0xC0686611  # _IOWR('f', 17, struct procmap_query), Linux 6.11+
# struct procmap_query: size, query_flags, query_addr, vma_start, vma_end, vma_flags,
# vma_page_size, vma_offset, inode (u64); dev_major, dev_minor, vma_name_size, build_id_size
# (u32); vma_name_addr, build_id_addr (u64).
_QUERY = struct.Struct("=9Q4I2Q")
_VMA_READABLE, _VMA_WRITABLE, _VMA_EXECUTABLE, _VMA_SHARED = 1, 2, 4, 8
_NAME_BUFFER = 8192  # PATH_MAX and the " (deleted)" suffix, with room to spare


class ProcmapQueryUnsupportedError(MaxwellError):
    """The kernel answers no PROCMAP_QUERY (before Linux 6.11), or the file is not a procfs
    maps file (a fake tree): read and parse the text instead."""


def mapping_from_query(fields: tuple[int, ...], name: bytes) -> MemoryMapping:
    """A `MemoryMapping` from the unpacked `struct procmap_query` and the name it returned."""
    _size, _flags, _address, start, end, vma_flags, _page, offset, inode, major, minor = fields[:11]
    perms = "".join(
        (
            "r" if vma_flags & _VMA_READABLE else "-",
            "w" if vma_flags & _VMA_WRITABLE else "-",
            "x" if vma_flags & _VMA_EXECUTABLE else "-",
            "s" if vma_flags & _VMA_SHARED else "p",
        )
    )
    return MemoryMapping(
        start=start,
        end=end,
        perms=perms,
        offset=offset,
        dev=f"{major:02x}:{minor:02x}",
        inode=inode,
        path=os.fsdecode(name),
    )


class MapsQuery:
    """Finds the mapping of one address with the PROCMAP_QUERY ioctl on an open
    /proc/PID/maps: no text is generated or parsed, which for a process with hundreds of
    mappings is most of an audit's cost. Same answers as `read_maps(...).mapping_for`, except
    for `[vsyscall]`, which is not a mapping the ioctl knows (None: ask the text)."""

    def __init__(self, descriptor: int, process: int | str, path: str) -> None:
        self._descriptor = descriptor
        self._process = process
        self._path = path
        self._name = ctypes.create_string_buffer(_NAME_BUFFER)

    @classmethod
    def open(cls, process: int | str, *, procfs_root: str | Path = "/proc") -> MapsQuery:
        path = f"{os.fspath(procfs_root)}/{process}/maps"  # not pathlib: this is per audit
        with _translated_errors(process, path):
            return cls(os.open(path, os.O_RDONLY | os.O_CLOEXEC), process, path)

    def close(self) -> None:
        os.close(self._descriptor)

    def __enter__(self) -> MapsQuery:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def mapping_for(self, address: int) -> MemoryMapping | None:
        """The mapping holding `address`; None if none does (to the ioctl's knowledge)."""
        request = bytearray(
            _QUERY.pack(
                _QUERY.size, 0, address, 0, 0, 0, 0, 0, 0, 0, 0, _NAME_BUFFER, 0,
                ctypes.addressof(self._name), 0,
            )
        )  # fmt: skip
        try:
            fcntl.ioctl(self._descriptor, PROCMAP_QUERY, request, True)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            if exc.errno in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP):
                raise ProcmapQueryUnsupportedError(
                    f"no PROCMAP_QUERY on {self._path}: {exc.strerror}"
                ) from exc
            with _translated_errors(self._process, self._path):
                raise  # ESRCH: the process is gone; EACCES: not ours to read
        fields = _QUERY.unpack(request)
        name_size = fields[11]
        return mapping_from_query(fields, self._name.raw[: max(0, name_size - 1)])
