"""How many CPUs this process may really use: its affinity, capped by its cgroup's CPU quota.

``os.sched_getaffinity`` counts the cores a process may be scheduled on, which in a
container is usually every core of the node; the container's CPU limit is a CFS quota in
its cgroup (Kubernetes' ``resources.limits.cpu``, ``docker run --cpus``). Sizing
TensorFlow's thread pools from the affinity alone gives a 2-CPU pod on a 64-core node 63
threads that take turns on two CPUs' worth of time.

The quota is read as the kernel exposes it, with no library:

- cgroup v2: ``cpu.max`` ("QUOTA PERIOD", or "max PERIOD" for no limit);
- cgroup v1: ``cpu.cfs_quota_us`` (-1 for no limit) and ``cpu.cfs_period_us`` in the
  hierarchy that has the ``cpu`` controller.

The process's cgroup comes from ``/proc/self/cgroup``, where each hierarchy is mounted from
``/proc/self/mountinfo`` (inside a container the mount's root is the container's own
cgroup). Every ancestor up to the mount's root is read too, since a parent's quota limits
its children, and the smallest limit wins; a hybrid system (v1 ``cpu`` plus a v2 mount)
is read both ways. A quota of 1.5 CPUs counts as 2: the threads get one and a half CPUs'
worth of time, spread over two. Anything unreadable counts as no limit.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class _Mount:
    root: PurePosixPath  # the cgroup path that this mount shows at its mount point
    point: PurePosixPath
    fstype: str  # "cgroup" (v1) or "cgroup2"
    options: frozenset[str]  # v1: the controllers ("cpu", "cpuacct", ...)


def _unescape(field: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def _cgroup_mounts(mountinfo: str) -> Iterator[_Mount]:
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        yield _Mount(
            root=PurePosixPath(_unescape(fields[3])),
            point=PurePosixPath(_unescape(fields[4])),
            fstype=tail[0],
            options=frozenset(tail[2].split(",")),
        )


def _own_cgroups(proc_cgroup: str) -> dict[str, PurePosixPath]:
    """Controller -> cgroup path; "" for the v2 hierarchy (line "0::/path")."""
    paths: dict[str, PurePosixPath] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        path = PurePosixPath(parts[2] or "/")
        for controller in parts[1].split(",") if parts[1] else [""]:
            paths[controller] = path
    return paths


def _dirs_up_to_mount(mount: _Mount, cgroup: PurePosixPath, fs_root: Path) -> Iterator[Path]:
    """The cgroup's directory under the mount point, then each parent up to the mount's."""
    relative = cgroup.relative_to(mount.root) if cgroup.is_relative_to(mount.root) else None
    base = fs_root / str(mount.point).lstrip("/")
    if relative is None:  # a cgroup outside the mount's view: only the mount point is ours
        yield base
        return
    parts = relative.parts
    for depth in range(len(parts), -1, -1):
        yield base.joinpath(*parts[:depth])


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _v2_limit(directory: Path) -> float | None:
    text = _read(directory / "cpu.max")
    if not text:
        return None
    quota, _, period = text.partition(" ")
    if quota == "max":
        return None
    try:
        q, p = int(quota), int(period or "100000")
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def _v1_limit(directory: Path) -> float | None:
    quota, period = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
    try:
        q, p = int(quota or "-1"), int(period or "0")
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def cpu_quota(proc: Path = Path("/proc/self"), fs_root: Path = Path("/")) -> float | None:
    """The tightest CFS quota on this process's cgroups, in CPUs, or None for no limit.

    ``proc`` and ``fs_root`` let tests point at fake files; mount points are read under
    ``fs_root``.
    """
    mountinfo, own = _read(proc / "mountinfo"), _read(proc / "cgroup")
    if mountinfo is None or own is None:
        return None
    cgroups = _own_cgroups(own)
    limits: list[float] = []
    for mount in _cgroup_mounts(mountinfo):
        if mount.fstype == "cgroup2" and "" in cgroups:
            read, cgroup = _v2_limit, cgroups[""]
        elif mount.fstype == "cgroup" and "cpu" in mount.options and "cpu" in cgroups:
            read, cgroup = _v1_limit, cgroups["cpu"]
        else:
            continue
        for directory in _dirs_up_to_mount(mount, cgroup, fs_root):
            limit = read(directory)
            if limit is not None:
                limits.append(limit)
    return min(limits) if limits else None


def affinity_cpus() -> int:
    """The cores this process may be scheduled on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def available_cpus(proc: Path = Path("/proc/self"), fs_root: Path = Path("/")) -> int:
    """Affinity capped by the CPU quota rounded up; at least 1."""
    cpus = affinity_cpus()
    quota = cpu_quota(proc, fs_root)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)
