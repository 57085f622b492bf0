"""`make bench`: the overhead of tracing. Debian's redis-server (appendfsync always) on a loop-mounted XFS
image, driven by redis-benchmark SET, untraced vs traced by aoftrace in its full attribution mode (the default)
vs aoftrace --lite (the mode to leave attached) vs traced by an equivalent bpftrace script (BPFTRACE below) vs the floor (aoftrace with every BPF program empty:
what the hooks alone cost), in interleaved rounds whose order rotates each round. Prints, from one run: median
ops/s per mode and the ratio of medians to untraced (with the per-round ratios' min/max), each tracer's time
from launch to attached, its peak RSS, the events per second it handled and the events it lost; then one more
aoftrace run, one more --lite run and one more floor run with BPF run-time statistics on, for each program's
cost per flush, and
what the hooks cost other processes (a write(2) loop and a pipe ping-pong), from which it prints the syscall
hooks' own cost per flush. A benchmark, not a test: it asserts nothing and exits 0 whatever the figures.

    .venv/bin/python -m aofab.bench [--reps 5] [--requests N] [--cpus SERVER:BENCH]
        [--modes untraced,aoftrace,lite,bpftrace,floor] [--out FILE]

Every setting may be empty, meaning its default (so make can pass its variables through unchanged).
Resources (loop device, mount, tracefs, processes) live in context managers; SIGINT/SIGTERM unwind them,
print "interrupted; cleaned up" and exit 130. Bad settings: one line on stderr, exit 2. See docs/reliability.md.
"""
import signal

if __name__ == "__main__":   # held until env.catch_interrupts(), see there
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})

import argparse
import contextlib
import ctypes
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time

from . import env, settings, tracing
from .settings import UsageError

MODES = ("untraced", "aoftrace", "lite", "bpftrace", "floor")
AOFTRACE_MODES = {"aoftrace": (), "lite": ("--lite",)}   # the aoftrace modes and their options
PROFILE_KEY = {"aoftrace": "profile", "lite": "profile_lite"}   # where bench.json keeps each one's profile
# floor: aoftrace built with -DAOF_FLOOR (make bench builds it): every BPF program returns at its first
# instruction, attached where the real ones are, so its runs price the hooks alone (docs/reliability.md).
FLOOR_AOFTRACE = os.path.join(env.BUILD, "floor", "aoftrace")
CLIENTS, VALUE_SIZE, KEYSPACE = 50, 100, 100000
IMAGE_MB = 1024
DEFAULT_REPS, DEFAULT_REQUESTS = 5, 300000   # about 8-10 s per untraced run here
# The targets per aoftrace mode (docs/reliability.md); a ratio within 1 % of 1 is what "resolved" means below.
TARGETS = {"aoftrace": {"ratio": 0.99, "ready_s": 0.1, "rss_mb": 15.0},
           "lite": {"ratio": 0.99, "ready_s": 0.1, "rss_mb": 10.0}}
READY_TIMEOUT, STOP_TIMEOUT = 30.0, 30.0

# The bpftrace equivalent of what aoftrace times at the least: every flushAppendOnlyFile() call (uprobe +
# uretprobe) and every fdatasync/fsync of the server (syscall tracepoints), both filtered by pid, as counts and
# latency histograms — 6 probes, plus BEGIN for the ready line. bpftrace prints "Attaching N probes..." BEFORE
# it attaches them; bpftrace 0.17 fires BEGIN before attaching the others too, but only starts reading the
# perf buffers that carry BEGIN's printf once every probe is attached, so "ready" shows after attaching
# (each run checks it: its attach file descriptors are all open when "ready" arrives, see `attach_fds`).
BPFTRACE = r"""
BEGIN { printf("ready\n"); }
uprobe:BINARY:flushAppendOnlyFile /pid == PID/ { @fs[tid] = nsecs; }
uretprobe:BINARY:flushAppendOnlyFile /pid == PID && @fs[tid]/ {
    @flush_us = hist((nsecs - @fs[tid]) / 1000); @flushes = count(); delete(@fs[tid]);
}
tracepoint:syscalls:sys_enter_fdatasync,tracepoint:syscalls:sys_enter_fsync /pid == PID/ { @ss[tid] = nsecs; }
tracepoint:syscalls:sys_exit_fdatasync,tracepoint:syscalls:sys_exit_fsync /pid == PID && @ss[tid]/ {
    @sync_us = hist((nsecs - @ss[tid]) / 1000); @syncs = count(); delete(@ss[tid]);
}
"""


def _cpus(value):
    """SERVER:BENCH CPU lists for taskset; empty means 1:0 on a machine with 2+ CPUs, `none` no pinning."""
    if value in (None, ""):
        return ("1", "0") if (os.cpu_count() or 1) >= 2 else (None, None)
    if value == "none":
        return None, None
    return settings.cpu_pair(value, "SERVER_CPUS:BENCH_CPUS (e.g. 1:0) or none")


