"""`make run-ab`: interleaved A/B runs of the AOF write path (appendfsync always) — write(2) vs io_uring, without
and with a concurrent AOF rewrite, on XFS and ext4 — traced by aoftrace and perf stat, then analysed
(aofab.analyze), explained (aofab.explain) and written up (aofab.report) in OUT.

    .venv/bin/python -m aofab.runab [--quick 1] [--fs xfs,ext4] [--io write,uring]
        [--rewrite off,on] [--reps 3] [--requests N] [--cpus SERVER:BENCH] [--server PATH --server-args ARGS]
        [--out DIR]

Every setting may be empty, meaning its default (so `make run-ab` can pass its variables through unchanged).
Resources (loop devices, mounts, processes) live in context managers; SIGINT/SIGTERM unwind them, print
"interrupted; cleaned up" and exit 130. Bad settings: one line on stderr, exit 2, nothing created.
See docs/run-ab.md.
"""
import signal

if __name__ == "__main__":   # held until env.catch_interrupts(), see there
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})

import argparse
import contextlib
import datetime
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time

from . import env, settings, tracing
from .settings import UsageError

FS_CHOICES = ("xfs", "ext4")
IO_CHOICES = ("write", "uring", "uring-linked", "uring-sqpoll")
REWRITE_CHOICES = ("off", "on")
CLIENTS, VALUE_SIZE, KEYSPACE = 50, 100, 100000
PERF_EVENTS_SW = "task-clock,context-switches,cpu-migrations,page-faults"
PERF_EVENTS_HW = "cycles,instructions"
IMAGE_MB = 1024


def _list(value, default, choices=None, what="value"):
    if value in (None, ""):
        return list(default)
    items = [x.strip() for x in value.split(",") if x.strip()]
    if not items:
        raise UsageError(f"empty {what} list")
    for x in items:
        if choices is not None and x not in choices:
            raise UsageError(f"unsupported {what} {x!r} (choose from {', '.join(choices)})")
        if choices is None and not re.fullmatch(r"[A-Za-z0-9_.+-]+", x):
            raise UsageError(f"bad {what} label {x!r} (letters, digits, _.+- only)")
    if len(set(items)) != len(items):
        raise UsageError(f"duplicate {what} in {value!r}")
    return items


def _cpus(value):
    if value in (None, ""):
        return None, None
    return settings.cpu_pair(value, "SERVER_CPUS:BENCH_CPUS, e.g. 1:0")


def parse_settings(argv=None):
    ap = argparse.ArgumentParser(prog="aofab.runab", description=__doc__.split("\n\n")[0])
    for opt in ("quick", "fs", "io", "rewrite", "reps", "requests", "preload", "cpus", "server", "server-args", "out"):
        ap.add_argument(f"--{opt}", default="")
    ap.add_argument("--uftrace", default="")
    a = ap.parse_args(argv)
    quick = a.quick not in ("", "0", "no", "false")
    if a.quick not in ("", "0", "1", "no", "yes", "false", "true"):
        raise UsageError(f"QUICK must be 0 or 1, not {a.quick!r}")
    s = argparse.Namespace(quick=quick)
    s.fs = _list(a.fs, ["xfs", "ext4"], FS_CHOICES, "file system")
    s.server = a.server or None
    s.server_args = a.server_args
    if s.server:
        if not (os.path.isfile(s.server) and os.access(s.server, os.X_OK)):
            raise UsageError(f"SERVER {s.server!r} is not an executable file")
        s.server = os.path.abspath(s.server)
        try:
            shlex.split(s.server_args)
        except ValueError as e:
            raise UsageError(f"SERVER_ARGS: {e}")
        if "{io}" in s.server_args:
            s.io = _list(a.io, ["no", "yes"], None, "io label")
        else:
            s.io = _list(a.io, ["default"], None, "io label")
            if len(s.io) > 1:
                raise UsageError("with SERVER, several IO values need an {io} placeholder in SERVER_ARGS")
    else:
        if a.server_args:
            raise UsageError("SERVER_ARGS needs SERVER")
        s.io = _list(a.io, ["write", "uring"], IO_CHOICES, "io method")
    s.rewrite = _list(a.rewrite, ["off", "on"], REWRITE_CHOICES, "rewrite setting")
    s.reps = settings.integer(a.reps, 1 if quick else 3, "REPS", 1)
    s.requests = settings.integer(a.requests, 20000 if quick else 100000, "REQUESTS", 100)
    s.preload = settings.integer(a.preload, 20000 if quick else 100000, "PRELOAD", 0)
    s.warmup = 2000
    s.server_cpus, s.bench_cpus = _cpus(a.cpus)
    s.cpus = a.cpus
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    s.out = os.path.abspath(a.out or os.path.join(env.ROOT, "results", stamp))
    if os.path.exists(s.out) and (not os.path.isdir(s.out) or os.listdir(s.out)):
        raise UsageError(f"OUT {s.out} exists and is not an empty directory")
    for tool in ("redis-benchmark", "losetup", "mount", "perf") + (("taskset",) if a.cpus else ()):
        if not shutil.which(tool):
            raise UsageError(f"{tool} not found (make deps installs it)")
    for b in ("aoftrace", "aofwriter"):
        if not os.access(os.path.join(env.BUILD, b), os.X_OK):
            raise UsageError(f"build/{b} missing: run make")
    s.uftrace = uftrace_setting(a.uftrace, s.server)
    if os.geteuid() != 0:
        raise UsageError("run-ab mounts loop devices and loads BPF: run it as root")
    return s


