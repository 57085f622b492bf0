"""`make bench`'s measurements: the benchmark's load (redis-benchmark SET), one run per mode with its tracer,
the warm-up, the profile runs under BPF run-time statistics (each program's cost per flush) and what the hooks
cost other processes. bench.py runs them in rounds; bench_summary.py sums them up and prints them."""
import contextlib
import ctypes
import json
import os
import re
import statistics
import time

from . import env, tracing
from .bench_tracer import aoftrace_tracer, bpftrace_maps, bpftrace_tracer, hist_quantile

MODES = ("untraced", "aoftrace", "lite", "bpftrace", "floor")
AOFTRACE_MODES = {"aoftrace": (), "lite": ("--lite",)}   # the aoftrace modes and their options
# floor: aoftrace built with -DAOF_FLOOR (make bench builds it): every BPF program returns at its first
# instruction, attached where the real ones are, so its runs price the hooks alone (docs/reliability.md).
FLOOR_AOFTRACE = os.path.join(env.BUILD, "floor", "aoftrace")
CLIENTS, VALUE_SIZE, KEYSPACE = 50, 100, 100000


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


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
