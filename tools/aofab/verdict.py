"""Verdicts that can be trusted: plain-language lines from two sides A and B (aofab.explain builds the sides).

The rules, in the order the lines come:
1. Durability and work first. A side that broke a promise of `appendfsync always` (docs/durability.md), or
   that stopped keeping `always` while the other kept it, is never reported as faster; a side that did less
   work per operation (persisted less of what it wrote, synced fewer of its flushes, forced fewer journal/log
   commits per sync: aofab.work) gets that said first, in plain words, before any time.
2. Noise. A difference is stated as a cause only when it is resolved: both sides have at least two runs and the
   95% confidence intervals (Student t over the runs' means) of A and B do not overlap — a conservative test
   (non-overlap of two 95% intervals is significant at well below 5%). With one run per side nothing is
   resolved: the line says so and gives the spread a second run would have to stay within (with two runs per
   side, each CI half-width is t(0.975, 1)/2 = 6.35 times the two runs' spread, so the intervals stop
   overlapping only if each side's two runs lie within |Δ| / 12.7 of each other). Components follow the same
   rule, each on its own per-run values.
"""
import math

from . import analyze, work

NAMES = {"oncpu": "on-CPU work", "runqueue": "run-queue wait", "block": "block I/O",
         "journal": "journal/log commit", "inode_lock": "inode lock", "other_lock": "other locks",
         "throttle": "dirty throttling", "reclaim": "reclaim", "iowq_queue": "io-wq queueing",
         "other_offcpu": "other off-CPU", "unattributed": "unattributed"}

HINTS = {"runqueue": "threads waited for a CPU",
         "journal": "longer journal (XFS log force / jbd2) commits",
         "block": "slower block I/O on the loop device",
         "iowq_queue": "io_uring requests waited in io-wq before a worker ran them",
         "oncpu": "more CPU work inside the call",
         "throttle": "dirty-page throttling",
         "reclaim": "memory reclaim",
         "inode_lock": "contention on the AOF inode's lock",
         "other_lock": "lock contention",
         "other_offcpu": "sleeps of another kind"}

CUT_HINTS = {"runqueue": "threads waited less for a CPU",
             "journal": "shorter journal (XFS log force / jbd2) commits",
             "block": "faster block I/O on the loop device",
             "iowq_queue": "io_uring requests waited less in io-wq",
             "oncpu": "less CPU work inside the call",
             "throttle": "less dirty-page throttling",
             "reclaim": "less memory reclaim",
             "inode_lock": "less contention on the AOF inode's lock",
             "other_lock": "less lock contention",
             "other_offcpu": "fewer sleeps of another kind"}

T1 = analyze.t95(1)   # 12.706: the 95% t factor with one degree of freedom (two runs)
SMALL_US, SMALL_PCT = 5.0, 2.0


def _cap(s):
    """Capitalize the first letter of a sentence, but not names like io_uring, xfs, ext4."""
    if not s or s.split(" ")[0].split("(")[0] in ("io_uring", "xfs", "ext4") or s.startswith("io="):
        return s
    return s[0].upper() + s[1:]


def _finite(xs):
    return [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]


def resolve(xa, xb, unit="us"):
    """Is the difference of the means of two samples (the runs of A and of B) resolved? {resolved, why, d,
    a: (mean, ci), b: (mean, ci)}; `why` is a phrase for the verdict line."""
    xa, xb = _finite(xa), _finite(xb)
    if not xa or not xb:
        return {"resolved": False, "why": "not measured on both sides", "d": float("nan")}
    ma, ha = analyze.mean_ci(xa)
    mb, hb = analyze.mean_ci(xb)
    d = mb - ma
    out = {"d": d, "a": (ma, ha), "b": (mb, hb), "n": (len(xa), len(xb))}
    if len(xa) < 2 or len(xb) < 2:
        who = "one run per side" if len(xa) < 2 and len(xb) < 2 else f"one run of {'A' if len(xa) < 2 else 'B'}"
        out.update(resolved=False, need=abs(d) / T1,
                   why=f"{who}, so no interval; with a second run per side it is resolved only if each side's two "
                       f"runs agree within {abs(d) / T1:.{0 if abs(d) / T1 >= 10 else 1}f} {unit}")
        return out
    res = abs(d) > ha + hb
    out.update(resolved=res, why=f"95% CIs {'do not overlap' if res else 'overlap'}: A {ma:.0f} ± {ha:.0f}, "
                                 f"B {mb:.0f} ± {hb:.0f} {unit} over {len(xa)} and {len(xb)} runs")
    return out


