"""`aoftrace --check` against a real load on the running kernel (issue 20): a group it calls present has its
programs loaded, a group it calls missing has none, and its verdict on the core matches whether the tool starts.
Run in every kernel of the matrix (aofab.vm.CORE_TESTS), where groups are missing or live in module BTF."""
import re

from aofab import tracing
from test_aoftrace import aoftrace

# The tp_btf programs of each group, by name prefix (tools/kfeatures.c's table); raw_syscalls is left out: with
# tracefs the syscall tracepoints (sys_enter_tp) replace its programs.
GROUPS = {
    "sched": ("sched_",), "task": ("task_",), "lock": ("contention_",), "block": ("block_",),
    "io_uring": ("io_uring_",), "xfs": ("xfs_", "xlog_"), "ext4": ("ext4_",), "jbd2": ("jbd2_",),
    "filemap": ("folio_",), "writeback": ("balance_",),
}


def test_check_agrees_with_a_real_load(sleeper, tmp_path):
    r = aoftrace("--check", timeout=60)
    said = dict(re.findall(r"^(\S+)\s+(yes|NO)\b", r.stdout, re.M))
    can_run = re.search(r"^core \(flush, fdatasync\)\s+can run$", r.stdout, re.M) is not None
    assert (r.returncode == 0) == can_run, r.stdout
    assert set(GROUPS) <= set(said), r.stdout
    with tracing.Aoftrace(sleeper.pid, str(tmp_path / "a.json"), ["-a"]) as at:
        loaded = tracing.our_progs(at.proc.pid)
        assert at.stop() == 0, at.stderr
    assert can_run, r.stdout
    for group, prefixes in GROUPS.items():
        progs = [p for p in loaded if p.startswith(prefixes)]
        if said[group] == "yes":
            assert progs, f"--check says {group} yes, but none of its programs loaded: {sorted(loaded)}"
        else:
            assert not progs, f"--check says {group} NO, but {progs} loaded"
    features_off = at.report()["features_off"]
    assert sorted(features_off) == sorted(g for g, v in said.items() if v == "NO" and g in GROUPS), features_off
