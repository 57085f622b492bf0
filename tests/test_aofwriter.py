"""aofwriter: the reference AOF writer (issue 3).

Drives build/aofwriter with redis-benchmark and a small RESP client on loop-mounted XFS/ext4 and checks
every result against redis-check-aof and Debian's redis-server 7: the command line, the protocol, the
benchmark and mixed workloads read back, damaged directories. Killing it under load is
test_aofwriter_durability.py, the test-only faults test_aofwriter_faults.py; the client and the AOF
checks are aofwriter_helpers.py.
"""
import os
import random
import re
import signal
import socket
import subprocess
import time

import pytest

from aofab import env
from aofwriter_helpers import (AOFWRITER, IO_MODES, Resp, RespError, check_aof, cmdstat_calls, dir_digest, dump, info,
                               manifest_files, redis_load, run_writer, wait_rewrite_done)

FAULTS = ["overwrite", "reply-before-sync", "skip-fsync", "stale-file"]


# ------------------------------------------------------------------ command line

ALL_OPTIONS = ["--port", "--bind", "--dir", "--appenddirname", "--appendfilename", "--appendfsync", "--io",
               "--ring-depth", "--uring-chunk", "--uring-inflight", "--uring-unlinked", "--sqpoll-idle",
               "--auto-rewrite", "--verbose", "--help", "--version", "--enable-test-faults", "--test-fault",
               "--test-fault-every"]


def test_help_documents_every_option():
    r = run_writer("--help")
    assert r.returncode == 0
    for opt in ALL_OPTIONS:
        assert opt in r.stdout, opt
    for mode in IO_MODES:
        assert mode in r.stdout
    assert "64 MiB" in r.stdout and "1048576" in r.stdout   # the request limits
    test_only = r.stdout[r.stdout.index("Test only"):]
    for fault in FAULTS:
        assert fault in test_only


@pytest.mark.parametrize("args", [
    ["--bogus"], ["--port"], ["--port", "0"], ["--port", "70000"], ["--port", "x1"], ["--io", "mmap"],
    ["--appendfsync", "sometimes"], ["--bind", "10.1.2.3"], ["--bind", "0.0.0.0"], ["--bind", "::1"],
    ["--io", "uring", "--ring-depth", "4", "--uring-inflight", "8"], ["--uring-chunk", "1x"],
    ["--appenddirname", "a/b"], ["--auto-rewrite=zero"], ["extra-arg"],
], ids=lambda a: " ".join(a))
def test_bad_options_one_line_error(args, tmp_path, port):
    r = run_writer("--dir", str(tmp_path), "--port", str(port), *args)
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("aofwriter: "), r.stderr
    assert not os.path.exists(tmp_path / "appendonlydir")


def test_unusable_directories(tmp_path, port):
    afile = tmp_path / "file"
    afile.write_text("x")
    for args in (["--dir", str(tmp_path / "missing")], ["--dir", str(afile)],
                 ["--dir", str(tmp_path), "--appenddirname", "file"]):
        r = run_writer("--port", str(port), *args)
        assert r.returncode != 0, args
        assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("aofwriter: "), r.stderr
    assert afile.read_text() == "x"


def test_port_in_use(tmp_path, port):
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        r = run_writer("--dir", str(tmp_path), "--port", str(port))
    assert r.returncode != 0 and "cannot listen" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------ protocol

