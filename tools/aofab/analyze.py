"""Analysis of an A/B run directory: load every run's raw files, aggregate them per cell, flag oddities.

Per cell (fs × io × rewrite):
- ops/s: mean over repetitions with a 95% confidence interval (Student t, two-sided; table below);
- flush and fdatasync percentiles: the *median across repetitions* of each repetition's percentile (aoftrace's
  percentiles are per trace; percentiles cannot be pooled exactly, a median of them is robust to one odd rep);
- count, mean and the component breakdown: pooled over repetitions (sum of `components_us` / sum of `count`);
- io_uring (`uring.ops.*`), rewrite (`rewrite.*`, `by_rewrite.*`) and perf stat figures.
"""
import glob
import json
import math
import os
import statistics

from . import work

COMPONENTS = ["oncpu", "runqueue", "block", "journal", "inode_lock", "other_lock", "throttle", "reclaim",
              "iowq_queue", "other_offcpu", "unattributed"]
OPS = ["flush", "fdatasync"]
# p99.99 from `p9999_us` when aoftrace's JSON has it (it does not yet: nan, shown as n/a)
PCTS = [("p50", "p50_us"), ("p90", "p90_us"), ("p99", "p99_us"), ("p99.9", "p999_us"), ("p99.99", "p9999_us"),
        ("max", "max_us")]

# Two-sided 95% Student t quantiles t(0.975, df); df > 30 uses the normal 1.96 (the error is < 2%).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
       20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
       29: 2.045, 30: 2.042}


def t95(df):
    return T95.get(df, 1.96) if df >= 1 else float("nan")


def mean_ci(xs):
    """(mean, half-width of the 95% CI) of a sample; the half-width is nan for fewer than 2 values."""
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return float("nan"), float("nan")
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return m, float("nan")
    return m, t95(len(xs) - 1) * statistics.stdev(xs) / math.sqrt(len(xs))


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def cell_key(fs, io, rewrite):
    return f"{fs}-{io}-{rewrite}"


def parse_perf(path):
    """perf stat -x, output → {event: value} (None for <not supported>/<not counted>) plus notes."""
    out, notes = {}, []
    if not os.path.exists(path):
        return out, ["perf stat output missing"]
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            cells = line.split(",")
            if len(cells) < 3:
                continue
            val, event = cells[0], cells[2]
            if val.startswith("<"):
                out[event] = None
                notes.append(f"{event}: {val}")
                continue
            try:
                out[event] = float(val)
            except ValueError:
                pass
    return out, notes


def load_run(d):
    """One run directory → dict with meta, aoftrace JSON ('trace'), perf counters, flags."""
    with open(os.path.join(d, "run.json")) as f:
        run = json.load(f)
    run["dir"] = d
    tp = os.path.join(d, "aoftrace.json")
    run["trace"] = None
    if os.path.exists(tp):
        with open(tp) as f:
            run["trace"] = json.load(f)
    run["perf"], run["perf_notes"] = parse_perf(os.path.join(d, "perf.txt"))
    run["flags"] = flags_for(run)
    return run


def load_runs(out):
    runs = [load_run(d) for d in sorted(glob.glob(os.path.join(out, "runs", "*"))) if
            os.path.exists(os.path.join(d, "run.json"))]
    return runs


DURABILITY_COUNTERS = ("overwrites", "growth_mismatches", "replies_before_sync", "sync_errors",
                       "writes_to_unlinked")


def durability_verdict(trace):
    """"OK", "VIOLATED: overwrites 3, ..." or "not checked" (a JSON from before the checks)."""
    d = (trace or {}).get("durability")
    if not d:
        return "not checked"
    if d.get("ok"):
        return "OK"
    return "VIOLATED: " + ", ".join(f"{k} {d[k]}" for k in DURABILITY_COUNTERS if d.get(k))


