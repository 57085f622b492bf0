"""aofwriter: the reference AOF writer (issue 3).

Drives build/aofwriter with redis-benchmark and a small RESP client on loop-mounted XFS/ext4, kills it
with SIGKILL under load, and checks every result against redis-check-aof and Debian's redis-server 7.
"""
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from aofab import env

AOFWRITER = os.path.join(env.BUILD, "aofwriter")
IO_MODES = ["write", "uring", "uring-linked", "uring-sqpoll"]
FAULTS = ["overwrite", "reply-before-sync", "skip-fsync", "stale-file"]
STRESS = os.environ.get("AOF_STRESS") == "1"
KILLS = 20
STRESS_KILLS = 200
# Durability: one file system per mode, alternating, so the default run stays within budget; the
# stress run uses the other one, so between them every mode sees both.
KILL_FS = {"write": "xfs", "uring": "ext4", "uring-linked": "xfs", "uring-sqpoll": "ext4"}
OTHER_FS = {"xfs": "ext4", "ext4": "xfs"}


# ------------------------------------------------------------------ a tiny RESP client

class RespError(str):
    pass


class Resp:
    """Blocking RESP2 client on 127.0.0.1. Bulk replies are bytes, status replies str, errors RespError."""

    def __init__(self, port, timeout=30):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def encode(*args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, int):
                a = str(a)
            if isinstance(a, str):
                a = a.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def send_raw(self, data):
        self.sock.sendall(data)

    def _fill(self):
        data = self.sock.recv(1 << 16)
        if not data:
            raise ConnectionError("connection closed by the server")
        self.buf += data

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line
            self._fill()

    def _exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            return RespError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n + 2)[:-2]
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ValueError(f"bad RESP reply line {line!r}")

    def call(self, *args):
        self.send_raw(self.encode(*args))
        return self.read()

    def pipeline(self, cmds):
        self.send_raw(b"".join(self.encode(*c) for c in cmds))
        return [self.read() for _ in cmds]

    def closed_by_server(self, timeout=5):
        """True when the server closes the connection (after any pending replies)."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(1 << 16):
                pass
            return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False


def info(port, section="default"):
    with Resp(port) as c:
        text = c.call("INFO", section).decode()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))


def dump(port, batch=2000):
    """Every key and value of the server on `port` (KEYS * + pipelined GET)."""
    with Resp(port, timeout=120) as c:
        keys = c.call("KEYS", "*")
        state = {}
        for i in range(0, len(keys), batch):
            part = keys[i:i + batch]
            for k, v in zip(part, c.pipeline([("GET", k) for k in part])):
                state[k] = v
    return state


def wait_rewrite_done(port, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if info(port, "persistence")["aof_rewrite_in_progress"] == "0":
            return
        time.sleep(0.02)
    raise TimeoutError("rewrite still in progress")


# ------------------------------------------------------------------ AOF checks against Redis' own tools

def manifest_files(aofdir):
    with open(os.path.join(aofdir, "appendonly.aof.manifest")) as f:
        return [line.split()[1] for line in f if line.startswith("file ")]


def resp_partial_command(data):
    """True iff `data` is a non-empty proper prefix of one RESP multibulk command: what a write cut
    short leaves, and the only damage Redis' aof-load-truncated accepts."""
    if not data or data[:1] != b"*":
        return False
    pos = 0

    def line():
        nonlocal pos
        i = data.find(b"\r\n", pos)
        if i < 0:
            return None
        s = data[pos:i]
        pos = i + 2
        return s

    head = line()
    if head is None:       # "*<digits>" cut before CRLF; Redis cannot parse a lone "*"
        return re.fullmatch(rb"\*\d+\r?", data) is not None
    if not re.fullmatch(rb"\*[1-9]\d*", head):
        return False
    for _ in range(int(head[1:])):
        if pos == len(data):
            return True
        hdr = line()
        if hdr is None:
            return re.fullmatch(rb"\$\d*\r?", data[pos:]) is not None
        if not re.fullmatch(rb"\$\d+", hdr):
            return False
        n = int(hdr[1:])
        if len(data) - pos < n + 2:
            rest = data[pos + n:]
            return rest in (b"", b"\r")
        if data[pos + n:pos + n + 2] != b"\r\n":
            return False
        pos += n + 2
    return False           # a complete command: not a truncated tail


