"""An agent's code manifest: the sha256 of every 4 KiB page of code it may execute.

A page is named by the module it belongs to and its offset in that module's file, because that
is what an instruction pointer maps to: a file-backed mapping [start, end) at file offset `off`
holds, at address `start + k*4096`, the file's bytes at `off + k*4096` (the kernel maps whole
pages, and `off` is page-aligned). So a page read from process memory can be compared with the
page hashed from the file without knowing where the loader put the module.

What is hashed, per module:

- ELF files: every page that the executable segments (`PT_LOAD` with `PF_X`) cover, from the
  segment's file offset rounded down to a page to its end (`p_offset + p_filesz`) rounded up. A
  page past the end of the file reads as zeros in memory, and is hashed zero-padded.
- `[vdso]`: the kernel's own code, mapped into every process. It is not a file; its pages are
  hashed from a process's memory (`from_process`: the agent's own; `from_files`: the auditor's,
  which is the same kernel image for a process of the same ABI). Keyed by offset in the vdso.
- `[vsyscall]`: the legacy fixed page (0xffffffffff600000). It is execute-only (modern kernels
  emulate it and user space cannot read it), so it is not hashed: it is allowed by name
  (`KERNEL_ALLOWED`), being the kernel's and not writable by user space. So is `[uprobes]`, the
  kernel's out-of-line area where a probed instruction is single-stepped (its content is the
  kernel's copy of declared code, and changes as probes come and go).

Honest limits:

- A page of code that the dynamic loader relocates (text relocations, `DT_TEXTREL`: non-PIC
  code in a shared library) differs between file and memory. Position-independent code, which
  is what distributions and wheels ship, is never written to: its relocations are in the GOT
  and other data pages, not in these. A module with text relocations is marked
  (`text_relocations`) so that a mismatch there can be told apart from tampering.
- A debugger's breakpoint or a uprobe changes the page as seen through /proc/PID/mem: honest
  but instrumented code fails the check.
- Code generated at run time (a JIT: PyPy, the JVM, numba, libffi closures on some systems) is
  anonymous executable memory and has no file to hash; the check reports it as such, and the
  policy decides whether a declared JIT may run there.

`from_files`, `from_process` and `hash_elf_file` touch the OS (`from_*` take `procfs_root`);
parsing and hashing (`parse_elf_code`, `hash_pages`, `hash_elf_code` over any positional
reader) and the JSON form are pure.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from maxwell.audit.maps import (
    MemoryMap,
    MemoryMapping,
    ProcessGoneError,
    ProcfsPermissionError,
    read_maps,
)
from maxwell.errors import MaxwellError

ReadAt = Callable[[int, int], bytes]  # (offset, size) -> the file's bytes there, short at EOF

PAGE_SIZE = 4096
VDSO = "[vdso]"
VSYSCALL = "[vsyscall]"
UPROBES = "[uprobes]"
KERNEL_ALLOWED = frozenset({VSYSCALL, UPROBES})  # kernel pages accepted by name (docstring)
MANIFEST_FORMAT = 1

PT_LOAD = 1
PT_DYNAMIC = 2
PF_X = 1
DT_NULL = 0
DT_TEXTREL = 22
DT_FLAGS = 30
DF_TEXTREL = 0x4
PN_XNUM = 0xFFFF
ELF_MAGIC = b"\x7fELF"
ELFCLASS32 = 1
ELFCLASS64 = 2
ELFDATA2LSB = 1
ELFDATA2MSB = 2


class ManifestError(MaxwellError):
    """A manifest could not be built or read."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class NotElfError(ManifestError, ValueError):
    """A declared code file is not an ELF file (or is truncated)."""


class CodeFileUnreadableError(ManifestError):
    """A declared code file could not be opened or read (missing, permission, I/O)."""


class ManifestFormatError(ManifestError, ValueError):
    """Stored manifest JSON is not a manifest this version understands."""


@dataclass(frozen=True)
class ExecutableRange:
    """The page-aligned file range [start, end) of one executable segment; `file_end` is where
    the segment's bytes end in the file (past it, memory reads zeros)."""

    start: int
    end: int
    file_end: int


@dataclass(frozen=True)
class ElfCode:
    """What a manifest needs from an ELF file's program headers."""

    ranges: tuple[ExecutableRange, ...]
    text_relocations: bool


@dataclass(frozen=True)
class ModuleCode:
    """The code pages of one module: page-aligned file offset -> sha256 hex digest."""

    name: str  # the file's path as /proc/PID/maps prints it, or "[vdso]"
    pages: Mapping[int, str]
    text_relocations: bool = False
    source: str = "file"  # "file": hashed from the file; "memory": from a process (the vdso)


def _page_down(value: int) -> int:
    return value - value % PAGE_SIZE


