"""Resources a run creates and must always remove: loop-mounted file systems and server processes.

Every object here is a context manager whose exit undoes exactly what its entry did, so an exception or a
Ctrl-C (KeyboardInterrupt) anywhere inside a `with` leaves no mount, loop device or process behind.
mkfs only ever runs on image files created here.
"""
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.join(ROOT, "build")

MKFS = {
    "xfs": ["mkfs.xfs", "-q", "-f"],
    "ext4": ["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"],
}


def run(cmd, **kw):
    kw.setdefault("check", True)
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("text", True)
    return subprocess.run(cmd, **kw)


class LoopFS:
    """A file system of type `fstype` on a sparse image file, attached with `losetup --direct-io=on`
    (so a flush on the loop device does not sync the whole backing file) and mounted on a fresh directory.

    Attributes after entry: `mnt` (mount point), `dev` (/dev/loopN), `image`, `fstype`, `loop_settings`.
    """

    def __init__(self, fstype, size_mb=512, base=None):
        if fstype not in MKFS:
            raise ValueError(f"unsupported file system {fstype!r} (xfs or ext4)")
        self.fstype, self.size_mb = fstype, size_mb
        self.base = base or os.environ.get("AOFTRACE_TMP", "/var/tmp")
        self.dir = self.dev = self.mnt = self.image = None
        self.mounted = False

    def __enter__(self):
        try:
            self.dir = tempfile.mkdtemp(prefix=f"aoftrace-{self.fstype}-", dir=self.base)
            self.image = os.path.join(self.dir, "fs.img")
            with open(self.image, "wb") as f:
                f.truncate(self.size_mb << 20)
            run(MKFS[self.fstype] + [self.image])
            self.dev = run(["losetup", "--direct-io=on", "--find", "--show", self.image]).stdout.strip()
            self.mnt = os.path.join(self.dir, "mnt")
            os.mkdir(self.mnt)
            run(["mount", "-t", self.fstype, self.dev, self.mnt])
            self.mounted = True
            self.loop_settings = run(["losetup", "--list", "--noheadings", "-O", "NAME,DIO,LOG-SEC", self.dev]).stdout.split()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        if self.mounted:
            for _ in range(50):
                if run(["umount", self.mnt], check=False).returncode == 0:
                    break
                time.sleep(0.1)
            else:
                run(["umount", "-l", self.mnt], check=False)
            self.mounted = False
        if self.dev:
            run(["losetup", "-d", self.dev], check=False)
            self.dev = None
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        return False


def free_port():
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc=None, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        # Ready means answering PING, not just listening: both servers listen before they load
        # the AOF (and aofwriter before its bio_aof thread exists); redis-server answers -LOADING.
        with contextlib.closing(socket.socket()) as s:
            s.settimeout(1.0)
            try:
                s.connect(("127.0.0.1", port))
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
            except OSError:
                pass
        time.sleep(0.02)
    raise TimeoutError(f"nothing answers PING on 127.0.0.1:{port} after {timeout}s")


class Server:
    """A RESP server process (redis-server or aofwriter) on 127.0.0.1, stopped and reaped on exit."""

    def __init__(self, argv, port, cwd=None, log=None):
        self.argv, self.port, self.cwd = argv, port, cwd
        self.log = log
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid

    def __enter__(self):
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(self.argv, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            if self.log:
                out.close()
        try:
            wait_port(self.port, self.proc)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def cli(self, *args, check=True, timeout=30):
        return run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *map(str, args)],
                   check=check, timeout=timeout).stdout.strip()

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __exit__(self, *exc):
        self.stop()
        return False


def redis_server(dir, port, appendfsync="always", extra=(), log=None):
    """Debian's redis-server with the AOF on `dir`: appendonly yes, no RDB snapshots, loopback only."""
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", dir,
            "--appendonly", "yes", "--appendfsync", appendfsync, "--save", "",
            "--daemonize", "no", "--protected-mode", "yes", "--logfile", "", *extra]
    return Server(argv, port, cwd=dir, log=log)


def aofwriter(dir, port, io="write", appendfsync="always", extra=(), log=None):
    argv = [os.path.join(BUILD, "aofwriter"), "--port", str(port), "--dir", dir,
            "--appendfsync", appendfsync, "--io", io, *extra]
    return Server(argv, port, cwd=dir, log=log)


def benchmark(port, requests=20000, clients=50, size=100, keyspace=100000, tests="set", timeout=300, extra=(),
              cpus=None):
    """redis-benchmark against 127.0.0.1:port (pinned to `cpus`, e.g. "0", if given);
    returns its CSV rows as {test: requests_per_second}."""
    pin = ["taskset", "-c", str(cpus)] if cpus is not None else []
    out = run([*pin, "redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", tests, "-n", str(requests),
               "-c", str(clients), "-d", str(size), "-r", str(keyspace), "--csv", *extra], timeout=timeout).stdout
    rows = {}
    for line in out.splitlines():
        cells = [c.strip('"') for c in line.split('","')]
        if len(cells) >= 2 and cells[0] != "test":
            with contextlib.suppress(ValueError):
                rows[cells[0]] = float(cells[1])
    return rows