def flags_for(run):
    """What looks wrong or surprising in one run, as short sentences."""
    fl = []
    t = run.get("trace")
    if run.get("error"):
        fl.append(f"run failed: {run['error']}")
    if run.get("ops_per_sec") is None:
        fl.append("redis-benchmark gave no SET result")
    if t is None:
        fl.append("no aoftrace JSON")
        return fl
    if t.get("lost_events", 0) > 0:
        fl.append(f"lost_events = {t['lost_events']} (figures incomplete)")
    if t.get("target", {}).get("exited"):
        fl.append("the server exited during the trace")
    for op, o in t.get("uring", {}).get("ops", {}).items():
        for k in ("failed", "short"):
            if o.get(k, 0) > 0:
                fl.append(f"io_uring {op} {k} = {o[k]}")
    fs = t.get("fs", {})
    for k in ("offset_mismatches", "growth_mismatches"):
        if fs.get(k, 0) > 0:
            fl.append(f"fs.{k} = {fs[k]}")
    v = durability_verdict(t)
    if v != "OK":
        fl.append(f"durability {v}")
    fd = t.get("fdatasync", {})
    if fd.get("count", 0) and fd.get("forced_commits", 0) < fd["count"]:
        fl.append(f"{fd['count'] - fd['forced_commits']} of {fd['count']} fdatasyncs forced no commit "
                  f"(forced_commits {fd['forced_commits']} < count {fd['count']})")
    for op in OPS:
        o = t.get(op, {})
        if o.get("count", 0) and o.get("closure_pct", 100.0) < 95.0:
            fl.append(f"{op}.closure_pct = {o['closure_pct']:.1f} (< 95)")
    if run.get("rewrite") == "on" and t.get("rewrite", {}).get("count", 0) == 0:
        fl.append("rewrite on, but no rewrite child was forked during the measurement")
    op = "flush" if t.get("flush", {}).get("count", 0) else "fdatasync"
    if run.get("rewrite") == "on" and t.get("by_rewrite", {}).get("active", {}).get(op, {}).get("count", 0) == 0:
        fl.append(f"rewrite on, but no {op} ran while a child was alive")
    if t.get("fdatasync", {}).get("count", 0) == 0 and not any(
            k.startswith("FSYNC") for k in (t.get("uring", {}).get("ops") or {})):
        fl.append("no main-thread fdatasync (and no io_uring FSYNC) traced")
    if t.get("flush", {}).get("count", 0) == 0:
        fl.append("no flush traced (server without a probe-able flushAppendOnlyFile?)")
    fl += uftrace_flags(run)
    return fl


# --- UFTRACE=1: uftrace's totals against aoftrace's, on the same run ------------------------------------------

UFTRACE_TOLERANCE = 0.05


def ratio(u, a):
    """uftrace / aoftrace; 1.0 when both are zero, inf when only aoftrace's is."""
    return u / a if a else (1.0 if not u else float("inf"))


def uftrace_rows(run):
    """[{what, u_calls, a_calls, u_total_us, a_total_us, calls_ratio, total_ratio, agree}] for a run made with
    UFTRACE=1 (uftrace's calls that began in aoftrace's window: run.json `uftrace`); [] otherwise."""
    u, t = run.get("uftrace"), run.get("trace")
    if not u or u.get("error") or not t:
        return []
    fl, fd = t.get("flush", {}), t.get("fdatasync", {})
    rows = [("flushAppendOnlyFile, all calls", u["flush"], fl.get("calls", 0),
             fl.get("total_us", 0.0) + fl.get("empty_total_us", 0.0)),
            ("flushAppendOnlyFile, calls that wrote", u["flush_wrote"], fl.get("count", 0), fl.get("total_us", 0.0)),
            ("fdatasync+fsync, main thread", u["fdatasync"], fd.get("count", 0), fd.get("total_us", 0.0))]
    out = []
    for what, uo, a_calls, a_total in rows:
        r = {"what": what, "u_calls": uo["count"], "a_calls": a_calls, "u_total_us": uo["total_us"],
             "a_total_us": a_total, "calls_ratio": ratio(uo["count"], a_calls),
             "total_ratio": ratio(uo["total_us"], a_total)}
        r["agree"] = all(abs(r[k] - 1.0) <= UFTRACE_TOLERANCE for k in ("calls_ratio", "total_ratio"))
        out.append(r)
    return out