def _page_up(value: int) -> int:
    return _page_down(value + PAGE_SIZE - 1)


def parse_elf_code(header: bytes, read_at: ReadAt, *, name: str = "<elf>") -> ElfCode:
    """The executable ranges and text-relocation flag of an ELF file.

    `header`: at least the first 64 bytes; `read_at(offset, size)`: the file's bytes there.
    """
    if len(header) < 52 or header[:4] != ELF_MAGIC:
        raise NotElfError(f"{name} is not an ELF file", path=name)
    elf_class, data = header[4], header[5]
    if data not in (ELFDATA2LSB, ELFDATA2MSB) or elf_class not in (ELFCLASS32, ELFCLASS64):
        raise NotElfError(f"{name}: unknown ELF class {elf_class} or data {data}", path=name)
    order = "<" if data == ELFDATA2LSB else ">"
    if elf_class == ELFCLASS64:
        if len(header) < 64:
            raise NotElfError(f"{name}: truncated ELF header", path=name)
        phoff, phentsize, phnum = _unpack(order + "32xQ14xHH", header, 0, name)
        phdr_format, dyn_format = order + "IIQQQQQQ", order + "qQ"
    else:
        phoff, phentsize, phnum = _unpack(order + "28xI10xHH", header, 0, name)
        phdr_format, dyn_format = order + "IIIIIIII", order + "iI"
    if phnum == PN_XNUM:
        raise NotElfError(f"{name}: more than 65534 program headers (PN_XNUM)", path=name)
    if phnum and phentsize < struct.calcsize(phdr_format):
        raise NotElfError(f"{name}: program header entries of {phentsize} bytes", path=name)
    table = read_at(phoff, phnum * phentsize)
    ranges: list[ExecutableRange] = []
    dynamic: tuple[int, int] | None = None
    for index in range(phnum):
        fields = _unpack(phdr_format, table, index * phentsize, name)
        if elf_class == ELFCLASS64:
            p_type, p_flags, p_offset, _vaddr, _paddr, p_filesz = fields[:6]
        else:
            p_type, p_offset, _vaddr, _paddr, p_filesz, _memsz, p_flags = fields[:7]
        if p_type == PT_LOAD and p_flags & PF_X and p_filesz:
            file_end = p_offset + p_filesz
            ranges.append(ExecutableRange(_page_down(p_offset), _page_up(file_end), file_end))
        elif p_type == PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)
    return ElfCode(
        ranges=tuple(ranges),
        text_relocations=dynamic is not None
        and _has_text_relocations(read_at(*dynamic), dyn_format, name),
    )


def _unpack(fmt: str, buffer: bytes, offset: int, name: str) -> tuple[int, ...]:
    try:
        return struct.unpack_from(fmt, buffer, offset)
    except struct.error as exc:
        raise NotElfError(f"{name}: truncated ELF headers", path=name) from exc


def _has_text_relocations(dynamic: bytes, dyn_format: str, name: str) -> bool:
    size = struct.calcsize(dyn_format)
    for offset in range(0, len(dynamic) - size + 1, size):
        tag, value = _unpack(dyn_format, dynamic, offset, name)
        if tag == DT_NULL:
            break
        if tag == DT_TEXTREL or (tag == DT_FLAGS and value & DF_TEXTREL):
            return True
    return False


def page_sha256(page: bytes) -> str:
    """The digest of one page; a short page (the end of a file) is zero-padded as in memory."""
    if len(page) < PAGE_SIZE:
        page = page.ljust(PAGE_SIZE, b"\0")
    return hashlib.sha256(page).hexdigest()


def hash_pages(ranges: Iterable[ExecutableRange], read_at: ReadAt) -> dict[int, str]:
    """Digest of every page in `ranges`, by page-aligned file offset."""
    pages: dict[int, str] = {}
    for span in ranges:
        # Bytes after the segment's end but inside its last page are still the file's bytes
        # in memory (the kernel maps whole pages), so hash them as they are in the file.
        content = memoryview(read_at(span.start, span.end - span.start))
        for offset in range(span.start, span.end, PAGE_SIZE):
            begin = offset - span.start
            pages[offset] = page_sha256(bytes(content[begin : begin + PAGE_SIZE]))
    return pages


class _FileReader:
    """Positional reads of an open file; short at the end of the file, never past it."""

    def __init__(self, descriptor: int, name: str) -> None:
        self._descriptor = descriptor
        self._name = name

    def __call__(self, offset: int, size: int) -> bytes:
        chunks: list[bytes] = []
        while size > 0:
            try:
                chunk = os.pread(self._descriptor, size, offset)
            except OSError as exc:
                raise CodeFileUnreadableError(
                    f"cannot read {self._name} at {offset:#x}: {exc.strerror}", path=self._name
                ) from exc
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
            size -= len(chunk)
        return b"".join(chunks)


