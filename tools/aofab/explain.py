"""Differential attribution: where does the time B − A come from, component by component — and is it a
difference at all?

    .venv/bin/python -m aofab.explain A B
    make explain A=... B=...

A and B are each one of:
- an aoftrace JSON report (`aoftrace -j FILE`);
- a run directory of `make run-ab` (OUT/runs/NNN-...; holds aoftrace.json and run.json with the request count);
- a cell of a run-ab output directory, `OUT::fs-io-rewrite` (e.g. `results/x::xfs-uring-off`), which pools
  its repetitions;
- a whole run-ab output directory OUT (both sides then): the cells of the same name are paired, one
  explanation each.

For `flush` and `fdatasync` it prints the mean time per operation of A and B, the difference split by
component (mean µs per operation, from `components_us` / `count`), ranked by size, the same per SET (flush
totals / requests) when the request counts are known, and plain-language verdicts (aofab.verdict): durability
and the work done first, then only differences that are resolved over the runs' noise.

Inputs it cannot compare (a full trace against a `--lite` one, not an aoftrace report, no common cell) are
refused in one line on stderr, exit 2.
"""
import argparse
import json
import os
import sys

from . import analyze, work
from .verdict import HINTS, NAMES, _cap, diff, verdicts  # noqa: F401  (explain.NAMES etc. are used by report)

FORMS = ("an aoftrace JSON report, a run directory (OUT/runs/NNN-...), a run-ab output directory OUT "
         "(cells paired by name) or OUT::cell")


class Refused(Exception):
    """Inputs explain cannot compare: one line on stderr, exit 2."""


def side_from_traces(traces, requests=None, label="A", ops=None):
    """A side from one or more aoftrace reports (the runs of one configuration); `ops`: their ops/s."""
    ops = list(ops or [])
    s = {"label": label, "requests": requests, "ops": [x for x in ops if x],
         "rewrite_stats": {"count": sum(analyze.dig(t, "rewrite.count") or 0 for t in traces),
                           "child_write_bytes": sum(analyze.dig(t, "rewrite.child_write_bytes") or 0 for t in traces)},
         "lite": any(t.get("mode") == "lite" for t in traces), "modes": sorted({t.get("mode", "full") for t in traces}),
         "reps": [analyze.rep_stats(t, ops[i] if i < len(ops) else None) for i, t in enumerate(traces)],
         "work": work.of_traces(traces)}
    for op in analyze.OPS:
        s[op] = analyze.pooled(traces, op)
    return s


def side_from_trace(t, requests=None, label="A", ops_per_sec=None):
    return side_from_traces([t], requests, label, [ops_per_sec] if ops_per_sec else [])


def side_from_cell(c, label=None):
    s = {"label": label or c["key"], "requests": c.get("requests_total") or None, "ops": c.get("ops", []),
         "rewrite_stats": c.get("rewrite_stats", {}), "meta": {k: c[k] for k in ("fs", "io", "rewrite")},
         "reps": c.get("per_rep", []), "work": c.get("work"), "modes": c.get("modes", ["full"]),
         "lite": "lite" in c.get("modes", [])}
    for op in analyze.OPS:
        s[op] = c[op]
    return s


def is_outdir(path):
    return os.path.isdir(os.path.join(path, "runs"))


def _cells(out):
    try:
        runs = [r for r in analyze.load_runs(out) if r.get("trace")]
    except (OSError, ValueError) as e:
        raise Refused(f"cannot read the runs under {out}: {e}")
    if not runs:
        raise Refused(f"{out} has no traced runs under {out}/runs")
    return analyze.aggregate(runs)


def load_side(arg, label=None):
    """A JSON file, a run directory, or OUT::cell."""
    if "::" in arg:
        out, cell = arg.split("::", 1)
        cells = _cells(out)
        if cell not in cells:
            raise Refused(f"no runs of cell {cell!r} under {out}/runs (it has {', '.join(cells)})")
        return side_from_cell(cells[cell], label or cell)
    path, requests, ops = arg, None, None
    if os.path.isdir(arg):
        path = os.path.join(arg, "aoftrace.json")
        if not os.path.exists(path):
            raise Refused(f"{arg} is a directory without aoftrace.json: give {FORMS}")
    meta = os.path.join(os.path.dirname(path), "run.json")
    if os.path.exists(meta):
        try:
            with open(meta) as f:
                m = json.load(f)
        except (OSError, ValueError) as e:
            raise Refused(f"cannot read {meta}: {e}")
        requests, ops = m.get("requests"), m.get("ops_per_sec")
        side = side_from_trace(_read(path), requests, label or arg, ops)
        side["meta"] = {k: m.get(k) for k in ("fs", "io", "rewrite")}
        return side
    return side_from_trace(_read(path), requests, label or arg, ops)


