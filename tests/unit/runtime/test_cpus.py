from agent.runtime.cpus import available_cpus, quota_cpus


def reader(files: dict[str, str]):  # type: ignore[no-untyped-def]
    return files.get


def test_cgroup_v2_quota_rounds_up_and_the_tightest_parent_wins() -> None:
    files = {
        "/proc/self/cgroup": "0::/kubepods/pod1/c1\n",
        "/sys/fs/cgroup/kubepods/pod1/c1/cpu.max": "150000 100000\n",
        "/sys/fs/cgroup/kubepods/pod1/cpu.max": "max 100000\n",
        "/sys/fs/cgroup/kubepods/cpu.max": "400000 100000\n",
    }
    assert quota_cpus(reader(files)) == 1.5
    assert available_cpus(reader(files), affinity=lambda: 8) == 2
    files["/sys/fs/cgroup/kubepods/cpu.max"] = "50000 100000"
    assert available_cpus(reader(files), affinity=lambda: 8) == 1


def test_unlimited_cgroup_leaves_the_affinity() -> None:
    files = {"/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/cpu.max": "max 100000\n"}
    assert quota_cpus(reader(files)) is None
    assert available_cpus(reader(files), affinity=lambda: 3) == 3


def test_affinity_below_the_quota_wins() -> None:
    files = {"/proc/self/cgroup": "0::/a\n", "/sys/fs/cgroup/a/cpu.max": "800000 100000"}
    assert available_cpus(reader(files), affinity=lambda: 2) == 2


def test_cgroup_v1_quota() -> None:
    files = {
        "/proc/self/cgroup": "4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n",
        "/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "250000\n",
        "/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
    }
    assert quota_cpus(reader(files)) == 2.5
    assert available_cpus(reader(files), affinity=lambda: 16) == 3
    files["/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us"] = "-1\n"
    assert quota_cpus(reader(files)) is None


def test_junk_files_are_no_limit_and_never_below_one() -> None:
    files = {"/proc/self/cgroup": "0::/x\n", "/sys/fs/cgroup/x/cpu.max": "lots of\n"}
    assert quota_cpus(reader(files)) is None
    files["/sys/fs/cgroup/x/cpu.max"] = "1000 100000"  # 0.01 CPU
    assert available_cpus(reader(files), affinity=lambda: 4) == 1
    assert available_cpus(reader({}), affinity=lambda: 0) == 1


def test_this_process_has_at_least_one() -> None:
    assert available_cpus() >= 1
