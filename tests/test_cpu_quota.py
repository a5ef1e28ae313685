"""The CPU quota read from fake cgroup files, as a container on cgroup v1 or v2 shows them."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from monitor import cpus
from monitor.cpus import available_cpus, cpu_quota
from monitor.stream.scoring import tensorflow_threads

V2_MOUNT = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw\n"
V1_MOUNTS = (
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "32 31 0:29 {root} /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
    "35 31 0:32 {root} /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
)


class FakeHost:
    """A directory holding proc/self/{cgroup,mountinfo} and the cgroup files they name."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc = root / "proc" / "self"
        self.proc.mkdir(parents=True)

    def self_files(self, cgroup: str, mountinfo: str) -> None:
        (self.proc / "cgroup").write_text(cgroup)
        (self.proc / "mountinfo").write_text(mountinfo)

    def write(self, path: str, text: str) -> None:
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text + "\n")

    def quota(self) -> float | None:
        return cpu_quota(self.proc, self.root)


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path)


# -- cgroup v2 ---------------------------------------------------------------------------------
def test_v2_container_with_its_own_namespace_reads_cpu_max_at_the_mount(host: FakeHost) -> None:
    host.self_files("0::/\n", V2_MOUNT)
    host.write("/sys/fs/cgroup/cpu.max", "200000 100000")
    assert host.quota() == 2.0


def test_v2_unlimited(host: FakeHost) -> None:
    host.self_files("0::/\n", V2_MOUNT)
    host.write("/sys/fs/cgroup/cpu.max", "max 100000")
    assert host.quota() is None


def test_v2_nested_cgroup_takes_the_tightest_ancestor(host: FakeHost) -> None:
    """A pod's limit sits on the pod's cgroup; the container's own may be unlimited."""
    host.self_files("0::/kubepods/pod1/ctr\n", V2_MOUNT)
    host.write("/sys/fs/cgroup/kubepods/cpu.max", "max 100000")
    host.write("/sys/fs/cgroup/kubepods/pod1/cpu.max", "150000 100000")
    host.write("/sys/fs/cgroup/kubepods/pod1/ctr/cpu.max", "max 100000")
    assert host.quota() == 1.5


def test_v2_fractional_quota_rounds_up(host: FakeHost, monkeypatch: pytest.MonkeyPatch) -> None:
    host.self_files("0::/\n", V2_MOUNT)
    host.write("/sys/fs/cgroup/cpu.max", "50000 100000")
    monkeypatch.setattr(cpus, "affinity_cpus", lambda: 64)
    assert available_cpus(host.proc, host.root) == 1
    host.write("/sys/fs/cgroup/cpu.max", "250000 100000")
    assert available_cpus(host.proc, host.root) == 3


# -- cgroup v1 ---------------------------------------------------------------------------------
def test_v1_container_sees_its_cgroup_as_the_mount_root(host: FakeHost) -> None:
    """Docker/podman on v1: /proc/self/cgroup names the host path, which is the mount's root."""
    path = "/machine/libpod-abc"
    host.self_files(f"4:memory:{path}\n2:cpu,cpuacct:{path}\n", V1_MOUNTS.format(root=path))
    host.write("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "200000")
    host.write("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000")
    assert host.quota() == 2.0


def test_v1_host_view_walks_from_the_cgroup_to_the_root(host: FakeHost) -> None:
    host.self_files("2:cpu,cpuacct:/kubepods/burstable/pod1\n", V1_MOUNTS.format(root="/"))
    base = "/sys/fs/cgroup/cpu,cpuacct"
    host.write(f"{base}/cpu.cfs_quota_us", "-1")
    host.write(f"{base}/cpu.cfs_period_us", "100000")
    host.write(f"{base}/kubepods/burstable/cpu.cfs_quota_us", "400000")
    host.write(f"{base}/kubepods/burstable/cpu.cfs_period_us", "100000")
    host.write(f"{base}/kubepods/burstable/pod1/cpu.cfs_quota_us", "100000")
    host.write(f"{base}/kubepods/burstable/pod1/cpu.cfs_period_us", "50000")
    assert host.quota() == 2.0


def test_v1_unlimited(host: FakeHost) -> None:
    host.self_files("2:cpu,cpuacct:/\n", V1_MOUNTS.format(root="/"))
    host.write("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1")
    host.write("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000")
    assert host.quota() is None


def test_hybrid_reads_the_v1_cpu_controller_and_the_v2_mount(host: FakeHost) -> None:
    """systemd's hybrid layout: controllers on v1, an empty v2 tree at cgroup/unified."""
    unified = "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
    host.self_files("2:cpu,cpuacct:/\n0::/\n", V1_MOUNTS.format(root="/") + unified)
    host.write("/sys/fs/cgroup/unified/cgroup.procs", "1")
    host.write("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "300000")
    host.write("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000")
    assert host.quota() == 3.0


# -- no or odd cgroup files ----------------------------------------------------------------------
def test_escaped_mount_points_are_read(host: FakeHost) -> None:
    mount = "30 23 0:26 / /sys/fs/my\\040cgroup rw - cgroup2 cgroup2 rw\n"
    host.self_files("0::/\n", mount)
    host.write("/sys/fs/my cgroup/cpu.max", "100000 100000")
    assert host.quota() == 1.0


@pytest.mark.parametrize("content", ["", "garbage", "max", "0 100000", "100000 0", "x y"])
def test_unreadable_or_nonsense_cpu_max_means_no_limit(host: FakeHost, content: str) -> None:
    host.self_files("0::/\n", V2_MOUNT)
    host.write("/sys/fs/cgroup/cpu.max", content)
    assert host.quota() is None


def test_no_proc_files_means_no_limit(tmp_path: Path) -> None:
    assert cpu_quota(tmp_path / "proc" / "self", tmp_path) is None


def test_this_machine_agrees_with_affinity_when_unlimited() -> None:
    """On the real files: never more than the affinity, never below one CPU."""
    quota = cpu_quota()
    expected = (
        cpus.affinity_cpus() if quota is None else min(cpus.affinity_cpus(), math.ceil(quota))
    )
    assert available_cpus() == max(1, expected)


# -- what the worker does with it ------------------------------------------------------------
def test_tensorflow_threads_follow_the_quota_not_the_node(
    host: FakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Deployment's 2-CPU limit on a 64-core node: two threads, not 64."""
    host.self_files("0::/\n", V2_MOUNT)
    host.write("/sys/fs/cgroup/cpu.max", "200000 100000")
    monkeypatch.setattr(cpus, "affinity_cpus", lambda: 64)
    monkeypatch.setattr(
        "monitor.stream.scoring.available_cpus",
        lambda: available_cpus(host.proc, host.root),
    )
    assert tensorflow_threads(0) == 2
    assert tensorflow_threads(4) == 4
