"""Code manifests: ELF program headers parsed by hand, pages hashed, checked against real memory.

The synthetic ELF files pin the arithmetic (page rounding, zero padding past the end of the
file, both classes and byte orders, text relocations). The real ones (libc, libpython, the
python executable, numpy's OpenBLAS) show that a page read from a running process's memory is
the page hashed from the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from maxwell.audit.manifest import (
    KERNEL_ALLOWED,
    PAGE_SIZE,
    VDSO,
    VSYSCALL,
    CodeFileUnreadableError,
    CodeManifest,
    ExecutableRange,
    ManifestFormatError,
    ModuleCode,
    NotElfError,
    hash_elf_code,
    hash_elf_file,
    page_sha256,
    parse_elf_code,
    read_page,
)
from maxwell.audit.maps import MemoryMap, read_maps

PT_LOAD, PT_DYNAMIC, PF_X, PF_R = 1, 2, 1, 4
DT_FLAGS, DF_TEXTREL, DT_TEXTREL = 30, 4, 22

assert np.ones(2) @ np.ones(2) == 2.0  # numpy's BLAS is loaded in this process from here on


# --- synthetic ELF files ----------------------------------------------------------------------


def build_elf(
    *,
    elf64: bool,
    little: bool,
    segments: list[tuple[int, int, int, int]],  # (p_type, p_flags, p_offset, p_filesz)
    size: int,
    dynamic: list[tuple[int, int]] | None = None,  # written at the PT_DYNAMIC segment
) -> bytes:
    order = "<" if little else ">"
    content = bytearray((index * 7 + 3) % 251 for index in range(size))
    header_size, phdr_size = (64, 56) if elf64 else (52, 32)
    ident = b"\x7fELF" + bytes([2 if elf64 else 1, 1 if little else 2, 1]) + bytes(9)
    if elf64:
        header = ident + struct.pack(
            order + "HHIQQQIHHHHHH", 3, 62, 1, 0, header_size, 0, 0, header_size, phdr_size,
            len(segments), 0, 0, 0,
        )  # fmt: skip
    else:
        header = ident + struct.pack(
            order + "HHIIIIIHHHHHH", 3, 3, 1, 0, header_size, 0, 0, header_size, phdr_size,
            len(segments), 0, 0, 0,
        )  # fmt: skip
    content[: len(header)] = header
    for index, (p_type, p_flags, p_offset, p_filesz) in enumerate(segments):
        if elf64:
            entry = struct.pack(
                order + "IIQQQQQQ", p_type, p_flags, p_offset, p_offset, p_offset, p_filesz,
                p_filesz, PAGE_SIZE,
            )  # fmt: skip
        else:
            entry = struct.pack(
                order + "IIIIIIII", p_type, p_offset, p_offset, p_offset, p_filesz, p_filesz,
                p_flags, PAGE_SIZE,
            )  # fmt: skip
        at = header_size + index * phdr_size
        content[at : at + phdr_size] = entry
        if p_type == PT_DYNAMIC and dynamic is not None:
            table = b"".join(
                struct.pack(order + ("qQ" if elf64 else "iI"), tag, value)
                for tag, value in [*dynamic, (0, 0)]
            )
            content[p_offset : p_offset + len(table)] = table
    return bytes(content)


class BytesReader:
    """Positional reads of bytes in memory, short at the end like a file."""

    def __init__(self, content: bytes) -> None:
        self.content = content

    def __call__(self, offset: int, size: int) -> bytes:
        return self.content[offset : offset + size]


@pytest.mark.parametrize(("elf64", "little"), [(True, True), (False, False), (False, True)])
def test_executable_segment_pages_rounded_and_zero_padded(elf64: bool, little: bool) -> None:
    # Code from 0x1010 to 0x3010, the file ending at 0x3800: pages 0x1000, 0x2000, 0x3000,
    # the last one short in the file and zero-filled in memory.
    content = build_elf(
        elf64=elf64,
        little=little,
        segments=[(PT_LOAD, PF_R, 0, 0x1000), (PT_LOAD, PF_R | PF_X, 0x1010, 0x2000)],
        size=0x3800,
    )
    read_at = BytesReader(content)
    code = parse_elf_code(content[:64], read_at)
    assert code.ranges == (ExecutableRange(0x1000, 0x4000, 0x3010),)
    assert not code.text_relocations
    module = hash_elf_code(read_at, name="/lib/synthetic.so")
    assert sorted(module.pages) == [0x1000, 0x2000, 0x3000]
    assert module.pages[0x2000] == hashlib.sha256(content[0x2000:0x3000]).hexdigest()
    padded = content[0x3000:0x3800] + bytes(0x800)
    assert module.pages[0x3000] == hashlib.sha256(padded).hexdigest()


def test_non_executable_and_empty_segments_are_not_code() -> None:
    content = build_elf(
        elf64=True,
        little=True,
        segments=[(PT_LOAD, PF_R, 0, 0x2000), (PT_LOAD, PF_R | PF_X, 0x2000, 0)],
        size=0x2000,
    )
    assert parse_elf_code(content[:64], BytesReader(content)).ranges == ()


@pytest.mark.parametrize(
    "entries", [[(DT_FLAGS, DF_TEXTREL)], [(DT_TEXTREL, 0)], [(5, 0), (DT_FLAGS, DF_TEXTREL)]]
)
def test_text_relocations_are_detected(entries: list[tuple[int, int]]) -> None:
    content = build_elf(
        elf64=True,
        little=True,
        segments=[(PT_LOAD, PF_R | PF_X, 0, 0x1000), (PT_DYNAMIC, PF_R, 0x1800, 0x100)],
        size=0x2000,
        dynamic=entries,
    )
    assert parse_elf_code(content[:64], BytesReader(content)).text_relocations


def test_flags_without_textrel_are_not_text_relocations() -> None:
    content = build_elf(
        elf64=True,
        little=True,
        segments=[(PT_LOAD, PF_R | PF_X, 0, 0x1000), (PT_DYNAMIC, PF_R, 0x1800, 0x100)],
        size=0x2000,
        dynamic=[(DT_FLAGS, 0x8)],  # DF_BIND_NOW
    )
    assert not parse_elf_code(content[:64], BytesReader(content)).text_relocations


@pytest.mark.parametrize(
    "content",
    [b"#!/bin/sh\necho hello\n" * 4, b"\x7fELF\x09\x01" + bytes(60), b"\x7fELF\x02\x01"],
)
def test_not_elf(content: bytes) -> None:
    with pytest.raises(NotElfError):
        parse_elf_code(content[:64], BytesReader(content), name="/tmp/thing")


def test_truncated_program_headers() -> None:
    content = build_elf(
        elf64=True, little=True, segments=[(PT_LOAD, PF_R | PF_X, 0, 0x1000)], size=0x1000
    )[:80]
    with pytest.raises(NotElfError, match="truncated"):
        parse_elf_code(content[:64], BytesReader(content), name="/tmp/cut.so")


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CodeFileUnreadableError) as caught:
        hash_elf_file(tmp_path / "missing.so", name=str(tmp_path / "missing.so"))
    assert caught.value.path == str(tmp_path / "missing.so")
    script = tmp_path / "tool.sh"
    script.write_text("#!/bin/sh\n" * 10)
    with pytest.raises(NotElfError):
        CodeManifest.from_files([script], include_vdso=False)


# --- JSON -------------------------------------------------------------------------------------


def test_json_round_trip_and_runs() -> None:
    manifest = CodeManifest(
        {
            "/lib/a.so": ModuleCode(
                "/lib/a.so", {0x1000: "aa", 0x2000: "bb", 0x5000: "cc"}, text_relocations=True
            ),
            VDSO: ModuleCode(VDSO, {0: "dd", 0x1000: "ee"}, source="memory"),
        }
    )
    text = manifest.to_json()
    assert CodeManifest.from_json(text) == manifest
    document = json.loads(text)
    assert document["modules"]["/lib/a.so"]["runs"] == [
        {"offset": 0x1000, "sha256": ["aa", "bb"]},
        {"offset": 0x5000, "sha256": ["cc"]},
    ]


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"format": 1, "page_size": 4096}',
        '{"format": 2, "page_size": 4096, "modules": {}}',
        '{"format": 1, "page_size": 16384, "modules": {}}',
        '{"format": 1, "page_size": 4096, "modules": {"/x": {"runs": [{"offset": "z"}]}}}',
    ],
)
def test_bad_json_is_a_format_error(text: str) -> None:
    with pytest.raises(ManifestFormatError):
        CodeManifest.from_json(text)


def test_lookups() -> None:
    manifest = CodeManifest({"/lib/a.so": ModuleCode("/lib/a.so", {0x1000: "aa"})})
    assert manifest.declares("/lib/a.so") and manifest.declares(VSYSCALL)
    assert not manifest.declares("/lib/b.so") and not manifest.declares("[anon]")
    assert manifest.expected_page("/lib/a.so", 0x1000) == "aa"
    assert manifest.expected_page("/lib/a.so", 0x2000) is None
    assert manifest.expected_page("/lib/b.so", 0x1000) is None
    assert manifest.digests() == {"aa"} and manifest.page_count() == 1
    other = CodeManifest({"/lib/b.so": ModuleCode("/lib/b.so", {0: "bb"})})
    assert set(manifest.merged(other).modules) == {"/lib/a.so", "/lib/b.so"}
    assert VSYSCALL in KERNEL_ALLOWED


# --- real libraries in real memory ------------------------------------------------------------


def own_module(pattern: str) -> str:
    for mapping in read_maps("self").executable():
        if mapping.is_file_backed and pattern in os.path.basename(mapping.label):
            return mapping.label
    pytest.skip(f"no module matching {pattern!r} mapped in this process")


def pages_in_memory(process: str | int, memory_map: MemoryMap) -> Iterator[tuple[str, int, str]]:
    """(module, offset in it, digest) of every readable executable page of a process."""
    descriptor = os.open(f"/proc/{process}/mem", os.O_RDONLY)
    try:
        for mapping in memory_map.executable():
            if mapping.label == VSYSCALL:
                continue  # execute-only
            for address in range(mapping.start, mapping.end, PAGE_SIZE):
                digest = page_sha256(read_page(descriptor, address))
                yield mapping.label, mapping.file_offset_of(address), digest
    finally:
        os.close(descriptor)


@pytest.mark.parametrize(
    "pattern", ["libc.so", "libpython", "python3", "openblas", "_multiarray_umath"]
)
def test_memory_pages_of_a_real_library_match_the_file(pattern: str) -> None:
    path = own_module(pattern)
    manifest = CodeManifest.from_files([path], include_vdso=False)
    module = manifest.modules[path]
    assert not module.text_relocations
    compared = 0
    for label, offset, digest in pages_in_memory("self", read_maps("self")):
        if label == path:
            assert manifest.expected_page(path, offset) == digest, hex(offset)
            compared += 1
    assert compared == len(module.pages)  # the mapping is exactly the executable segments


def test_symlinked_path_is_recorded_as_the_real_path(tmp_path: Path) -> None:
    libc = own_module("libc.so")
    link = tmp_path / "libc-link.so"
    link.symlink_to(libc)
    assert set(CodeManifest.from_files([link], include_vdso=False).modules) == {libc}


def test_vdso_of_the_auditor_is_the_vdso_of_another_process(python_child: int) -> None:
    manifest = CodeManifest.from_files([])
    assert set(manifest.modules) == {VDSO}
    assert manifest.modules[VDSO].source == "memory"
    child_map = read_maps(python_child)
    vdso_pages = [
        (o, d) for label, o, d in pages_in_memory(python_child, child_map) if label == VDSO
    ]
    assert vdso_pages
    for offset, digest in vdso_pages:
        assert manifest.expected_page(VDSO, offset) == digest


@contextlib.contextmanager
def spawn_python(code: str) -> Iterator[subprocess.Popen[str]]:
    """A Python running `code`, which prints "ready" when set up; killed on the way out."""
    with subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as child:
        try:
            assert child.stdout is not None and child.stdout.readline() == "ready\n"
            yield child
        finally:
            child.kill()


@pytest.fixture
def python_child() -> Iterator[int]:
    """A Python with numpy loaded, waiting on stdin."""
    with spawn_python("import sys, numpy; print('ready', flush=True); sys.stdin.read()") as child:
        yield child.pid


def test_from_process_covers_every_executable_page(python_child: int) -> None:
    manifest = CodeManifest.from_process(python_child)
    child_map = read_maps(python_child)
    labels = {m.label for m in child_map.executable() if m.label != VSYSCALL}
    assert set(manifest.modules) == labels
    assert any("openblas" in label for label in labels)
    mismatched = [
        (label, hex(offset))
        for label, offset, digest in pages_in_memory(python_child, child_map)
        if manifest.expected_page(label, offset) != digest
    ]
    assert mismatched == []
    assert CodeManifest.from_json(manifest.to_json()) == manifest


@pytest.mark.skipif(os.geteuid() != 0, reason="map_files (a deleted file's inode) needs root")
def test_from_process_hashes_a_deleted_library_through_map_files(tmp_path: Path) -> None:
    import _struct  # an extension module: a small ELF shared object that loads in any Python

    if not getattr(_struct, "__file__", None):
        pytest.skip("_struct is built into this Python")
    copy = tmp_path / "libcopy.so"
    code = (
        "import ctypes, os, shutil, sys\n"
        f"shutil.copy({_struct.__file__!r}, {str(copy)!r})\n"
        f"library = ctypes.CDLL({str(copy)!r})\n"
        f"os.unlink({str(copy)!r})\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    with spawn_python(code) as child:
        child_map = read_maps(child.pid)
        deleted = [m for m in child_map.executable() if m.is_deleted]
        assert [m.label for m in deleted] == [str(copy)]
        manifest = CodeManifest.from_process(child.pid)
        assert manifest.modules[str(copy)].pages
        for label, offset, digest in pages_in_memory(child.pid, child_map):
            if label == str(copy):
                assert manifest.expected_page(label, offset) == digest


def test_from_process_hashes_a_non_elf_file_mapped_executable_over_its_mapped_range(
    tmp_path: Path,
) -> None:
    data = tmp_path / "blob.bin"
    data.write_bytes(bytes(range(256)) * 32)  # two pages, not ELF
    code = (
        "import mmap, sys\n"
        f"blob = open({str(data)!r}, 'rb')\n"
        "view = mmap.mmap(blob.fileno(), 8192, prot=mmap.PROT_READ | mmap.PROT_EXEC)\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    with spawn_python(code) as child:
        manifest = CodeManifest.from_process(child.pid)
        module = manifest.modules[str(data)]
        assert module.source == "mapped-range"
        content = data.read_bytes()
        assert module.pages == {
            0: page_sha256(content[:PAGE_SIZE]),
            PAGE_SIZE: page_sha256(content[PAGE_SIZE:]),
        }