def rep_values(side, op, comp=None):
    """The per-run means of `op` (or of one of its components, µs per operation) of a side."""
    out = []
    for r in side.get("reps") or []:
        o = r.get(op) or {}
        if not o.get("count"):
            continue
        out.append(o["mean_us"] if comp is None else (o.get("per_op_us") or {}).get(comp, 0.0))
    return out


def diff(a, b):
    """{op: {a_mean, b_mean, delta, pct, a_count, b_count, rows: [(comp, a_us, b_us, delta, delta_per_set)]}}
    rows ranked by |delta| (largest first)."""
    out = {}
    per_set = bool(a.get("requests") and b.get("requests"))
    for op in analyze.OPS:
        pa, pb = a[op], b[op]
        if not pa["count"] or not pb["count"]:
            out[op] = None
            continue
        rows = []
        for c in analyze.COMPONENTS:
            ua, ub = pa["per_op_us"].get(c, 0.0), pb["per_op_us"].get(c, 0.0)
            ds = (pb["components_us"].get(c, 0.0) / b["requests"] - pa["components_us"].get(c, 0.0) / a["requests"]
                  if per_set else None)
            rows.append((c, ua, ub, ub - ua, ds))
        rows.sort(key=lambda r: -abs(r[3]))
        d = pb["mean_us"] - pa["mean_us"]
        out[op] = {"a_mean": pa["mean_us"], "b_mean": pb["mean_us"], "delta": d,
                   "pct": 100.0 * d / pa["mean_us"] if pa["mean_us"] else float("nan"),
                   "a_count": pa["count"], "b_count": pb["count"], "rows": rows,
                   "per_set_delta": (pb["total_us"] / b["requests"] - pa["total_us"] / a["requests"]) if per_set else None,
                   "a_per_set": pa["total_us"] / a["requests"] if per_set else None,
                   "b_per_set": pb["total_us"] / b["requests"] if per_set else None}
    return out


def _contributors(rows, d):
    """Components moving the same way as the total, largest first, until 80% of it is covered (max 3)."""
    same = [r for r in rows if r[3] * d > 0 and abs(r[3]) >= max(1.0, 0.05 * abs(d))]
    picked, acc = [], 0.0
    for r in same:
        picked.append(r)
        acc += abs(r[3])
        if acc >= 0.8 * abs(d) or len(picked) == 3:
            break
    against = [r for r in rows if r[3] * d < 0 and abs(r[3]) >= max(1.0, 0.10 * abs(d))]
    return picked, against


def _hint(comp, kind, cut=False):
    if cut:
        return CUT_HINTS.get(comp)
    if comp == "runqueue" and kind == "rewrite":
        return "the rewrite child competed for CPU"
    if comp == "runqueue" and kind == "io":
        return "the io-wq workers and the server competed for CPU"
    return HINTS.get(comp)


def assess(a, b):
    """Everything the lines are built from: diff, work, durability problems, less work, resolutions."""
    wa, wb = a.get("work"), b.get("work")
    z = {"dd": diff(a, b), "wa": wa, "wb": wb, "pa": [], "pb": [], "less_b": [], "less_a": [], "res": {},
         "comp_res": {}, "lite": bool(a.get("lite") or b.get("lite"))}
    if wa and wb:
        z["pa"], z["pb"] = work.durability_problems(wa, wb, "A"), work.durability_problems(wb, wa, "B")
        z["less_b"], z["less_a"] = work.less_work(wa, wb), work.less_work(wb, wa)
    for op in analyze.OPS:
        z["res"][op] = resolve(rep_values(a, op), rep_values(b, op))
        z["comp_res"][op] = {c: resolve(rep_values(a, op, c), rep_values(b, op, c)) for c in analyze.COMPONENTS}
    oa, ob = _finite(a.get("ops", [])), _finite(b.get("ops", []))
    z["ops_res"] = resolve(oa, ob, "ops/s") if oa and ob else None
    return z


def tainted(z, b_faster=None):
    """Why B's (or A's) times are not a speed-up or slow-down at all: a phrase, or None. Durability taints
    either way; less work only the direction it explains (B faster with less work, B slower than an A that did
    less); `b_faster` None: any direction."""
    if z["pb"] or z["pa"]:
        return "B broke durability" if z["pb"] and not z["pa"] else \
            ("A broke durability" if not z["pb"] else "both sides broke durability")
    if z["less_b"] and b_faster in (None, True):
        return "B did less work"
    if z["less_a"] and b_faster in (None, False):
        return "A did less work"
    return None