def uftrace_flags(run):
    u = run.get("uftrace")
    if not u:
        return []
    if u.get("error"):
        return [f"uftrace cross-check failed: {u['error']}"]
    fl = [f"uftrace: {r['what']} disagrees with aoftrace by more than {UFTRACE_TOLERANCE:.0%} (calls "
          f"{r['u_calls']} vs {r['a_calls']}, total {r['u_total_us']:.0f} vs {r['a_total_us']:.0f} us)"
          for r in uftrace_rows(run) if not r["agree"]]
    if u.get("lost"):
        fl.append(f"uftrace lost records ({u['lost']} lost-record lines in uftrace dump)")
    if u.get("rc"):
        fl.append(f"uftrace record exited with {u['rc']}")
    return fl


def pooled(traces, path):
    """Pool an operation (e.g. 'flush', 'by_rewrite.active.fdatasync') over traces:
    {count, total_us, mean_us, components_us{c: total}, per_op_us{c: mean per op}}."""
    count, total, comps = 0, 0.0, {c: 0.0 for c in COMPONENTS}
    for t in traces:
        o = dig(t, path) or {}
        count += o.get("count", 0)
        total += o.get("total_us", 0.0)
        for c, v in (o.get("components_us") or {}).items():
            comps[c] = comps.get(c, 0.0) + v
    per = {c: (v / count if count else 0.0) for c, v in comps.items()}
    return {"count": count, "total_us": total, "mean_us": total / count if count else 0.0,
            "components_us": comps, "per_op_us": per}


def rep_stats(t, ops_per_sec=None):
    """One run's figures for the noise rules (aofab.verdict): its ops/s, and per operation its count, mean and
    mean components per operation."""
    r = {"ops": ops_per_sec}
    for op in OPS:
        p = pooled([t], op)
        r[op] = {"count": p["count"], "mean_us": p["mean_us"], "per_op_us": p["per_op_us"]}
    return r