def test_commands_and_protocol_errors(tmp_path, port):
    with env.aofwriter(str(tmp_path), port) as w, Resp(port) as c:
        assert c.call("PING") == "PONG"
        assert c.call("SET", "a", "1") == "OK"
        assert c.call("GET", "a") == b"1"
        assert c.call("GET", "nope") is None
        assert c.call("INCR", "a") == 2 and c.call("INCR", "n") == 1
        assert c.call("SET", "s", "x") == "OK"
        assert c.call("INCR", "s").startswith("ERR value is not an integer")
        assert c.call("SET", "a", "9", "NX") is None and c.call("GET", "a") == b"2"
        assert c.call("DEL", "a", "nope") == 1
        assert c.call("DBSIZE") == 2
        big = os.urandom(1 << 20) + b"\r\n*3\r\n"
        assert c.call("SET", "big", big) == "OK" and c.call("GET", "big") == big
        assert c.call("SET", "k", "v", "EX", "10").startswith("ERR syntax error")
        assert c.call("NOSUCH", "x").startswith("ERR unknown command 'NOSUCH'")
        assert c.call("GET").startswith("ERR wrong number of arguments")
        assert c.call("CONFIG", "GET", "appendfsync") == [b"appendfsync", b"always"]
        assert c.call("CONFIG", "GET", "nosuchparam") == []
        persistence = info(port, "persistence")
        for field in ("aof_enabled", "aof_rewrite_in_progress", "aof_rewrites", "aof_current_size",
                      "aof_last_write_status"):
            assert field in persistence
        assert persistence["aof_enabled"] == "1" and persistence["aof_last_write_status"] == "ok"
        assert persistence["aof_test_faults"] == "none" and persistence["aof_test_faults_injected"] == "0"
        server = info(port, "server")
        assert server["process_id"] == str(w.pid) and server["tcp_port"] == str(port)
        # inline commands and deep pipelining
        c.send_raw(b"SET inline value\r\nGET inline\r\n")
        assert c.read() == "OK" and c.read() == b"value"
        assert c.pipeline([("PING",)] * 5000) == ["PONG"] * 5000
        assert c.call("FLUSHALL") == "OK" and c.call("DBSIZE") == 0

    # malformed or oversized requests: -ERR, then the connection closes; the server lives on
    bad = [b"*1\r\n$x\r\n", b"*2\r\n$3\r\nGET\r\nfoo\r\n", b"*abc\r\n", b"*1\r\n$3\r\nGETxx\r\n",
           b"*2\r\n$3\r\nSET\r\n$67108865\r\n", b"*2\r\n$3\r\nSET\r\n$99999999999999999999\r\n",
           b"*1048577\r\n", b"*3\r\n$3\r\nSET\r\n$-5\r\n", b"X" * (70 << 10)]
    with env.aofwriter(str(tmp_path), port) as w:
        for req in bad:
            with Resp(port, timeout=10) as c:
                c.send_raw(req)
                reply = c.read()
                assert isinstance(reply, RespError) and reply.startswith("ERR Protocol error"), (req[:40], reply)
                assert c.closed_by_server(), req[:40]
        with Resp(port) as c:
            assert c.call("PING") == "PONG" and c.call("DBSIZE") == 0
        assert w.proc.poll() is None


def test_names_threads_and_rewrite_child(tmp_path, port):
    syms = subprocess.run(["nm", "-D", "--defined-only", AOFWRITER], capture_output=True, text=True).stdout
    for fn in ("flushAppendOnlyFile", "aofWrite", "rewriteAppendOnlyFileBackground",
               "backgroundRewriteDoneHandler", "serverFork"):
        assert re.search(rf"\sT {fn}$", syms, re.M), fn
    with env.aofwriter(str(tmp_path), port, appendfsync="everysec") as w, Resp(port) as c:
        comms = {open(f"/proc/{w.pid}/task/{t}/comm").read().strip() for t in os.listdir(f"/proc/{w.pid}/task")}
        assert "bio_aof" in comms and "aofwriter" in comms
        value = b"v" * 500
        for i in range(0, 100000, 5000):
            c.pipeline([("SET", f"key:{j}", value) for j in range(i, i + 5000)])
        assert c.call("BGREWRITEAOF") == "Background append only file rewriting started"
        assert c.call("BGREWRITEAOF").startswith("ERR Background append only file rewriting already")
        child = int(info(port, "persistence")["aof_rewrite_child_pid"])
        # The child names itself right after fork(): poll briefly rather than race it.
        deadline = time.monotonic() + 2
        while True:
            try:
                comm = open(f"/proc/{child}/comm").read().strip()
            except FileNotFoundError:
                comm = "(already gone)"
            if comm == "aof-rewrite" or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert comm == "aof-rewrite"
        wait_rewrite_done(port)
        assert info(port, "persistence")["aof_rewrites"] == "1"


# ------------------------------------------------------------------ redis-benchmark on XFS and ext4

