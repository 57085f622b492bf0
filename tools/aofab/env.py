"""Resources a run creates and must always remove: loop-mounted file systems and server processes.

Every object here is a context manager whose exit undoes exactly what its entry did, so an exception or a
Ctrl-C (KeyboardInterrupt) anywhere inside a `with` leaves no mount, loop device or process behind.
mkfs only ever runs on image files created here.
"""
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.join(ROOT, "build")
CET_AOFWRITER = os.path.join(BUILD, "cet", "aofwriter")   # aofwriter with endbr64 openings (CET): make test builds it

MKFS = {
    "xfs": ["mkfs.xfs", "-q", "-f"],
    "ext4": ["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"],
}
# A scratch file system nothing is measured on (the kernel matrix's /var/tmp): ext4 initialised lazily.
MKFS_LAZY = {"ext4": ["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1"]}


def new_fs_image(path, fstype, size_bytes, lazy=False):
    """A file system of `fstype` on a new sparse image file at `path`: the only place mkfs runs, and only on the
    file it has just created (exclusively: an existing file is an error, never formatted)."""
    with open(path, "xb") as f:
        f.truncate(size_bytes)
    cmd = MKFS_LAZY[fstype] if lazy else MKFS[fstype]
    run(cmd + [path])


def children(pid="self"):
    """pids of the children of process `pid` (default this one), any thread's, zombies included."""
    pids = set()
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/children") as f:
                pids.update(int(p) for p in f.read().split())
    return pids


