"""/proc/PID/maps parsing and address lookup, on a recorded map and a fake procfs tree.

The fixture is a real map of a Python process with numpy loaded (its lines kept verbatim), plus
lines for the cases a busy process rarely shows at once: a deleted library whose path has a
space, a memfd, an anonymous RWX page, a named anonymous mapping.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from maxwell.audit.maps import (
    ANONYMOUS,
    Backing,
    MapsFormatError,
    MapsQuery,
    ProcessGoneError,
    ProcmapQueryUnsupportedError,
    mapping_from_query,
    parse_maps,
    parse_maps_line,
    read_maps,
)

FIXTURES = Path(__file__).parent / "fixtures" / "audit"
MAPS = (FIXTURES / "maps_numpy.txt").read_text()
LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"
OPENBLAS = (
    "/work/main/.venv/lib/python3.11/site-packages/numpy.libs/libscipy_openblas64_-32a4b2a6.so"
)


def test_every_line_parses_in_address_order() -> None:
    memory_map = parse_maps(MAPS)
    assert len(memory_map) == len(MAPS.splitlines())
    starts = [mapping.start for mapping in memory_map]
    assert starts == sorted(starts)


def test_file_backed_executable_mapping() -> None:
    libc_text = parse_maps(MAPS).mapping_for(0x7FD011E44000)
    assert libc_text is not None
    assert (libc_text.start, libc_text.end) == (0x7FD011E44000, 0x7FD011F9A000)
    assert libc_text.perms == "r-xp" and libc_text.is_executable
    assert libc_text.offset == 0x26000
    assert libc_text.dev == "fe:00" and libc_text.inode == 339380
    assert libc_text.backing is Backing.FILE
    assert libc_text.label == LIBC
    assert libc_text.file_offset_of(0x7FD011E45123) == 0x27123


def test_lookup_bounds_start_inclusive_end_exclusive_gaps_empty() -> None:
    memory_map = parse_maps(MAPS)
    blas_text = memory_map.mapping_for(0x7FD00FA89000)
    assert blas_text is not None and blas_text.label == OPENBLAS and blas_text.is_executable
    last_byte = memory_map.mapping_for(0x7FD010DCA000 - 1)
    assert last_byte == blas_text
    after = memory_map.mapping_for(0x7FD010DCA000)
    assert after is not None and after.perms == "r--p"  # the next mapping, not the text
    assert memory_map.mapping_for(0x7FD010F57000) is None  # a gap between two mappings
    assert memory_map.mapping_for(0x1000) is None  # below every mapping
    assert memory_map.mapping_for(0xFFFFFFFFFF601000) is None  # above every mapping


def test_deleted_file_keeps_its_path_spaces_included() -> None:
    deleted = parse_maps(MAPS).mapping_for(0x7FD010F60010)
    assert deleted is not None
    assert deleted.path == "/tmp/plugin dir/libminer.so (deleted)"
    assert deleted.is_deleted and deleted.backing is Backing.FILE
    assert deleted.label == deleted.file_path == "/tmp/plugin dir/libminer.so"


def test_memfd_is_a_file_not_anonymous() -> None:
    memfd = parse_maps(MAPS).mapping_for(0x7FD010F70000)
    assert memfd is not None and memfd.backing is Backing.FILE
    assert memfd.label == "/memfd:payload"


def test_anonymous_mappings() -> None:
    memory_map = parse_maps(MAPS)
    rwx = memory_map.mapping_for(0x7FD010F80000)
    assert rwx is not None
    assert rwx.path == "" and rwx.perms == "rwxp" and rwx.inode == 0
    assert rwx.backing is Backing.ANONYMOUS and rwx.label == ANONYMOUS
    # Python's default anonymous mmap is MAP_SHARED: shmem, printed as a deleted /dev/zero.
    shared = memory_map.mapping_for(0x7FD012645000)
    assert shared is not None and shared.perms == "rwxs" and shared.inode != 0
    assert shared.backing is Backing.ANONYMOUS and shared.label == ANONYMOUS
    named = memory_map.mapping_for(0x7FD010F90000)
    assert named is not None and named.label == "[anon:jit arena]"
    assert named.backing is Backing.ANONYMOUS


@pytest.mark.parametrize(
    ("address", "label", "backing"),
    [
        (0x555E72E43000, "[heap]", Backing.ANONYMOUS),
        (0x7FFC5B5CC000, "[stack]", Backing.ANONYMOUS),
        (0x7FD012655000, "[vdso]", Backing.KERNEL),
        (0x7FD012650000, "[vvar]", Backing.KERNEL),
        (0xFFFFFFFFFF600000, "[vsyscall]", Backing.KERNEL),
    ],
)
def test_special_mappings(address: int, label: str, backing: Backing) -> None:
    mapping = parse_maps(MAPS).mapping_for(address)
    assert mapping is not None
    assert mapping.label == label and mapping.backing is backing


def test_vsyscall_is_execute_only() -> None:
    vsyscall = parse_maps(MAPS).mapping_for(0xFFFFFFFFFF600000)
    assert vsyscall is not None and vsyscall.perms == "--xp" and vsyscall.is_executable


def test_executable_lists_only_executable_mappings() -> None:
    labels = [mapping.label for mapping in parse_maps(MAPS).executable()]
    assert labels == [
        "/root/.pyenv/versions/3.11.7/bin/python3.11",
        OPENBLAS,
        "/tmp/plugin dir/libminer.so",
        "/memfd:payload",
        ANONYMOUS,
        LIBC,
        "/root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0",
        ANONYMOUS,
        "[vdso]",
        "[vsyscall]",
    ]


@pytest.mark.parametrize(
    "line",
    [
        "7fd0-7fc0 r-xp 00000000 fe:00 1 /lib/x.so",  # inverted range
        "7fd0 r-xp 00000000 fe:00 1 /lib/x.so",  # no dash
        "7fd0-7fe0 r-xp 0000zz00 fe:00 1 /lib/x.so",  # bad offset
        "7fd0-7fe0 rx 00000000 fe:00 1",  # perms not 4 letters
        "7fd0-7fe0 r-xp 00000000",  # too few fields
    ],
)
def test_malformed_lines_are_named_by_line(line: str) -> None:
    with pytest.raises(MapsFormatError, match="maps line 2"):
        parse_maps("7fd0-7fe0 r--p 00000000 00:00 0\n" + line + "\n")
    with pytest.raises(MapsFormatError):
        parse_maps_line(line)


def test_read_maps_takes_its_procfs_root(tmp_path: Path) -> None:
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "maps").write_text(MAPS)
    memory_map = read_maps(4242, procfs_root=tmp_path)
    assert len(memory_map) == len(MAPS.splitlines())


def test_read_maps_of_a_missing_process(tmp_path: Path) -> None:
    with pytest.raises(ProcessGoneError) as caught:
        read_maps(4242, procfs_root=tmp_path)
    assert caught.value.pid == 4242


def test_a_zombie_has_an_empty_map(tmp_path: Path) -> None:
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "maps").write_text("")
    assert len(read_maps(4242, procfs_root=tmp_path)) == 0


@pytest.mark.parametrize("text", [MAPS, Path("/proc/self/maps").read_text()])
def test_executable_only_scan_finds_exactly_the_executable_mappings(text: str) -> None:
    assert list(parse_maps(text, executable_only=True)) == parse_maps(text).executable()


# --- PROCMAP_QUERY ----------------------------------------------------------------------------


def test_query_decodes_the_kernel_struct() -> None:
    fields = (104, 0, 0x7FD011E45000, 0x7FD011E44000, 0x7FD011F9A000, 4 | 1, 4096, 0x26000,
              339380, 0xFE, 0, 26, 0, 0, 0)  # fmt: skip
    mapping = mapping_from_query(fields, LIBC.encode())
    assert mapping == parse_maps(MAPS).mapping_for(0x7FD011E44000)
    shared_rwx = mapping_from_query(
        (104, 0, 0, 0x1000, 0x2000, 15, 4096, 0, 0, 0, 0, 0, 0, 0, 0), b""
    )
    assert shared_rwx.perms == "rwxs" and shared_rwx.label == ANONYMOUS


def _kernel_has_procmap_query() -> bool:
    with MapsQuery.open("self") as query:
        try:
            query.mapping_for(id(query))
        except ProcmapQueryUnsupportedError:
            return False
    return True


@pytest.mark.skipif(not _kernel_has_procmap_query(), reason="PROCMAP_QUERY needs Linux 6.11+")
def test_query_answers_as_the_text_does_for_every_mapping() -> None:
    memory_map = read_maps("self")
    with MapsQuery.open("self") as query:
        for mapping in memory_map:
            if mapping.path == "[vsyscall]":
                assert query.mapping_for(mapping.start) is None  # not a VMA: the text knows it
                continue
            # Neighbouring anonymous mappings may merge between the two reads; files do not.
            for address in (mapping.start, mapping.end - 1):
                answer = query.mapping_for(address)
                assert answer is not None
                if mapping.is_file_backed or mapping.path.startswith("["):
                    assert answer == mapping
        assert query.mapping_for(0x1000) is None


def test_query_on_a_fake_tree_says_unsupported(tmp_path: Path) -> None:
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "maps").write_text(MAPS)
    with (
        MapsQuery.open(4242, procfs_root=tmp_path) as query,
        pytest.raises(ProcmapQueryUnsupportedError),
    ):
        query.mapping_for(0x7FD011E44000)
    with pytest.raises(ProcessGoneError):
        MapsQuery.open(4343, procfs_root=tmp_path)
