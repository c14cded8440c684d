"""Where the cgroup hierarchies are and where this process sits in them.

Rules: the layout is read from two files only, `<procfs>/self/mountinfo` (the `cgroup` and
`cgroup2` mounts, their root within the hierarchy and their super options, which name the v1
controllers, co-mounts such as `cpu,cpuacct` included) and `<procfs>/self/cgroup` (this process's
path in each hierarchy). No path is assumed. The parsers are pure; `read_layout` is the only
function here that opens a file.

A process's directory on disk in a hierarchy is `mountpoint + (own path relative to the mount's
root)`; when the own path is not below the mount's root (a container that sees a sub-tree without
a cgroup namespace, or a path outside the namespace shown as `/..`), the hierarchy is not usable.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from maxwell.errors import CgroupUnavailableError

# Controllers a v1 `cgroup` mount can carry; anything else in the super options is a mount flag.
V1_CONTROLLERS = frozenset(
    {
        "cpu",
        "cpuacct",
        "cpuset",
        "memory",
        "devices",
        "freezer",
        "net_cls",
        "net_prio",
        "blkio",
        "perf_event",
        "hugetlb",
        "pids",
        "rdma",
        "misc",
    }
)

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as `\\ooo`."""
    return _OCTAL_ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)


@dataclass(frozen=True)
class CgroupMount:
    """One `cgroup` or `cgroup2` line of mountinfo."""

    version: int  # 1 or 2
    mountpoint: str
    root: str  # the mount's root within the hierarchy (4th field)
    readonly: bool
    # v1: the controllers and `name=` of the hierarchy (its identity in /proc/self/cgroup).
    hierarchy_key: frozenset[str]


def _v1_key(options: Iterable[str]) -> frozenset[str]:
    return frozenset(
        option for option in options if option in V1_CONTROLLERS or option.startswith("name=")
    )


def parse_mountinfo(text: str) -> list[CgroupMount]:
    """The cgroup mounts in a mountinfo text, in order. Malformed lines are skipped."""
    mounts: list[CgroupMount] = []
    for line in text.splitlines():
        left, separator, right = line.partition(" - ")
        if not separator:
            continue
        fields = left.split()
        tail = right.split()
        if len(fields) < 6 or len(tail) < 3:
            continue
        fstype, super_options = tail[0], tail[2].split(",")
        if fstype not in ("cgroup", "cgroup2"):
            continue
        mount_options = fields[5].split(",")
        readonly = "ro" in mount_options or "ro" in super_options
        version = 2 if fstype == "cgroup2" else 1
        key = frozenset() if version == 2 else _v1_key(super_options)
        mounts.append(
            CgroupMount(
                version=version,
                mountpoint=_unescape(fields[4]),
                root=_unescape(fields[3]),
                readonly=readonly,
                hierarchy_key=key,
            )
        )
    return mounts


@dataclass(frozen=True)
class Membership:
    """This process's paths from /proc/self/cgroup: per v1 hierarchy key, and the v2 path."""

    v1: dict[frozenset[str], str]
    v2: str | None


def parse_proc_cgroup(text: str) -> Membership:
    v1: dict[frozenset[str], str] = {}
    v2: str | None = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy_id, controllers, path = parts
        if hierarchy_id == "0" and controllers == "":
            v2 = path
        else:
            v1[_v1_key(controllers.split(","))] = path
    return Membership(v1=v1, v2=v2)


def own_dir(mountpoint: str, mount_root: str, own_path: str) -> str | None:
    """`mountpoint + (own_path relative to mount_root)`, or None when it is not below the root."""
    if own_path.startswith("/..") or not own_path.startswith("/"):
        return None
    root = mount_root.rstrip("/")  # "" for a mount of the whole hierarchy
    if own_path != root and not own_path.startswith(root + "/"):
        return None
    relative = own_path[len(root) :].strip("/")
    return posixpath.join(mountpoint, relative) if relative else mountpoint


