"""Differential attribution: where does the time B − A come from, component by component?

    .venv/bin/python -m aofab.explain A B
    make explain A=... B=...

A and B are each an aoftrace JSON report (`aoftrace -j FILE`), a run directory of `make run-ab`
(OUT/runs/NNN-...; holds aoftrace.json and run.json with the request count), or a whole cell of a run-ab
output directory written `OUT::fs-io-rewrite` (e.g. `results/x::xfs-uring-off`), which pools its repetitions.

For `flush` and `fdatasync` it prints the mean time per operation of A and B, the difference split by
component (mean µs per operation, from `components_us` / `count`), ranked by size, the same per SET (flush
totals / requests) when the request counts are known, and plain-language verdicts built from those numbers.
"""
import argparse
import json
import os
import sys

from . import analyze

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


def _cap(s):
    """Capitalize the first letter of a sentence, but not names like io_uring, xfs, ext4."""
    if not s or s.split(" ")[0].split("(")[0] in ("io_uring", "xfs", "ext4") or s.startswith("io="):
        return s
    return s[0].upper() + s[1:]


def side_from_trace(t, requests=None, label="A", ops_per_sec=None):
    s = {"label": label, "requests": requests, "ops": [ops_per_sec] if ops_per_sec else [],
         "rewrite_stats": {"count": analyze.dig(t, "rewrite.count") or 0,
                           "child_write_bytes": analyze.dig(t, "rewrite.child_write_bytes") or 0},
         "lite": t.get("mode") == "lite"}
    for op in analyze.OPS:
        s[op] = analyze.pooled([t], op)
    return s


def side_from_cell(c, label=None):
    s = {"label": label or c["key"], "requests": c.get("requests_total") or None, "ops": c.get("ops", []),
         "rewrite_stats": c.get("rewrite_stats", {}), "meta": {k: c[k] for k in ("fs", "io", "rewrite")}}
    for op in analyze.OPS:
        s[op] = c[op]
    return s


def load_side(arg, label=None):
    """A JSON file, a run directory, or OUT::cell."""
    if "::" in arg:
        out, cell = arg.split("::", 1)
        runs = [r for r in analyze.load_runs(out) if r["cell"] == cell]
        if not runs:
            raise SystemExit(f"explain: no runs of cell {cell!r} under {out}/runs")
        return side_from_cell(analyze.aggregate(runs)[cell], label or cell)
    path, requests, ops = arg, None, None
    if os.path.isdir(arg):
        path = os.path.join(arg, "aoftrace.json")
    meta = os.path.join(os.path.dirname(path), "run.json")
    if os.path.exists(meta):
        with open(meta) as f:
            m = json.load(f)
        requests, ops = m.get("requests"), m.get("ops_per_sec")
        side = side_from_trace(_read(path), requests, label or arg, ops)
        side["meta"] = {k: m.get(k) for k in ("fs", "io", "rewrite")}
        return side
    return side_from_trace(_read(path), requests, label or arg, ops)


def _read(path):
    try:
        with open(path) as f:
            t = json.load(f)
    except (OSError, ValueError) as e:
        raise SystemExit(f"explain: cannot read {path}: {e}")
    if not str(t.get("schema", "")).startswith("aoftrace/"):
        raise SystemExit(f"explain: {path} is not an aoftrace JSON report")
    return t


def describe(kind, a_val, b_val):
    """(subject, context) of the verdicts when A and B differ in one setting."""
    if kind == "io":
        subj = "io_uring" if b_val == "uring" else (f"io_uring ({b_val})" if str(b_val).startswith("uring")
                                                     else f"io={b_val}")
        return subj, f"with {subj}"
    if kind == "rewrite":
        return ("a running rewrite", "with a rewrite running") if b_val == "on" else \
            ("stopping the rewrite", "without a rewrite")
    if kind == "fs":
        return b_val, f"on {b_val} instead of {a_val}"
    return "B", "in B"


def infer(a, b):
    """(kind, subject, context) when A and B are runs or cells that differ in exactly one setting."""
    ma, mb = a.get("meta"), b.get("meta")
    if ma and mb:
        d = [k for k in ("io", "rewrite", "fs") if ma.get(k) != mb.get(k)]
        if len(d) == 1:
            return (d[0],) + describe(d[0], ma[d[0]], mb[d[0]])
    return None, "B", "in B"


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


