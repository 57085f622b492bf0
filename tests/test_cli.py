"""aoftrace's bad-input contract, beyond the basic cases in test_aoftrace.py: one line on stderr
naming the problem, a non-zero exit, no traceback or hang, nothing of the user's changed, nothing
left loaded. Missing tracepoint groups are simulated with a copy of the kernel's BTF in which their
btf_trace_* typedefs are renamed (same length, so the BTF stays valid): that is exactly what
aoftrace's feature probe reads."""
import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from aofab import env, tracing
from test_aoftrace import aoftrace, no_progs_left

CAPS_USER = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             "--inh-caps=+bpf,+perfmon", "--ambient-caps=+bpf,+perfmon"]


def btf_without(tmp_path, old, new):
    """A copy of the kernel's BTF with the name prefix `old` renamed to `new` (same length)."""
    assert len(old) == len(new)
    data = open("/sys/kernel/btf/vmlinux", "rb").read()
    assert data.count(old) > 0
    path = tmp_path / "vmlinux.btf"
    path.write_bytes(data.replace(old, new))
    return path


def first_line(r):
    lines = r.stderr.splitlines()
    assert lines, (r.returncode, r.stdout)
    assert "Traceback" not in r.stderr
    return lines[0]


@pytest.mark.parametrize("args,message", [
    (["-p", "0"], "invalid pid: '0'"),
    (["-p", "99999999999"], "invalid pid"),
    (["-p", "SLEEPER", "-d", "nan"], "invalid duration: 'nan'"),
    (["-p", "SLEEPER", "-d", "1e99"], "invalid duration"),
    (["-p", "SLEEPER", "-i", "0"], "invalid interval"),
    (["-p", "SLEEPER", "-t", "5000"], "invalid top"),
])
def test_invalid_values(args, message, sleeper):
    r = aoftrace(*[sleeper.pid if a == "SLEEPER" else a for a in args])
    assert r.returncode == 2 and r.stdout == ""
    line = first_line(r)
    assert line.startswith("aoftrace: ") and message in line, r.stderr


def test_binary_without_symbols(sleeper):
    r = aoftrace("-p", sleeper.pid, "-b", "/bin/true")
    assert r.returncode == 1
    assert "/bin/true has no symbol flushAppendOnlyFile" in first_line(r)
    assert no_progs_left()