@dataclass(frozen=True)
class Hierarchy:
    """A mounted hierarchy this process can see itself in."""

    version: int
    controllers: frozenset[str]  # v1: bound controllers; v2: empty (read cgroup.controllers)
    mountpoint: str
    mount_root: str
    own_path: str  # from /proc/self/cgroup
    own_dir: str  # on disk
    readonly: bool


@dataclass(frozen=True)
class CgroupLayout:
    """The usable hierarchies and why the others are not usable (for error messages)."""

    v1: tuple[Hierarchy, ...]
    v2: Hierarchy | None
    problems: tuple[str, ...]
    mounted: bool  # any cgroup or cgroup2 mount at all

    @property
    def name(self) -> str:
        """'v1', 'v2', 'hybrid' (v1 controllers and a v2 hierarchy), or 'none'."""
        has_v1 = any(h.controllers & V1_CONTROLLERS for h in self.v1)
        if has_v1 and self.v2 is not None:
            return "hybrid"
        if has_v1:
            return "v1"
        if self.v2 is not None:
            return "v2"
        return "none"

    def v1_for(self, controller: str) -> Hierarchy | None:
        for hierarchy in self.v1:
            if controller in hierarchy.controllers:
                return hierarchy
        return None


def build_layout(mounts: list[CgroupMount], membership: Membership) -> CgroupLayout:
    """Match mounts with memberships. Of several mounts of one hierarchy (bind mounts), the first
    writable one in which this process is visible wins."""
    problems: list[str] = []
    v1: dict[frozenset[str], Hierarchy] = {}
    v2: Hierarchy | None = None
    for mount in sorted(mounts, key=lambda m: m.readonly):  # stable: writable mounts first
        own_path = membership.v2 if mount.version == 2 else membership.v1.get(mount.hierarchy_key)
        label = "cgroup2" if mount.version == 2 else ",".join(sorted(mount.hierarchy_key))
        if own_path is None:
            problems.append(f"{label} at {mount.mountpoint}: not in /proc/self/cgroup")
            continue
        directory = own_dir(mount.mountpoint, mount.root, own_path)
        if directory is None:
            problems.append(
                f"{label} at {mount.mountpoint}: own cgroup {own_path} is outside the mount's "
                f"root {mount.root}"
            )
            continue
        hierarchy = Hierarchy(
            version=mount.version,
            controllers=mount.hierarchy_key,
            mountpoint=mount.mountpoint,
            mount_root=mount.root,
            own_path=own_path,
            own_dir=directory,
            readonly=mount.readonly,
        )
        if mount.version == 2:
            if v2 is None:
                v2 = hierarchy
        elif mount.hierarchy_key not in v1:
            v1[mount.hierarchy_key] = hierarchy
    return CgroupLayout(
        v1=tuple(v1.values()), v2=v2, problems=tuple(problems), mounted=bool(mounts)
    )


def read_layout(procfs_root: str | Path = "/proc") -> CgroupLayout:
    """Read `<procfs>/self/mountinfo` and `<procfs>/self/cgroup`."""
    texts: list[str] = []
    for name in ("mountinfo", "cgroup"):
        path = Path(procfs_root) / "self" / name
        try:
            texts.append(path.read_text())
        except OSError as exc:
            raise CgroupUnavailableError(
                f"cannot read {path}: {exc.strerror or exc}", path=str(path)
            ) from exc
    return build_layout(parse_mountinfo(texts[0]), parse_proc_cgroup(texts[1]))


def read_sched_ext_state(sysfs_root: str | Path = "/sys") -> str | None:
    """`enabled` when a sched_ext BPF scheduler is loaded (it may ignore cpu.weight/cpu.shares),
    `disabled` when the kernel supports one but none is loaded, None on kernels without it."""
    try:
        return (Path(sysfs_root) / "kernel" / "sched_ext" / "state").read_text().strip()
    except OSError:
        return None