def parse_settings(argv=None):
    ap = argparse.ArgumentParser(prog="aofab.bench", description=__doc__.split("\n\n")[0])
    for opt in ("reps", "requests", "cpus", "modes", "out"):
        ap.add_argument(f"--{opt}", default="")
    a = ap.parse_args(argv)
    s = argparse.Namespace()
    s.reps = settings.integer(a.reps, DEFAULT_REPS, "REPS", 1)
    s.requests = settings.integer(a.requests, DEFAULT_REQUESTS, "REQUESTS", 1000)
    s.server_cpus, s.bench_cpus = _cpus(a.cpus)
    modes = [m.strip() for m in (a.modes or ",".join(MODES)).split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            raise UsageError(f"unknown mode {m!r} (choose from {', '.join(MODES)})")
    if "untraced" not in modes or len(set(modes)) != len(modes):
        raise UsageError("MODES must include untraced (the reference) and name each mode once")
    s.modes = modes
    s.out = os.path.abspath(a.out or os.path.join(env.BUILD, "bench", "bench.json"))
    if os.path.isdir(s.out):
        raise UsageError(f"OUT {s.out} is a directory; bench writes one JSON file")
    tools = ["redis-server", "redis-benchmark", "redis-cli", "losetup", "mount", "mkfs.xfs"]
    tools += ["taskset"] if s.server_cpus else []
    tools += ["bpftrace"] if "bpftrace" in modes else []
    for tool in tools:
        if not shutil.which(tool):
            raise UsageError(f"{tool} not found (make deps installs it)")
    if "aoftrace" in modes and not os.access(tracing.AOFTRACE, os.X_OK):
        raise UsageError("build/aoftrace missing: run make")
    if "floor" in modes and not os.access(FLOOR_AOFTRACE, os.X_OK):
        raise UsageError("build/floor/aoftrace missing: run make build/floor/aoftrace")
    if os.geteuid() != 0:
        raise UsageError("bench mounts a loop device and loads BPF: run it as root")
    # A benchmark run must be bounded: redis-benchmark gets this long (a traced run at 1/10 the speed fits).
    s.bench_timeout = max(120, s.requests // 300)
    return s


# --- a tracer process -----------------------------------------------------------------------------------------

def attach_fds(pid):
    """How many perf-event and BPF-link file descriptors `pid` holds: one or two per attached probe (uprobes and
    tracepoints through perf_event_open, tp_btf and uprobe links), plus perf buffers opened before attaching."""
    n = 0
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                n += os.readlink(f"/proc/{pid}/fd/{fd}") in ("anon_inode:[perf_event]", "anon_inode:bpf_link")
    return n


def vm_hwm_kb(pid, field="VmHWM"):
    """VmHWM (the peak resident memory) or another /proc/PID/status figure in kB: VmRSS, what it holds now."""
    with contextlib.suppress(OSError, ValueError, IndexError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def reset_hwm(pid):
    """The VmHWM of `pid` so far, then reset to its current RSS (clear_refs 5, Linux 4.0+): from here on VmHWM is
    the peak of what the attached tracer holds, apart from what it needed to start (libbpf's copies of the
    kernel BTF, for aoftrace)."""
    hwm = vm_hwm_kb(pid)
    with contextlib.suppress(OSError), open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")
    return hwm


class Tracer:
    """A tracer process, timed from spawn to the first stdout line containing `marker` (`ready_s`), and to
    `early` if given (`early_s`); stopped with SIGINT and reaped with os.wait4. Killed on any error.

    Peak RSS is its VmHWM: at the ready line (`startup_hwm_kb`, the peak of starting), which is then reset, and
    read every 2 ms from the SIGINT until it exits (`hwm_kb`, the peak while attached, the report it writes at
    exit included, all but its last 2 ms). Not ru_maxrss: execve()
    seeds the new program's ru_maxrss with the RSS high-water mark of the process that spawned it (this
    Python process, ~20 MB), so wait4 reports max(that, the tracer's own peak). `ru_maxrss_kb` is kept in the
    JSON as an upper bound. (Checked: sh spawned from here reports 18 MB, under GNU time 1.4 MB.)"""

    def __init__(self, argv, marker, early=None):
        self.argv, self.marker, self.early = argv, marker, early
        self.lines, self.proc = [], None
        self.ready = threading.Event()
        self.ready_s = self.early_s = self.fds_at_ready = None
        self.returncode = self.maxrss_kb = self.hwm_kb = self.hwm_at_stop_kb = self.fds_at_stop = None
        self.rss_at_stop_kb = self.startup_hwm_kb = None
        self.stderr = ""

    def _reader(self):
        for line in self.proc.stdout:
            t = time.monotonic() - self.t0
            self.lines.append(line)
            if self.early and self.early_s is None and self.early in line:
                self.early_s = t
            if not self.ready.is_set() and self.marker in line:
                self.ready_s = t
                self.fds_at_ready = attach_fds(self.proc.pid)
                self.startup_hwm_kb = reset_hwm(self.proc.pid)
                self.ready.set()

    def _drain_stderr(self):
        self.stderr = self.proc.stderr.read()

    def __enter__(self):
        self.t0 = time.monotonic()
        try:
            self.proc = env.spawn(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
            self.threads = [threading.Thread(target=f, daemon=True) for f in (self._reader, self._drain_stderr)]
            for t in self.threads:
                t.start()
            deadline = self.t0 + READY_TIMEOUT
            while not self.ready.wait(0.01):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self._reap(signal.SIGKILL)
                    raise RuntimeError(f"{os.path.basename(self.argv[0])} did not become ready in "
                                       f"{READY_TIMEOUT:.0f} s (rc={self.returncode}): "
                                       f"{self.stderr.strip()[-300:]!r}")
            self.t_on = time.monotonic()
            return self
        except BaseException:   # interrupted or failed while it starts (__exit__ will not run): kill it
            env.finish(lambda: self._reap(signal.SIGKILL))
            raise

    def _reap(self, sig, timeout=STOP_TIMEOUT):
        """Send `sig`, wait up to `timeout` (then SIGKILL) with wait4, sampling VmHWM until the exit; sets
        returncode, hwm_kb and maxrss_kb."""
        if self.proc is None or self.returncode is not None:
            return self.returncode
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)
        deadline = time.monotonic() + timeout
        try:
            while True:
                hwm = vm_hwm_kb(self.proc.pid)   # none once it has released its memory (exiting, zombie)
                if hwm:
                    self.hwm_kb = max(self.hwm_kb or 0, hwm)
                pid, status, ru = os.wait4(self.proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.proc.pid, signal.SIGKILL)
                    pid, status, ru = os.wait4(self.proc.pid, 0)
                    break
                time.sleep(0.002)
        except ChildProcessError:     # reaped already (an interrupted earlier call): nothing left to wait for
            if self.proc.returncode is None:
                self.proc.returncode = -signal.SIGKILL
            self.returncode = self.proc.returncode
            return self.returncode
        self.returncode = self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.maxrss_kb = ru.ru_maxrss
        for t in getattr(self, "threads", ()):
            t.join(5)
        return self.returncode

    def stop(self):
        """SIGINT (the tracers print their report and exit); returns the exit code."""
        if self.returncode is None:
            self.t_off = time.monotonic()
            self.hwm_at_stop_kb = vm_hwm_kb(self.proc.pid)
            self.rss_at_stop_kb = vm_hwm_kb(self.proc.pid, "VmRSS")
            self.fds_at_stop = attach_fds(self.proc.pid)
            self._reap(signal.SIGINT)
            self.stop_s = time.monotonic() - self.t_off
        return self.returncode

    @property
    def window_s(self):
        return self.t_off - self.t_on

    def __exit__(self, exc_type, *exc):
        # env.finish: an interrupt inside the stop must not leave the tracer running
        env.finish((lambda: self._reap(signal.SIGKILL)) if exc_type is not None else self.stop)
        return False


def aoftrace_tracer(pid, json_path, exe=tracing.AOFTRACE, args=()):
    # Full attribution mode is aoftrace's default: no option selects it; args=("--lite",) the lite mode.
    return Tracer([exe, "-p", str(pid), "-j", json_path, *args], "Tracing ")


def bpftrace_tracer(pid):
    script = BPFTRACE.replace("BINARY", os.readlink(f"/proc/{pid}/exe")).replace("PID", str(pid))
    return Tracer(["bpftrace", "-f", "json", "-e", script], '"data": "ready', early='"attached_probes"')


def bpftrace_maps(lines):
    """bpftrace -f json output: {name: value} of its maps and histograms, plus `lost` from "Lost N events"."""
    maps, lost = {}, 0
    for line in lines:
        try:
            msg = json.loads(line)
        except ValueError:
            m = re.search(r"Lost (\d+) events", line)
            lost += int(m.group(1)) if m else 0
            continue
        if msg.get("type") in ("map", "hist"):
            maps.update(msg.get("data", {}))
        elif msg.get("type") == "lost_events":
            lost += int(msg.get("data", {}).get("events", 0))
    maps["lost"] = lost
    return maps


def hist_quantile(buckets, q):
    """Upper bound of the power-of-two bucket that holds quantile q of a bpftrace hist() (JSON)."""
    total = sum(b.get("count", 0) for b in buckets)
    seen = 0
    for b in buckets:
        seen += b.get("count", 0)
        if total and seen >= q * total:
            return b.get("max", b.get("min"))
    return None


# --- the runs -------------------------------------------------------------------------------------------------

def rewrite_aof(srv, timeout=60):
    """BGREWRITEAOF and wait for it, so every run appends to a small, fresh AOF (auto rewrite is off)."""
    srv.cli("BGREWRITEAOF", check=False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = dict(l.split(":", 1) for l in srv.cli("INFO", "persistence").splitlines() if ":" in l)
        if info.get("aof_rewrite_in_progress", "1").strip() == "0" and \
                info.get("aof_rewrite_scheduled", "1").strip() == "0":
            return
        time.sleep(0.05)
    raise TimeoutError(f"BGREWRITEAOF still running after {timeout} s")


def set_load(s, srv, requests=None):
    """The bench's load: redis-benchmark SET, `requests` of them (default the setting); its CSV rows."""
    return env.benchmark(srv.port, requests=requests or s.requests, clients=CLIENTS, size=VALUE_SIZE,
                         keyspace=KEYSPACE, tests="set", timeout=s.bench_timeout, cpus=s.bench_cpus)


def one_run(s, srv, mode, rnd, tmp):
    """One redis-benchmark run in `mode`; returns its record for bench.json."""
    rec = {"round": rnd + 1, "mode": mode}
    rewrite_aof(srv)

    def bench():
        t0 = time.monotonic()
        rows = set_load(s, srv)
        rec["bench_s"] = round(time.monotonic() - t0, 3)
        rec["ops_per_sec"] = rows.get("SET")

    if mode == "untraced":
        bench()
        return rec
    if mode in ("aoftrace", "lite", "floor"):
        path = os.path.join(tmp, f"{mode}-r{rnd + 1}.json")
        tr = aoftrace_tracer(srv.pid, path, FLOOR_AOFTRACE if mode == "floor" else tracing.AOFTRACE,
                             AOFTRACE_MODES.get(mode, ()))
    else:
        tr = bpftrace_tracer(srv.pid)
    with tr:
        bench()
        tr.stop()
    rec.update(ready_s=tr.ready_s, rc=tr.returncode, peak_rss_kb=max(tr.hwm_kb or 0, tr.startup_hwm_kb or 0) or None,
               startup_peak_rss_kb=tr.startup_hwm_kb, attached_peak_rss_kb=tr.hwm_kb, hwm_at_stop_kb=tr.hwm_at_stop_kb,
               rss_at_stop_kb=tr.rss_at_stop_kb, ru_maxrss_kb=tr.maxrss_kb,
               window_s=tr.window_s, stop_s=tr.stop_s, attach_fds_at_ready=tr.fds_at_ready,
               attach_fds_at_stop=tr.fds_at_stop)
    if tr.stderr.strip():
        rec["stderr"] = tr.stderr.strip()[-2000:]
    if mode == "floor":
        # Its programs see nothing, so it ends with "no AOF flush seen" and exit 1: that is the expected end.
        if tr.returncode == 1 and "no AOF flush seen" in tr.stderr:
            tr.returncode = 0
        rec.update(flushes=0, syncs=0, lost_events=0)
    elif mode in AOFTRACE_MODES:
        with open(path) as f:
            rep = json.load(f)
        fl, sy = rep.get("flush", {}), rep.get("fdatasync", {})
        rec.update(window_s=rep.get("window_s", tr.window_s), flushes=fl.get("count", 0),
                   flush_calls=fl.get("calls", 0), syncs=sy.get("count", 0), lost_events=rep.get("lost_events"),
                   flush_p50_us=fl.get("p50_us"), flush_p99_us=fl.get("p99_us"), sync_p50_us=sy.get("p50_us"),
                   sync_p99_us=sy.get("p99_us"), closure_pct=fl.get("closure_pct"))
    else:
        maps = bpftrace_maps(tr.lines)
        rec.update(attaching_s=tr.early_s, flushes=int(maps.get("@flushes", 0)), syncs=int(maps.get("@syncs", 0)),
                   lost_events=maps["lost"], flush_p50_us=hist_quantile(maps.get("@flush_us", []), 0.5),
                   flush_p99_us=hist_quantile(maps.get("@flush_us", []), 0.99),
                   sync_p50_us=hist_quantile(maps.get("@sync_us", []), 0.5),
                   sync_p99_us=hist_quantile(maps.get("@sync_us", []), 0.99))
    rec["events_per_s"] = (rec["flushes"] + rec["syncs"]) / rec["window_s"] if rec["window_s"] else None
    if tr.returncode != 0:
        raise RuntimeError(f"{mode} exited with {tr.returncode}: {tr.stderr.strip()[-300:]!r}")
    return rec


def warm_up(s, srv, tmp):
    """A short untraced run (fills the key space, warms the page cache and the file system) and one start and
    stop of each tracer (their binaries and the BPF/LLVM paths warm), none of them counted."""
    set_load(s, srv, max(1000, s.requests // 5))
    for m, args in AOFTRACE_MODES.items():
        if m in s.modes:
            with aoftrace_tracer(srv.pid, os.path.join(tmp, f"warm-{m}.json"), args=args):
                pass
    if "floor" in s.modes:
        with aoftrace_tracer(srv.pid, os.path.join(tmp, "warm-floor.json"), FLOOR_AOFTRACE):
            pass
    if "bpftrace" in s.modes:
        with bpftrace_tracer(srv.pid):
            pass


# --- the profile: what each BPF program costs per flush -------------------------------------------------------

BPF_ENABLE_STATS, BPF_STATS_RUN_TIME = 32, 0
NR_BPF = {"x86_64": 321, "aarch64": 280}


@contextlib.contextmanager
def bpf_run_time_stats():
    """BPF run-time statistics on while the block runs, through BPF_ENABLE_STATS (5.8+): the kernel keeps them
    on while the returned fd is open and turns them off when it closes, even if this process dies, so the
    kernel.bpf_stats_enabled sysctl of the user is never touched."""
    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.c_uint32(BPF_STATS_RUN_TIME)
    nr = NR_BPF.get(os.uname().machine)
    fd = libc.syscall(nr, BPF_ENABLE_STATS, ctypes.byref(attr), ctypes.sizeof(attr)) if nr else -1
    if fd < 0:
        raise OSError(ctypes.get_errno(), f"BPF_ENABLE_STATS: {os.strerror(ctypes.get_errno())}")
    try:
        yield
    finally:
        os.close(fd)


def prog_stats(pid):
    """{program name: (run_cnt, run_time_ns)} of the BPF programs that process `pid` holds (by their fds:
    Debian's bpftool shows no holder pids)."""
    ids = tracing.bpf_fds(pid)["prog"]
    out = json.loads(env.run(["bpftool", "prog", "show", "--json"]).stdout or "[]")
    return {p["name"]: (p.get("run_cnt", 0), p.get("run_time_ns", 0)) for p in out if p.get("id") in ids}


def _profiled(s, srv, tmp, exe, name, args=()):
    """One run under `exe` with BPF run-time statistics on: ({program: (runs, ns)}, wall s, JSON report)."""
    rewrite_aof(srv)
    path = os.path.join(tmp, f"profile-{name}.json")
    with bpf_run_time_stats(), aoftrace_tracer(srv.pid, path, exe, args) as tr:
        before = prog_stats(tr.proc.pid)
        t0 = time.monotonic()
        set_load(s, srv)
        wall = time.monotonic() - t0
        after = prog_stats(tr.proc.pid)
        tr.stop()
    with open(path) as f:
        rep = json.load(f)
    delta = {n: (c - before.get(n, (0, 0))[0], ns - before.get(n, (0, 0))[1]) for n, (c, ns) in after.items()}
    return delta, wall, rep


def floor_profile(s, srv, tmp):
    """A floor run under BPF run-time statistics: each program's run time when it does nothing (the statistics'
    clock reads and the dispatch), by program name."""
    fdelta, _, _ = _profiled(s, srv, tmp, FLOOR_AOFTRACE, "floor")
    return {n: ns / c for n, (c, ns) in fdelta.items() if c}


def profile_run(s, srv, tmp, mode="aoftrace", empty=None):
    """One more run of aoftrace in `mode` ("aoftrace" or "lite"), with BPF run-time statistics on: each
    program's runs and run time per flush. The statistics cost each program run two clock reads, so this run
    is not one of the measured ones; `empty` (floor_profile) gives each program's run time when it does
    nothing, and `net` figures subtract it."""
    delta, wall, rep = _profiled(s, srv, tmp, tracing.AOFTRACE, mode, AOFTRACE_MODES[mode])
    flushes = rep.get("flush", {}).get("count") or 0
    empty = empty or {}
    progs = []
    for name, (cnt, ns) in delta.items():
        if cnt > 0 and flushes:
            p = {"name": name, "runs_per_flush": cnt / flushes, "ns_per_run": ns / cnt, "us_per_flush": ns / flushes / 1000}
            if name in empty:
                p["empty_ns_per_run"] = empty[name]
                p["net_us_per_flush"] = max(0.0, ns / cnt - empty[name]) * cnt / flushes / 1000
            progs.append(p)
    progs.sort(key=lambda p: -p["us_per_flush"])
    out = {"flushes": flushes, "us_per_flush_wall": wall / flushes * 1e6 if flushes else None,
           "us_per_flush_bpf": sum(p["us_per_flush"] for p in progs), "programs": progs,
           "sleeps": rep.get("sleeps")}
    if empty:
        out["net_us_per_flush_bpf"] = sum(p.get("net_us_per_flush", p["us_per_flush"]) for p in progs)
    return out


def print_profile(console, prof, mode="aoftrace"):
    from rich.table import Table
    if not prof.get("flushes"):
        console.print(f"profile of {mode}: no flush seen, no figures", highlight=False)
        return
    net = "net_us_per_flush_bpf" in prof
    who = "aoftrace --lite" if mode == "lite" else "aoftrace"
    t = Table(title=f"{who}'s BPF programs per flush (one more run, BPF run-time statistics on; "
                    f"{prof['flushes']:,} flushes of {prof['us_per_flush_wall']:,.0f} µs)")
    cols = ["program", "runs per flush", "ns per run", "µs per flush"]
    cols += ["empty ns per run", "net µs per flush"] if net else []
    for col in cols:
        t.add_column(col, justify="left" if col == "program" else "right")
    for p in prof["programs"][:12]:
        row = [p["name"], f"{p['runs_per_flush']:.1f}", f"{p['ns_per_run']:,.0f}", f"{p['us_per_flush']:.2f}"]
        if net:
            row += [fmt(p.get("empty_ns_per_run"), ",.0f"), fmt(p.get("net_us_per_flush"), ".2f")]
        t.add_row(*row)
    rest = prof["programs"][12:]
    if rest:
        row = [f"the {len(rest)} others", "", "", f"{sum(p['us_per_flush'] for p in rest):.2f}"]
        if net:
            row += ["", f"{sum(p.get('net_us_per_flush', p['us_per_flush']) for p in rest):.2f}"]
        t.add_row(*row)
    t.add_row("all", "", "", f"{prof['us_per_flush_bpf']:.2f}", *(["", f"{prof['net_us_per_flush_bpf']:.2f}"] if net else []))
    console.print(t)
    cost = prof["net_us_per_flush_bpf"] if net else prof["us_per_flush_bpf"]
    console.print(f"  programs: {cost:.1f} µs of CPU per flush{' (net of what an empty program costs)' if net else ''}, "
                  f"{100 * cost / prof['us_per_flush_wall']:.1f} % of a flush's {prof['us_per_flush_wall']:,.0f} µs; "
                  f"the hooks' own entry paths are what the floor mode prices", highlight=False)
    sl = prof.get("sleeps") or {}
    if sl:
        console.print(f"  traced sleeps: {sl.get('hinted', 0):,} named by a hint, {sl.get('unwound', 0):,} by a stack "
                      f"unwind ({sl.get('hint_checks', 0):,} of them checks of a hint, {sl.get('hint_mismatches', 0):,} "
                      f"disagreed)", highlight=False)


# --- the hooks: what tracing costs every other process ---------------------------------------------------------

HOOK_WRITES, HOOK_PIPE_LOOPS, HOOK_ROUNDS = 300000, 30000, 3


def hook_costs(s, srv, tmp):
    """What the hooks cost the processes aoftrace does not trace, where every program returns at its first test:
    a write(2) loop (dd of 1-byte blocks to /dev/null: each write runs the write syscall tracepoints) and a pipe
    ping-pong (perf bench sched pipe: two writes, two wake-ups and two context switches a round trip), each
    untraced, under the floor and under aoftrace attached to the idle server, interleaved, on the benchmark's
    CPU. CPU-bound and short, so far steadier than the throughput rounds: a cost per event, not a ratio."""
    modes = [m for m in ("untraced", "floor", "aoftrace", "lite") if m in s.modes]
    exe = {"floor": FLOOR_AOFTRACE, "aoftrace": tracing.AOFTRACE, "lite": tracing.AOFTRACE}
    pin = ["taskset", "-c", s.bench_cpus] if s.bench_cpus else []
    got = {m: {"write_pair_ns": [], "pipe_us": []} for m in modes}
    for _ in range(HOOK_ROUNDS):
        for m in modes:
            tr = contextlib.nullcontext() if m == "untraced" else \
                aoftrace_tracer(srv.pid, os.path.join(tmp, f"hooks-{m}.json"), exe[m], AOFTRACE_MODES.get(m, ()))
            with tr:
                t0 = time.monotonic()
                env.run([*pin, "dd", "if=/dev/zero", "of=/dev/null", "bs=1", f"count={HOOK_WRITES}"], timeout=120)
                got[m]["write_pair_ns"].append((time.monotonic() - t0) * 1e9 / HOOK_WRITES)
                out = env.run([*pin, "perf", "bench", "sched", "pipe", "-l", str(HOOK_PIPE_LOOPS)], timeout=120).stdout
                us = re.search(r"([\d.]+)\s+usecs/op", out)
                got[m]["pipe_us"].append(float(us.group(1)) if us else None)
    return {m: {"write_pair_ns": med(v["write_pair_ns"]), "pipe_us": med(v["pipe_us"]), "runs": v} for m, v in got.items()}


def print_hooks(console, hooks):
    from rich.table import Table
    base = hooks.get("untraced", {})
    t = Table(title=f"What the hooks cost other processes (medians of {HOOK_ROUNDS} interleaved rounds; the tracer "
                    f"attached to the idle server)")
    for col in ("mode", "dd read+write, ns", "added per write(2), ns", "pipe round trip, µs", "added, µs"):
        t.add_column(col, justify="left" if col == "mode" else "right")
    for m, v in hooks.items():
        dw = v["write_pair_ns"] - base["write_pair_ns"] if m != "untraced" and base.get("write_pair_ns") else None
        dp = v["pipe_us"] - base["pipe_us"] if m != "untraced" and v.get("pipe_us") and base.get("pipe_us") else None
        t.add_row(m, fmt(v["write_pair_ns"], ",.0f"), fmt(dw, "+,.0f"), fmt(v["pipe_us"], ".2f"), fmt(dp, "+.2f"))
    console.print(t)


def floor_estimate(prof, hooks):
    """The syscall hooks' own cost per flush, before any program work: the syscalls aoftrace followed per flush
    (sys_enter_tp's runs) times what the floor adds to a write(2) (its enter and exit tracepoints)."""
    runs = next((p["runs_per_flush"] for p in prof.get("programs", []) if p["name"] == "sys_enter_tp"), None)
    floor, base = hooks.get("floor", {}).get("write_pair_ns"), hooks.get("untraced", {}).get("write_pair_ns")
    if runs is None or floor is None or base is None or not prof.get("us_per_flush_wall"):
        return None
    us = runs * (floor - base) / 1000
    return {"syscalls_per_flush": runs, "added_ns_per_syscall": floor - base, "us_per_flush": us,
            "pct_of_flush": 100 * us / prof["us_per_flush_wall"]}


def version(argv):
    try:
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=10)
        return r.stdout.strip().splitlines()[0] if r.stdout.strip() else "n/a"
    except (OSError, subprocess.TimeoutExpired):
        return "n/a"


def loadavg():
    with contextlib.suppress(OSError), open("/proc/loadavg") as f:
        return f.read().split()[:3]
    return None


# --- the summary ----------------------------------------------------------------------------------------------

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


RESOLVE = 0.01   # a throughput ratio is resolved when its 95 % interval is this narrow on each side


def resolution(ratios):
    """How well the rounds pin a mode's throughput ratio down, from the spread of its per-round ratios (each
    traced run over the untraced run of its round): the 95 % interval of their geometric mean (t quantile), and
    the rounds that interval would need to be within ±1 % (normal quantile; the sd as measured here)."""
    logs = [math.log(r) for r in ratios if r and r > 0]
    if len(logs) < 2:
        return {}
    sd = statistics.stdev(logs)
    t = T975[max(k for k in T975 if k <= len(logs) - 1)]   # the next lower tabled df: a wider interval
    half = t * sd / math.sqrt(len(logs))
    mean = statistics.fmean(logs)
    return {"round_ratio_geomean": math.exp(mean), "ratio_ci95": [math.exp(mean - half), math.exp(mean + half)],
            "rounds_to_resolve_1pct": math.ceil((1.96 * sd / math.log1p(RESOLVE)) ** 2)}


# Student's t, 97.5 % quantile, by degrees of freedom (a 95 % two-sided interval from a few rounds).
T975 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23, 12: 2.18,
        15: 2.13, 20: 2.09, 30: 2.04}


def summarize(s, runs):
    ok = [r for r in runs if not r.get("error")]
    by = {m: [r for r in ok if r["mode"] == m] for m in s.modes}
    base_by_round = {r["round"]: r["ops_per_sec"] for r in by["untraced"]}
    base = med([r["ops_per_sec"] for r in by["untraced"]])
    out = {}
    for m in s.modes:
        rs = by[m]
        ops = med([r["ops_per_sec"] for r in rs])
        per_round = [r["ops_per_sec"] / base_by_round[r["round"]] for r in rs
                     if base_by_round.get(r["round"]) and r.get("ops_per_sec")]
        e = {"runs": len(rs), "ops_per_sec_median": ops,
             "ratio_of_medians": ops / base if ops and base else None,
             "round_ratio_min": min(per_round) if per_round else None,
             "round_ratio_median": med(per_round), "round_ratio_max": max(per_round) if per_round else None,
             "ops_per_sec": [r["ops_per_sec"] for r in rs], **resolution(per_round)}
        if m != "untraced":
            e.update(ready_s_median=med([r["ready_s"] for r in rs]),
                     ready_s_max=max((r["ready_s"] for r in rs), default=None),
                     peak_rss_mb_median=med([r["peak_rss_kb"] / 1024 for r in rs if r.get("peak_rss_kb")]),
                     peak_rss_mb_max=max((r["peak_rss_kb"] / 1024 for r in rs if r.get("peak_rss_kb")), default=None),
                     attached_rss_mb_median=med([r["attached_peak_rss_kb"] / 1024 for r in rs
                                                 if r.get("attached_peak_rss_kb")]),
                     attached_rss_mb_max=max((r["attached_peak_rss_kb"] / 1024 for r in rs
                                              if r.get("attached_peak_rss_kb")), default=None),
                     events_per_s_median=med([r.get("events_per_s") for r in rs]),
                     lost_events_total=sum(r.get("lost_events") or 0 for r in rs),
                     ready_after_attach=all(r.get("attach_fds_at_ready") == r.get("attach_fds_at_stop")
                                            for r in rs))
            if m == "bpftrace":
                e["attaching_s_median"] = med([r.get("attaching_s") for r in rs])
        out[m] = e
    return out


def fmt(x, spec, none="—"):
    return none if x is None else format(x, spec)


def print_summary(console, s, summary, failed):
    from rich.table import Table
    t = Table(title=f"aoftrace overhead: redis-server appendfsync always, XFS loop, redis-benchmark SET "
                    f"-n {s.requests} -c {CLIENTS} -d {VALUE_SIZE}, {s.reps} interleaved rounds")
    for col, just in (("mode", "left"), ("ops/s median", "right"), ("ratio of medians", "right"),
                      ("round ratios min/med/max", "right"), ("ready s med/max", "right"),
                      ("peak RSS MB med/max", "right"), ("attached peak RSS MB max", "right"), ("events/s med", "right"),
                      ("lost events", "right")):
        t.add_column(col, justify=just)
    for m in s.modes:
        e = summary[m]
        row = [m, fmt(e["ops_per_sec_median"], ",.0f"), fmt(e["ratio_of_medians"], ".3f"),
               "—" if m == "untraced" else f"{fmt(e['round_ratio_min'], '.3f')} / {fmt(e['round_ratio_median'], '.3f')} / "
                                    f"{fmt(e['round_ratio_max'], '.3f')}"]
        if m == "untraced":
            row += ["—", "—", "—", "—", "—"]
        else:
            row += [f"{fmt(e['ready_s_median'], '.3f')} / {fmt(e['ready_s_max'], '.3f')}",
                    f"{fmt(e['peak_rss_mb_median'], '.1f')} / {fmt(e['peak_rss_mb_max'], '.1f')}",
                    fmt(e.get("attached_rss_mb_max"), ".1f"),
                    fmt(e["events_per_s_median"], ",.0f"), str(e["lost_events_total"])]
        t.add_row(*row)
    console.print(t)
    notes = ["ready: from spawning the tracer to its ready line — aoftrace's \"Tracing ... Hit Ctrl-C to end.\", "
             "printed once every program is loaded and attached; bpftrace's BEGIN printf, which bpftrace "
             "0.17 reads only after attaching every probe"]
    if "bpftrace" in s.modes and summary["bpftrace"].get("attaching_s_median") is not None:
        notes.append(f"bpftrace prints \"Attaching N probes...\" before attaching, at "
                     f"{summary['bpftrace']['attaching_s_median']:.3f} s (median)")
    for m in s.modes:
        if m != "untraced" and summary[m]["runs"] and not summary[m]["ready_after_attach"]:
            notes.append(f"{m}: in some run more perf-event/BPF-link fds were open at stop than when its ready "
                         f"line arrived: the ready line came before every probe was attached")
    notes.append("round ratios: traced / untraced ops/s of the same round; peak RSS: VmHWM, at the ready line and "
                 "(reset there: attached peak) sampled every 2 ms until the tracer exits (its report at exit included; "
                 "not ru_maxrss, which execve() seeds with "
                 "the spawning process's peak); events/s: flushes + fdatasync/fsync per second of trace window "
                 "(aoftrace's flush.count leaves out empty flushes, bpftrace counts every call); lost: aoftrace's "
                 "lost_events (ring buffer), bpftrace's \"Lost N events\" (its maps cannot lose any)")
    for n in notes:
        console.print(f"  {n}", soft_wrap=True, highlight=False)
    for m, tg in TARGETS.items():
        a = summary.get(m)
        if not a or not a["runs"]:
            continue
        checks = [("throughput ratio of medians", a["ratio_of_medians"], f">= {tg['ratio']}",
                   a["ratio_of_medians"] is not None and a["ratio_of_medians"] >= tg["ratio"]),
                  ("launch to attached (median)", a["ready_s_median"], f"<= {tg['ready_s']} s",
                   a["ready_s_median"] is not None and a["ready_s_median"] <= tg["ready_s"]),
                  ("peak RSS MB attached (max)", a.get("attached_rss_mb_max"), f"<= {tg['rss_mb']:.0f} MB",
                   a.get("attached_rss_mb_max") is not None and a["attached_rss_mb_max"] <= tg["rss_mb"]),
                  ("peak RSS MB with start (max)", a["peak_rss_mb_max"], f"<= {tg['rss_mb']:.0f} MB",
                   a["peak_rss_mb_max"] is not None and a["peak_rss_mb_max"] <= tg["rss_mb"]),
                  ("lost events", a["lost_events_total"], "== 0", a["lost_events_total"] == 0)]
        console.print(f"{'aoftrace --lite' if m == 'lite' else 'aoftrace'} against the targets:", highlight=False)
        for name, val, target, good in checks:
            v = fmt(val, ".3f") if isinstance(val, float) else str(val)
            console.print(f"  {name:28s} {v:>9s}  target {target:10s} {'met' if good else 'MISSED'}", highlight=False)
        if a.get("ratio_ci95"):
            lo, hi = a["ratio_ci95"]
            verdict = "resolves" if hi - lo <= 2 * RESOLVE else "does not resolve"
            console.print(f"  {a['runs']} rounds: geometric mean of the round ratios {a['round_ratio_geomean']:.3f}, "
                          f"95 % interval {lo:.3f} to {hi:.3f}, which {verdict} ±{100 * RESOLVE:.0f} %; with the "
                          f"spread seen here that takes about {a['rounds_to_resolve_1pct']:,} rounds",
                          soft_wrap=True, highlight=False)
    if failed:
        console.print(f"{failed} run(s) FAILED (see the errors above and in the JSON); medians are over the rest",
                      highlight=False)


# --- main -----------------------------------------------------------------------------------------------------

def main(argv=None):
    s = settings.parse(parse_settings, argv, "bench")
    if s is None:
        return 2
    t_start = time.monotonic()
    runs = []
    work = argparse.Namespace(tmp=None)   # the private directory; named before it exists (env.private_dir)
    try:
        env.catch_interrupts()
        from rich.console import Console
        console = Console(width=None if sys.stdout.isatty() else 160)
        doc = {"schema": "aoftrace-bench/1",
               "settings": {"reps": s.reps, "requests": s.requests, "clients": CLIENTS, "value_size": VALUE_SIZE,
                            "keyspace": KEYSPACE, "server_cpus": s.server_cpus, "bench_cpus": s.bench_cpus,
                            "modes": s.modes, "fs": "xfs", "appendfsync": "always", "bpftrace_script": BPFTRACE},
               "environment": {"kernel": os.uname().release, "cpus": os.cpu_count(),
                               "aoftrace": version([tracing.AOFTRACE, "--version"]),
                               "bpftrace": version(["bpftrace", "--version"]),
                               "redis_server": version(["redis-server", "--version"]),
                               "loadavg_start": loadavg()}}
        tmp = env.private_dir("aofab-bench-", os.environ.get("AOFTRACE_TMP", "/var/tmp"), work, "tmp")
        # `with`, not ExitStack.enter_context: no instant where a mount is made and no cleanup owns it yet
        # (bpftrace's tracepoint: probes read their ids from tracefs)
        with (tracing.tracefs() if "bpftrace" in s.modes else contextlib.nullcontext()), \
                env.LoopFS("xfs", size_mb=IMAGE_MB, base=tmp) as fs, contextlib.ExitStack() as stack:
            workdir = os.path.join(fs.mnt, "aof")
            os.mkdir(workdir)
            srv = env.redis_server(workdir, env.free_port(), extra=["--auto-aof-rewrite-percentage", "0"],
                                   port_tries=env.PORT_TRIES)
            if s.server_cpus:
                srv.argv = ["taskset", "-c", s.server_cpus] + srv.argv
            stack.enter_context(srv)
            pin = f", server on CPU {s.server_cpus}, redis-benchmark on CPU {s.bench_cpus}" if s.server_cpus else ""
            console.print(f"bench: {doc['environment']['redis_server']}, appendfsync always, XFS on {fs.dev}{pin}; "
                          f"{s.reps} rounds of {', '.join(s.modes)} (order rotating), {s.requests} SETs each; "
                          f"load average {' '.join(doc['environment']['loadavg_start'] or [])}",
                          soft_wrap=True, highlight=False)
            warm_up(s, srv, tmp)
            for rnd in range(s.reps):
                k = rnd % len(s.modes)
                for mode in s.modes[k:] + s.modes[:k]:
                    try:
                        rec = one_run(s, srv, mode, rnd, tmp)
                    except Exception as e:   # one failed run is reported, not fatal (Ctrl-C is not an Exception)
                        if env.interrupted:
                            raise
                        rec = {"round": rnd + 1, "mode": mode, "error": f"{type(e).__name__}: {e}"[:500]}
                    runs.append(rec)
                    console.print(run_line(rec), soft_wrap=True, highlight=False)
            profiled = [m for m in AOFTRACE_MODES if m in s.modes]
            if profiled:
                try:
                    empty = floor_profile(s, srv, tmp) if "floor" in s.modes else {}
                    for m in profiled:
                        doc[PROFILE_KEY[m]] = profile_run(s, srv, tmp, m, empty)
                except Exception as e:   # reported, not fatal: the measured runs stand without it
                    if env.interrupted:
                        raise
                    for m in profiled:
                        doc.setdefault(PROFILE_KEY[m], {"error": f"{type(e).__name__}: {e}"[:500]})
            if "floor" in s.modes and shutil.which("perf"):
                try:
                    doc["hooks"] = hook_costs(s, srv, tmp)
                except Exception as e:   # reported, not fatal
                    if env.interrupted:
                        raise
                    doc["hooks"] = {"error": f"{type(e).__name__}: {e}"[:500]}
        doc["environment"]["loadavg_end"] = loadavg()
        doc["wall_s"] = round(time.monotonic() - t_start, 1)
        doc["runs"] = runs
        doc["summary"] = summary = summarize(s, runs)
        failed = sum(1 for r in runs if r.get("error"))
        console.print()
        print_summary(console, s, summary, failed)
        for m, key in PROFILE_KEY.items():
            if key not in doc:
                continue
            if doc[key].get("error"):
                console.print(f"profile of {m} FAILED: {doc[key]['error']}", highlight=False)
            else:
                print_profile(console, doc[key], m)
        if "hooks" in doc:
            if doc["hooks"].get("error"):
                console.print(f"hooks FAILED: {doc['hooks']['error']}", highlight=False)
            else:
                print_hooks(console, doc["hooks"])
                # either mode's profile counts the followed syscalls a flush (both follow the same ones)
                est = floor_estimate(doc.get("profile") or doc.get("profile_lite") or {}, doc["hooks"])
                if est:
                    doc["floor_estimate"] = est
                    console.print(f"  the syscall hooks alone, before any program work: {est['syscalls_per_flush']:.1f} "
                                  f"followed syscalls a flush x {est['added_ns_per_syscall']:,.0f} ns = "
                                  f"{est['us_per_flush']:.1f} µs a flush, {est['pct_of_flush']:.1f} % of it "
                                  f"(the throughput target leaves {100 * (1 - TARGETS['aoftrace']['ratio']):.0f} %)", highlight=False)
        os.makedirs(os.path.dirname(s.out), exist_ok=True)
        with open(s.out, "w") as f:
            json.dump(doc, f, indent=1)
        console.print(f"bench: {doc['wall_s']:.0f} s, load average at the end "
                      f"{' '.join(doc['environment']['loadavg_end'] or [])}; wrote {s.out}", soft_wrap=True,
                      highlight=False)
        return 1 if failed else 0
    except BaseException as e:
        if not env.interrupted:
            if isinstance(e, Exception):   # set-up or warm-up failed (the `with` blocks have cleaned up)
                print(f"bench: {type(e).__name__}: {e}", file=sys.stderr)
                return 1
            raise
        return env.after_interrupt()
    finally:
        if work.tmp:
            env.finish(lambda: env.remove_tree(work.tmp))


def run_line(r):
    head = f"  round {r['round']} {r['mode']:9s}"
    if r.get("error"):
        return f"{head} FAILED: {r['error']}"
    line = f"{head} {r['ops_per_sec']:9,.0f} ops/s  ({r['bench_s']:.1f} s)"
    if r["mode"] != "untraced":
        line += (f"  ready {r['ready_s']:.3f} s  peak RSS {(r['peak_rss_kb'] or 0) / 1024:.1f} MB  "
                 f"{r['events_per_s']:,.0f} events/s  lost {r['lost_events']}")
    return line


if __name__ == "__main__":
    env.exit_main(main())
