"""Never hurt, never leave anything (issue 7).

- aoftrace killed (SIGINT, SIGTERM, SIGKILL) at random moments, before and after it attached, while
  redis-server (appendfsync always, on loop-mounted XFS and ext4) is under redis-benchmark load: no BPF
  program, link, perf event or uprobe of it remains, redis-benchmark sees no error and the AOF passes
  redis-check-aof.
- The traced server exits and another one starts on the same port: aoftrace ends promptly with its report.
- run-ab interrupted (SIGINT, once SIGTERM, to the process or, like Ctrl-C, to its process group) while it
  sets up file systems, warms up, measures, tears down and writes the report: a prompt exit 130 with one
  line, and no mount, loop device, cgroup, directory or process of its own left.
- env.LoopFS and env.Server interrupted by KeyboardInterrupt at (sampled) every line they and the stdlib
  code under them run: nothing left.
- mkfs only ever runs on an image file LoopFS has just created.

AOF_STRESS=1 (make stress) runs the long versions, marked `stress`.
"""
import ast
import contextlib
import glob
import json
import linecache
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from aofab import env, tracing

ROOT = env.ROOT
PY = os.path.join(ROOT, ".venv", "bin", "python")
STRESS = os.environ.get("AOF_STRESS") == "1"
SEED = int(os.environ.get("AOF_SEED", time.time_ns() % 1_000_000))
KILLS = 9              # per file system (every signal in every phase): 18 in all
STRESS_KILLS = 60      # per file system: 120 in all
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
BENCH_S = 2.5          # each kill's redis-benchmark lasts about this long (sized from a measured rate)


def rnd_for(name):
    print(f"{name}: seed {SEED} (AOF_SEED={SEED} repeats it)")
    return random.Random(f"{SEED}-{name}")


# ---------------------------------------------------------------------------------------------------------------
# 1. aoftrace killed at random moments under load