def kill_children(keep=()):
    """Kill (with its process group if it leads one) and reap every child not in `keep`: a KeyboardInterrupt
    that lands inside subprocess.Popen after its fork leaves a child that no Popen object holds."""
    for pid in children() - set(keep):
        with contextlib.suppress(OSError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def spawn(argv, **kw):
    """subprocess.Popen that leaves no process behind when interrupted before it returns."""
    before = children()
    try:
        return subprocess.Popen(argv, **kw)
    except BaseException as e:
        if not isinstance(e, Exception):     # KeyboardInterrupt (an OSError from exec leaves no child)
            kill_children(keep=before)
        raise


def run(cmd, **kw):
    kw.setdefault("check", True)
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("text", True)
    before = children()
    try:
        return subprocess.run(cmd, **kw)
    except BaseException as e:
        if not isinstance(e, Exception):     # subprocess.run kills its child, unless interrupted inside Popen
            kill_children(keep=before)
        raise


def stop_process(proc, sig, timeout):
    """Send `sig` to `proc` if it still runs and reap it, SIGKILL after `timeout` s or when the wait itself
    is interrupted (never leave it running)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def finish(cleanup):
    """Run the idempotent `cleanup` to its end even if a KeyboardInterrupt (Ctrl-C, or run-ab's SIGINT/SIGTERM
    handler) lands in it: an interrupted umount or kill would leave the mount or the process behind. The
    cleanup is retried (a few times at most), then the interrupt is raised again."""
    try:
        cleanup()
        return
    except KeyboardInterrupt as e:
        interrupt = e
    for _ in range(4):
        try:
            cleanup()
            break
        except KeyboardInterrupt:
            pass
    raise interrupt


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
            self.dir = private_dir(f"aoftrace-{self.fstype}-", self.base, self)
            self.image = os.path.join(self.dir, "fs.img")   # a new file in a new 0700 directory
            new_fs_image(self.image, self.fstype, self.size_mb << 20)
            self.dev = run(["losetup", "--direct-io=on", "--find", "--show", self.image]).stdout.strip()
            self.mnt = os.path.join(self.dir, "mnt")
            os.mkdir(self.mnt)
            run(["mount", "-t", self.fstype, self.dev, self.mnt])
            self.mounted = True
            self.loop_settings = run(["losetup", "--list", "--noheadings", "-O", "NAME,DIO,LOG-SEC", self.dev]).stdout.split()
            return self       # inside the try: an interrupt on this line would otherwise skip __exit__
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __exit__(self, *exc):
        finish(self._cleanup)
        return False

    def _cleanup(self):
        # By what exists, not by what __enter__ recorded: an interrupted `mount` or `losetup` may have done
        # its work without telling us.
        if self.mounted or (self.mnt and os.path.ismount(self.mnt)):
            umount(self.mnt)
            self.mounted = False
        if self.image and os.path.exists(self.image):
            devs = {l.split(":", 1)[0] for l in run(["losetup", "-j", self.image], check=False).stdout.splitlines()}
            for dev in sorted(devs | {self.dev} - {None}):
                run(["losetup", "-d", dev], check=False)
        elif self.dev:
            run(["losetup", "-d", self.dev], check=False)
        self.dev = None
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


def umount(mnt):
    """umount, retried for 5 s while busy (a process of ours may still be exiting), then lazily."""
    for _ in range(50):
        if run(["umount", mnt], check=False).returncode == 0:
            return
        time.sleep(0.1)
    run(["umount", "-l", mnt], check=False)


def remove_tree(path):
    """Remove our private directory `path` with whatever is still mounted or attached inside it, by what
    exists. An interrupt can land where no cleanup owns a LoopFS yet (ExitStack.enter_context between the
    __enter__ that mounted it and registering its __exit__); rmtree alone would then empty the mounted file
    system, delete the image under its loop device and leave both (seen once in 60 interrupted run-abs)."""
    root = os.path.realpath(path) + os.sep
    with open("/proc/mounts") as f:     # octal escapes (\040 for a space) undone
        mounts = [l.split()[1].encode().decode("unicode_escape") for l in f]
    for mnt in sorted((m for m in mounts if m.startswith(root)), key=len, reverse=True):
        umount(mnt)
    loops = run(["losetup", "--list", "--noheadings", "--raw", "-O", "NAME,BACK-FILE"], check=False).stdout
    for name, _, back in (l.partition(" ") for l in loops.splitlines()):   # --raw: \x20 for a space
        if back.encode().decode("unicode_escape").startswith(root):
            run(["losetup", "-d", name], check=False)
    shutil.rmtree(path, ignore_errors=True)


def private_dir(prefix, base, owner=None, attr="dir"):
    """A new 0700 directory `base`/`prefix`XXXXXXXX. With `owner`, its path is stored in `owner`.`attr` before
    it is created, so that an interrupt right after the mkdir still finds it to remove (tempfile.mkdtemp
    returns the name only after creating it)."""
    while True:
        path = os.path.join(base, prefix + secrets.token_hex(4))
        if owner is not None:
            setattr(owner, attr, path)
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            if owner is not None:
                setattr(owner, attr, None)


def free_port():
    """A TCP port free on 127.0.0.1 now. Only now: anything may take it before a server binds it, which is why
    Server can start again on another one (port_tries)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerExited(RuntimeError):
    """The server process ended before it answered on its port."""


def listener_inodes(port):
    """Inodes of the TCP sockets listening on `port` (any address), from /proc/net/tcp{,6}."""
    inodes = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(path) as f:
            next(f, None)
            for line in f:
                fields = line.split()   # sl local_address rem_address st ... inode
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:   # 0A: TCP_LISTEN
                    inodes.add(fields[9])
    return inodes


def holds_listener(pid, port):
    """Whether process `pid` or one of its descendants (uftrace's aofwriter) holds a socket listening on `port`."""
    sockets = {f"socket:[{i}]" for i in listener_inodes(port)}
    todo, seen = [pid], set()
    while todo and sockets:
        p = todo.pop()
        seen.add(p)
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{p}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{p}/fd/{fd}") in sockets:
                        return True
        todo += children(p) - seen
    return False


def wait_port(port, proc=None, timeout=10.0):
    """Wait until the server on 127.0.0.1:`port` answers PING; with `proc`, until it is that process's (another
    one may hold the port: then `proc` fails to bind and exits, ServerExited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerExited(f"server exited with {proc.returncode} before listening on {port}")
        # Ready means answering PING, not just listening: both servers listen before they load
        # the AOF (and aofwriter before its bio_aof thread exists); redis-server answers -LOADING.
        with contextlib.closing(socket.socket()) as s:
            s.settimeout(1.0)
            try:
                s.connect(("127.0.0.1", port))
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG") and (proc is None or holds_listener(proc.pid, port)):
                    return
            except OSError:
                pass
        time.sleep(0.02)
    raise TimeoutError(f"nothing answers PING on 127.0.0.1:{port} after {timeout}s")


# What redis-server, valkey-server and aofwriter print when bind(2) fails with EADDRINUSE (strerror's text).
PORT_IN_USE = b"Address already in use"
PORT_TRIES = 5


def with_port(argv, old, new):
    """`argv` with its `--port OLD` made `--port NEW`."""
    return [str(new) if i and argv[i - 1] == "--port" and a == str(old) else a for i, a in enumerate(argv)]


class Server:
    """A RESP server process (redis-server or aofwriter) on 127.0.0.1, stopped and reaped on exit.

    `argv` holds `--port PORT`. With `port_tries` > 1, a start whose bind fails because the port was taken since
    it was picked (free_port) is tried again on a fresh port, `port_tries` starts in all: `port` and `argv` are
    then the last start's, so callers must use them, not the port they passed. Its output goes to `log`
    (appended), else nowhere (with port_tries > 1, to an unnamed temporary file: the start reads it for the bind
    failure)."""

    def __init__(self, argv, port, cwd=None, log=None, port_tries=1):
        self.argv, self.port, self.cwd = argv, port, cwd
        self.log = log
        self.port_tries = port_tries
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid

    def __enter__(self):
        try:
            for attempt in range(1, self.port_tries + 1):
                out = open(self.log, "ab") if self.log else tempfile.TemporaryFile() if self.port_tries > 1 else None
                try:
                    start = out.seek(0, os.SEEK_END) if out else 0
                    self.proc = spawn(self.argv, cwd=self.cwd, stdout=out or subprocess.DEVNULL,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
                    try:
                        wait_port(self.port, self.proc)
                        return self
                    except ServerExited:
                        new = free_port()
                        argv = with_port(self.argv, self.port, new)
                        if attempt == self.port_tries or argv == self.argv or not self._port_taken(out, start):
                            raise
                finally:
                    if out:
                        out.close()
                print(f"aofab: port {self.port} was taken before the server bound it; starting it again on {new}",
                      file=sys.stderr, flush=True)
                self.argv, self.port = argv, new
        except BaseException:   # an interrupt anywhere in here, even right after the spawn, stops it
            self.__exit__(None, None, None)
            raise

    @staticmethod
    def _port_taken(out, start):
        """Whether what the failed start wrote to `out` from offset `start` on says its bind found the port taken."""
        out.flush()
        with open(f"/proc/self/fd/{out.fileno()}", "rb") as f:   # `out` may be open for appending only
            f.seek(start)
            return PORT_IN_USE in f.read()

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
            self.kill()
        except BaseException:     # interrupted while waiting: do not leave it running
            self.kill()
            raise

    def kill(self):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def __exit__(self, *exc):
        finish(self.stop)
        return False


def redis_server(dir, port, appendfsync="always", extra=(), log=None, port_tries=1):
    """Debian's redis-server with the AOF on `dir`: appendonly yes, no RDB snapshots, loopback only."""
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", dir,
            "--appendonly", "yes", "--appendfsync", appendfsync, "--save", "",
            "--daemonize", "no", "--protected-mode", "yes", "--logfile", "", *extra]
    return Server(argv, port, cwd=dir, log=log, port_tries=port_tries)