def headline(a, b, z, subject="B", context="in B", kind=None):
    """The first line: durability, then missing work, then the resolved effect — or that nothing is resolved."""
    wa, wb, dd = z["wa"], z["wb"], z["dd"]
    fd, fl = dd.get("fdatasync"), dd.get("flush")
    faster = bool((fd and fd["delta"] < 0) or (fl and fl["delta"] < 0))
    if z["pb"] or z["pa"]:
        parts = []
        if z["pb"]:
            parts.append("B broke durability — " + "; ".join(z["pb"]))
        if z["pa"]:
            parts.append("A broke durability — " + "; ".join(z["pa"]) + " (A is no baseline)")
        s = ("Not a speed-up: " if z["pb"] else "Not comparable: ") + ". ".join(parts)
        why = work.missing_work_sentence(wa, wb, "B", faster, skip=("sync_coverage",)) if z["less_b"] else \
            (work.missing_work_sentence(wb, wa, "A", not faster, "B", skip=("sync_coverage",)) if z["less_a"] else "")
        return s + (". " + why if why else "") + "."
    if z["less_b"]:
        return ("Not a speed-up: B did less work than A. " + work.missing_work_sentence(wa, wb, "B", faster) + ".")
    if z["less_a"]:
        return ("A did less work than B, so B's extra time, if any, is not a slow-down. "
                + work.missing_work_sentence(wb, wa, "A", not faster, "B") + ".")
    resolved = [op for op in analyze.OPS if dd.get(op) and z["res"][op]["resolved"]
                and not _small(dd[op])]
    if resolved:
        return time_line(resolved[0], dd[resolved[0]], z, subject, context, kind)
    bits = [f"{op} {x['a_mean']:.0f} → {x['b_mean']:.0f} us ({x['pct']:+.0f}%)" for op, x in dd.items() if x]
    if z["ops_res"]:
        r = z["ops_res"]
        bits.append(f"throughput {r['a'][0]:.0f} → {r['b'][0]:.0f} ops/s ({100 * r['d'] / r['a'][0]:+.1f}%)")
    ops = sorted((op for op in analyze.OPS if dd.get(op)), key=lambda op: -abs(dd[op]["pct"]))
    why = z["res"][ops[0]]["why"] if ops else ""
    return (f"No resolved difference between A and B: {', '.join(bits)} — not told apart from run-to-run noise"
            + (f" ({why})" if why else "") + ".")


def _small(x):
    return abs(x["delta"]) < SMALL_US or abs(x["pct"]) < SMALL_PCT


def _moves(rows, n=3):
    return ", ".join(f"{NAMES[r[0]]} {r[3]:+.0f} us" for r in rows[:n] if abs(r[3]) >= 0.5)


def time_line(op, x, z, subject="B", context="in B", kind=None):
    """One line about the time of `op`: a cut or a growth with its resolved causes, or not resolved."""
    d, pct = x["delta"], x["pct"]
    rng = f"{x['a_mean']:.0f} → {x['b_mean']:.0f} us per {op}"
    res = z["res"][op]
    if _small(x):
        return f"{_cap(context)}, {op} time did not change materially ({rng}, {d:+.0f} us)."
    taint = tainted(z, d < 0)
    if taint:
        word = "speed-up" if d < 0 else "slow-down"
        return f"{op}: {rng} ({d:+.0f} us, {pct:+.0f}%) — not a {word}: {taint} (first line)."
    comps = [r for r in x["rows"] if r[0] != "unattributed"] if not z["lite"] else []
    if not res["resolved"]:
        s = f"{op}: {rng} ({d:+.0f} us, {pct:+.0f}%), not resolved: {res['why']}"
        if comps:
            s += f"; the largest component moves, not causes until resolved: {_moves(comps)}"
        return s + "."
    ok = {c for c, r in z["comp_res"][op].items() if r["resolved"]}
    picked, against = _contributors([r for r in comps if r[0] in ok], d)
    if d < 0:
        s = f"{_cap(subject)} cut {op} time by {-d:.0f} us ({-pct:.0f}%) ({rng}; {res['why']})"
        if picked:
            s += "; " + ", ".join(f"{abs(r[3]):.0f} us {'of it ' if i == 0 else ''}from {NAMES[r[0]]}"
                                  for i, r in enumerate(picked))
    else:
        s = f"{_cap(context)}, {op} grew by {d:.0f} us (+{pct:.0f}%) ({rng}; {res['why']})"
        if picked:
            top = picked[0]
            s += f", mostly {NAMES[top[0]]} (+{top[3]:.0f} us, {100 * top[3] / d:.0f}% of the growth)"
            if len(picked) > 1:
                s += ", then " + ", ".join(f"{NAMES[r[0]]} (+{r[3]:.0f} us)" for r in picked[1:])
            hint = _hint(top[0], kind)
            if hint:
                s += f": {hint}"
    if comps and not picked:
        s += "; no component's move is resolved on its own"
    if against:
        s += "; " + ", ".join(f"{NAMES[r[0]]} moved the other way ({r[3]:+.0f} us)" for r in against)
    rest = [r for r in comps if r[0] not in ok and abs(r[3]) >= max(1.0, 0.1 * abs(d))]
    if rest and picked:
        s += f"; unresolved: {_moves(rest)}"
    if x["per_set_delta"] is not None and op == "flush":
        s += f"; per SET, flush time {x['a_per_set']:.1f} → {x['b_per_set']:.1f} us ({x['per_set_delta']:+.1f} us)"
    return s + "."