def check_aof_strict(aofdir):
    """redis-check-aof on the manifest of an idle server: everything valid (no truncated tail either)."""
    r = subprocess.run(["redis-check-aof", os.path.join(aofdir, "appendonly.aof.manifest")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "All AOF files and manifest are valid" in r.stdout, r.stdout + r.stderr


def ping(port):
    with contextlib.closing(socket.create_connection(("127.0.0.1", port), timeout=5)) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64)


class Launched:
    """aoftrace started without waiting for it: `ready_at` is when it printed "Tracing ..." (None before)."""

    def __init__(self, pid, json_path, args=()):
        self.proc = env.spawn([tracing.AOFTRACE, "-p", str(pid), "-j", json_path, *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, start_new_session=True)
        self.t0 = time.monotonic()
        self.lines, self.ready_at = [], None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith("Tracing "):
                self.ready_at = time.monotonic()
                self.ready.set()

    def finish(self, timeout=15):
        rc = self.proc.wait(timeout)
        self.thread.join(5)
        self.stderr = self.proc.stderr.read()
        self.proc.stderr.close()
        return rc


def bench_rate(port):
    t0 = time.monotonic()
    env.benchmark(port, requests=3000, clients=20, size=32)
    return 3000 / (time.monotonic() - t0)


PHASES = ("start", "loading", "attached")


def wait_loading(at, timeout=30):
    """Until aoftrace holds a BPF object (it is loading or attaching) or is ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not at.ready.is_set() and at.proc.poll() is None:
        h = tracing.bpf_fds(at.proc.pid)
        if h["prog"] or h["map"]:
            return
        time.sleep(0.002)


def kill_loop(fs, port, tmp_path, kills, offset, name, args=()):
    """`kills` kills of aoftrace, each during its own bounded redis-benchmark run. With k = offset + i, kill i
    gets signal SIGNALS[k % 3] in phase PHASES[k // 3 % 3]: "start" (a random moment in its first 20 ms:
    it creates its first BPF map some 10 ms after the spawn),
    "loading" (a random moment after it holds its first BPF map or program: loading, attaching) or
    "attached" (a random moment up to 0.8 s after it printed "Tracing ..."). Each kill is counted in the
    phase it really landed in (what aoftrace held, whether it had printed its ready line)."""
    rnd = rnd_for(name)
    aofdir = os.path.join(fs.mnt, "appendonlydir")
    stats = {"start": 0, "loading": 0, "attached": 0, "under_load": 0}
    with env.redis_server(fs.mnt, port, log=str(tmp_path / "redis.log")) as srv:
        requests = int(min(60000, max(5000, bench_rate(port) * BENCH_S)))
        for i in range(kills):
            k = offset + i
            sig, phase = SIGNALS[k % 3], PHASES[k // 3 % 3]
            bench = env.spawn(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", "set", "-n",
                               str(requests), "-c", "20", "-d", "32", "-r", "100000", "-q"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              text=True, start_new_session=True)
            try:
                time.sleep(rnd.uniform(0.05, 0.3))
                at = Launched(srv.pid, str(tmp_path / f"kill{k}.json"), args)
                try:
                    if phase == "start":
                        at.ready.wait(rnd.uniform(0.0, 0.02))
                    elif phase == "loading":
                        wait_loading(at)
                        at.ready.wait(rnd.uniform(0.0, 0.1))
                    else:
                        assert at.ready.wait(30), "aoftrace never got ready"
                        time.sleep(rnd.uniform(0.0, 0.8))
                    held = tracing.bpf_fds(at.proc.pid)
                    was_ready, loaded = at.ready.is_set(), bench.poll() is None
                    os.kill(at.proc.pid, sig)
                    rc = at.finish()
                finally:
                    if at.proc.poll() is None:
                        at.proc.kill()
                        at.proc.wait()
                landed = "attached" if was_ready else "loading" if held["prog"] or held["map"] else "start"
                stats[landed] += 1
                stats["under_load"] += loaded
                what = f"kill {k}: {sig.name} in phase {landed}, rc={rc}"
                assert rc in (0, -sig), f"{what}: {at.stderr}"
                if was_ready and sig != signal.SIGKILL:
                    assert rc == 0, f"{what}: {at.stderr}"
                    assert "flushAppendOnlyFile()" in "".join(at.lines), what
                    with open(tmp_path / f"kill{k}.json") as f:
                        assert json.load(f)["schema"] == "aoftrace/1", what
                left = tracing.wait_bpf_clean(held, at.proc.pid)
                assert not left, f"{what}: left behind: {left}"
                if not STRESS:
                    print(f"  {what}, {len(held['map'])} maps, {len(held['prog'])} programs and "
                          f"{len(held['link'])} links held, {'under load' if loaded else 'after the load'}: "
                          f"nothing left")
                out, _ = bench.communicate(timeout=300)
            finally:
                if bench.poll() is None:
                    os.killpg(bench.pid, signal.SIGKILL)
                    bench.wait()
            assert bench.returncode == 0, f"{what}: redis-benchmark exited {bench.returncode}:\n{out[-2000:]}"
            errors = [l for l in re.split(r"[\r\n]+", out) if re.search(r"error|\bERR\b", l, re.I)]
            assert not errors, f"{what}: redis-benchmark: {errors[:5]}"
            assert srv.proc.poll() is None and ping(port).startswith(b"+PONG"), f"{what}: redis-server died"
            if not STRESS or i % 10 == 9 or i == kills - 1:
                check_aof_strict(aofdir)    # the server is idle: every acknowledged write is complete
    check_aof_strict(aofdir)                # and after a clean shutdown
    log = (tmp_path / "redis.log").read_text(errors="replace")
    assert "BUG REPORT" not in log and "crashed by signal" not in log, log[-3000:]
    print(f"{name} on {fs.fstype}: {kills} kills, {requests} SETs each, {stats}")
    return stats


@pytest.mark.parametrize("fstype,offset", [("xfs", 0), ("ext4", 0)])
def test_aoftrace_killed_under_load(fstype, offset, port, tmp_path):
    with env.LoopFS(fstype) as fs:
        stats = kill_loop(fs, port, tmp_path, KILLS, offset, f"kills-{fstype}")
    assert stats["attached"] >= 3 and stats["start"] + stats["loading"] >= 3, stats
    assert stats["under_load"] >= KILLS // 2, stats


def test_lite_killed_under_load(xfs, port, tmp_path):
    """The same kills of aoftrace --lite (the mode left attached), on XFS: every signal in every phase."""
    stats = kill_loop(xfs, port, tmp_path, KILLS, 0, "kills-lite-xfs", ["--lite"])
    assert stats["attached"] >= 3 and stats["start"] + stats["loading"] >= 3, stats


@pytest.mark.stress
@pytest.mark.skipif(not STRESS, reason="set AOF_STRESS=1 (make stress)")
@pytest.mark.parametrize("fstype,offset", [("xfs", 0), ("ext4", 1)])
def test_aoftrace_killed_under_load_stress(fstype, offset, port, tmp_path):
    with env.LoopFS(fstype, size_mb=1024) as fs:
        stats = kill_loop(fs, port, tmp_path, STRESS_KILLS, offset, f"stress-kills-{fstype}")
    assert min(stats["start"], stats["loading"], stats["attached"]) >= STRESS_KILLS // 10, stats
    assert stats["under_load"] >= STRESS_KILLS // 2, stats


# ---------------------------------------------------------------------------------------------------------------
# 2. the target exits and a new server starts on the same port

def test_target_restarts_on_same_port(xfs, port, tmp_path):
    """aoftrace follows a pid, not a port: when its server exits and another starts on the same port with the
    same AOF, it ends within a second (3 s allowed) with exit 0 and the partial report, and the new server is
    unaffected."""
    with env.redis_server(xfs.mnt, port, log=str(tmp_path / "old.log")) as old:
        with tracing.Aoftrace(old.pid, str(tmp_path / "a.json")) as at:
            env.benchmark(port, requests=2000, clients=20)
            held = tracing.bpf_fds(at.proc.pid)
            old.stop()
            t0 = time.monotonic()
            with env.redis_server(xfs.mnt, port, log=str(tmp_path / "new.log")) as new:
                assert new.pid != old.pid
                try:
                    at.proc.wait(max(0.1, 3.0 - (time.monotonic() - t0)))
                except subprocess.TimeoutExpired:
                    pytest.fail("aoftrace still running 3 s after its target exited")
                print(f"aoftrace ended {time.monotonic() - t0:.2f} s after its target exited")
                assert at.stop() == 0, at.stderr
                rows = env.benchmark(port, requests=2000, clients=20)
                assert rows.get("SET", 0) > 0
                assert new.proc.poll() is None
            check_aof_strict(os.path.join(xfs.mnt, "appendonlydir"))
    assert f"target pid {old.pid} exited" in at.output
    assert "flushAppendOnlyFile()" in at.output
    rep = at.report()
    assert rep["target"]["pid"] == old.pid and rep["target"]["exited"] is True
    assert rep["flush"]["count"] > 0
    assert not tracing.wait_bpf_clean(held, at.proc.pid)


# ---------------------------------------------------------------------------------------------------------------
# 3. run-ab interrupted

# Runs a command as a child subreaper: whatever the command leaves running is reparented to this wrapper, which
# reports it (after 5 s of grace), kills it and reaps it. It also records the commands seen in its subtree.
SUBREAPER = r"""
import ctypes, json, os, signal, subprocess, sys, time
report = sys.argv[1]
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:    # PR_SET_CHILD_SUBREAPER
    sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed")
def stat(pid):
    try:
        s = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    rest = s[s.rindex(")") + 2:].split()
    return s[s.index("(") + 1:s.rindex(")")], rest[0], int(rest[1])     # comm, state, ppid
def subtree():
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = stat(d)
            if st:
                kids.setdefault(st[2], []).append((int(d), st))
    out, todo = {}, [os.getpid()]
    while todo:
        for pid, st in kids.get(todo.pop(), []):
            out[pid] = st
            todo.append(pid)
    return out
def reap():
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return
        except ChildProcessError:
            return
p = subprocess.Popen(sys.argv[2:], start_new_session=True)
with open(report + ".tmp", "w") as f:
    f.write(str(p.pid))
os.rename(report + ".tmp", report + ".pid")
seen, pids = set(), set()
while p.poll() is None:
    tree = subtree()
    seen |= {st[0] for st in tree.values()}
    pids |= set(tree)
    time.sleep(0.03)
t_exit = time.monotonic()
left = {}
while time.monotonic() < t_exit + 5:
    reap()
    left = {pid: st for pid, st in subtree().items() if st[1] != "Z"}
    if not left:
        break
    time.sleep(0.05)
orphans = []
for pid, st in left.items():
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        cmd = ""
    orphans.append({"pid": pid, "comm": st[0], "cmdline": cmd})
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
time.sleep(0.2)
reap()
json.dump({"rc": p.returncode, "t_exit": t_exit, "orphans": orphans, "seen": sorted(seen), "pids": sorted(pids)},
          open(report, "w"))
"""


def children_of(pid):
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            out = []
            for c in f.read().split():
                with contextlib.suppress(OSError), open(f"/proc/{c}/comm") as g:
                    out.append(g.read().strip())
            return out
    return []


def blkio_groups():
    return {g: _procs(g) for g in glob.glob("/sys/fs/cgroup/blkio/aoftrace-*")}


def _procs(group):
    with contextlib.suppress(OSError), open(os.path.join(group, "cgroup.procs")) as f:
        return {int(p) for p in f.read().split()}
    return set()


def wait_for(cond, timeout, proc):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if cond():
            return True
        time.sleep(0.005)
    return False


def runab_interrupted(tmp_path, phase, sig, group, rnd, fs="xfs"):
    """Start run-ab (one tiny run) under the subreaper, send `sig` in `phase` (to run-ab, or to its process
    group as a terminal's Ctrl-C would), and check what it leaves. Returns (rc, seconds to exit, report)."""
    work = tempfile.mkdtemp(prefix="aofab-reltest-", dir="/var/tmp")   # AOFTRACE_TMP: everything of ours
    out, report = str(tmp_path / "out"), str(tmp_path / "subreaper.json")
    groups_before = set(blkio_groups())
    argv = [PY, "-m", "aofab.runab", "--quick=1", f"--fs={fs}", "--io=write", "--rewrite=off", "--reps=1",
            "--requests=10000", "--preload=2000", f"--out={out}"]
    e = {**os.environ, "AOFTRACE_TMP": work}
    wrapper = subprocess.Popen([PY, "-c", SUBREAPER, report, *argv], cwd=ROOT, env=e, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert wait_for(lambda: os.path.exists(report + ".pid"), 30, wrapper), "run-ab did not start"
        pid = int(open(report + ".pid").read())

        def bases():
            return glob.glob(os.path.join(work, "aofab-runab-*"))

        def run_json():
            return glob.glob(os.path.join(out, "runs", "*", "run.json"))

        def status_mask(field):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
                return next(int(l.split()[1], 16) for l in f if l.startswith(field + ":"))
            return 0

        held = (1 << (signal.SIGINT - 1)) | (1 << (signal.SIGTERM - 1))
        triggers = {
            # past Python's own start: SIGINT/SIGTERM held while run-ab imports, or its handlers in place
            "startup": lambda: status_mask("SigBlk") & held == held
            or status_mask("SigCgt") & (1 << (signal.SIGTERM - 1)),
            # mkfs / losetup / mount of a LoopFS: its image exists, its mount does not yet
            "setup": lambda: any(os.path.exists(os.path.join(d, "fs.img")) and not os.path.ismount(
                os.path.join(d, "mnt")) for d in glob.glob(os.path.join(work, "aofab-runab-*", "aoftrace-*"))),
            "warmup": lambda: "redis-benchmark" in children_of(pid) and "aoftrace" not in children_of(pid),
            "measured": lambda: {"redis-benchmark", "aoftrace"} <= set(children_of(pid)),
            "teardown": lambda: bool(run_json()),                     # umount, losetup -d, rmtree next
            "report": lambda: bool(run_json()) and not bases(),       # file systems gone: analysis and report
            "random": lambda: False,
        }
        delay = {"startup": (0, 0.3), "setup": (0, 0.02), "warmup": (0, 0.2), "measured": (0, 0.3), "teardown": (0, 0.03),
                 "report": (0, 0.3), "random": (0.2, 2.5)}[phase]
        if phase == "random":
            wait_for(lambda: False, rnd.uniform(*delay), wrapper)
        else:
            assert wait_for(triggers[phase], 60, wrapper), f"run-ab never reached {phase}"
            time.sleep(rnd.uniform(*delay))
        running = [c for c in children_of(pid)]
        t_sig = time.monotonic()
        with contextlib.suppress(ProcessLookupError):   # "random" may come after the end
            if group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        _, stderr = wrapper.communicate(timeout=120)
    finally:
        if wrapper.poll() is None:
            os.killpg(wrapper.pid, signal.SIGKILL)
            wrapper.wait()
    with open(report) as f:
        rep = json.load(f)
    took = rep["t_exit"] - t_sig
    print(f"{phase}: {sig.name} to the {'group' if group else 'process'} with {running} running: rc={rep['rc']}"
          f" after {took:.1f} s, stderr ends {stderr.strip().splitlines()[-1:]}; seen {rep['seen']}")
    # nothing of ours is left
    assert rep["orphans"] == [], f"processes left behind: {rep['orphans']}"
    mounts = [l.split()[1] for l in open("/proc/mounts") if work in l]
    loops = [l for l in env.run(["losetup", "-a"]).stdout.splitlines() if work in l]
    files = [os.path.join(dp, n) for dp, dn, fn in os.walk(work) for n in dn + fn]
    # run-ab makes no cgroup; one of ours would hold a process of its tree (others' tests make their own)
    leaked_groups = {g for g, procs in blkio_groups().items() if g not in groups_before and procs & set(rep["pids"])}
    assert not mounts, mounts
    assert not loops, loops
    assert not files, files
    assert not leaked_groups, leaked_groups
    os.rmdir(work)
    # a prompt exit with one line and no traceback
    assert "Traceback" not in stderr, stderr[-3000:]
    assert took < 30, f"run-ab took {took:.1f} s to exit after {sig.name}"
    if rep["rc"] == 130:
        lines = [l for l in stderr.splitlines() if l.strip()]
        assert lines[-1] == "interrupted; cleaned up", stderr[-2000:]
        assert stderr.count("interrupted; cleaned up") == 1
    else:
        # finished before the signal: "random" may come after the end, and the report phase is short
        assert phase in ("random", "report") and rep["rc"] == 0, (rep["rc"], stderr[-3000:])
    return rep["rc"], took, rep


RUNAB_PHASES = ("startup", "setup", "warmup", "measured", "teardown", "report")
RUNAB_CASES = [(p, signal.SIGINT, g) for p in RUNAB_PHASES for g in (False, True)] + [  # phase, signal, to group?
    ("random", signal.SIGTERM, False), ("random", signal.SIGTERM, True)]


@pytest.mark.parametrize("phase,sig,group", RUNAB_CASES, ids=[f"{p}-{s.name}{'-group' if g else ''}"
                                                              for p, s, g in RUNAB_CASES])
def test_runab_interrupted(phase, sig, group, tmp_path):
    rc, took, rep = runab_interrupted(tmp_path, phase, sig, group, rnd_for(f"runab-{phase}-{group}"),
                                      fs="xfs,ext4" if phase == "setup" else "xfs")
    assert rc == 130 or phase in ("random", "report")   # the report phase may end before the signal lands


@pytest.mark.stress
@pytest.mark.skipif(not STRESS, reason="set AOF_STRESS=1 (make stress)")
def test_runab_interrupted_stress(tmp_path):
    rnd = rnd_for("runab-stress")
    phases = RUNAB_PHASES + ("random",)
    interrupted = 0
    for i in range(60):
        phase, sig = phases[i % len(phases)], rnd.choice([signal.SIGINT, signal.SIGINT, signal.SIGTERM])
        d = tmp_path / f"t{i}"
        d.mkdir()
        rc, _, _ = runab_interrupted(d, phase, sig, rnd.random() < 0.5, rnd)
        interrupted += rc == 130
    assert interrupted >= 50


# ---------------------------------------------------------------------------------------------------------------
# 3b. env.LoopFS and env.Server interrupted in-process at every line (sampled)

STDLIB = {m.__file__ for m in (subprocess, tempfile, shutil)}


class InterruptAt:
    """Raise KeyboardInterrupt, as a Ctrl-C landing there would, at the `at`-th line executed in `files` by
    this thread (never if `at` is None: then `count` says how many lines there were).

    Not on the first line of a cleanup function (`__exit__`, env.finish): no Python code can catch an exception
    raised before its own first instruction, and the `with` statement has already committed to calling
    __exit__. That window is a few bytecodes long; run-ab ignores its further signals once it unwinds.
    Nor, in the stdlib, between a lock's acquire() and its try, on its release(), or on a break/continue/return
    inside the try (3.11 runs an inlined `finally` after those without exception-table cover): CPython's own
    windows (subprocess.Popen._internal_poll, _wait), where an exception leaks Popen's waitpid lock and the
    next wait() hangs forever; not ours to close."""

    ENTRY = ("__exit__", "finish")

    def __init__(self, at, files):
        self.at, self.files, self.count, self.where = at, files, 0, None
        self.last = {}    # frame id -> the last line it ran

    def __enter__(self):
        sys.settrace(self._call)
        return self

    def __exit__(self, *exc):
        sys.settrace(None)
        return False

    def _call(self, frame, event, arg):
        if frame.f_code.co_filename not in self.files:
            return None
        f = frame
        while f is not None:        # an exception in a finalizer is only printed: not an interrupt that counts
            if f.f_code.co_name == "__del__":
                return None
            f = f.f_back
        return self._line

    def _line(self, frame, event, arg):
        if event != "line":
            return self._line
        code = frame.f_code
        line = linecache.getline(code.co_filename, frame.f_lineno)
        prev, self.last[id(frame)] = self.last.get(id(frame), ""), line
        if code.co_name in self.ENTRY and frame.f_lineno == min(
                ln for _, _, ln in code.co_lines() if ln is not None and ln != code.co_firstlineno):
            return self._line
        if (line.strip() == "try:" and ".acquire(" in prev) or ".release()" in line or (
                code.co_filename != env.__file__ and re.match(r"\s*(break|continue|return)\b", line)):
            return self._line
        self.count += 1
        if self.count == self.at:
            self.where = f"{os.path.basename(code.co_filename)}:{frame.f_lineno} {code.co_name}"
            sys.settrace(None)
            raise KeyboardInterrupt
        return self._line


def interrupt_points(total, n, rnd):
    """n points in 1..total, spread evenly with a random offset (all of them when n >= total)."""
    if n >= total:
        return list(range(1, total + 1))
    step = total / n
    return sorted({1 + int(i * step + rnd.uniform(0, step)) for i in range(n)})


def run_interrupted(lifecycle, files, n, rnd, check):
    with InterruptAt(None, files) as counter:
        lifecycle()
    check("uninterrupted")
    points = interrupt_points(counter.count, n, rnd)
    fired = []
    for at in points:
        intr = InterruptAt(at, files)
        raised = False
        try:
            with intr:
                lifecycle()
        except KeyboardInterrupt:
            raised = True
        assert raised == (intr.where is not None), f"interrupt at {intr.where} (line {at}) was swallowed"
        check(intr.where or f"line {at} (not reached)")
        fired.append(intr.where)
    print(f"{len(points)} of {counter.count} lines interrupted")
    return fired


LOOPFS_POINTS = (12, 150)     # (normal, stress) for each of: env.py lines only; env.py + stdlib lines
SERVER_POINTS = (12, 150)


def loopfs_case(tmp_path, fstype):
    base = tempfile.mkdtemp(prefix="aoftrace-reltest-", dir="/var/tmp")

    def lifecycle():
        with env.LoopFS(fstype, size_mb=320, base=base) as fs:
            with open(os.path.join(fs.mnt, "f"), "w") as f:
                f.write("x")

    def check(where):
        left = os.listdir(base)
        mounts = [l for l in open("/proc/mounts") if base in l]
        loops = [l for l in env.run(["losetup", "-a"]).stdout.splitlines() if base in l]
        assert not (left or mounts or loops), f"interrupted at {where}: left {left} {mounts} {loops}"
    return base, lifecycle, check


@pytest.mark.parametrize("scope", ["env", "env+stdlib"])
def test_loopfs_interrupted_anywhere(scope, tmp_path):
    base, lifecycle, check = loopfs_case(tmp_path, "xfs" if scope == "env" else "ext4")
    files = {env.__file__} | (STDLIB if scope == "env+stdlib" else set())
    try:
        run_interrupted(lifecycle, files, LOOPFS_POINTS[0], rnd_for(f"loopfs-{scope}"), check)
    finally:
        os.rmdir(base)


def test_exitstack_window_leaves_nothing(tmp_path):
    """run-ab and bench enter their LoopFS through an ExitStack: an interrupt after LoopFS.__enter__ mounted it
    and before the stack registered its __exit__ leaves a mount no `with` owns. The runners' finally removes
    their private directory with env.remove_tree, by what is mounted and attached there: every line of
    contextlib that this lifecycle runs is interrupted in turn."""
    base, _, check = loopfs_case(tmp_path, "xfs")

    def lifecycle():
        work = type("Work", (), {"dir": None})()
        try:
            tree = env.private_dir("aofab-runab-", base, work)
            with contextlib.ExitStack() as stack:
                fs = stack.enter_context(env.LoopFS("xfs", size_mb=320, base=tree))
                open(os.path.join(fs.mnt, "f"), "w").close()
        finally:
            if work.dir:
                env.finish(lambda: env.remove_tree(work.dir))
    try:
        fired = run_interrupted(lifecycle, {contextlib.__file__}, 1000, rnd_for("exitstack"), check)
        assert any(w and w.endswith("enter_context") for w in fired), fired
    finally:
        os.rmdir(base)


def server_case(tmp_path):
    before = env.children()
    port = env.free_port()

    def lifecycle():
        with env.redis_server(str(tmp_path), port) as srv:
            srv.cli("SET", "k", "v")

    def check(where):
        deadline = time.monotonic() + 3
        while True:
            left = env.children() - before
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                listening = True
            except OSError:
                listening = False
            if not (left or listening) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert not left, f"interrupted at {where}: child processes left: {left}"
        assert not listening, f"interrupted at {where}: something still listens on {port}"
    return lifecycle, check


@pytest.mark.parametrize("scope", ["env", "env+stdlib"])
def test_server_interrupted_anywhere(scope, tmp_path):
    lifecycle, check = server_case(tmp_path)
    files = {env.__file__} | (STDLIB if scope == "env+stdlib" else set())
    run_interrupted(lifecycle, files, SERVER_POINTS[0], rnd_for(f"server-{scope}"), check)


@pytest.mark.stress
@pytest.mark.skipif(not STRESS, reason="set AOF_STRESS=1 (make stress)")
@pytest.mark.parametrize("scope", ["env", "env+stdlib"])
def test_fixtures_interrupted_anywhere_stress(scope, tmp_path):
    files = {env.__file__} | (STDLIB if scope == "env+stdlib" else set())
    base, lifecycle, check = loopfs_case(tmp_path, "xfs")
    try:
        run_interrupted(lifecycle, files, LOOPFS_POINTS[1], rnd_for(f"loopfs-stress-{scope}"), check)
    finally:
        os.rmdir(base)
    lifecycle, check = server_case(tmp_path)
    run_interrupted(lifecycle, files, SERVER_POINTS[1], rnd_for(f"server-stress-{scope}"), check)


# ---------------------------------------------------------------------------------------------------------------
# 4. mkfs only on images LoopFS created

def test_mkfs_only_on_images_it_created(monkeypatch):
    """Every mkfs LoopFS runs is on the fresh regular file it has just created in its new 0700 directory; and
    no other code in aofab runs mkfs (run-ab and the tests only reach it through LoopFS)."""
    calls = []
    real = env.run

    def spy(cmd, **kw):
        calls.append(list(cmd))
        return real(cmd, **kw)

    monkeypatch.setattr(env, "run", spy)
    base = tempfile.mkdtemp(prefix="aoftrace-reltest-", dir="/var/tmp")
    try:
        for fstype in ("xfs", "ext4"):
            calls.clear()
            before = set(os.listdir(base))
            with env.LoopFS(fstype, size_mb=320, base=base) as fs:
                mkfs = [c for c in calls if os.path.basename(c[0]).startswith("mkfs")]
                assert mkfs == [env.MKFS[fstype] + [fs.image]]
                assert os.path.dirname(fs.image) == fs.dir and os.path.basename(fs.dir) not in before
                assert os.path.dirname(fs.dir) == base and os.stat(fs.dir).st_mode & 0o777 == 0o700
                assert os.path.isfile(fs.image) and not os.path.islink(fs.image)
                assert os.path.getsize(fs.image) == 320 << 20
        assert os.listdir(base) == []
    finally:
        os.rmdir(base)
    # statically: a command line that starts with mkfs is only env.py's MKFS tables, and MKFS[...] only goes to a
    # command in env.new_fs_image, which formats only the file it has just created (run-ab joins MKFS into a
    # string for its report)
    assert mkfs_command_sites() == {("env.py", None), ("env.py", "new_fs_image")}


def mkfs_command_sites():
    class Finder(ast.NodeVisitor):
        def __init__(self, name):
            self.name, self.scope, self.calls, self.found = name, [], [], set()

        def _scoped(self, node):
            self.scope.append(node.name)
            self.generic_visit(node)
            self.scope.pop()

        visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped

        def visit_Call(self, node):
            self.calls.append(node)
            self.generic_visit(node)
            self.calls.pop()

        def _hit(self):
            self.found.add((self.name, ".".join(self.scope) or None))

        def visit_List(self, node):
            if node.elts and isinstance(node.elts[0], ast.Constant) and str(node.elts[0].value).startswith("mkfs"):
                self._hit()
            self.generic_visit(node)

        visit_Tuple = visit_List

        def visit_Subscript(self, node):
            v = node.value
            if (isinstance(v, ast.Name) and v.id.startswith("MKFS")) or \
                    (isinstance(v, ast.Attribute) and v.attr.startswith("MKFS")):
                call = self.calls[-1] if self.calls else None
                if not (call and isinstance(call.func, ast.Attribute) and call.func.attr == "join"):
                    self._hit()
            self.generic_visit(node)

    found = set()
    for path in glob.glob(os.path.join(ROOT, "tools", "aofab", "*.py")):
        f = Finder(os.path.basename(path))
        f.visit(ast.parse(open(path).read()))
        found |= f.found
    return found
