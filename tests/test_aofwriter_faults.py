"""aofwriter's test-only faults (--test-fault, issue 8): refused without --enable-test-faults, and each one
loses acknowledged writes exactly as docs/aofwriter.md says, for every --io mode."""
import os
import re
import shutil
import signal
import subprocess

import pytest

from aofab import env
from aofwriter_helpers import (IO_MODES, KILL_FS, Resp, check_aof, dump, info, manifest_files, run_writer,
                               wait_rewrite_done)

# ------------------------------------------------------------------ test-only fault switches (issue 8)

FAULT_EVERY = 5
FAULT_SETS = 100            # one SET per round trip: one flush each, so every 5th flush is a fault


@pytest.mark.parametrize("args", [
    ["--test-fault", "overwrite"], ["--test-fault", "stale-file", "--test-fault-every", "3"],
    ["--test-fault-every", "3"], ["--enable-test-faults", "--test-fault", "bogus"],
    ["--enable-test-faults", "--test-fault", "overwrite,"], ["--enable-test-faults", "--test-fault", ""],
    ["--enable-test-faults", "--test-fault-every", "0"],
    ["--enable-test-faults", "--test-fault", "skip-fsync", "--appendfsync", "everysec"],
    ["--enable-test-faults", "--test-fault", "overwrite,reply-before-sync", "--appendfsync", "no"],
], ids=lambda a: " ".join(a))
def test_test_faults_refused(args, tmp_path, port):
    # the environment is no way around the flag
    r = run_writer("--dir", str(tmp_path), "--port", str(port), "--appendfsync", "always", *args,
                   env={**os.environ, "AOFWRITER_ENABLE_TEST_FAULTS": "1"})
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("aofwriter: "), r.stderr
    if "--enable-test-faults" not in args:
        assert "refused without --enable-test-faults" in r.stderr
    assert not os.path.exists(tmp_path / "appendonlydir")


def fault_writer(fs, port, io, fault, log):
    return env.aofwriter(fs.mnt, port, io=io, log=str(log), extra=[
        "--enable-test-faults", "--test-fault", fault, "--test-fault-every", str(FAULT_EVERY)])


def set_one_by_one(c, keys, value=b"v" * 20):
    for k in keys:
        assert c.call("SET", k, value) == "OK"