@pytest.mark.parametrize("auto", [False, True], ids=["plain", "auto-rewrite"])
@pytest.mark.parametrize("io", IO_MODES)
def test_benchmark_counts_and_readback(loopfs, port, io, auto):
    n = 5000
    extra = ["--auto-rewrite"] if auto else []
    if io != "write":
        extra += ["--uring-chunk", "4k", "--uring-inflight", "4"]   # several chunks per flush under -P
    uniq = {f"u:{i}".encode(): (f"val-{i}-" + "x" * (i % 97)).encode() for i in range(2000)}
    with env.aofwriter(loopfs.mnt, port, io=io, extra=extra) as w:
        with Resp(port) as c:
            assert c.pipeline([("SET", k, v) for k, v in uniq.items()]) == ["OK"] * len(uniq)
        rows = env.benchmark(port, requests=n, clients=50, keyspace=1000, tests="set,incr")
        assert set(rows) == {"SET", "INCR"} and min(rows.values()) > 0
        # pipelined: redis-benchmark sends whole pipelines, so n_p is a multiple of -P
        n_p = 16 * 300
        rows = env.benchmark(port, requests=n_p, clients=20, keyspace=1000, tests="set", extra=["-P", "16"])
        assert rows.get("SET", 0) > 0
        # every request executed exactly once, and the data set adds up
        assert cmdstat_calls(port, "set") == len(uniq) + n + n_p
        assert cmdstat_calls(port, "incr") == n
        state = dump(port)
        with Resp(port) as c:
            assert c.call("DBSIZE") == len(state)
        assert all(state.get(k) == v for k, v in uniq.items())
        counters = [int(v) for k, v in state.items() if k.startswith(b"counter:")]
        assert sum(counters) == n and 0 < len(counters) <= 1000
        keys = [k for k in state if k.startswith(b"key:")]
        assert 0 < len(keys) <= 1000 and len(state) == len(uniq) + len(counters) + len(keys)
        pers = info(port, "persistence")
        assert pers["aof_last_write_status"] == "ok"
        if auto:
            assert int(pers["aof_rewrites"]) >= 1 and pers["aof_last_bgrewrite_status"] == "ok"
        else:
            assert pers["aof_rewrites"] == "0"
        with Resp(port) as c:
            c.send_raw(Resp.encode("SHUTDOWN"))
        assert w.proc.wait(30) == 0
    aofdir = os.path.join(loopfs.mnt, "appendonlydir")
    assert check_aof(aofdir) == "ok"
    assert redis_load(aofdir, loopfs.mnt) == state
    # and aofwriter reads its own directory back
    with env.aofwriter(loopfs.mnt, port, io=io) as w:
        assert dump(port) == state


# ------------------------------------------------------------------ reading back mixed workloads

@pytest.mark.parametrize("io", IO_MODES)
def test_readback_mixed(loopfs, port, io):
    """SET/DEL/INCR/FLUSHALL, binary and multi-chunk values, a rewrite in the middle and restarts:
    redis-server's replay and aofwriter's reload both equal the writer's final state."""
    rnd = random.Random(3)
    model = {}
    extra = [] if io == "write" else ["--uring-chunk", "4k", "--uring-inflight", "3", "--ring-depth", "8"]
    for rnd_run in range(2):
        with env.aofwriter(loopfs.mnt, port, io=io, extra=extra) as w, Resp(port) as c:
            assert dump(port) == model
            for step in range(3000):
                op = rnd.random()
                k = f"k{rnd.randrange(400)}".encode()
                if op < 0.55:
                    v = os.urandom(rnd.choice([1, 10, 200, 20000])) if rnd.random() < 0.3 else b"v%d" % step
                    assert c.call("SET", k, v) == "OK"
                    model[k] = v
                elif op < 0.7:
                    assert c.call("DEL", k) == int(model.pop(k, None) is not None)
                elif op < 0.9:
                    ck = b"c" + k
                    model[ck] = str(int(model.get(ck, b"0")) + 1).encode()
                    assert c.call("INCR", ck) == int(model[ck])
                elif op < 0.9005:
                    assert c.call("FLUSHALL") == "OK"
                    model.clear()
                if step == 1500:
                    assert c.call("BGREWRITEAOF").startswith("Background append only file rewriting")
            assert c.call("SET", "huge", b"\r\n" * (600 << 10)) == "OK"   # 1.2 MB: many chunks
            model[b"huge"] = b"\r\n" * (600 << 10)
            wait_rewrite_done(port)
            assert dump(port) == model
            c.send_raw(Resp.encode("SHUTDOWN"))
            assert w.proc.wait(30) == 0
        aofdir = os.path.join(loopfs.mnt, "appendonlydir")
        assert check_aof(aofdir) == "ok"
        assert redis_load(aofdir, loopfs.mnt) == model


