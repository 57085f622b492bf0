"""aoftrace v0 against Debian's redis-server on loop-mounted XFS and ext4, cross-checked by bpftrace."""
import json
import os
import re
import signal
import subprocess
import time

import pytest

from aofab import env, tracing
from aofab.tracing import no_progs_left, our_progs  # shared with test_reliability.py

REQUIRED_KEYS = [
    "schema", "target.pid", "target.exe", "window_s", "flush.count", "flush.total_us", "flush.p50_us",
    "flush.p99_us", "flush.max_us", "fdatasync.count", "fdatasync.total_us", "fdatasync.p50_us",
    "fdatasync.p99_us", "fdatasync.max_us", "lost_events",
]


def dig(d, dotted):
    for k in dotted.split("."):
        d = d[k]
    return d


@pytest.fixture
def redis(loopfs, port, tmp_path):
    with env.redis_server(loopfs.mnt, port, log=str(tmp_path / "redis.log")) as srv:
        yield srv


CET_AOFWRITER = env.CET_AOFWRITER
X86_64 = os.uname().machine == "x86_64"
SERVERS = ("redis-server", "aofwriter", "aofwriter-cet")   # the `server` fixture's kinds here (conftest.py)


@pytest.mark.skipif(not X86_64, reason="endbr64 is x86-64's")
def test_uprobes_step_over_endbr64(loopfs, port, tmp_path):
    """aofwriter-cet's flushAppendOnlyFile starts with endbr64, which a 6.18 uprobe would single-step (a trap
    more per call): aoftrace's entry and return probes sit on the instruction after it."""
    out = subprocess.run(["objdump", "-d", "--disassemble=flushAppendOnlyFile", CET_AOFWRITER],
                         capture_output=True, text=True, check=True).stdout
    first = re.search(r"<flushAppendOnlyFile>:\n\s*[0-9a-f]+:\s+(?:[0-9a-f]{2} )+\s*(\S+)", out)
    assert first and first.group(1) == "endbr64", out[:400]
    sym = int(re.search(r"^([0-9a-f]+) T flushAppendOnlyFile$",
                        env.run(["nm", CET_AOFWRITER]).stdout, re.M).group(1), 16)
    text = re.search(r"\s\.text\s+PROGBITS\s+([0-9a-f]+) ([0-9a-f]+)", env.run(["readelf", "-SW", CET_AOFWRITER]).stdout)
    file_off = sym - int(text.group(1), 16) + int(text.group(2), 16)
    with env.aofwriter(loopfs.mnt, port, exe=CET_AOFWRITER, log=str(tmp_path / "w.log")) as w:
        with tracing.Aoftrace(w.pid, str(tmp_path / "a.json")) as at:
            perf = json.loads(env.run(["bpftool", "perf", "show", "-j"]).stdout)
            probes = sorted((p["fd_type"], p["offset"]) for p in perf
                            if p["pid"] == at.proc.pid and p["fd_type"] in ("uprobe", "uretprobe"))
            env.benchmark(port, requests=2000, clients=5)
            assert at.stop() == 0, at.stderr
    assert probes == [("uprobe", file_off + 4), ("uretprobe", file_off + 4)], (probes, file_off)
    assert at.report()["flush"]["count"] > 0


def test_counts_and_totals_match_bpftrace(server, tmp_path):
    """Flushes that wrote and main-thread fdatasyncs: counts within 1%, total times within 5% of bpftrace's."""
    with tracing.tracefs():
        with tracing.Aoftrace(server.pid, str(tmp_path / "a.json")) as at, tracing.bpftrace_flush(server.pid) as bt:
            time.sleep(0.3)
            rows = env.benchmark(server.port, requests=20000, clients=50, size=100, keyspace=100000)
            time.sleep(0.3)
            assert bt.stop() == 0, bt.stderr
            assert at.stop() == 0, at.stderr
    assert rows.get("SET", 0) > 0
    rep, ref = at.report(), bt.maps()
    redis = server
    for k in REQUIRED_KEYS:
        dig(rep, k)
    assert rep["schema"] == "aoftrace/1" and rep["target"]["pid"] == redis.pid
    assert rep["lost_events"] == 0
    assert ref["flush_count"] > 100, ref
    assert rep["flush"]["count"] == pytest.approx(ref["flush_count"], rel=0.01)
    assert rep["fdatasync"]["count"] == pytest.approx(ref["sync_count"], rel=0.01)
    assert rep["flush"]["total_us"] == pytest.approx(ref["flush_ns"] / 1000, rel=0.05)
    assert rep["fdatasync"]["total_us"] == pytest.approx(ref["sync_ns"] / 1000, rel=0.05)
    # Every SET reached the AOF: 20000 commands of at least 100 bytes each went through write().
    assert rep["flush"]["write_bytes"] > 20000 * 100
    assert rep["flush"]["p50_us"] <= rep["flush"]["p99_us"] <= rep["flush"]["max_us"]
    # Every fdatasync of a growing file must commit its size: a jbd2 commit or an XFS log force.
    assert rep["fdatasync"]["forced_commits"] >= 0.99 * rep["fdatasync"]["count"]
    if rep["fs"]["type"] == "ext4":
        assert rep["fs"]["jbd2"]["commits"] > 0 and rep["fs"]["jbd2"]["logging_us"] > 0
    else:
        assert rep["fs"]["type"] == "xfs" and rep["fs"]["xfs_log"]["iclog_writes"] > 0
    # The histogram and the quantile line are printed.
    assert "usecs" in at.output and "p99.9" in at.output