def check_aof(aofdir):
    """redis-check-aof on the manifest. Returns "ok", or "truncated" when the only problem is a
    truncated tail of the last file listed in the manifest (what Redis loads with aof-load-truncated)."""
    r = subprocess.run(["redis-check-aof", os.path.join(aofdir, "appendonly.aof.manifest")],
                       capture_output=True, text=True, timeout=120)
    if r.returncode == 0 and "All AOF files and manifest are valid" in r.stdout:
        return "ok"
    analyzed = re.findall(r"AOF analyzed: filename=(\S+), size=(\d+), ok_up_to=(\d+)", r.stdout)
    assert analyzed, f"redis-check-aof failed:\n{r.stdout}{r.stderr}"
    name, size, ok_up_to = analyzed[-1]
    assert name == manifest_files(aofdir)[-1], f"damage outside the last AOF file:\n{r.stdout}"
    with open(os.path.join(aofdir, name), "rb") as f:
        tail = f.read()[int(ok_up_to):]
    assert resp_partial_command(tail), f"{name}: damage other than a truncated tail: {tail[:80]!r}\n{r.stdout}"
    return "truncated"


def redis_load(aofdir, scratch):
    """Copy `aofdir` and load it with Debian's redis-server 7; returns its whole dataset."""
    work = tempfile.mkdtemp(prefix="redis-load-", dir=scratch)
    try:
        shutil.copytree(aofdir, os.path.join(work, "appendonlydir"))
        port = env.free_port()
        with env.redis_server(work, port, log=os.path.join(work, "redis.log")) as r:
            deadline = time.monotonic() + 60
            while info(port, "persistence").get("loading") != "0":
                assert time.monotonic() < deadline, "redis-server still loading"
                time.sleep(0.05)
            state = dump(port)
            assert r.proc.poll() is None
        return state
    except BaseException:
        log = os.path.join(work, "redis.log")
        if os.path.exists(log):
            print(open(log, errors="replace").read()[-3000:])
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_writer(*args, timeout=10, **kw):
    return subprocess.run([AOFWRITER, *args], capture_output=True, text=True, timeout=timeout, **kw)