class Aoftrace(tracing.Aoftrace):
    """tracing.Aoftrace that also kills aoftrace when its start-up wait is interrupted (an exception raised
    inside __enter__ skips __exit__)."""

    def __enter__(self):
        try:
            r = super().__enter__()
            self.t_on_ns = time.monotonic_ns()    # attached: uftrace's calls are counted from here (UFTRACE=1)
            return r
        except BaseException:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            raise

    def stop(self, *args, **kw):
        if getattr(self, "t_off_ns", None) is None:
            self.t_off_ns = time.monotonic_ns()   # ... to here
        return super().stop(*args, **kw)


# --- processes a run starts ----------------------------------------------------------------------------------

class PerfStat:
    """perf stat -x, -p PID over a `with` block; output in `path`. Stopped with SIGINT, killed on error."""

    def __init__(self, pid, path, events):
        self.argv = ["perf", "stat", "-x", ",", "-e", events, "-p", str(pid), "-o", path]
        self.proc = None
        self.elapsed = None

    def __enter__(self):
        self.t0 = time.monotonic()
        try:
            self.proc = env.spawn(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, start_new_session=True)
            time.sleep(0.1)   # perf opens its counters in a few ms
            self.t0 = time.monotonic()
            return self
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise

    def __exit__(self, exc_type, *exc):
        if self.elapsed is None:
            self.elapsed = time.monotonic() - self.t0
        env.finish(lambda: self._stop(signal.SIGKILL if exc_type else signal.SIGINT))
        return False

    def _stop(self, sig):
        if self.proc is None:
            return
        env.stop_process(self.proc, sig, 10)
        if not self.proc.stderr.closed:
            self.stderr = self.proc.stderr.read().decode(errors="replace")
            self.proc.stderr.close()


def resp(port, *args, timeout=5.0):
    """One command over RESP on 127.0.0.1:port; returns the reply as a string (bulk/simple) or raises."""
    with contextlib.closing(socket.create_connection(("127.0.0.1", port), timeout=timeout)) as s:
        msg = f"*{len(args)}\r\n" + "".join(f"${len(str(a).encode())}\r\n{a}\r\n" for a in args)
        s.sendall(msg.encode())
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            if buf[:1] in (b"+", b"-", b":") and buf.endswith(b"\r\n"):
                break
            if buf[:1] == b"$":
                n = int(buf[1:buf.index(b"\r\n")])
                if n < 0 or len(buf) >= buf.index(b"\r\n") + 2 + n + 2:
                    break
        return buf.decode(errors="replace")


def info(port, section="persistence"):
    out = {}
    with contextlib.suppress(OSError, ValueError):
        for line in resp(port, "INFO", section).splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                out[k] = v.strip()
    return out


class RewriteLoop:
    """For SERVER=...: BGREWRITEAOF again as soon as the previous rewrite ended, until the block exits."""

    def __init__(self, port):
        self.port, self.stop, self.started = port, threading.Event(), 0

    def _loop(self):
        while not self.stop.wait(0.05):
            i = info(self.port)
            if i.get("aof_rewrite_in_progress") == "0" and i.get("aof_rewrite_scheduled", "0") == "0":
                with contextlib.suppress(OSError, ValueError):
                    if resp(self.port, "BGREWRITEAOF").startswith("+"):
                        self.started += 1

    def __enter__(self):
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)
        return False


