"""`make bench`: the overhead of tracing. Debian's redis-server (appendfsync always) on a loop-mounted XFS
image, driven by redis-benchmark SET, untraced vs traced by aoftrace in its full attribution mode (the default)
vs aoftrace --lite (the mode to leave attached) vs traced by an equivalent bpftrace script (BPFTRACE in bench_tracer.py) vs the floor (aoftrace with every BPF program empty:
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
import json
import os
import shutil
import subprocess
import sys
import time

from . import env, settings, tracing
from .settings import UsageError
from .bench_runs import (AOFTRACE_MODES, CLIENTS, FLOOR_AOFTRACE, KEYSPACE, MODES, VALUE_SIZE, floor_profile,
                         hook_costs, one_run, profile_run, warm_up)
from .bench_summary import (TARGETS, floor_estimate, print_hooks, print_profile, print_summary, run_line,
                            summarize)
from .bench_tracer import BPFTRACE

PROFILE_KEY = {"aoftrace": "profile", "lite": "profile_lite"}   # where bench.json keeps each one's profile
IMAGE_MB = 1024
DEFAULT_REPS, DEFAULT_REQUESTS = 5, 300000   # about 8-10 s per untraced run here


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
        doc["verifier"] = verifier_stats(console)
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


def verifier_stats(console):
    """Each BPF program's verification time, loaded alone (build/verifier_stats): the full mode's start-up is
    mostly verification, so a program whose verification grows shows here. {program: [usec, insns]}."""
    exe = os.path.join(env.BUILD, "verifier_stats")
    r = subprocess.run([exe, os.path.join(env.BUILD, "aoftrace.bpf.o")], capture_output=True, text=True, timeout=300)
    if r.returncode:
        console.print(f"verifier stats FAILED: {r.stderr.strip()}", highlight=False)
        return {"error": r.stderr.strip()}
    rows = [line.split() for line in r.stdout.splitlines()[1:]]
    out = {row[0]: [int(row[1]), int(row[2])] for row in rows if len(row) == 3 and row[1].isdigit()}
    top = sorted(out.items(), key=lambda kv: -kv[1][0])[:5]
    console.print(f"verifier: {sum(v[0] for v in out.values()) / 1000:.1f} ms for {len(out)} programs loaded alone; "
                  "the slowest: " + ", ".join(f"{k} {v[0] / 1000:.1f} ms ({v[1]} insns)" for k, v in top),
                  soft_wrap=True, highlight=False)
    return out


if __name__ == "__main__":
    env.exit_main(main())
