"""Known causes of slow AOF writes, injected on purpose so that a diagnosis can be checked against them.

Each is a context manager that starts the cause on entry and removes every trace of it on exit (processes
killed and reaped, cgroups emptied and removed, CPU affinity restored), even on an exception or Ctrl-C.
Every load is bounded: the processes stop by themselves after `limit_s` seconds.
"""
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time

from . import env


def _thread_ids(pid):
    return [int(t) for t in os.listdir(f"/proc/{pid}/task")]


@contextlib.contextmanager
def pinned(pid, cpu):
    """Pin every thread of `pid` to `cpu`; restore each thread's old affinity on exit."""
    old = {}
    for tid in _thread_ids(pid):
        # io-wq workers refuse it (PF_NO_SETAFFINITY: EINVAL); they follow their ring's io-wq mask.
        with contextlib.suppress(ProcessLookupError, OSError):
            cpus = os.sched_getaffinity(tid)
            os.sched_setaffinity(tid, {cpu})
            old[tid] = cpus
    try:
        yield
    finally:
        for tid, cpus in old.items():
            with contextlib.suppress(ProcessLookupError, OSError):
                os.sched_setaffinity(tid, cpus)


class _Procs:
    """Helper processes in their own session, killed with their group on exit."""

    def __init__(self):
        self.procs = []

    def spawn(self, code, *args, cpu=None):
        argv = [sys.executable, "-c", code, *map(str, args)]
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu)] + argv
        self.procs.append(subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))

    def check(self):
        for p in self.procs:
            if p.poll() not in (None, 0):
                raise RuntimeError(f"injector exited with {p.returncode}: {p.stderr.read().decode().strip()}")

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            p.stderr.close()


_HOG = """
import sys, time
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    pass
"""


@contextlib.contextmanager
def cpu_hog(cpu, limit_s=60):
    """A busy loop pinned to `cpu`, competing with whatever else runs there."""
    procs = _Procs()
    try:
        procs.spawn(_HOG, limit_s, cpu=cpu)
        time.sleep(0.2)
        procs.check()
        yield
    finally:
        procs.close()


_INODE_HOG = """
import mmap, os, sys, time
path, size, end = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
buf = mmap.mmap(-1, size)          # page-aligned, as O_DIRECT wants
buf.write(b"x" * size)
fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
while time.monotonic() < end:
    os.pwrite(fd, buf, 0)          # holds the inode's i_rwsem for the whole device write
"""


@contextlib.contextmanager
def inode_lock_hog(path, size=4 << 20, limit_s=60):
    """Another process writing `size` bytes at offset 0 of `path` in a loop, with O_DIRECT so that it
    holds the inode lock across real device I/O without leaving dirty pages for the victim's fsync.
    It overwrites the start of the file: only for files a test owns."""
    procs = _Procs()
    try:
        procs.spawn(_INODE_HOG, path, size, limit_s)
        time.sleep(0.3)
        procs.check()
        yield
    finally:
        procs.close()


_FSYNC_STORM = """
import ctypes, os, platform, sys, time
path, end = sys.argv[1], time.monotonic() + float(sys.argv[2])
data_bytes, files_n = int(sys.argv[3]), int(sys.argv[4])


class SchedAttr(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint32), ("policy", ctypes.c_uint32), ("flags", ctypes.c_uint64),
                ("nice", ctypes.c_int32), ("priority", ctypes.c_uint32), ("runtime", ctypes.c_uint64),
                ("deadline", ctypes.c_uint64), ("period", ctypes.c_uint64)]


# SCHED_OTHER at nice 19 with the shortest time slice, 0.1 ms (sched_runtime, Linux 6.12+): at nice 19
# alone the storm may still run out its slice (EEVDF run-to-parity) while a woken kernel worker waits.
nr = {"x86_64": 314, "aarch64": 274}.get(platform.machine())
attr = SchedAttr(ctypes.sizeof(SchedAttr), 0, 0, 19, 0, 100000, 0, 0)
if nr is None or ctypes.CDLL(None, use_errno=True).syscall(nr, 0, ctypes.byref(attr), 0) != 0:
    os.nice(19)
fds = [os.open(f"{path}.{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600) for i in range(files_n)]
data = b"d" * data_bytes
n = 0
while time.monotonic() < end:
    if data:
        os.pwrite(fds[0], data, (n % 256) * len(data))
    for fd in fds:                                  # one inode change per file: log items to commit
        os.fchmod(fd, 0o600 if n % 2 else 0o640)
    os.fsync(fds[0])                                # a journal commit / log force carrying all of them
    n += 1
"""


@contextlib.contextmanager
def fsync_storm(directory, procs_n=1, limit_s=60, cpu=None, data_bytes=0, files_n=1):
    """`procs_n` processes, each in a loop: write `data_bytes` to the first of `files_n` files of its own
    in `directory` (if any), change the mode of every one of them, fsync the first. Every fsync is a
    journal commit (ext4: a jbd2 commit, which in data=ordered mode writes the transaction's data first;
    XFS: a log force, which writes the CIL checkpoint holding every inode changed since the last one).
    `data_bytes` loads ext4's commits, but on XFS it is plain block load; `files_n` makes each commit
    carry more log items without more cache flushes (each commit flushes the device's cache); more
    processes mean more commits and flushes a second and more CPU. They run at nice 19 with a 0.1 ms time
    slice, pinned to `cpu` if given, so that they load the journal rather than the CPUs its workers need."""
    procs = _Procs()
    paths = [os.path.join(directory, f"fsync-storm-{i}") for i in range(procs_n)]
    try:
        for p in paths:
            procs.spawn(_FSYNC_STORM, p, limit_s, data_bytes, files_n, cpu=cpu)
        time.sleep(0.3)
        procs.check()
        yield
    finally:
        procs.close()
        for p in paths:
            for i in range(files_n):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{p}.{i}")


BLKIO = "/sys/fs/cgroup/blkio"


@contextlib.contextmanager
def blkio_throttle(pid, dev, write_iops):
    """Move process `pid` into a new cgroup-v1 blkio group limited to `write_iops` writes a second on block
    device `dev` ("major:minor"); on exit move it back to the group it came from and remove the group."""
    if not os.path.exists(os.path.join(BLKIO, "cgroup.procs")):
        raise RuntimeError(f"no cgroup v1 blkio hierarchy at {BLKIO}")
    with open(f"/proc/{pid}/cgroup") as f:
        old = next((l.split(":", 2)[2].strip() for l in f if l.split(":")[1] == "blkio"), "/")
    group = tempfile.mkdtemp(prefix="aoftrace-throttle-", dir=BLKIO)
    try:
        with open(os.path.join(group, "blkio.throttle.write_iops_device"), "w") as f:
            f.write(f"{dev} {write_iops}\n")
        with open(os.path.join(group, "cgroup.procs"), "w") as f:
            f.write(str(pid))
        yield group
    finally:
        with contextlib.suppress(OSError), open(os.path.join(BLKIO, old.lstrip("/"), "cgroup.procs"), "w") as f:
            f.write(str(pid))
        for _ in range(50):
            try:
                os.rmdir(group)
                break
            except OSError:
                time.sleep(0.1)


def loop_dev_numbers(dev):
    st = os.stat(dev)
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