def verdicts(a, b, subject="B", context="in B", kind=None):
    """Plain-language lines from the numbers. subject: what B changes ("io_uring"); context: the same as a
    prepositional phrase ("with io_uring"); kind: 'io', 'rewrite', 'fs' or None, for the hints."""
    lines = []
    oa, ob = [x for x in a.get("ops", []) if x], [x for x in b.get("ops", []) if x]
    if oa and ob:
        ma, ca = analyze.mean_ci(oa)
        mb, cb = analyze.mean_ci(ob)
        pct = 100.0 * (mb - ma) / ma
        noise = ""
        if ca == ca and cb == cb:
            noise = (" — within the noise (95% CIs overlap)" if abs(mb - ma) <= ca + cb
                     else " — outside the noise (95% CIs do not overlap)")
        lines.append(f"{_cap(context)}, throughput went from {ma:.0f} to {mb:.0f} ops/s "
                     f"({pct:+.1f}%){noise}.")
    dd = diff(a, b)
    for op in analyze.OPS:
        x = dd[op]
        if op == "fdatasync":
            odd = [(n, s) for n, s in (("A", a), ("B", b))
                   if s["flush"]["count"] and s["fdatasync"]["count"] < 0.5 * s["flush"]["count"]]
            if odd:
                lines.append("fdatasync: not comparable: " + "; ".join(
                    f"{n} makes {s['fdatasync']['count']} main-thread fdatasyncs for {s['flush']['count']} flushes"
                    for n, s in odd) + " (its data sync goes another way, e.g. a linked io_uring FSYNC run by io-wq, "
                    "and what remains are rewrite bookkeeping syncs); compare the flushes.")
                continue
        if x is None:
            lines.append(f"{op}: not measured on both sides.")
            continue
        d, pct = x["delta"], x["pct"]
        rng = f"{x['a_mean']:.0f} → {x['b_mean']:.0f} us per {op}"
        if abs(d) < 5.0 or abs(pct) < 2.0:
            lines.append(f"{_cap(context)}, {op} time did not change materially ({rng}, {d:+.0f} us).")
            continue
        picked, against = _contributors(x["rows"], d)
        parts = [f"{abs(r[3]):.0f} us {'of it ' if i == 0 else ''}from {NAMES[r[0]]}" for i, r in enumerate(picked)]
        if d < 0:
            s = f"{_cap(subject)} cut {op} time by {-d:.0f} us ({-pct:.0f}%) ({rng})"
            if parts:
                s += "; " + ", ".join(parts)
        else:
            s = f"{_cap(context)}, {op} grew by {d:.0f} us (+{pct:.0f}%) ({rng})"
            if picked:
                top = picked[0]
                s += f", mostly {NAMES[top[0]]} (+{top[3]:.0f} us, {100 * top[3] / d:.0f}% of the growth)"
                if len(picked) > 1:
                    s += ", then " + ", ".join(f"{NAMES[r[0]]} (+{r[3]:.0f} us)" for r in picked[1:])
                hint = HINTS.get(top[0])
                if top[0] == "runqueue" and kind == "rewrite":
                    hint = "the rewrite child competed for CPU"
                elif top[0] == "runqueue" and kind == "io":
                    hint = "the io-wq workers and the server competed for CPU"
                if hint:
                    s += f": {hint}"
        if against:
            s += "; " + ", ".join(f"{NAMES[r[0]]} moved the other way ({r[3]:+.0f} us)" for r in against)
        if x["per_set_delta"] is not None and op == "flush":
            s += f"; per SET, flush time {x['a_per_set']:.1f} → {x['b_per_set']:.1f} us ({x['per_set_delta']:+.1f} us)"
        lines.append(s + ".")
    if kind == "rewrite":
        rb = b.get("rewrite_stats", {})
        if rb.get("count"):
            lines.append(f"{_cap(context)}: {rb['count']} rewrite children forked during the measured "
                         f"windows, writing {rb.get('child_write_bytes', 0) / 1e6:.0f} MB.")
    return lines


