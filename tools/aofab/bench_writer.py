"""`make bench-writer`: aofwriter (each --io mode) against Debian's redis-server on the same loop-mounted
file system, driven by the same redis-benchmark command, runs interleaved. Prints ops/s and flush latency
and their ratios to redis-server. A benchmark, not a test: it asserts nothing.

Throughput comes from untraced runs; flush latency (appendfsync always only) from separate traced runs
(half the requests) right after. It is the time from the first write of a flush to the end of its
sync, measured with bpftrace uprobes (see BT_REDIS and BT_WRITER below); the probes cost a few
microseconds per flush in both servers, so the ratios are fair, the absolute figures slightly high.

    make bench-writer ARGS="--fs ext4 --requests 50000 --rounds 3 --pipeline 16"
"""
import signal

if __name__ == "__main__":   # held until env.catch_interrupts(), see there
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time

from . import env


# Uprobes on Debian's redis-server flushAppendOnlyFile/aofWrite do not see its flush (the aofWrite probe
# never fires; the compiler inlined or split the body), and this VM has no tracefs for syscall tracepoints. So a flush is timed from the first write() to the AOF fd to the return of the
# fdatasync() that follows, on libc's functions, in redis-server; and as flushAppendOnlyFile() calls that
# called aofWrite() in aofwriter, whose functions are real symbols (the io_uring modes make no libc call).
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
BT_REDIS = """
uprobe:%(libc)s:write /pid == %(pid)d && arg0 == %(fd)d && @s[tid] == 0/ { @s[tid] = nsecs; }
uretprobe:%(libc)s:fdatasync /pid == %(pid)d && @s[tid] != 0/ {
    @us = hist((nsecs - @s[tid]) / 1000); @n = count(); @sum_ns = sum(nsecs - @s[tid]);
    delete(@s[tid]);
}
"""
BT_WRITER = """
uprobe:%(bin)s:flushAppendOnlyFile /pid == %(pid)d/ { @s[tid] = nsecs; @w[tid] = 0; }
uprobe:%(bin)s:aofWrite /pid == %(pid)d/ { @w[tid] = 1; }
uretprobe:%(bin)s:flushAppendOnlyFile /pid == %(pid)d && @s[tid] != 0/ {
    if (@w[tid] == 1) { @us = hist((nsecs - @s[tid]) / 1000); @n = count(); @sum_ns = sum(nsecs - @s[tid]); }
    delete(@s[tid]); delete(@w[tid]);
}
"""


def aof_fd(pid, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}").endswith(".incr.aof"):
                    return int(fd)
            except OSError:
                pass
        time.sleep(0.05)
    raise RuntimeError(f"process {pid} has no AOF incr file open")