@pytest.mark.parametrize("io", ["uring", "uring-linked"])
def test_uring_flushes_are_counted(io, loopfs, port, tmp_path):
    """aofwriter's io_uring modes: flushes that write through io_uring_enter are flushes too."""
    with env.aofwriter(loopfs.mnt, port, io=io) as srv:
        with tracing.Aoftrace(srv.pid, str(tmp_path / "a.json")) as at:
            env.benchmark(srv.port, requests=5000, clients=20)
            assert at.stop() == 0, at.stderr
    rep = at.report()
    assert rep["flush"]["count"] > 50 and rep["flush"]["uring_enters"] >= rep["flush"]["count"]
    assert rep["flush"]["writes"] == 0          # no write(2): the writes are io_uring requests
    if io == "uring":                          # fdatasync(2) after the io_uring writes
        assert rep["fdatasync"]["count"] == pytest.approx(rep["flush"]["count"], rel=0.01)
    else:                                      # IORING_OP_FSYNC linked to the writes
        assert rep["fdatasync"]["count"] == 0


def test_rewrite_child_and_interval_lines(redis, tmp_path):
    """BGREWRITEAOF under load: the forked child and its fsync are seen and attributed to the child role."""
    with tracing.Aoftrace(redis.pid, str(tmp_path / "a.json"), ["-i", "0.5"]) as at:
        env.benchmark(redis.port, requests=5000)
        redis.cli("BGREWRITEAOF")
        env.benchmark(redis.port, requests=5000)
        for _ in range(100):
            if "aof_rewrite_in_progress:0" in redis.cli("INFO", "persistence") \
                    and "aof_rewrite_scheduled:0" in redis.cli("INFO", "persistence"):
                break
            time.sleep(0.1)
        time.sleep(1.2)  # at least two interval lines whatever the load took
        assert at.stop() == 0, at.stderr
    rep = at.report()
    assert rep["children"]["forked"] >= 1
    assert rep["children"]["exited"] >= 1
    child = rep["sync_by_role"]["child"]
    assert child["fdatasync_calls"] + child["fsync_calls"] >= 1
    lines = [l for l in at.output.splitlines() if re.match(r"\d\d:\d\d:\d\d ", l)]
    assert len(lines) >= 2
    assert sum(int(l.split()[1]) for l in lines) <= rep["flush"]["count"]
    # CHILD: the most children alive during the interval (it read 0 on every line while the rewrite ran)
    if rep["by_rewrite"]["active"]["flush"]["count"]:
        assert max(int(l.split()[-1]) for l in lines) >= 1, lines


def test_sigint_detaches_everything(redis, tmp_path):
    with tracing.Aoftrace(redis.pid, str(tmp_path / "a.json")) as at:
        assert len(our_progs(at.proc.pid)) >= 4
        held = tracing.bpf_fds(at.proc.pid)
        assert at.stop(signal.SIGINT) == 0
    assert "flushAppendOnlyFile()" in at.output
    assert no_progs_left(held=held, pid=at.proc.pid)


def test_sigterm_prints_report(redis, tmp_path):
    with tracing.Aoftrace(redis.pid, str(tmp_path / "a.json")) as at:
        env.benchmark(redis.port, requests=2000)
        assert at.stop(signal.SIGTERM) == 0
    assert at.report()["flush"]["count"] > 0
    assert no_progs_left()


