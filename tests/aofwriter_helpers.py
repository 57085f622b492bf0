"""Shared by the aofwriter tests (test_aofwriter*.py): a tiny RESP client, the AOF checks against
redis-check-aof and Debian's redis-server 7, and running build/aofwriter."""
import hashlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

from aofab import env

AOFWRITER = os.path.join(env.BUILD, "aofwriter")
IO_MODES = ["write", "uring", "uring-linked", "uring-sqpoll"]
# Durability: one file system per mode, alternating, so the default run stays within budget; the
# stress run uses the other one, so between them every mode sees both.
KILL_FS = {"write": "xfs", "uring": "ext4", "uring-linked": "xfs", "uring-sqpoll": "ext4"}


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