def aofwriter(dir, port, io="write", appendfsync="always", extra=(), log=None, exe=None, port_tries=1):
    argv = [exe or os.path.join(BUILD, "aofwriter"), "--port", str(port), "--dir", dir,
            "--appendfsync", appendfsync, "--io", io, *extra]
    return Server(argv, port, cwd=dir, log=log, port_tries=port_tries)


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


# ---- SIGINT/SIGTERM for the command-line runners (run-ab, bench) ------------------------------------------

interrupted = False


def on_signal(signum, frame):
    """The first SIGINT/SIGTERM unwinds the `with` blocks; later ones must not interrupt the unwinding."""
    global interrupted
    interrupted = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def after_interrupt(cleanup=None):
    """A runner's end after a caught SIGINT/SIGTERM, once every `with` has unwound: ignore further ones, kill a
    child that escaped its `with` (see spawn), run `cleanup`, say so in one line. Returns the exit status."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    kill_children()
    if cleanup:
        cleanup()
    print("interrupted; cleaned up", file=sys.stderr, flush=True)
    return 130


def exit_main(rc):
    """End a command-line runner with status `rc`. After a handled interrupt (130) this leaves at once:
    CPython 3.11 marks a KeyboardInterrupt raised inside exec()'d source (dataclasses builds its methods
    that way, e.g. while the report imports matplotlib) as unhandled even after it was caught, and at exit
    then kills itself with SIGINT, turning the 130 into death by signal (seen about once in 15 report-phase
    interrupts). Everything was cleaned up by then; only the standard streams need flushing."""
    if rc == 130:
        for f in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                f.flush()
        os._exit(130)
    sys.exit(rc)


INTERRUPTS = {signal.SIGINT, signal.SIGTERM}


def catch_interrupts():
    """Install on_signal, then let in a signal held since the runner's first line (runab.py, bench.py block
    SIGINT/SIGTERM there): one that lands while the runner imports (rich alone takes ~0.2 s) then ends it as
    one landing later does, cleanup and 130, not a traceback or death by SIGTERM. Call it inside the runner's
    try, whose handler cleans up; nothing is spawned before it (children would inherit the blocked mask)."""
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, INTERRUPTS)