def hash_elf_file(path: Path, *, name: str) -> ModuleCode:
    """The `ModuleCode` of the ELF file at `path`, recorded under `name`."""
    descriptor = _open_code_file(path, name)
    try:
        return hash_elf_code(_FileReader(descriptor, name), name=name)
    finally:
        os.close(descriptor)


def hash_elf_code(read_at: ReadAt, *, name: str) -> ModuleCode:
    """The `ModuleCode` of an ELF file given as a positional reader."""
    code = parse_elf_code(read_at(0, 64), read_at, name=name)
    pages = hash_pages(code.ranges, read_at)
    return ModuleCode(name=name, pages=pages, text_relocations=code.text_relocations)


def _open_code_file(path: Path, name: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise CodeFileUnreadableError(f"cannot open {name}: {exc.strerror}", path=name) from exc


@dataclass(frozen=True)
class CodeManifest:
    """The code an agent may execute, by module (file path or `[vdso]`) and page."""

    modules: Mapping[str, ModuleCode] = field(default_factory=dict)

    def declares(self, module: str) -> bool:
        return module in self.modules or module in KERNEL_ALLOWED

    def expected_page(self, module: str, offset: int) -> str | None:
        """The digest the page at `offset` of `module` must have; None if not in the manifest."""
        code = self.modules.get(module)
        return None if code is None else code.pages.get(offset)

    def digests(self) -> frozenset[str]:
        """Every page digest in the manifest, whichever module."""
        return frozenset(d for code in self.modules.values() for d in code.pages.values())

    def page_count(self) -> int:
        return sum(len(code.pages) for code in self.modules.values())

    def merged(self, other: CodeManifest) -> CodeManifest:
        """Both manifests' modules; `other`'s entry wins for a module in both."""
        return CodeManifest({**self.modules, **other.modules})

    # --- JSON: for storage in SQLite -----------------------------------------------------------

    def to_json(self) -> str:
        """Compact JSON: per module, runs of consecutive pages as [first offset, digests...]."""
        modules: dict[str, object] = {}
        for name, code in sorted(self.modules.items()):
            runs: list[dict[str, object]] = []
            for offset in sorted(code.pages):
                last = runs[-1] if runs else None
                if last is not None and offset == _run_end(last):
                    _run_digests(last).append(code.pages[offset])
                else:
                    runs.append({"offset": offset, "sha256": [code.pages[offset]]})
            modules[name] = {
                "source": code.source,
                "text_relocations": code.text_relocations,
                "runs": runs,
            }
        return json.dumps(
            {"format": MANIFEST_FORMAT, "page_size": PAGE_SIZE, "modules": modules},
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> CodeManifest:
        try:
            document = json.loads(text)
            if document["format"] != MANIFEST_FORMAT or document["page_size"] != PAGE_SIZE:
                raise ManifestFormatError(
                    f"manifest format {document['format']} with {document['page_size']}-byte "
                    f"pages; this version reads format {MANIFEST_FORMAT}, {PAGE_SIZE}-byte pages"
                )
            modules: dict[str, ModuleCode] = {}
            for name, entry in document["modules"].items():
                pages: dict[int, str] = {}
                for run in entry["runs"]:
                    first = int(run["offset"])
                    for index, digest in enumerate(run["sha256"]):
                        pages[first + index * PAGE_SIZE] = str(digest)
                modules[str(name)] = ModuleCode(
                    name=str(name),
                    pages=pages,
                    text_relocations=bool(entry["text_relocations"]),
                    source=str(entry["source"]),
                )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            if isinstance(exc, ManifestFormatError):
                raise
            raise ManifestFormatError(f"not a code manifest: {exc}") from exc
        return cls(modules)

    # --- the OS --------------------------------------------------------------------------------

    @classmethod
    def from_files(
        cls,
        paths: Iterable[str | Path],
        *,
        include_vdso: bool = True,
        procfs_root: str | Path = "/proc",
    ) -> CodeManifest:
        """The manifest of declared ELF files (binaries and libraries), keyed by real path
        (what /proc/PID/maps shows once symlinks are resolved), plus, unless told otherwise,
        the kernel's vdso as mapped in this process (`<procfs_root>/self`)."""
        modules: dict[str, ModuleCode] = {}
        for path in paths:
            name = os.path.realpath(path)
            modules[name] = hash_elf_file(Path(name), name=name)
        if include_vdso:
            vdso = _vdso_of("self", procfs_root)
            if vdso is not None:
                modules[VDSO] = vdso
        return cls(modules)

    @classmethod
    def from_process(cls, pid: int, *, procfs_root: str | Path = "/proc") -> CodeManifest:
        """The manifest of the code a running process has mapped: every file-backed executable
        mapping's file (hashed from the file, not from memory), and its vdso.

        What a daemon computes when an agent declared nothing: call it at spawn, once the
        agent's libraries are loaded; code loaded later is then undeclared. Each file is opened
        through `<procfs_root>/PID/map_files/`, so that it is the inode the process mapped even
        if the path was since deleted, replaced, or is not visible from the auditor's mount
        namespace; where that is not allowed (it needs CAP_SYS_ADMIN), through its path, which
        must then still be the same inode.
        """
        memory_map = read_maps(pid, procfs_root=procfs_root, executable_only=True)
        modules: dict[str, ModuleCode] = {}
        for mapping in memory_map.executable():
            if mapping.is_file_backed and mapping.label not in modules:
                modules[mapping.label] = _hash_mapped_file(pid, mapping, memory_map, procfs_root)
        vdso = _vdso_of(str(pid), procfs_root, memory_map)
        if vdso is not None:
            modules[VDSO] = vdso
        return cls(modules)


def _hash_mapped_file(
    pid: int, mapping: MemoryMapping, memory_map: MemoryMap, procfs_root: str | Path
) -> ModuleCode:
    """Hash the file behind `mapping` as `from_process` describes.

    A file mapped executable that is not ELF (libffi's trampoline file, a data file mapped
    PROT_EXEC) is hashed over the ranges the process maps executable from it instead.
    """
    name = mapping.label
    by_mapping = Path(procfs_root) / str(pid) / "map_files" / f"{mapping.start:x}-{mapping.end:x}"
    try:
        descriptor = os.open(by_mapping, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        descriptor = _open_by_path(pid, mapping)
    try:
        read_at = _FileReader(descriptor, name)
        try:
            return hash_elf_code(read_at, name=name)
        except NotElfError:
            ranges = [
                ExecutableRange(m.offset, m.offset + m.size, m.offset + m.size)
                for m in memory_map.executable()
                if m.is_file_backed and m.label == name
            ]
            return ModuleCode(name=name, pages=hash_pages(ranges, read_at), source="mapped-range")
    finally:
        os.close(descriptor)


def _open_by_path(pid: int, mapping: MemoryMapping) -> int:
    name = mapping.label
    descriptor = _open_code_file(Path(name), name)
    if os.fstat(descriptor).st_ino != mapping.inode:
        os.close(descriptor)
        raise CodeFileUnreadableError(
            f"process {pid} maps inode {mapping.inode} from {name}, which is now another file "
            "(replaced since mapped), and its map_files entry is not readable",
            path=name,
        )
    return descriptor


def _run_end(run: Mapping[str, object]) -> int:
    offset = run["offset"]
    assert isinstance(offset, int)
    return offset + len(_run_digests(run)) * PAGE_SIZE


def _run_digests(run: Mapping[str, object]) -> list[str]:
    digests = run["sha256"]
    assert isinstance(digests, list)
    return digests


def _open_mem(path: Path, process: str | int) -> int:
    pid = process if isinstance(process, int) else None
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise ProcessGoneError(f"process {process} is gone ({path})", pid=pid) from exc
    except PermissionError as exc:
        raise ProcfsPermissionError(f"may not read {path}", pid=pid) from exc


def read_page(mem_descriptor: int, address: int) -> bytes:
    """One page from an open /proc/PID/mem; raises OSError (EIO: not readable there)."""
    if address >= 1 << 63:
        # pread(2) takes a signed offset; only [vsyscall] lives up there, and it is
        # execute-only anyway.
        raise OSError(errno.EINVAL, f"address {address:#x} beyond pread's signed offsets")
    return os.pread(mem_descriptor, PAGE_SIZE, _page_down(address))


def _vdso_of(
    process: str, procfs_root: str | Path, memory_map: MemoryMap | None = None
) -> ModuleCode | None:
    """The vdso's pages hashed from the memory of `process` (a pid or "self"), if it has one."""
    if memory_map is None:
        memory_map = read_maps(process, procfs_root=procfs_root)
    vdso = next((m for m in memory_map if m.path == VDSO), None)
    if vdso is None:
        return None
    path = Path(procfs_root) / process / "mem"
    descriptor = _open_mem(path, process)
    pages: dict[int, str] = {}
    try:
        for address in range(vdso.start, vdso.end, PAGE_SIZE):
            try:
                page = read_page(descriptor, address)
            except OSError as exc:
                raise ManifestError(
                    f"cannot read the vdso of process {process}: {exc.strerror}"
                ) from exc
            pages[vdso.file_offset_of(address)] = page_sha256(page)
    finally:
        os.close(descriptor)
    return ModuleCode(name=VDSO, pages=pages, source="memory")