def throughput_line(z, context):
    r = z["ops_res"]
    if not r:
        return None
    ma, mb = r["a"][0], r["b"][0]
    pct = 100.0 * (mb - ma) / ma
    s = f"{_cap(context)}, throughput went from {ma:.0f} to {mb:.0f} ops/s ({pct:+.1f}%)"
    taint = tainted(z, pct > 0)
    if taint and abs(pct) >= SMALL_PCT:
        return s + f" — not a {'speed-up' if pct > 0 else 'slow-down'}: {taint} (first line)."
    if r["resolved"]:
        return s + f" — outside the noise ({r['why']})."
    return s + f" — not resolved ({r['why']})."


def verdicts(a, b, subject="B", context="in B", kind=None):
    """Plain-language lines from the numbers; the first one is the headline (durability, missing work, or the
    resolved effect, or "No resolved difference"). subject: what B changes ("io_uring"); context: the same as a
    prepositional phrase ("with io_uring"); kind: 'io', 'rewrite', 'fs' or None, for the hints."""
    z = assess(a, b)
    lines = [headline(a, b, z, subject, context, kind)]
    if z["wa"] and z["wb"]:
        lines.append(work.work_line(z["wa"], z["wb"]))
    t = throughput_line(z, context)
    if t:
        lines.append(t)
    for op in analyze.OPS:
        x = z["dd"][op]
        if op == "fdatasync":
            odd = [(n, s) for n, s in (("A", a), ("B", b))
                   if s["flush"]["count"] and s["fdatasync"]["count"] < 0.5 * s["flush"]["count"]]
            if odd and not tainted(z):
                lines.append("fdatasync: not comparable: " + "; ".join(
                    f"{n} makes {s['fdatasync']['count']} main-thread fdatasyncs for {s['flush']['count']} flushes"
                    for n, s in odd) + " (its data sync goes another way, e.g. a linked io_uring FSYNC run by io-wq, "
                    "and what remains are rewrite bookkeeping syncs); compare the flushes.")
                continue
        if x is None:
            lines.append(f"{op}: not measured on both sides.")
            continue
        line = time_line(op, x, z, subject, context, kind)
        if line != lines[0]:
            lines.append(line)
    if kind == "rewrite":
        rb = b.get("rewrite_stats", {})
        if rb.get("count"):
            lines.append(f"{_cap(context)}: {rb['count']} rewrite children forked during the measured "
                         f"windows, writing {rb.get('child_write_bytes', 0) / 1e6:.0f} MB.")
    return lines


def answer(a, b, subject="B", context="in B", kind=None):
    """One line for the report's summary: a durability or work problem before anything else; else the effect on
    throughput and flush time with their intervals, and the top resolved cause in plain words."""
    z = assess(a, b)
    if tainted(z):
        return headline(a, b, z, subject, context, kind)
    bits = []
    r = z["ops_res"]
    if r:
        (ma, ha), (mb, hb) = r["a"], r["b"]
        ci = (lambda m, h: f"{m:.0f}" + (f" ± {h:.0f}" if h == h else ""))
        bits.append(f"throughput {ci(ma, ha)} → {ci(mb, hb)} ops/s ({100 * (mb - ma) / ma:+.1f}%, "
                    f"{'resolved' if r['resolved'] else 'not resolved'})")
    x = z["dd"].get("flush")
    cause = "no resolved cause"
    if x:
        fr = z["res"]["flush"]
        ci = (lambda m, h: f"{m:.0f}" + (f" ± {h:.0f}" if h == h else ""))
        bits.append(f"flush {ci(*fr['a'])} → {ci(*fr['b'])} us ({x['pct']:+.0f}%, "
                    f"{'resolved' if fr['resolved'] and not _small(x) else 'not resolved'})")
        if fr["resolved"] and not _small(x) and not z["lite"]:
            ok = [row for row in x["rows"] if row[0] != "unattributed" and row[3] * x["delta"] > 0
                  and z["comp_res"]["flush"][row[0]]["resolved"]]
            if ok:
                top = ok[0]
                hint = _hint(top[0], kind, top[3] < 0)
                cause = f"top cause: {NAMES[top[0]]} {top[3]:+.0f} us per flush" + (f" ({hint})" if hint else "")
    return "; ".join(bits + [cause]) + "."