def server_argv(s, cell, workdir, port):
    pin = ["taskset", "-c", s.server_cpus] if s.server_cpus else []
    if s.server:
        extra = shlex.split(s.server_args.replace("{io}", cell["io"]))
        return pin + [s.server, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir, "--appendonly", "yes",
                      "--appendfsync", "always", "--save", "", "--daemonize", "no", "--protected-mode", "yes",
                      "--logfile", "", *extra]
    return pin + [os.path.join(env.BUILD, "aofwriter"), "--port", str(port), "--dir", workdir, "--appendfsync",
                  "always", "--io", cell["io"], *(["--auto-rewrite"] if cell["rewrite"] == "on" else [])]


def bench_argv(s, port, requests, pipeline=1, csv=True):
    pin = ["taskset", "-c", s.bench_cpus] if s.bench_cpus else []
    return pin + ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", "set", "-n", str(requests),
                  "-c", str(CLIENTS), "-d", str(VALUE_SIZE), "-r", str(KEYSPACE),
                  *(["-P", str(pipeline)] if pipeline > 1 else []), *(["--csv"] if csv else ["-q"])]


def parse_csv_rps(text):
    for line in text.splitlines():
        cells = [c.strip('"') for c in line.strip().split('","')]
        if len(cells) >= 2 and cells[0] == "SET":
            with contextlib.suppress(ValueError):
                return float(cells[1])
    return None


def timeline_cell(cells):
    """The cell whose first repetition also records a trace-event timeline (aoftrace -T): the one with the
    most going on — io_uring with a rewrite, else io_uring, else a rewrite, else the first."""
    def score(c):
        return (c["io"] != "write") * 2 + (c["rewrite"] == "on")
    return max(cells, key=score)["key"] if cells else None


def one_run(s, cell, rep, idx, fs, hw_ok):
    """One repetition of one cell on a fresh AOF directory; writes OUT/runs/NNN-cell-rK/."""
    name = f"{idx:03d}-{cell['key']}-r{rep + 1}"
    rdir = os.path.join(s.out, "runs", name)
    os.makedirs(rdir)
    workdir = os.path.join(fs.mnt, name)
    os.mkdir(workdir)
    port = env.free_port()
    meta = {"cell": cell["key"], "fs": cell["fs"], "io": cell["io"], "rewrite": cell["rewrite"], "rep": rep + 1,
            "index": idx, "requests": s.requests, "preload": s.preload, "warmup": s.warmup, "clients": CLIENTS,
            "value_size": VALUE_SIZE, "keyspace": KEYSPACE, "device": fs.dev, "started": time.time()}
    argv = server_argv(s, cell, workdir, port)
    if s.uftrace:
        argv = uftrace_argv(argv, os.path.join(rdir, "uftrace.data"))
    meta["server_argv"] = argv
    try:
        with (UftraceServer if s.uftrace else env.Server)(argv, port, cwd=workdir, log=os.path.join(rdir, "server.log"),
                                                          port_tries=env.PORT_TRIES) as srv:
            port = srv.port                   # another one if the first was taken before the server bound it
            meta["server_argv"] = srv.argv
            with contextlib.ExitStack() as rw:
                if cell["rewrite"] == "on" and s.server:
                    loop = rw.enter_context(RewriteLoop(port))
                # warm-up: preload keys (pipelined, so the dataset a rewrite copies is big), then a short plain run
                t0 = time.monotonic()
                with open(os.path.join(rdir, "warmup.txt"), "w") as f:
                    if s.preload:
                        env.run(bench_argv(s, port, s.preload, pipeline=16, csv=False), stdout=f, timeout=600)
                    env.run(bench_argv(s, port, s.warmup, csv=False), stdout=f, timeout=600)
                meta["warmup_s"] = time.monotonic() - t0
                before = info(port)
                meta["dbsize_before"] = resp(port, "DBSIZE").strip().lstrip(":")
                events = PERF_EVENTS_SW + ("," + PERF_EVENTS_HW if hw_ok else "")
                targs = ["-f", os.path.join(rdir, "offcpu.folded")]
                if rep == 0 and cell["key"] == getattr(s, "timeline_cell", None):
                    targs += ["-T", os.path.join(rdir, "timeline.json")]
                with Aoftrace(srv.pid, os.path.join(rdir, "aoftrace.json"), targs) as tr:
                    with PerfStat(srv.pid, os.path.join(rdir, "perf.txt"), events) as perf:
                        t0 = time.monotonic()
                        res = env.run(bench_argv(s, port, s.requests), timeout=900)
                        meta["bench_s"] = time.monotonic() - t0
                    meta["perf_elapsed_s"] = perf.elapsed
                    meta["aoftrace_rc"] = tr.stop()
                    with open(os.path.join(rdir, "aoftrace.txt"), "w") as f:
                        f.write(tr.output)
                        if tr.stderr:
                            f.write("\n# stderr\n" + tr.stderr)
                if perf.stderr.strip():
                    with open(os.path.join(rdir, "perf.stderr"), "w") as f:
                        f.write(perf.stderr)
                with open(os.path.join(rdir, "benchmark.csv"), "w") as f:
                    f.write(res.stdout)
                meta["ops_per_sec"] = parse_csv_rps(res.stdout)
                after = info(port)
                meta["rewrites_before"] = int(before.get("aof_rewrites", 0) or 0)
                meta["rewrites_after"] = int(after.get("aof_rewrites", 0) or 0)
                if cell["rewrite"] == "on" and s.server:
                    meta["bgrewriteaof_sent"] = loop.started
        if s.uftrace:
            meta["uftrace"] = uftrace_results(srv, tr, rdir)
    except Exception as e:   # one failed run is reported, not fatal (KeyboardInterrupt is not an Exception)
        if env.interrupted:
            raise
        meta["error"] = f"{type(e).__name__}: {e}"[:500]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        meta["finished"] = time.time()
        with open(os.path.join(rdir, "run.json"), "w") as f:
            json.dump(meta, f, indent=1)
    return meta, rdir