def test_target_exit_ends_trace(loopfs, port, tmp_path):
    with env.redis_server(loopfs.mnt, port) as srv:
        with tracing.Aoftrace(srv.pid, str(tmp_path / "a.json")) as at:
            srv.stop()
            t0 = time.monotonic()
            at.proc.wait(5)
            assert time.monotonic() - t0 < 2.0
            assert at.stop() == 0
    assert "exited" in at.output
    assert at.report()["target"]["exited"] is True


# ---- bad input: one line on stderr, a non-zero exit, nothing left behind -------------------------

def aoftrace(*args, user=None, timeout=20):
    argv = [tracing.AOFTRACE, *map(str, args)]
    if user:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", "--inh-caps=-all"] + argv
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def free_pid():
    pid = 4_000_000
    while os.path.exists(f"/proc/{pid}"):
        pid -= 1
    return pid


@pytest.mark.parametrize("args,code,message", [
    (["-p", "FREE"], 1, "no process with pid"),
    (["-p", "SLEEPER"], 1, "has no symbol flushAppendOnlyFile"),
    (["-p", "2"], 1, "has no executable"),
    (["-p", "SLEEPER", "--btf", "/nonexistent"], 1, "no kernel BTF at /nonexistent"),
    (["-p", "SLEEPER", "-b", "/nonexistent/valkey-server"], 1, "cannot read binary"),
    (["-p", "SLEEPER", "-b", "/etc/os-release"], 1, "/etc/os-release is not an ELF executable"),
    (["-p", "SLEEPER", "-j", "/nonexistent/dir/out.json"], 1, "cannot write /nonexistent/dir/out.json"),
    (["-p", "abc"], 2, "invalid pid"),
    (["-p", "-5"], 2, "invalid pid"),
    (["-p", "SLEEPER", "-d", "0"], 2, "invalid duration"),
    (["-p", "SLEEPER", "-d", "ten"], 2, "invalid duration"),
    (["-p", "SLEEPER", "-i", "-1"], 2, "invalid interval"),
    ([], 2, "a pid is required"),
    (["-p", "SLEEPER", "extra"], 2, "unexpected argument"),
    (["--no-such-option"], 2, "unrecognized option"),
    (["-p", "SLEEPER", "--lite", "-f", "x.folded"], 2, "--lite keeps no off-CPU stacks or timeline: -f needs"),
    (["-p", "SLEEPER", "--lite", "-T", "x.json"], 2, "--lite keeps no off-CPU stacks or timeline: -T needs"),
    (["-p", "SLEEPER", "--lite", "-t", "3"], 2, "--lite keeps no off-CPU stacks or timeline: -t needs"),
])
def test_bad_input(args, code, message, sleeper):
    args = [{"FREE": free_pid(), "SLEEPER": sleeper.pid}.get(a, a) for a in args]
    r = aoftrace(*args)
    assert r.returncode == code, (r.stdout, r.stderr)
    first = r.stderr.splitlines()[0]
    assert first.startswith("aoftrace: ") and message in first, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert no_progs_left()


def test_not_root(sleeper):
    r = aoftrace("-p", sleeper.pid, user=65534)
    assert r.returncode == 1
    assert r.stderr.strip() == "aoftrace: need root, or CAP_BPF and CAP_PERFMON, to load BPF programs"


def test_json_symlink_is_refused(sleeper, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (tmp_path / "link.json").symlink_to(victim)
    r = aoftrace("-p", sleeper.pid, "-j", tmp_path / "link.json")
    assert r.returncode == 1 and "cannot write" in r.stderr
    assert victim.read_text() == "keep me"


def test_check_reports_core_can_run():
    r = aoftrace("--check")
    assert r.returncode == 0, r.stdout
    assert re.search(r"^core \(flush, fdatasync\)\s+can run$", r.stdout, re.M)
    assert re.search(r"^kprobes\s+", r.stdout, re.M) and re.search(r"^fentry\s+", r.stdout, re.M)
    r = aoftrace("--check", "--btf", "/nonexistent")
    assert r.returncode == 1 and "CANNOT run" in r.stdout


def test_any_process_is_traced_without_flush_figures(sleeper, tmp_path):
    """-a: a process without flushAppendOnlyFile is traced anyway (fsyncs, io_uring), and says so."""
    r = aoftrace("-p", sleeper.pid, "-a", "-d", "0.5", "-j", tmp_path / "a.json")
    assert r.returncode == 0, r.stderr
    assert "no AOF flush seen" in r.stdout
    assert no_progs_left()
