"""aoftrace --lite, the mode to leave attached: flush and fdatasync latency and counts, io_uring request counts
and every durability check, without the programs that run per scheduler event, lock contention or block request
(docs/reliability.md, "Modes")."""
import subprocess
import sys
import time

import pytest

from aofab import env, tracing
from aofab.tracing import our_progs

from test_durability import COUNTERS, FAULTS, FAULT_REQUESTS, rewrite_then_more
from test_uring import OPCODES, aof_bytes

# What --lite does not load (tools/aoftrace.c, full_only_progs), as bpftool names them (15 characters).
FULL_ONLY = {n[:15] for n in (
    "sched_switch", "sched_waking", "contention_begin", "contention_end", "folio_wait_writeback",
    "xfs_log_cil_wait", "xlog_iclog_wait_on", "balance_dirty_pages", "jbd2_start_commit", "jbd2_commit_locking",
    "jbd2_commit_flushing", "jbd2_commit_logging", "xlog_iclog_sync", "xlog_iclog_sync_done", "block_rq_issue",
    "block_rq_complete")}


def lite(pid, path):
    return tracing.Aoftrace(pid, str(path), ["--lite"])


SERVERS = ("redis-server", "aofwriter")   # the `server` fixture's kinds here (conftest.py)


def test_lite_counts_match_bpftrace(server, tmp_path):
    """Flushes and main-thread fdatasyncs counted within 1 % and timed within 5 % of bpftrace's; the file's
    figures exact; the programs of the full mode's per-event work not loaded; no component in the JSON."""
    with tracing.tracefs():
        with lite(server.pid, tmp_path / "l.json") as at, tracing.bpftrace_flush(server.pid) as bt:
            progs = {n[:15] for n in our_progs(at.proc.pid)}   # bpftool may print names whole
            time.sleep(0.3)
            env.benchmark(server.port, requests=20000, clients=50)
            time.sleep(0.3)
            assert bt.stop() == 0, bt.stderr
            assert at.stop() == 0, at.stderr
    rep, ref = at.report(), bt.maps()
    assert rep["mode"] == "lite" and rep["lost_events"] == 0
    assert not progs & FULL_ONLY, progs & FULL_ONLY
    assert {"flush_enter", "flush_exit", "sys_enter_tp", "sys_exit_tp", "io_uring_complete"[:15]} <= progs, progs
    assert ref["flush_count"] > 100, ref
    assert rep["flush"]["count"] == pytest.approx(ref["flush_count"], rel=0.01)
    assert rep["fdatasync"]["count"] == pytest.approx(ref["sync_count"], rel=0.01)
    assert rep["flush"]["total_us"] == pytest.approx(ref["flush_ns"] / 1000, rel=0.05)
    assert rep["fdatasync"]["total_us"] == pytest.approx(ref["sync_ns"] / 1000, rel=0.05)
    assert rep["fs"]["bytes_written"] == rep["fs"]["size_growth_bytes"] > 20000 * 100
    assert rep["fs"]["journal_commits"] > 0
    assert rep["durability"]["ok"] and rep["durability"]["appendfsync"] == "always", rep["durability"]
    for key in ("components_us", "closure_pct"):
        assert key not in rep["flush"] and key not in rep["fdatasync"]
        assert key not in rep["by_rewrite"]["idle"]["flush"]
    assert "block" not in rep and "sleeps" not in rep and "jbd2" not in rep["fs"]
    assert "--lite" in at.output and "Where the time went" not in at.output


def test_lite_sees_the_rewrite_child(loopfs, port, tmp_path):
    """With a BGREWRITEAOF running, flushes and fdatasyncs are split by whether a child was alive."""
    with env.redis_server(loopfs.mnt, port) as srv:
        env.benchmark(port, requests=20000, clients=20, size=1000)
        with lite(srv.pid, tmp_path / "l.json") as at:
            srv.cli("BGREWRITEAOF")
            env.benchmark(port, requests=5000, clients=20)
            assert at.stop() == 0, at.stderr
    rep = at.report()
    assert rep["children"]["forked"] >= 1
    assert rep["by_rewrite"]["active"]["flush"]["count"] > 0 and rep["by_rewrite"]["idle"]["flush"]["count"] > 0
    assert "flush+child" in at.output
    # make explain takes lite reports too, and says they have no components
    r = subprocess.run([sys.executable, "-m", "aofab.explain", at.json_path, at.json_path], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "aoftrace --lite: no components" in r.stdout, (r.stdout, r.stderr)


@pytest.mark.parametrize("io", ["write", "uring-linked"])
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_lite_names_injected_faults(fault, io, loopfs, port, tmp_path):
    """Every durability check of the full mode holds in --lite: each fault aofwriter injects is named, and
    no other (test_durability.py has the full mode's)."""
    want, also = FAULTS[fault]
    extra = ["--enable-test-faults", "--test-fault", fault]
    with env.aofwriter(loopfs.mnt, port, io=io, extra=extra) as w:
        if fault == "stale-file":
            rewrite_then_more(port)
        with lite(w.pid, tmp_path / "l.json") as at:
            env.benchmark(port, requests=FAULT_REQUESTS, clients=20, size=200, timeout=120)
            assert at.stop() == 0, at.stderr
    dur = at.report()["durability"]
    assert not dur["ok"] and dur[want] > 0, (fault, dur)
    for other in COUNTERS:
        if other != want and other not in also:
            assert dur[other] == 0, (fault, other, dur)
    assert "aoftrace: DURABILITY at " in at.stderr, at.stderr


@pytest.mark.parametrize("io", ["uring-linked", "uring-async"])
def test_lite_uring_counts(io, loopfs, port, tmp_path):
    """io_uring requests by opcode within 1 % of bpftrace's count of io_uring_submit_req, punted ones too;
    the AOF bytes they wrote equal the file's growth; no queue or run figures (--lite has no scheduler
    programs to date a worker's start)."""
    extra = ["--uring-async"] if io == "uring-async" else []
    with env.aofwriter(loopfs.mnt, port, io="uring-linked", extra=extra) as srv:
        with tracing.tracefs(), lite(srv.pid, tmp_path / "l.json") as at, tracing.bpftrace_uring(srv.pid) as bt:
            time.sleep(1.0)   # bpftrace says "Attaching" before its probes are all attached
            before = aof_bytes(loopfs.mnt)
            env.benchmark(srv.port, requests=6000, clients=20)
            time.sleep(0.2)
            grew = aof_bytes(loopfs.mnt) - before
            assert bt.stop() == 0, bt.stderr
            assert at.stop() == 0, at.stderr
    rep, ref = at.report(), tracing.keyed_maps(bt.output)
    ops = rep["uring"]["ops"]
    assert {"WRITE", "FSYNC"} <= ops.keys(), ops.keys()
    for name, o in ops.items():
        assert o["requests"] == pytest.approx(ref["sub"].get(OPCODES[name], 0), rel=0.01, abs=1), (name, o, ref)
        assert "queue_us" not in o and "run_us" not in o
    assert ops["FSYNC"]["punted"] == ops["FSYNC"]["requests"]
    if io == "uring-async":
        assert ops["WRITE"]["punted"] == ops["WRITE"]["requests"]
    assert rep["fs"]["bytes_written"] == rep["fs"]["uring_bytes"] == grew > 0, (rep["fs"], grew)
    assert rep["durability"]["ok"], rep["durability"]