# --- UFTRACE=1: uftrace on the same runs ---------------------------------------------------------------------

PG_AOFWRITER = os.path.join(env.BUILD, "pg", "aofwriter")
# Valkey #750 recorded `uftrace record -F flushAppendOnlyFile -F fdatasync`; fsync too, because aoftrace's
# fdatasync figures are the main thread's fdatasync+fsync (a rewrite's manifest and directory fsyncs).
UFTRACE_FILTERS = ("^flushAppendOnlyFile$", "^fdatasync$", "^fsync$")
_DUMP = re.compile(r"^\s*(\d+)\.(\d{9})\s+(\d+): \[(entry|exit) *\] ([^(\s]+)\(")


def uftrace_setting(value, server):
    if value not in ("", "0", "1", "no", "yes", "false", "true"):
        raise UsageError(f"UFTRACE must be 0 or 1, not {value!r}")
    if value in ("", "0", "no", "false"):
        return False
    if server:
        raise UsageError("UFTRACE=1 runs aofwriter's -pg build under uftrace; it does not apply to SERVER")
    if not shutil.which("uftrace"):
        raise UsageError("uftrace not found (make deps installs it)")
    if not os.access(PG_AOFWRITER, os.X_OK):
        raise UsageError("build/pg/aofwriter missing: run make build/pg/aofwriter")
    return True


def uftrace_argv(argv, data):
    """server_argv's aofwriter command line, as `uftrace record` of the -pg build (taskset stays in front)."""
    i = argv.index(os.path.join(env.BUILD, "aofwriter"))
    filters = [x for f in UFTRACE_FILTERS for x in ("-F", f)]
    return argv[:i] + ["uftrace", "record", "-d", data, "--no-sched", *filters, PG_AOFWRITER] + argv[i + 1:]


class UftraceServer(env.Server):
    """env.Server for `uftrace record ... aofwriter`: `pid` is aofwriter's (uftrace's child, from INFO), and
    stop() sends SHUTDOWN first so aofwriter exits normally and uftrace writes all its data."""

    def __enter__(self):
        super().__enter__()
        try:
            self.target = int(info(self.port, "server")["process_id"])
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    @property
    def pid(self):
        return self.target

    def stop(self, sig=signal.SIGTERM, timeout=30.0):
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                resp(self.port, "SHUTDOWN")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        super().stop(sig)   # SIGTERM to the group if it is still there (aofwriter and uftrace exit on it too)