class MainThreadTrace:
    """strace of the server's main thread around a block, when strace is installed. `iterations()`
    splits what it saw at each epoll_wait into event-loop iterations of (kind, detail) events:
    aof (write/pwrite64 on the AOF), reply (write on a socket), fdatasync, uring (io_uring_enter,
    detail = to_submit)."""

    def __init__(self, pid, path):
        self.pid, self.path, self.proc = pid, path, None

    def __enter__(self):
        if not shutil.which("strace"):
            return self
        self.proc = subprocess.Popen(["strace", "-p", str(self.pid), "-y", "-o", self.path, "-e",
                                      "trace=write,pwrite64,fdatasync,fsync,io_uring_enter,epoll_wait"],
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()      # "strace: Process N attached"
        assert "attached" in line, line
        return self

    def __exit__(self, *exc):
        if self.proc:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(10)
        return False

    def iterations(self):
        its, cur = [], []
        for line in open(self.path):
            m = re.match(r"(\w+)\((\d+)<([^>]*)>(?:, (\d+))?", line)
            if not m:
                continue
            call, target, arg = m.group(1), m.group(3), m.group(4)
            if call == "epoll_wait":
                if cur:
                    its.append(cur)
                cur = []
            elif call in ("write", "pwrite64"):
                cur.append(("aof" if "appendonly.aof." in target else "reply" if "socket:" in target else "other", None))
            elif call in ("fdatasync", "fsync"):
                cur.append(("fdatasync", None))
            elif call == "io_uring_enter":
                cur.append(("uring", int(arg)))
        if cur:
            its.append(cur)
        return [it for it in its if any(k in ("aof", "uring") for k, _ in it)]   # the flushes


@pytest.mark.parametrize("io", IO_MODES)
def test_fault_overwrite(io, port, tmp_path):
    """Every 5th flush writes its one SET over the one before: those keys are gone after a reload,
    and the file is shorter than what was written by exactly the overwritten bytes."""
    keys = [f"key:{i:06d}" for i in range(FAULT_SETS)]
    with env.LoopFS(KILL_FS[io]) as fs:
        aofdir = os.path.join(fs.mnt, "appendonlydir")
        with fault_writer(fs, port, io, "overwrite", tmp_path / "log") as w, Resp(port) as c:
            set_one_by_one(c, keys)
            st = info(port, "all")
            assert st["aof_test_faults"] == "overwrite"
            assert int(st["aof_test_faults_injected"]) == FAULT_SETS // FAULT_EVERY
            cmd = len(Resp.encode("set", keys[0], b"v" * 20))
            incr = os.path.join(aofdir, st["aof_incr_file"])
            assert os.path.getsize(incr) == int(st["aof_bytes_written"]) - FAULT_SETS // FAULT_EVERY * cmd
            c.send_raw(Resp.encode("SHUTDOWN"))
            assert w.proc.wait(30) == 0
        assert "TEST FAULTS ENABLED: overwrite" in (tmp_path / "log").read_text()
        assert check_aof(aofdir) == "ok"        # equal-sized commands: the overwrites stay aligned
        with env.aofwriter(fs.mnt, port, io=io):
            state = dump(port)
    lost = {keys[i] for i in range(FAULT_EVERY - 2, FAULT_SETS, FAULT_EVERY)}
    assert set(state) == {k.encode() for k in keys} - {k.encode() for k in lost}


@pytest.mark.parametrize("fault", ["reply-before-sync", "skip-fsync"])
@pytest.mark.parametrize("io", IO_MODES)
def test_fault_sync(io, fault, port, tmp_path):
    """Every 5th flush replies before its fsync, or has none; strace shows it in the syscalls."""
    keys = [f"key:{i:06d}" for i in range(FAULT_SETS)]
    faults = FAULT_SETS // FAULT_EVERY
    linked = io in ("uring-linked", "uring-sqpoll")
    with env.LoopFS(KILL_FS[io]) as fs:
        with fault_writer(fs, port, io, fault, tmp_path / "log") as w, Resp(port) as c:
            with MainThreadTrace(w.pid, str(tmp_path / "strace")) as trace:
                set_one_by_one(c, keys)
                assert c.call("PING") == "PONG"     # the last flush may sync after its reply
            st = info(port, "all")
            assert int(st["aof_test_faults_injected"]) == faults
            assert int(st["flushes"]) == FAULT_SETS
            assert int(st["fsyncs"]) == FAULT_SETS - (faults if fault == "skip-fsync" else 0)
        assert f"TEST FAULTS ENABLED: {fault}" in (tmp_path / "log").read_text()
    if not trace.proc:
        return
    its = trace.iterations()
    assert len(its) == FAULT_SETS
    syncs = [[n for n, (k, d) in enumerate(it) if k == "fdatasync" or (linked and k == "uring")] for it in its]
    replies = [[n for n, (k, _) in enumerate(it) if k == "reply"] for it in its]
    early = sum(1 for s, r in zip(syncs, replies) if s and r and r[0] < s[-1])
    assert early == (faults if fault == "reply-before-sync" else 0)
    if linked:      # one small write per flush: 2 SQEs with the linked fsync, 1 without
        enters = [d for it in its for k, d in it if k == "uring"]
        n_alone = {"reply-before-sync": 2 * faults, "skip-fsync": faults}[fault]
        assert enters.count(1) == n_alone and enters.count(2) == FAULT_SETS - faults
    else:
        assert sum(1 for s in syncs if not s) == (faults if fault == "skip-fsync" else 0)


@pytest.mark.parametrize("io", IO_MODES)
def test_fault_stale_file(io, port, tmp_path):
    """After a rewrite the writes stay on the old incr file, which the rewrite deleted: the process
    holds it as "(deleted)", the manifest's incr file stays empty, and a reload misses those keys."""
    before = [f"before:{i}" for i in range(50)]
    after = [f"after:{i}" for i in range(50)]
    with env.LoopFS(KILL_FS[io]) as fs:
        aofdir = os.path.join(fs.mnt, "appendonlydir")
        with fault_writer(fs, port, io, "stale-file", tmp_path / "log") as w, Resp(port) as c:
            set_one_by_one(c, before)
            assert c.call("BGREWRITEAOF").startswith("Background append only file rewriting")
            wait_rewrite_done(port)
            set_one_by_one(c, after)
            st = info(port, "persistence")
            assert st["aof_rewrites"] == "1" and int(st["aof_test_faults_injected"]) == len(after)
            assert manifest_files(aofdir)[-1] == st["aof_incr_file"]
            assert os.path.getsize(os.path.join(aofdir, st["aof_incr_file"])) == 0
            fds = [os.readlink(f"/proc/{w.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{w.pid}/fd")]
            held = [f for f in fds if "/appendonlydir/" in f]
            assert len(held) == 1 and held[0].endswith(" (deleted)"), held
            assert os.path.basename(held[0][:-len(" (deleted)")]) not in manifest_files(aofdir)
            c.send_raw(Resp.encode("SHUTDOWN"))
            assert w.proc.wait(30) == 0
        assert "TEST FAULTS ENABLED: stale-file" in (tmp_path / "log").read_text()
        assert check_aof(aofdir) == "ok"
        with env.aofwriter(fs.mnt, port, io=io):
            assert set(dump(port)) == {k.encode() for k in before}