def dir_digest(d):
    h = hashlib.sha256()
    for name in sorted(os.listdir(d)):
        h.update(name.encode())
        with open(os.path.join(d, name), "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def cmdstat_calls(port, cmd):
    row = info(port, "commandstats").get(f"cmdstat_{cmd}", "calls=0")
    return int(re.search(r"calls=(\d+)", row).group(1))


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


# ------------------------------------------------------------------ durability under SIGKILL

class AckClient(threading.Thread):
    """Writes unique keys (and overwrites of its own acknowledged keys) in pipelined batches and
    records every acknowledged SET; `inflight` holds what was sent but not acknowledged."""

    def __init__(self, port, prefix, seed):
        super().__init__(daemon=True)
        self.port, self.prefix, self.rnd = port, prefix, random.Random(seed)
        self.acked, self.inflight, self.keys = {}, {}, []
        self.error = None

    def run(self):
        seq = 0
        try:
            c = Resp(self.port, timeout=15)
        except OSError:
            return
        try:
            while True:
                batch = {}
                for _ in range(6):
                    batch[f"{self.prefix}:{seq}".encode()] = b"%d-%d" % (seq, self.rnd.getrandbits(32))
                    seq += 1
                for k in self.rnd.sample(self.keys, min(2, len(self.keys))):
                    batch[k] = b"over-%d-%d" % (seq, self.rnd.getrandbits(32))
                self.inflight = dict(batch)
                c.send_raw(b"".join(Resp.encode("SET", k, v) for k, v in batch.items()))
                for k, v in batch.items():
                    reply = c.read()
                    if reply != "OK":
                        self.error = f"SET {k!r}: {reply!r}"
                        return
                    if k not in self.acked:
                        self.keys.append(k)
                    self.acked[k] = v
                    del self.inflight[k]
        except (OSError, ConnectionError, ValueError):
            pass
        finally:
            c.close()


def run_kills(fs, port, io, kills):
    aofdir = os.path.join(fs.mnt, "appendonlydir")
    expected = {}
    total_acked = rewrite_kills = truncated = 0
    rnd = random.Random(f"{io}-{kills}")
    for it in range(kills):
        if it and it % 25 == 0:                     # bound the data set (and check time) of long runs
            shutil.rmtree(aofdir)
            expected = {}
        extra = []
        if it % 3 != 2:
            extra.append("--auto-rewrite")          # back-to-back rewrites: many kills hit one
        if io != "write" and it % 2:
            extra += ["--uring-chunk", "4k"]        # several linked chunks per flush
        with env.aofwriter(fs.mnt, port, io=io, extra=extra) as w:
            with Resp(port) as c:                  # it reloaded exactly what redis-server loaded
                assert c.call("DBSIZE") == len(expected), f"kill {it}: reload differs"
            clients = [AckClient(port, f"i{it}c{n}", rnd.random()) for n in range(4)]
            for t in clients:
                t.start()
            time.sleep(rnd.uniform(0.15, 0.6))
            os.kill(w.pid, signal.SIGKILL)
            w.proc.wait(10)
            for t in clients:
                t.join(30)
                assert not t.is_alive()
                assert t.error is None, t.error
        # the rewrite child dies with its parent (PR_SET_PDEATHSIG); its temp file shows it was running
        deadline = time.monotonic() + 5
        while subprocess.run(["pgrep", "-x", "aof-rewrite"], capture_output=True).returncode == 0:
            assert time.monotonic() < deadline, "rewrite child outlived its parent"
            time.sleep(0.02)
        rewrite_kills += any(n.startswith("temp-rewriteaof-") for n in os.listdir(aofdir))
        truncated += check_aof(aofdir) == "truncated"
        loaded = redis_load(aofdir, fs.mnt)
        for t in clients:
            total_acked += len(t.acked)
            for k, v in t.acked.items():
                allowed = {v, t.inflight.get(k, v)}
                assert loaded.get(k) in allowed, f"kill {it}: acknowledged {k!r} lost or wrong: {loaded.get(k)!r}"
            for k, v in t.inflight.items():
                if k not in t.acked:
                    assert loaded.get(k) in (None, v), f"kill {it}: {k!r} has a value never sent"
        fresh = {k for t in clients for k in list(t.acked) + list(t.inflight)}
        stray = {k for k in loaded if k not in expected and k not in fresh}
        assert not stray, f"kill {it}: keys nobody wrote: {sorted(stray)[:5]}"
        for k, v in expected.items():
            assert loaded.get(k) == v, f"kill {it}: earlier key {k!r} changed"
        expected = loaded
    # aofwriter itself reloads the final directory to the same state
    with env.aofwriter(fs.mnt, port, io=io):
        assert dump(port) == expected
    assert total_acked >= kills * 20, "the load client got too few writes acknowledged to mean anything"
    assert rewrite_kills >= 1, "no kill landed during a rewrite"
    print(f"{io} on {fs.fstype}: {kills} kills, {total_acked} acknowledged SETs, {rewrite_kills} kills during "
          f"a rewrite, {truncated} truncated tails")


@pytest.mark.parametrize("io", IO_MODES)
def test_durability_sigkill(io, port):
    with env.LoopFS(KILL_FS[io]) as fs:
        run_kills(fs, port, io, KILLS)


@pytest.mark.stress
@pytest.mark.skipif(not STRESS, reason="set AOF_STRESS=1 (make stress)")
@pytest.mark.parametrize("io", IO_MODES)
def test_durability_sigkill_stress(io, port):
    with env.LoopFS(OTHER_FS[KILL_FS[io]], size_mb=1024) as fs:
        run_kills(fs, port, io, STRESS_KILLS)


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