def uftrace_window(data, tid, t_on, t_off):
    """Calls of thread `tid` that began in [t_on, t_off] (CLOCK_MONOTONIC ns, uftrace's default clock), from
    `uftrace dump`: flushAppendOnlyFile (all, and those that called aofWrite, i.e. wrote) and fdatasync+fsync."""
    r = env.run(["uftrace", "dump", "-d", data, "--no-pager", f"--tid={tid}"], timeout=600)
    res = {k: {"count": 0, "total_us": 0.0} for k in ("flush", "flush_wrote", "fdatasync")}
    res.update(fdatasync_calls=0, fsync_calls=0, outside_window=0, lost=0)
    stack = []   # [name, entry ns, wrote]
    for line in r.stdout.splitlines():
        m = _DUMP.match(line)
        if not m:
            res["lost"] += "lost" in line.lower()
            continue
        ts, kind, name = int(m[1]) * 10**9 + int(m[2]), m[4], m[5]
        if kind == "entry":
            if name == "aofWrite":
                for fr in stack:
                    fr[2] = fr[2] or fr[0] == "flushAppendOnlyFile"
            stack.append([name, ts, False])
            continue
        while stack and stack[-1][0] != name:   # an exit record lost: drop the frames it leaves open
            stack.pop()
        if not stack:
            continue
        _, t0, wrote = stack.pop()
        if name not in ("flushAppendOnlyFile", "fdatasync", "fsync"):
            continue
        if not t_on <= t0 <= t_off:
            res["outside_window"] += 1
            continue
        keys = (["flush"] + (["flush_wrote"] if wrote else [])) if name == "flushAppendOnlyFile" else ["fdatasync"]
        for k in keys:
            res[k]["count"] += 1
            res[k]["total_us"] += (ts - t0) / 1000.0
        if name != "flushAppendOnlyFile":
            res[f"{name}_calls"] += 1
    return res


def uftrace_results(srv, tr, rdir):
    """After the run: stop aofwriter (uftrace then writes its data), keep `uftrace report` of the whole run in
    uftrace.txt, and return uftrace's figures over aoftrace's window for run.json."""
    srv.stop()
    data = os.path.join(rdir, "uftrace.data")
    out = {"command": " ".join(srv.argv[srv.argv.index("uftrace"):srv.argv.index(PG_AOFWRITER) + 1]),
           "rc": srv.proc.returncode, "tid": srv.pid, "window_s": (tr.t_off_ns - tr.t_on_ns) / 1e9}
    try:
        rep = env.run(["uftrace", "report", "-d", data, "--no-pager"], timeout=600).stdout
        with open(os.path.join(rdir, "uftrace.txt"), "w") as f:
            f.write(rep)
        out.update(uftrace_window(data, srv.pid, tr.t_on_ns, tr.t_off_ns))
    except (OSError, subprocess.SubprocessError) as e:
        out["error"] = f"{type(e).__name__}: {getattr(e, 'stderr', None) or e}"[:500]
    return out