def _read(path):
    try:
        with open(path) as f:
            t = json.load(f)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise Refused(f"cannot read {path} ({e.__class__.__name__}: {str(e)[:120]}): give {FORMS}")
    if not isinstance(t, dict) or not str(t.get("schema", "")).startswith("aoftrace/"):
        raise Refused(f"{path} is not an aoftrace JSON report (no \"schema\": \"aoftrace/1\"): give {FORMS}")
    return t


def comparable(a, b):
    """Refuse sides traced in different modes: a --lite report has no components and no forced commits, so a
    difference against a full one would be made of missing keys."""
    ma, mb = a.get("modes", ["full"]), b.get("modes", ["full"])
    if len(ma) > 1 or len(mb) > 1 or ma != mb:
        raise Refused(f"cannot compare A (aoftrace mode {'+'.join(ma)}) with B (mode {'+'.join(mb)}): a --lite "
                      "report has no components and no forced commits; trace both sides in the same mode")


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
    """The verdict first, then per operation the components of A and B and their difference (none for --lite)."""
    dd = diff(a, b)
    out = [f"A = {a['label']}", f"B = {b['label']}", "", "Verdict:"]
    out += [f"- {v}" for v in verdicts(a, b, subject, context, kind)]
    out.append("")
    for op in analyze.OPS:
        x = dd[op]
        if x is None:
            out.append(f"{op}: missing on one side\n")
            continue
        out.append(f"{op}: {x['a_mean']:.1f} → {x['b_mean']:.1f} us per {op} ({x['delta']:+.1f} us, {x['pct']:+.1f}%); "
                   f"{x['a_count']} vs {x['b_count']} {'flushes' if op == 'flush' else 'calls'}")
        if a.get("lite") or b.get("lite"):
            out.append("")
            continue
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
    return "\n".join(out).rstrip("\n")


def pairs(arg_a, arg_b):
    """[(A side, B side)]: one pair, or one per cell name common to two run-ab output directories."""
    oa, ob = "::" not in arg_a and is_outdir(arg_a), "::" not in arg_b and is_outdir(arg_b)
    if oa != ob:
        raise Refused(f"{arg_a if oa else arg_b} is a run-ab output directory and the other side is not: give two "
                      "output directories (cells paired by name), or OUT::cell for that side")
    if not oa:
        return [(load_side(arg_a, "A: " + arg_a), load_side(arg_b, "B: " + arg_b))]
    ca, cb = _cells(arg_a), _cells(arg_b)
    common = [k for k in ca if k in cb]
    if not common:
        raise Refused(f"{arg_a} ({', '.join(ca)}) and {arg_b} ({', '.join(cb)}) have no cell in common")
    return [(side_from_cell(ca[k], f"A: {arg_a}::{k}"), side_from_cell(cb[k], f"B: {arg_b}::{k}")) for k in common]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="aofab.explain", description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="baseline: " + FORMS)
    ap.add_argument("b", help="variant: the same form as A")
    ap.add_argument("--requests-a", type=int, help="requests sent during A (for per-SET figures)")
    ap.add_argument("--requests-b", type=int, help="requests sent during B")
    ap.add_argument("--subject", help='what B changes, e.g. "io_uring" (used in the verdicts; inferred when A and '
                                      'B are runs or cells that differ in one setting)')
    ap.add_argument("--json", action="store_true", help="print the differences as JSON")
    args = ap.parse_args(argv)
    try:
        ps = pairs(args.a, args.b)
        for a, b in ps:
            comparable(a, b)
    except Refused as e:
        print(f"explain: {e}", file=sys.stderr)
        return 2
    res, texts = {}, []
    for a, b in ps:
        if args.requests_a:
            a["requests"] = args.requests_a
        if args.requests_b:
            b["requests"] = args.requests_b
        kind, subject, context = infer(a, b)
        if args.subject:
            subject, context = args.subject, f"with {args.subject}"
        name = b["label"].split("::")[-1] if len(ps) > 1 else "pair"
        if args.json:
            res[name] = {"diff": diff(a, b), "verdicts": verdicts(a, b, subject, context, kind),
                         "lite": [s["label"] for s in (a, b) if s.get("lite")]}
            continue
        t = text(a, b, subject, context, kind)
        if a.get("lite"):   # its time is not split: the tables below compare times and counts only
            t = "(both sides aoftrace --lite: no components; trace without --lite for the why)\n\n" + t
        texts.append((f"=== {name}\n" if len(ps) > 1 else "") + t)
    if args.json:
        print(json.dumps(res["pair"] if len(ps) == 1 else res, indent=2, default=str))
    else:
        print("\n\n".join(texts))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:
        sys.exit(0)
