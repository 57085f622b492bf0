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
import os, sys, time
path, end = sys.argv[1], time.monotonic() + float(sys.argv[2])
os.nice(19)                                    # load the journal, not the CPUs its workers need
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
data = b"d" * int(sys.argv[3])
n = 0
while time.monotonic() < end:
    if data:
        os.pwrite(fd, data, (n % 256) * len(data))
    os.fchmod(fd, 0o600 if n % 2 else 0o640)   # an inode change: each fsync is a journal / log commit
    os.fsync(fd)
    n += 1
"""


@contextlib.contextmanager
def fsync_storm(directory, procs_n=4, limit_s=60, cpu=None, data_bytes=0):
    """`procs_n` processes each changing the mode of their own file in `directory` (after writing
    `data_bytes` to it, if any) and fsyncing it: a stream of journal / log commits. Pinned to `cpu` if
    given, at nice 19, so that they compete for the journal, not for a CPU."""
    procs = _Procs()
    files = [os.path.join(directory, f"fsync-storm-{i}.dat") for i in range(procs_n)]
    try:
        for f in files:
            procs.spawn(_FSYNC_STORM, f, limit_s, data_bytes, cpu=cpu)
        time.sleep(0.3)
        procs.check()
        yield
    finally:
        procs.close()
        for f in files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f)


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