class FlushTracer:
    """bpftrace on one server process; `result` is {"n", "mean_us", "p50_us", "p99_us"} after exit."""

    def __init__(self, pid, redis):
        if redis:
            self.script = BT_REDIS % {"libc": LIBC, "pid": pid, "fd": aof_fd(pid)}
        else:
            self.script = BT_WRITER % {"bin": os.path.join(env.BUILD, "aofwriter"), "pid": pid}
        self.proc, self.result = None, None

    def __enter__(self):
        self.proc = subprocess.Popen(["bpftrace", "-f", "json", "-e", self.script], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        deadline = time.monotonic() + 30
        for line in self.proc.stdout:           # wait until the probes are attached
            if '"attached_probes"' in line:
                break
            if time.monotonic() > deadline:
                break
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            out, _ = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            out, _ = self.proc.communicate()
        maps = {}
        for line in out.splitlines():
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("type") in ("map", "hist"):
                maps.update(msg.get("data", {}))
        n = maps.get("@n", 0)
        if n:
            self.result = {"n": n, "mean_us": maps.get("@sum_ns", 0) / n / 1000.0,
                           "p50_us": hist_quantile(maps.get("@us", []), 0.5),
                           "p99_us": hist_quantile(maps.get("@us", []), 0.99)}
        return False


def hist_quantile(buckets, q):
    """Upper bound of the power-of-two bucket holding quantile q (bpftrace hist() JSON)."""
    total = sum(b.get("count", 0) for b in buckets)
    if not total:
        return float("nan")
    seen = 0
    for b in buckets:
        seen += b.get("count", 0)
        if seen >= q * total:
            return float(b.get("max", b.get("min", 0)))
    return float(buckets[-1].get("max", 0))


def server_for(kind, workdir, port, args):
    if kind == "redis":
        return env.redis_server(workdir, port, appendfsync=args.appendfsync,
                                extra=["--aof-use-rdb-preamble", "no"], port_tries=env.PORT_TRIES)
    return env.aofwriter(workdir, port, io=kind, appendfsync=args.appendfsync, port_tries=env.PORT_TRIES)


def run_once(fs, kind, args, rnd_idx):
    workdir = tempfile.mkdtemp(prefix=f"{kind}-{rnd_idx}-", dir=fs.mnt)
    srv = server_for(kind, workdir, env.free_port(), args)
    try:
        with srv as s:
            tracer = FlushTracer(s.pid, kind == "redis") if args.trace else None
            if tracer:
                tracer.__enter__()
            try:
                rows = env.benchmark(s.port, requests=args.requests, clients=args.clients, size=args.size,
                                     keyspace=args.keyspace, tests="set",
                                     extra=["-P", str(args.pipeline)] if args.pipeline > 1 else [])
            finally:
                if tracer:
                    tracer.__exit__(None, None, None)
        return rows.get("SET", float("nan")), (tracer.result if tracer else None)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fs", choices=["xfs", "ext4"], default="xfs")
    ap.add_argument("--modes", default="write,uring,uring-linked,uring-sqpoll",
                    help="aofwriter --io modes to compare with redis-server (comma separated)")
    ap.add_argument("--appendfsync", choices=["always", "everysec", "no"], default="always")
    ap.add_argument("--requests", type=int, default=50000)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--keyspace", type=int, default=100000)
    ap.add_argument("--pipeline", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (order rotates each round)")
    ap.add_argument("--no-trace", dest="trace", action="store_false", help="no bpftrace flush latency")
    args = ap.parse_args(argv)
    if args.trace and not shutil.which("bpftrace"):
        print("bench-writer: bpftrace not found, flush latency disabled")
        args.trace = False
    if args.trace and args.appendfsync != "always":
        print("bench-writer: flush latency is only measured with --appendfsync always")
        args.trace = False

    try:
        env.catch_interrupts()
        kinds = ["redis"] + [m for m in args.modes.split(",") if m]
        ops = {k: [] for k in kinds}
        lat = {k: [] for k in kinds}
        print(f"bench-writer: {args.fs} loop fs, appendfsync {args.appendfsync}, redis-benchmark -t set -n "
              f"{args.requests} -c {args.clients} -d {args.size} -r {args.keyspace} -P {args.pipeline}, "
              f"{args.rounds} interleaved rounds")
        t0 = time.monotonic()
        with env.LoopFS(args.fs) as fs:
            # warm-up: the first run on a fresh file system is slower whatever the server
            warm = argparse.Namespace(**{**vars(args), "trace": False, "requests": min(args.requests, 10000)})
            run_once(fs, "write", warm, "warmup")
            for rnd_idx in range(args.rounds):
                order = kinds[rnd_idx % len(kinds):] + kinds[:rnd_idx % len(kinds)]
                for kind in order:
                    # ops/s from an untraced run (redis' probes on libc write() would slow its replies
                    # too), flush latency from a second, traced run
                    rps, _ = run_once(fs, kind, argparse.Namespace(**{**vars(args), "trace": False}), rnd_idx)
                    flush = None
                    if args.trace:
                        _, flush = run_once(fs, kind, argparse.Namespace(**{**vars(args), "requests": args.requests // 2}),
                                            rnd_idx)
                    ops[kind].append(rps)
                    if flush:
                        lat[kind].append(flush)
                    extra = (f"  flush mean {flush['mean_us']:.0f} us p50<={flush['p50_us']:.0f} us "
                             f"p99<={flush['p99_us']:.0f} us ({flush['n']} flushes)") if flush else ""
                    print(f"  round {rnd_idx + 1} {kind:13s} {rps:10.0f} ops/s{extra}", flush=True)

        def med(xs):
            return statistics.median(xs) if xs else float("nan")

        base_ops = med(ops["redis"])
        base_lat = med([x["mean_us"] for x in lat["redis"]])
        print()
        print(f"{'server':26s} {'ops/s':>10s} {'vs redis':>9s} {'flush mean us':>14s} {'vs redis':>9s} "
              f"{'flush p99 us':>13s}")
        for kind in kinds:
            name = "redis-server 7.0" if kind == "redis" else f"aofwriter --io {kind}"
            o = med(ops[kind])
            m = med([x["mean_us"] for x in lat[kind]])
            p99 = med([x["p99_us"] for x in lat[kind]])
            print(f"{name:26s} {o:10.0f} {o / base_ops:9.2f} {m:14.0f} {m / base_lat if base_lat else float('nan'):9.2f} "
                  f"{p99:13.0f}")
        print(f"\n(medians over {args.rounds} rounds; {time.monotonic() - t0:.0f} s)")
        w = med(ops.get("write", []))
        if w == w and base_ops == base_ops:
            verdict = "reaches" if w >= 0.95 * base_ops else "does NOT reach"
            print(f"aofwriter --io write {verdict} redis-server's throughput ({w / base_ops:.2f}x)")

        return 0
    except BaseException:
        if not env.interrupted:
            raise
        return env.after_interrupt()


if __name__ == "__main__":
    env.exit_main(main())