def dig(d, path):
    for k in path.split("."):
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def aggregate(runs):
    """Runs → ordered {cell key: cell summary}."""
    cells = {}
    for r in runs:
        cells.setdefault(r["cell"], []).append(r)
    out = {}
    for key, rs in cells.items():
        rs.sort(key=lambda r: r["rep"])
        traces = [r["trace"] for r in rs if r.get("trace")]
        ops = [r.get("ops_per_sec") for r in rs]
        m, ci = mean_ci(ops)
        c = {"key": key, "fs": rs[0]["fs"], "io": rs[0]["io"], "rewrite": rs[0]["rewrite"], "reps": len(rs),
             "requests": rs[0]["requests"], "ops": [x for x in ops if x is not None], "ops_mean": m, "ops_ci95": ci,
             "runs": [os.path.relpath(r["dir"], os.path.dirname(os.path.dirname(r["dir"]))) for r in rs],
             "flags": [(os.path.basename(r["dir"]), f) for r in rs for f in r["flags"]]}
        c["requests_total"] = sum(r["requests"] for r in rs if r.get("trace"))
        c["per_rep"] = [rep_stats(r["trace"], r.get("ops_per_sec")) for r in rs if r.get("trace")]
        c["modes"] = sorted({t.get("mode", "full") for t in traces}) or ["full"]
        c["work"] = work.of_traces(traces)
        c["min_count"] = {op: min([dig(t, f"{op}.count") or 0 for t in traces] or [0]) for op in OPS}
        for op in OPS:
            p = pooled(traces, op)
            p["pct"] = {name: median([dig(t, f"{op}.{k}") for t in traces]) for name, k in PCTS}
            p["closure_pct"] = min([dig(t, f"{op}.closure_pct") or 100.0 for t in traces if dig(t, f"{op}.count")]
                                   or [float("nan")])
            p["per_set_us"] = ({cc: v / c["requests_total"] for cc, v in p["components_us"].items()}
                               if c["requests_total"] else {})
            c[op] = p
            for state in ("idle", "active"):
                c[f"{op}_{state}"] = pooled(traces, f"by_rewrite.{state}.{op}")
        c["forced_commits"] = sum(dig(t, "fdatasync.forced_commits") or 0 for t in traces)
        # io_uring: sums per opcode, weighted means of latency/queue/run
        uring = {}
        for t in traces:
            for opc, o in (dig(t, "uring.ops") or {}).items():
                u = uring.setdefault(opc, {"requests": 0, "inline": 0, "punted": 0, "queued": 0, "hashed": 0,
                                           "failed": 0, "short": 0, "aof": 0, "_lat": 0.0, "_q": 0.0, "_run": 0.0,
                                           "_nq": 0, "_nrun": 0, "lat_p99": []})
                for k in ("requests", "inline", "punted", "queued", "hashed", "failed", "short", "aof"):
                    u[k] += o.get(k, 0)
                lat, q, rn = o.get("latency_us", {}), o.get("queue_us", {}), o.get("run_us", {})
                u["_lat"] += lat.get("avg", 0.0) * lat.get("count", 0)
                u["_q"] += q.get("avg", 0.0) * q.get("count", 0)
                u["_nq"] += q.get("count", 0)
                u["_run"] += rn.get("avg", 0.0) * rn.get("count", 0)
                u["_nrun"] += rn.get("count", 0)
                u["lat_p99"].append(lat.get("p99"))
        for opc, u in uring.items():
            u["latency_avg_us"] = u["_lat"] / u["requests"] if u["requests"] else 0.0
            u["queue_avg_us"] = u["_q"] / u["_nq"] if u["_nq"] else 0.0
            u["run_avg_us"] = u["_run"] / u["_nrun"] if u["_nrun"] else 0.0
            u["latency_p99_us"] = median(u.pop("lat_p99"))
            for k in ("_lat", "_q", "_run", "_nq", "_nrun"):
                u.pop(k)
        c["uring"] = uring
        rw = {"count": sum(dig(t, "rewrite.count") or 0 for t in traces),
              "child_write_bytes": sum(dig(t, "rewrite.child_write_bytes") or 0 for t in traces),
              "child_syncs": sum(dig(t, "rewrite.child_syncs") or 0 for t in traces),
              "fork_us": sum(dig(t, "rewrite.fork_us") or 0.0 for t in traces),
              "forks_timed": sum(dig(t, "rewrite.forks_timed") or 0 for t in traces),
              "window_s": sum(dig(t, "window_s") or 0.0 for t in traces)}
        rw["fork_avg_us"] = rw["fork_us"] / rw["forks_timed"] if rw["forks_timed"] else 0.0
        n_act, n_all = c["fdatasync_active"]["count"], c["fdatasync"]["count"]
        rw["active_share_pct"] = 100.0 * n_act / n_all if n_all else 0.0
        c["rewrite_stats"] = rw
        # perf stat: CPUs utilized = task-clock (ms) / elapsed; rates per second of the measured window
        util, cs, mig, pf = [], [], [], []
        notes = set()
        for r in rs:
            p, el = r["perf"], r.get("perf_elapsed_s")
            notes.update(r["perf_notes"])
            if el and p.get("task-clock") is not None:
                util.append(p["task-clock"] / 1000.0 / el)
                cs.append((p.get("context-switches") or 0) / el)
                mig.append((p.get("cpu-migrations") or 0) / el)
                pf.append((p.get("page-faults") or 0) / el)
        c["perf"] = {"cpus_utilized": mean_ci(util)[0], "ctx_per_s": mean_ci(cs)[0], "migr_per_s": mean_ci(mig)[0],
                     "faults_per_s": mean_ci(pf)[0], "notes": sorted(notes), "n": len(util)}
        out[key] = c
    return out


def hw_counters_missing(runs):
    return any(r["perf"].get("cycles", 0) is None or r["perf"].get("instructions", 0) is None for r in runs)
