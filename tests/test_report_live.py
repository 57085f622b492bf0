"""The report's figures on a real kernel, where a unit test cannot reach (issue 18's bugs): an io_uring
writer's report and folded stacks, the text against the JSON of one run, kernel file systems refused as
output paths, and the usage line."""
import re
import time

import pytest

from aofab import env, tracing
from aofwriter_helpers import wait_rewrite_done
from test_aoftrace import aoftrace

SPANS = {"flush", "write", "fdatasync", "request"}
ROLES = {"main", "bio", "iowq", "sqpoll", "child", "other"}


def test_uring_writer_report_and_folded_stacks(ext4, port, tmp_path):
    """aofwriter with every write punted to io-wq (IOSQE_ASYNC): the text gives its io_uring writes, not
    'write() ... 0 calls'; closure names no write; every folded row names its role and span (an io-wq
    worker's read 'iowq;(null);...' before); the text and the JSON of the run agree on the flush calls."""
    folded = tmp_path / "off.folded"
    extra = ["--uring-async", "--uring-chunk", "512", "--uring-inflight", "8"]
    with env.aofwriter(ext4.mnt, port, io="uring-linked", extra=extra) as srv:
        with tracing.Aoftrace(srv.pid, str(tmp_path / "a.json"), ["-f", str(folded)]) as at:
            env.benchmark(srv.port, requests=4000, clients=20)
            time.sleep(0.2)
            assert at.stop() == 0, at.stderr
    rep, text = at.report(), at.output
    fl = rep["flush"]
    assert fl["writes"] == 0 and fl["uring_writes"] > fl["count"], fl
    assert "write() inside those flushes" not in text, text
    m = re.search(r"io_uring inside those flushes: (\d+) AOF writes completed \((\d+) bytes\)", text)
    assert m and int(m.group(1)) == fl["uring_writes"] and int(m.group(2)) == fl["uring_write_bytes"], text
    closure = re.search(r"^closure \(components / wall\):(.*)$", text, re.M).group(1)
    assert "flush" in closure and "write" not in closure, closure
    m = re.search(r"that wrote or synced: (\d+) \(plus (\d+) empty calls of (\d+)\)", text)
    assert (int(m.group(1)), int(m.group(2)), int(m.group(3))) == (fl["count"], fl["empty_calls"], fl["calls"])
    rows = folded.read_text().splitlines()
    assert rows, "no off-CPU stacks"
    for row in rows:
        role, span, _ = row.split(";", 2)
        assert role in ROLES and span in SPANS, row
    workers = [r for r in rows if r.startswith("iowq;")]
    assert workers and all(r.startswith("iowq;request;") for r in workers), rows[:5]


@pytest.mark.parametrize("path", ["/proc/version", "/proc/aoftrace-new.json", "/sys/kernel/aoftrace.json"])
@pytest.mark.parametrize("opt", ["-j", "-f", "-T"])
def test_kernel_file_systems_are_refused_at_once(opt, path, sleeper):
    """An output on procfs or sysfs opened for writing as root and failed only at the end, after the whole
    -d: refused before attaching, in one line, with nothing written."""
    before = open("/proc/version").read()
    t0 = time.monotonic()
    r = aoftrace("-p", sleeper.pid, "-a", "-d", "5", opt, path)
    assert r.returncode == 1 and r.stdout == "", (r.stdout, r.stderr)
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith(f"aoftrace: cannot write {path}: "), r.stderr
    assert re.search(r"the kernel's (procfs|sysfs)", r.stderr), r.stderr
    assert time.monotonic() - t0 < 4.0
    assert open("/proc/version").read() == before
    assert tracing.no_progs_left()


def test_usage_names_every_option():
    r = aoftrace("--help")
    assert r.returncode == 0
    usage = r.stdout.split("USAGE:")[1].split("EXAMPLES:")[0]
    listed = set(re.findall(r"\[?(-\w)\b", usage))
    options = set(re.findall(r"^\s+(-\w),", r.stdout, re.M)) - {"-h", "-?", "-V"}
    assert options <= listed, (options - listed, usage)


@pytest.mark.parametrize("kind", ["redis-server", "aofwriter"])
def test_aof_syncs_apart_from_the_rewrites(kind, xfs, port, tmp_path):
    """With a rewrite running, the headline fdatasync figures are the main thread's syncs of the AOF, one per
    flush; the rewrite's temp-file, manifest and directory syncs are counted apart in sync_by_file (they were
    pooled: 1 185 'fdatasyncs' for 700 flushes in a run-ab cell)."""
    srv = env.redis_server(xfs.mnt, port) if kind == "redis-server" else env.aofwriter(xfs.mnt, port)
    with srv, tracing.Aoftrace(srv.pid, str(tmp_path / "a.json")) as at:
        for _ in range(3):
            srv.cli("BGREWRITEAOF")
            env.benchmark(srv.port, requests=1500, clients=10)
            wait_rewrite_done(srv.port)
        assert at.stop() == 0, at.stderr
    rep = at.report()
    by_file, fl, fd = rep["sync_by_file"], rep["flush"], rep["fdatasync"]
    print({k: v["count"] for k, v in by_file.items()}, "flushes", fl["count"], "fdatasync", fd["count"])
    assert rep["children"]["forked"] >= 1
    assert abs(fd["count"] - fl["count"]) <= 1, (fd["count"], fl["count"])
    assert by_file["aof"]["in_flush"] == fd["count"]
    assert by_file["manifest"]["count"] >= 1 and by_file["dir"]["count"] >= 1, by_file
    assert by_file["rewrite"]["count"] >= 1, by_file
    assert fd["other_files_syncs"] >= by_file["manifest"]["count"], fd
    assert rep["sync_by_role"]["main"]["count"] == fd["count"] + fd["other_files_syncs"]
    # appendfsync always: every AOF sync in a flush had a size change to commit
    assert by_file["aof"]["size_changed"] >= fd["count"] - 1, by_file["aof"]