def hw_counters_work(fs_mnt):
    """Whether perf can count cycles here (a VM often has no PMU): a 0.1 s probe on `sleep`."""
    try:
        r = subprocess.run(["perf", "stat", "-x", ",", "-e", PERF_EVENTS_HW, "--", "sleep", "0.1"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0 and "<not supported>" not in r.stderr and "<not counted>" not in r.stderr


def environment(s, mounts):
    def cmd(argv):
        try:
            return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "n/a"
    model = "n/a"
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "n/a"
    with contextlib.suppress(OSError):
        mem = open("/proc/meminfo").readline().split(":", 1)[1].strip()
    e = {"kernel": os.uname().release, "machine": os.uname().machine, "cpus": os.cpu_count(), "cpu_model": model,
         "memory": mem, "debian": cmd(["cat", "/etc/debian_version"]),
         "aoftrace": cmd([os.path.join(env.BUILD, "aoftrace"), "--version"]),
         "aofwriter": cmd([os.path.join(env.BUILD, "aofwriter"), "--version"]),
         "redis_benchmark": cmd(["redis-benchmark", "--version"]), "perf": cmd(["perf", "--version"]),
         "uftrace": (cmd(["uftrace", "--version"]).splitlines() or ["n/a"])[0] if s.uftrace else None,
         "server": cmd([s.server, "--version"]) if s.server else None, "fs": {}}
    for fsname, fs in mounts.items():
        opts = ""
        with contextlib.suppress(OSError):
            for line in open("/proc/mounts"):
                f = line.split()
                if f[1] == fs.mnt:
                    opts = f[3]
        dev = os.path.basename(fs.dev)
        sysq = {}
        for k in ("logical_block_size", "rotational", "scheduler", "max_sectors_kb", "write_cache"):
            with contextlib.suppress(OSError):
                sysq[k] = open(f"/sys/block/{dev}/queue/{k}").read().strip()
        backing_fs = cmd(["stat", "-f", "-c", "%T", os.path.dirname(fs.image)])
        e["fs"][fsname] = {"device": fs.dev, "mkfs": " ".join(env.MKFS[fsname]), "mount_options": opts,
                           "image_mb": fs.size_mb, "image_on": backing_fs,
                           "loop": cmd(["losetup", "--list", "--noheadings", "-O", "NAME,DIO,LOG-SEC,SIZELIMIT,RO",
                                        fs.dev]),
                           "loop_settings": {"direct_io": "on (losetup --direct-io=on)", **sysq}}
    return e


def main(argv=None):
    s = settings.parse(parse_settings, argv, "run-ab")
    if s is None:
        return 2
    t_start = time.monotonic()
    cells = [{"fs": f, "io": i, "rewrite": r, "key": f"{f}-{i}-{r}"} for f in s.fs for i in s.io for r in s.rewrite]
    s.timeline_cell = timeline_cell(cells)
    work = argparse.Namespace(base=None)   # the private directory; named before it exists (env.private_dir)
    try:
        env.catch_interrupts()
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)
        console = Console(stderr=True)
        os.makedirs(os.path.join(s.out, "runs"), exist_ok=True)
        base = env.private_dir("aofab-runab-", os.environ.get("AOFTRACE_TMP", "/var/tmp"), work, "base")
        with contextlib.ExitStack() as stack:
            mounts = {f: stack.enter_context(env.LoopFS(f, size_mb=IMAGE_MB, base=base)) for f in s.fs}
            hw_ok = hw_counters_work(base)
            envinfo = environment(s, mounts)
            envinfo["hw_counters"] = hw_ok
            with open(os.path.join(s.out, "settings.json"), "w") as f:
                json.dump({"settings": dict(vars(s)), "environment": envinfo, "cells": [c["key"] for c in cells]}, f,
                          indent=1)
            console.print(f"run-ab: {len(cells)} cells × {s.reps} reps, {s.requests} SETs each, "
                          f"{'aofwriter' if not s.server else s.server} on {', '.join(s.fs)} → {s.out}", soft_wrap=True)
            order = []
            for rep in range(s.reps):
                k = rep % len(cells)
                order += [(c, rep) for c in cells[k:] + cells[:k]]
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
                          transient=False) as progress:
                task = progress.add_task("starting", total=len(order))
                for idx, (cell, rep) in enumerate(order, 1):
                    progress.update(task, description=f"{cell['fs']:4s} {cell['io']:8s} rewrite {cell['rewrite']:3s} "
                                                      f"rep {rep + 1}/{s.reps}")
                    meta, rdir = one_run(s, cell, rep, idx, mounts[cell["fs"]], hw_ok)
                    ops = meta.get("ops_per_sec")
                    if meta.get("error"):
                        progress.console.print(f"  {os.path.basename(rdir)}: FAILED: {meta['error']}")
                    else:
                        progress.console.print(f"  {os.path.basename(rdir)}: {ops or float('nan'):.0f} ops/s, "
                                               f"bench {meta.get('bench_s', 0):.1f} s")
                    progress.advance(task)
        env.finish(lambda: env.remove_tree(base))
        work.base = None
        from . import report
        wall = time.monotonic() - t_start
        path = report.write(s.out, wall_s=wall)
        signal.signal(signal.SIGINT, signal.SIG_IGN)    # done: a late signal must not turn success into a
        signal.signal(signal.SIGTERM, signal.SIG_IGN)   # kill at exit (Python restores SIG_DFL for handlers)
        console.print(f"run-ab: done in {wall:.0f} s (+{time.monotonic() - t_start - wall:.0f} s report): {path}",
                      soft_wrap=True)
        return 0
    except BaseException:
        if not env.interrupted:
            raise
        return env.after_interrupt(lambda: work.base and env.remove_tree(work.base))
    finally:
        if work.base:
            env.finish(lambda: env.remove_tree(work.base))


if __name__ == "__main__":
    env.exit_main(main())