def test_unreadable_proc_exe(sleeper):
    """A user with CAP_BPF and CAP_PERFMON but not the target's owner cannot read its /proc/PID/exe."""
    r = subprocess.run([*CAPS_USER, tracing.AOFTRACE, "-p", str(sleeper.pid), "-d", "1"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 1
    assert first_line(r) == f"aoftrace: cannot read /proc/{sleeper.pid}/exe: Permission denied (use -b BINARY)"


def test_unwritable_output_directory(sleeper):
    d = tempfile.mkdtemp(prefix="aoftrace-test-")    # root's, 0755: the capable user may not write there
    try:
        os.chmod(d, 0o755)
        r = subprocess.run([*CAPS_USER, tracing.AOFTRACE, "-p", str(sleeper.pid), "-b", "/bin/sleep",
                            "-j", f"{d}/out.json"], capture_output=True, text=True, timeout=20)
        assert r.returncode == 1
        assert first_line(r) == f"aoftrace: cannot write {d}/out.json: Permission denied"
        assert os.listdir(d) == []
    finally:
        shutil.rmtree(d)


@pytest.mark.parametrize("opt", ["-j", "-f", "-T"])
def test_output_is_a_directory_or_missing(opt, sleeper, tmp_path):
    (tmp_path / "d").mkdir()
    r = aoftrace("-p", sleeper.pid, "-a", opt, tmp_path / "d")
    assert r.returncode == 1 and first_line(r) == f"aoftrace: cannot write {tmp_path}/d: not a regular file"
    r = aoftrace("-p", sleeper.pid, "-a", opt, tmp_path / "missing" / "out")
    assert r.returncode == 1
    assert first_line(r) == f"aoftrace: cannot write {tmp_path}/missing/out: no directory {tmp_path}/missing"


@pytest.mark.parametrize("opt", ["-f", "-T"])
def test_other_outputs_refuse_symlinks(opt, sleeper, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (tmp_path / "link").symlink_to(victim)
    r = aoftrace("-p", sleeper.pid, "-a", "-d", "0.2", opt, tmp_path / "link")
    assert r.returncode == 1 and "is a symbolic link (not followed)" in first_line(r)
    assert victim.read_text() == "keep me"


def test_btf_that_is_not_btf(sleeper, tmp_path):
    junk = tmp_path / "junk.btf"
    junk.write_text("not BTF\n")
    r = aoftrace("-p", sleeper.pid, "-a", "--btf", junk)
    assert r.returncode == 1 and first_line(r).startswith(f"aoftrace: cannot read kernel BTF from {junk}")
    assert no_progs_left()


def test_missing_core_tracepoints_refuse_to_start(sleeper, tmp_path):
    btf = btf_without(tmp_path, b"btf_trace_sched_switch\0", b"btf_trace_SCHED_switch\0")
    r = aoftrace("-p", sleeper.pid, "-a", "--btf", btf)
    assert r.returncode == 1
    assert first_line(r) == ("aoftrace: this kernel lacks tracepoints the core needs: sched (no sched_switch "
                             "tracepoint: on-CPU/off-CPU attribution and children off)")
    assert no_progs_left()
    r = aoftrace("--check", "--btf", btf)
    assert r.returncode == 1 and "sched                    NO: no sched_switch tracepoint" in r.stdout


def test_missing_optional_group_is_switched_off(sleeper, tmp_path):
    """No jbd2 tracepoints: the trace runs without them and says which feature is off."""
    btf = btf_without(tmp_path, b"btf_trace_jbd2_", b"btf_trace_JBD2_")
    out = tmp_path / "a.json"
    r = aoftrace("-p", sleeper.pid, "-a", "-d", "0.3", "--btf", btf, "-j", out)
    assert r.returncode == 0, r.stderr
    assert first_line(r) == ("aoftrace: features off: jbd2 (no jbd2_start_commit tracepoint: jbd2 commit "
                             "phases off)")
    assert "Features off: jbd2" in r.stdout
    assert json.loads(out.read_text())["features_off"] == ["jbd2"]
    assert no_progs_left()


def test_appendonly_off_is_named(xfs, port, tmp_path):
    """A redis-server with appendonly no never calls flushAppendOnlyFile(): say so, exit non-zero."""
    with env.redis_server(xfs.mnt, port, extra=["--appendonly", "no"]) as srv:
        env.benchmark(port, requests=2000, clients=5)
        r = aoftrace("-p", srv.pid, "-d", "1.2")
    assert r.returncode == 1, r.stderr
    assert first_line(r).startswith("aoftrace: no AOF flush seen — is appendonly on?"), r.stderr
    assert "flushAppendOnlyFile() that wrote or synced: 0" in r.stdout


SYNC_LOOP = """
import os, time
fd = os.open({path!r}, os.O_CREAT | os.O_WRONLY)
end = time.time() + {secs}
while time.time() < end:
    os.write(fd, b"x" * 100); os.fdatasync(fd); time.sleep(0.001)
"""


@pytest.mark.parametrize("user", ["root", "capable"])
def test_syscalls_followed_with_and_without_private_tracefs(user, tmp_path):
    """As root, aoftrace follows the syscalls through syscalls:sys_enter_* tracepoints on a tracefs it mounts
    privately; with only CAP_BPF and CAP_PERFMON it cannot mount, says so with -v, and falls back to
    raw_syscalls. Both count the same thing, and no tracefs mount is left either way."""
    d = tempfile.mkdtemp(prefix="aoftrace-test-")
    try:
        os.chmod(d, 0o777)
        drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        target = subprocess.Popen([*drop, "/usr/bin/python3", "-c",
                                   SYNC_LOOP.format(path=f"{d}/f", secs=4)])
        time.sleep(0.5)
        tracer = [tracing.AOFTRACE] if user == "root" else [*CAPS_USER, tracing.AOFTRACE]
        mounts = open("/proc/mounts").read()
        r = subprocess.run([*tracer, "-v", "-a", "-p", str(target.pid), "-d", "1.5", "-j", f"{d}/o.json"],
                           capture_output=True, text=True, timeout=30)
        target.wait(10)
        assert r.returncode == 0, r.stderr
        fell_back = "no private tracefs (Operation not permitted): raw_syscalls for every syscall" in r.stderr
        assert fell_back == (user == "capable"), r.stderr[-2000:]
        calls = json.load(open(f"{d}/o.json"))["sync_by_role"]["main"]["fdatasync_calls"]
        assert calls > 100, calls
        assert open("/proc/mounts").read().count("tracefs") == mounts.count("tracefs")
    finally:
        shutil.rmtree(d)