def table_md(a, b, dd=None):
    """One markdown table: every component, per flush and per fdatasync, A → B (Δ), ranked by |Δ|."""
    dd = dd or diff(a, b)
    fl, fd = dd["flush"], dd["fdatasync"]
    rows = {}
    for name, x in (("flush", fl), ("fdatasync", fd)):
        if x:
            for c, ua, ub, d, ds in x["rows"]:
                rows.setdefault(c, {})[name] = (ua, ub, d, ds)
    order = sorted(rows, key=lambda c: -max(abs(v[2]) for v in rows[c].values()))
    per_set = fl is not None and fl["per_set_delta"] is not None
    head = "| component | flush A → B (us) | Δ per flush | fdatasync A → B (us) | Δ per fdatasync |"
    sep = "| --- | ---: | ---: | ---: | ---: |"
    if per_set:
        head += " Δ flush per SET |"
        sep += " ---: |"
    out = [head, sep]

    def cell(v):
        return (f"{v[0]:.1f} → {v[1]:.1f}", f"{v[2]:+.1f}") if v else ("–", "–")
    for c in order:
        if all(abs(v[2]) < 0.05 and abs(v[0]) < 0.05 for v in rows[c].values()):
            continue
        f1, f2 = cell(rows[c].get("flush"))
        g1, g2 = cell(rows[c].get("fdatasync"))
        line = f"| {NAMES[c]} | {f1} | {f2} | {g1} | {g2} |"
        if per_set:
            v = rows[c].get("flush")
            line += f" {v[3]:+.2f} |" if v else " – |"
        out.append(line)
    tot = []
    for x in (fl, fd):
        tot += [f"{x['a_mean']:.1f} → {x['b_mean']:.1f}", f"{x['delta']:+.1f}"] if x else ["–", "–"]
    line = f"| **total** | {tot[0]} | {tot[1]} | {tot[2]} | {tot[3]} |"
    if per_set:
        line += f" {fl['per_set_delta']:+.2f} |"
    out.append(line)
    return "\n".join(out)


def text(a, b, subject="B", context="in B", kind=None):
    dd = diff(a, b)
    out = [f"A = {a['label']}", f"B = {b['label']}", ""]
    for op in analyze.OPS:
        x = dd[op]
        if x is None:
            out.append(f"{op}: missing on one side\n")
            continue
        out.append(f"{op}: {x['a_mean']:.1f} → {x['b_mean']:.1f} us per {op} ({x['delta']:+.1f} us, {x['pct']:+.1f}%); "
                   f"{x['a_count']} vs {x['b_count']} {op}es" if op == "flush" else
                   f"{op}: {x['a_mean']:.1f} → {x['b_mean']:.1f} us per {op} ({x['delta']:+.1f} us, {x['pct']:+.1f}%); "
                   f"{x['a_count']} vs {x['b_count']} calls")
        hdr = f"  {'component':22s} {'A us':>10s} {'B us':>10s} {'B-A us':>10s}"
        if x["per_set_delta"] is not None:
            hdr += f" {'B-A per SET':>12s}"
        out.append(hdr)
        for c, ua, ub, d, ds in x["rows"]:
            if abs(ua) < 0.05 and abs(ub) < 0.05:
                continue
            line = f"  {NAMES[c]:22s} {ua:10.1f} {ub:10.1f} {d:+10.1f}"
            if ds is not None:
                line += f" {ds:+12.2f}"
            out.append(line)
        out.append("")
    out.append("Verdict:")
    out += [f"- {v}" for v in verdicts(a, b, subject, context, kind)]
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="aofab.explain", description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="baseline: aoftrace JSON, run directory, or OUT::cell")
    ap.add_argument("b", help="variant: aoftrace JSON, run directory, or OUT::cell")
    ap.add_argument("--requests-a", type=int, help="requests sent during A (for per-SET figures)")
    ap.add_argument("--requests-b", type=int, help="requests sent during B")
    ap.add_argument("--subject", help='what B changes, e.g. "io_uring" (used in the verdicts; inferred when A and '
                                      'B are runs or cells that differ in one setting)')
    ap.add_argument("--json", action="store_true", help="print the differences as JSON")
    args = ap.parse_args(argv)
    a, b = load_side(args.a, "A: " + args.a), load_side(args.b, "B: " + args.b)
    if args.requests_a:
        a["requests"] = args.requests_a
    if args.requests_b:
        b["requests"] = args.requests_b
    kind, subject, context = infer(a, b)
    if args.subject:
        subject, context = args.subject, f"with {args.subject}"
    lite = [side["label"] for side in (a, b) if side.get("lite")]
    if args.json:
        print(json.dumps({"diff": diff(a, b), "verdicts": verdicts(a, b, subject, context, kind),
                          "lite": lite}, indent=2))
    else:
        if lite:   # its time is not split: the tables below compare times and counts only
            print(f"({' and '.join(lite)}: aoftrace --lite, no components; trace without --lite for the why)\n")
        print(text(a, b, subject, context, kind))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:
        sys.exit(0)
