"""Durability invariants (docs/durability.md): aoftrace names each fault aofwriter injects on purpose
(--enable-test-faults), on XFS and ext4, in write and io_uring modes, within a short bounded load;
and reports `ok` for every correct mode of aofwriter and for Debian's redis-server under
redis-benchmark with BGREWRITEAOF loops, run after run (no false positives)."""
import glob
import os
import re
import threading
import time

import pytest

from aofab import env, tracing

# A load of about a second on these machines: the fault must show within it.
FAULT_REQUESTS = 3000
CLEAN_REQUESTS = 8000

FAULTS = {
    # fault: (JSON counter that must count it, the other counters that may count it too)
    "overwrite": ("overwrites", {"growth_mismatches"}),
    "reply-before-sync": ("replies_before_sync", set()),
    "skip-fsync": ("replies_before_sync", set()),
    "stale-file": ("writes_to_unlinked", set()),
}
COUNTERS = ("overwrites", "growth_mismatches", "replies_before_sync", "sync_errors", "writes_to_unlinked")


def traced_load(server, tmp_path, requests, rewrite=None, clients=20, size=200):
    """aoftrace on `server` while redis-benchmark sends `requests` SETs; `rewrite(port)` runs alongside."""
    with tracing.Aoftrace(server.pid, str(tmp_path / "t.json")) as at:
        if rewrite:
            rewrite(server.port)
        env.benchmark(server.port, requests=requests, clients=clients, size=size, timeout=120)
        assert at.stop() == 0, at.stderr
    return at.report()["durability"], at


def rewrite_then_more(port):
    """BGREWRITEAOF, wait for it to finish, so the writes that follow go to the new files."""
    env.benchmark(port, requests=2000, clients=10)
    env.run(["redis-cli", "-p", str(port), "BGREWRITEAOF"])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if "aof_rewrite_in_progress:0" in env.run(["redis-cli", "-p", str(port), "INFO", "persistence"]).stdout:
            return
        time.sleep(0.05)
    raise TimeoutError("BGREWRITEAOF did not finish")


@pytest.mark.parametrize("io", ["write", "uring", "uring-linked"])
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_injected_fault_is_named(fault, io, loopfs, port, tmp_path):
    want, also = FAULTS[fault]
    extra = ["--enable-test-faults", "--test-fault", fault]
    with env.aofwriter(loopfs.mnt, port, io=io, extra=extra) as w:
        if fault == "stale-file":
            rewrite_then_more(port)
        dur, at = traced_load(w, tmp_path, FAULT_REQUESTS)
    assert not dur["ok"], (fault, dur)
    assert dur[want] > 0, (fault, dur)
    assert dur["appendfsync"] == "always", dur
    for other in COUNTERS:
        if other != want and other not in also:
            assert dur[other] == 0, (fault, other, dur)
    # Said on stderr as soon as seen, one line each, and kept as examples with the thread that did it.
    assert "aoftrace: DURABILITY at " in at.stderr, at.stderr
    ex = [e for e in dur["examples"] if e["kind"] == want]
    assert ex and all(e["tid"] > 0 and e["comm"] for e in ex), dur["examples"]
    if fault == "overwrite":
        assert all(e["offset"] < e["size"] and e["bytes"] > 0 for e in ex), ex
        assert dur["overwrite_bytes"] >= sum(e["bytes"] for e in ex)
    if fault in ("reply-before-sync", "skip-fsync"):
        assert dur["max_unsynced_window_us"] > 0


def aof_written_and_size(w, mnt):
    """aofwriter's AOF bytes written so far (INFO aofwriter), and the size of its incr file(s)."""
    info = w.cli("INFO", "aofwriter")
    incr = glob.glob(os.path.join(mnt, "appendonlydir", "*.incr.aof"))
    assert incr, os.listdir(mnt)
    return int(re.search(r"aof_bytes_written:(\d+)", info).group(1)), sum(os.path.getsize(f) for f in incr)