def test_sigterm_is_shutdown(tmp_path, port):
    with env.aofwriter(str(tmp_path), port, appendfsync="no") as w:
        with Resp(port) as c:
            assert c.pipeline([("SET", f"k{i}", i) for i in range(100)]) == ["OK"] * 100
        os.kill(w.pid, signal.SIGTERM)
        assert w.proc.wait(30) == 0
    assert check_aof(str(tmp_path / "appendonlydir")) == "ok"
    with env.aofwriter(str(tmp_path), port) as w:
        assert dump(port) == {f"k{i}".encode(): str(i).encode() for i in range(100)}


# ------------------------------------------------------------------ loading damaged directories

def _make_aof(tmp_path, port, keys=50):
    with env.aofwriter(str(tmp_path), port) as w, Resp(port) as c:
        c.pipeline([("SET", f"k{i}", f"v{i}") for i in range(keys)])
        c.call("BGREWRITEAOF")
        wait_rewrite_done(port)
        c.pipeline([("SET", f"n{i}", f"w{i}") for i in range(keys)])
        c.send_raw(Resp.encode("SHUTDOWN"))
        assert w.proc.wait(30) == 0
    return str(tmp_path / "appendonlydir")


@pytest.mark.parametrize("damage", ["garbage-in-base", "zeros-in-incr", "missing-file", "bad-manifest",
                                    "truncated-base", "unknown-command", "files-without-manifest"])
def test_load_refuses_damage(tmp_path, port, damage):
    aofdir = _make_aof(tmp_path, port)
    base, incr = manifest_files(aofdir)
    if damage == "garbage-in-base":
        with open(os.path.join(aofdir, base), "r+b") as f:
            f.seek(30)
            f.write(b"#garbage")
    elif damage == "zeros-in-incr":
        with open(os.path.join(aofdir, incr), "ab") as f:
            f.write(b"\0" * 100 + Resp.encode("SET", "x", "y"))
    elif damage == "missing-file":
        os.unlink(os.path.join(aofdir, base))
    elif damage == "bad-manifest":
        with open(os.path.join(aofdir, "appendonly.aof.manifest"), "a") as f:
            f.write("file x.aof seq\n")
    elif damage == "truncated-base":
        with open(os.path.join(aofdir, base), "r+b") as f:
            f.truncate(os.path.getsize(os.path.join(aofdir, base)) - 3)
    elif damage == "unknown-command":
        with open(os.path.join(aofdir, incr), "ab") as f:
            f.write(Resp.encode("HSET", "h", "f", "v"))
    elif damage == "files-without-manifest":
        os.unlink(os.path.join(aofdir, "appendonly.aof.manifest"))
    before = dir_digest(aofdir)
    r = run_writer("--dir", str(tmp_path), "--port", str(port))
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1 and "refusing to start" in r.stderr, r.stderr
    assert dir_digest(aofdir) == before


def test_load_accepts_truncated_tail(tmp_path, port):
    aofdir = _make_aof(tmp_path, port)
    incr = os.path.join(aofdir, manifest_files(aofdir)[-1])
    good = os.path.getsize(incr)
    with open(incr, "ab") as f:
        f.write(Resp.encode("SET", "partial", "value")[:-4])
    assert check_aof(aofdir) == "truncated"
    with env.aofwriter(str(tmp_path), port) as w, Resp(port) as c:
        assert c.call("DBSIZE") == 100 and c.call("GET", "partial") is None
        assert os.path.getsize(incr) == good   # the tail was cut off, as Redis does
        assert c.call("SET", "after", "1") == "OK"
    assert check_aof(aofdir) == "ok"
    assert len(redis_load(aofdir, str(tmp_path))) == 101
