"""`make bench`'s results: the per-mode summary of the runs (medians, round ratios and how well they resolve,
against the targets), the tables and notes it prints (runs, summary, profile, hooks) and the floor estimate."""
import math
import statistics

from .bench_runs import CLIENTS, HOOK_ROUNDS, VALUE_SIZE, med

# The targets per aoftrace mode (docs/reliability.md); a ratio within 1 % of 1 is what "resolved" means below.
TARGETS = {"aoftrace": {"ratio": 0.99, "ready_s": 0.1, "rss_mb": 15.0},
           "lite": {"ratio": 0.99, "ready_s": 0.1, "rss_mb": 10.0}}


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


def run_line(r):
    head = f"  round {r['round']} {r['mode']:9s}"
    if r.get("error"):
        return f"{head} FAILED: {r['error']}"
    line = f"{head} {r['ops_per_sec']:9,.0f} ops/s  ({r['bench_s']:.1f} s)"
    if r["mode"] != "untraced":
        line += (f"  ready {r['ready_s']:.3f} s  peak RSS {(r['peak_rss_kb'] or 0) / 1024:.1f} MB  "
                 f"{r['events_per_s']:,.0f} events/s  lost {r['lost_events']}")
    return line