@pytest.mark.parametrize("io", ["write", "uring"])
@pytest.mark.parametrize("fault", [None, "overwrite"], ids=["append", "overwrite"])
def test_overwrite_bytes_are_the_bytes_overwritten(fault, io, loopfs, port, tmp_path):
    """Each write checked once, for the bytes it really overwrote. ext4 traces every folio of a buffered
    write with what is left of the write from there: an io_uring overwrite of several pages was counted
    again at each page after its first (6 048 bytes at 0 made 6 048 + 1 952), more than was written.
    aofwriter's overwrite fault writes a flush's whole buffer at end - len (at 0 when the file is shorter),
    so what it overwrote is exactly what it wrote minus what the file grew; a clean run appends only."""
    extra = ["--enable-test-faults", "--test-fault", fault, "--test-fault-every", "4"] if fault else []
    with env.aofwriter(loopfs.mnt, port, io=io, extra=extra) as w:
        env.benchmark(port, requests=100, clients=5, size=6000)     # something to overwrite from the start
        written0, size0 = aof_written_and_size(w, loopfs.mnt)
        # 6 KB values: every flush writes more than a page, so every overwrite spans folios.
        dur, at = traced_load(w, tmp_path, FAULT_REQUESTS, size=6000)
        written1, size1 = aof_written_and_size(w, loopfs.mnt)
    written, overwritten = written1 - written0, (written1 - written0) - (size1 - size0)
    fs = at.report()["fs"]
    assert fs["bytes_written"] == written, (fs, written)
    assert dur["overwrite_bytes"] <= fs["bytes_written"], (dur, fs)
    assert dur["overwrite_bytes"] == overwritten, (dur, written, overwritten)
    if fault:
        ex = [e for e in dur["examples"] if e["kind"] == "overwrites"]
        assert overwritten > 0 and dur["overwrites"] > 0, dur
        assert ex and all(e["bytes"] > 4096 for e in ex), ex
    else:
        assert overwritten == 0 and dur["overwrites"] == 0 and dur["ok"], dur


@pytest.mark.parametrize("rewrite", [False, True], ids=["plain", "rewrite"])
@pytest.mark.parametrize("io", ["write", "uring", "uring-linked", "uring-sqpoll"])
def test_correct_aofwriter_is_ok(io, rewrite, loopfs, port, tmp_path):
    extra = ["--auto-rewrite"] if rewrite else []
    with env.aofwriter(loopfs.mnt, port, io=io, extra=extra) as w:
        dur, _ = traced_load(w, tmp_path, CLEAN_REQUESTS)
        rewrites = env.run(["redis-cli", "-p", str(port), "INFO", "persistence"]).stdout
    assert dur["ok"], dur
    assert dur["appendfsync"] == "always" and dur["writing_flushes"] > 100, dur
    assert all(dur[c] == 0 for c in COUNTERS), dur
    if rewrite:
        assert "aof_rewrites:0\r" not in rewrites


class RewriteLoop:
    """BGREWRITEAOF again and again on a thread, until stopped."""

    def __init__(self, port):
        self.port, self.stop, self.count = port, threading.Event(), 0

    def __call__(self, port):
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.wait(0.3):
            if "started" in env.run(["redis-cli", "-p", str(self.port), "BGREWRITEAOF"], check=False).stdout:
                self.count += 1


@pytest.mark.parametrize("rep", range(2))
def test_redis_server_with_rewrites_is_ok(rep, loopfs, port, tmp_path):
    with env.redis_server(loopfs.mnt, port) as srv:
        env.benchmark(port, requests=5000, clients=10, size=200)    # a dataset worth rewriting
        loop = RewriteLoop(port)
        try:
            dur, _ = traced_load(srv, tmp_path, 2 * CLEAN_REQUESTS, rewrite=loop)
        finally:
            loop.stop.set()
            loop.thread.join(10)
    assert loop.count >= 2, loop.count
    assert dur["ok"], dur
    assert dur["appendfsync"] == "always" and all(dur[c] == 0 for c in COUNTERS), dur


def test_everysec_replies_are_not_violations(xfs, port, tmp_path):
    """everysec acknowledges before the sync by design: counted, but not a violation."""
    with env.redis_server(xfs.mnt, port, appendfsync="everysec") as srv:
        dur, at = traced_load(srv, tmp_path, CLEAN_REQUESTS)
    assert dur["ok"] and dur["appendfsync"] == "not always", dur
    assert dur["replies_before_sync"] == 0 and dur["replies_unsynced_any_policy"] > 0, dur
    assert "DURABILITY" not in at.stderr


@pytest.mark.parametrize("io", ["write", "uring-linked"])
def test_write_error_is_named_with_what_followed(io, xfs, port, tmp_path):
    """RLIMIT_FSIZE just above the AOF's size: the next writes fail with EFBIG, and aofwriter, like
    Valkey with appendfsync always, exits. aoftrace names the error and that the server exited."""
    with env.aofwriter(xfs.mnt, port, io=io) as w:
        env.benchmark(port, requests=2000, clients=5)
        with tracing.Aoftrace(w.pid, str(tmp_path / "t.json")) as at:
            incr = glob.glob(os.path.join(xfs.mnt, "appendonlydir", "*.incr.aof"))
            assert len(incr) == 1, incr
            env.run(["prlimit", "--pid", str(w.pid), f"--fsize={os.path.getsize(incr[0]) + 4096}"])
            env.run(["redis-benchmark", "-p", str(port), "-t", "set", "-n", "2000", "-c", "5", "-q"],
                    check=False, timeout=60)
            w.proc.wait(10)
            assert at.proc.wait(10) == 0, at.stderr     # it follows the target out
            at.stop()
        dur = at.report()["durability"]
    assert dur["sync_errors"] >= 1 and dur["exited_after_sync_error"], dur
    assert not dur["ok"] and "File too large" in at.stderr, at.stderr
