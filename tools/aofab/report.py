"""Write OUT/report.md (paste-ready for a PR discussion), OUT/summary.json, OUT/plots/*.png and
OUT/flame/*.svg from the runs under OUT/runs (see docs/run-ab.md).

    .venv/bin/python -m aofab.report OUT     # re-render a finished run
"""
import glob
import json
import math
import os
import sys

from . import analyze, env, explain, flames, verdict

COMP_COLORS = {"oncpu": "#4c72b0", "runqueue": "#dd8452", "block": "#55a868", "journal": "#c44e52",
               "inode_lock": "#8172b3", "other_lock": "#937860", "throttle": "#da8bc3", "reclaim": "#8c8c8c",
               "iowq_queue": "#ccb974", "other_offcpu": "#64b5cd", "unattributed": "#dddddd"}


def f1(x):
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1f}"


def f0(x):
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.0f}"


# --- comparisons ---------------------------------------------------------------------------------------------

def comparisons(cells):
    """(title, kind, subject, context, A cell, B cell) for: each io vs the baseline io (rewrite off, then on),
    rewrite off vs on (per io), and the second fs vs the first (per io and rewrite); all per fs."""
    fss = sorted({c["fs"] for c in cells.values()}, key=["xfs", "ext4"].index)
    ios = []
    for c in cells.values():
        if c["io"] not in ios:
            ios.append(c["io"])
    rws = [r for r in ("off", "on") if any(c["rewrite"] == r for c in cells.values())]
    base = "write" if "write" in ios else ios[0]
    out = []

    def get(fs, io, rw):
        return cells.get(analyze.cell_key(fs, io, rw))
    for rw in rws:
        for fs in fss:
            for io in ios:
                if io == base:
                    continue
                a, b = get(fs, base, rw), get(fs, io, rw)
                if a and b:
                    out.append((f"{base} vs {io}, rewrite {rw}, {fs}", "io", *explain.describe("io", base, io), a, b))
    if len(rws) == 2:
        for fs in fss:
            for io in ios:
                a, b = get(fs, io, "off"), get(fs, io, "on")
                if a and b:
                    out.append((f"rewrite off vs on, {io}, {fs}", "rewrite", *explain.describe("rewrite", "off", "on"),
                                a, b))
    if len(fss) == 2:
        for rw in rws:
            for io in ios:
                a, b = get(fss[0], io, rw), get(fss[1], io, rw)
                if a and b:
                    out.append((f"{fss[0]} vs {fss[1]}, {io}, rewrite {rw}", "fs", *explain.describe("fs", fss[0], fss[1]),
                                a, b))
    return out


# --- plots ---------------------------------------------------------------------------------------------------

def plots(out, cells):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pdir = os.path.join(out, "plots")
    os.makedirs(pdir, exist_ok=True)
    keys = list(cells)
    x = list(range(len(keys)))
    files = {}

    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.3 * len(keys) + 3), 8), sharex=True)
    names = [p for p, _ in analyze.PCTS if any(cells[k][op]["pct"][p] == cells[k][op]["pct"][p]
                                                for k in keys for op in analyze.OPS)]
    w = 0.8 / len(names)
    for ax, op in zip(axes, analyze.OPS):
        for j, p in enumerate(names):
            vals = [cells[k][op]["pct"][p] for k in keys]
            vals = [v if v and v == v else 0 for v in vals]
            ax.bar([i - 0.4 + w * (j + 0.5) for i in x], vals, w, label=p)
        ax.set_yscale("log")
        ax.set_ylabel(f"{op} latency (us)")
        ax.set_title(f"{op}: {'/'.join(names)} per cell (median across reps)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(ncol=5, fontsize=8)
    axes[1].set_xticks(x, keys, rotation=30, ha="right")
    fig.tight_layout()
    files["latency"] = os.path.join(pdir, "latency.png")
    fig.savefig(files["latency"], dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(max(10, 2.2 * len(keys) + 4), 5.5))
    for ax, op in zip(axes, analyze.OPS):
        bottom = [0.0] * len(keys)
        for c in analyze.COMPONENTS:
            vals = [cells[k][op]["per_op_us"].get(c, 0.0) for k in keys]
            if not any(v > 0 for v in vals):
                continue
            ax.bar(x, vals, 0.6, bottom=bottom, label=explain.NAMES[c], color=COMP_COLORS[c])
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_xticks(x, keys, rotation=30, ha="right")
        ax.set_ylabel(f"mean us per {op}")
        ax.set_title(f"{op}: where the time goes")
        ax.grid(axis="y", alpha=0.3)
    handles = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    order = [explain.NAMES[c] for c in analyze.COMPONENTS if explain.NAMES[c] in handles]
    axes[1].legend([handles[n] for n in order], order, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    files["components"] = os.path.join(pdir, "components.png")
    fig.savefig(files["components"], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(keys) + 2), 4.5))
    means = [cells[k]["ops_mean"] for k in keys]
    cis = [cells[k]["ops_ci95"] if cells[k]["ops_ci95"] == cells[k]["ops_ci95"] else 0 for k in keys]
    colors = ["#4c72b0" if cells[k]["rewrite"] == "off" else "#dd8452" for k in keys]
    ax.bar(x, [m if m == m else 0 for m in means], 0.6, yerr=cis, capsize=5, color=colors)
    for k, i in zip(keys, x):
        ax.scatter([i] * len(cells[k]["ops"]), cells[k]["ops"], color="black", s=10, zorder=3)
    ax.set_xticks(x, keys, rotation=30, ha="right")
    ax.set_ylabel("SET ops/s (mean, 95% CI; dots: reps)")
    ax.set_title("redis-benchmark throughput (blue: rewrite off, orange: rewrite on)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    files["throughput"] = os.path.join(pdir, "throughput.png")
    fig.savefig(files["throughput"], dpi=100)
    plt.close(fig)
    return files


# --- UFTRACE=1 -----------------------------------------------------------------------------------------------

def uftrace_section(runs, out):
    """The "uftrace cross-check" section (markdown lines) and its rows per run; nothing without UFTRACE=1."""
    used = [r for r in runs if r.get("uftrace")]
    if not used:
        return [], {}
    L = ["## uftrace cross-check", ""]
    cmd = next((r["uftrace"]["command"] for r in used if r["uftrace"].get("command")), "uftrace record")
    L.append(f"`UFTRACE=1`: every run's aofwriter was the `-pg` build (`build/pg/aofwriter`) started as "
             f"`{cmd.replace(os.path.join(env.BUILD, ''), 'build/')} ...` (the method of the Valkey #750 "
             "discussion), with aoftrace attached to the same process. uftrace's figures are the calls of the main "
             "thread that began while aoftrace was attached (from `uftrace dump`); both tracers see the same "
             "calls, each with the other's overhead (mcount, uprobes) inside: compare them with each other, not "
             "with runs without `-pg`. Ratio = uftrace / aoftrace; ✗ marks a difference above "
             f"{analyze.UFTRACE_TOLERANCE:.0%}. aoftrace's side: `flush.calls` and `flush.total_us + "
             "flush.empty_total_us` (all calls), `flush.count`/`flush.total_us` (calls that wrote: uftrace's calls "
             "with an `aofWrite` child), `fdatasync.count`/`fdatasync.total_us` (uftrace's `fdatasync` and `fsync` "
             "calls).")
    L.append("")
    L.append("Expected differences: uftrace times `fdatasync` as a libc call (its PLT hook), aoftrace as a syscall "
             "(`sys_enter` to `sys_exit`), so uftrace's includes the syscall entry and exit paths, aoftrace's BPF "
             "programs on them and the return to user space (within 1% here since aoftrace stopped waking its "
             "reader at every record; before, the wake-up added about 15 us per call); a call that straddles the "
             "start or end of the window can count on one side only. libmcount's `writev` to uftrace's channel "
             "inside a flush is not counted as an AOF write: aoftrace counts writes to regular files only.")
    L.append("")
    L.append("| run | function | uftrace calls | aoftrace calls | calls ratio | uftrace total ms | aoftrace total ms "
             "| total ratio | agree |")
    L.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    rows = {}
    for r in used:
        name = os.path.basename(r["dir"])
        if r["uftrace"].get("error"):
            L.append(f"| {name} | failed: {r['uftrace']['error']} | | | | | | | ✗ |")
            continue
        rows[name] = analyze.uftrace_rows(r)
        for x in rows[name]:
            L.append(f"| {name} | {x['what']} | {x['u_calls']} | {x['a_calls']} | {x['calls_ratio']:.4f} | "
                     f"{x['u_total_us'] / 1000:.3f} | {x['a_total_us'] / 1000:.3f} | {x['total_ratio']:.4f} | "
                     f"{'✓' if x['agree'] else '✗'} |")
    L.append("")
    bad = sum(not x["agree"] for v in rows.values() for x in v) + sum(bool(r["uftrace"].get("error")) for r in used)
    L.append(f"{'All figures agree' if not bad else f'{bad} disagreement(s)'} within "
             f"{analyze.UFTRACE_TOLERANCE:.0%}. uftrace's report of each whole run (warm-up included): "
             + ", ".join(f"[{os.path.relpath(os.path.join(r['dir'], 'uftrace.txt'), out)}]"
                         f"({os.path.relpath(os.path.join(r['dir'], 'uftrace.txt'), out)})" for r in used) + "; "
             "its data: `uftrace.data/` in the same directories (`uftrace replay -d ...`).")
    L.append("")
    return L, rows


# --- report --------------------------------------------------------------------------------------------------

def header_lines(st, envi, cells, runs, wall_s):
    """The title, what was run, and the settings and machine it ran on."""
    L = []
    srv = st["server"] or f"aofwriter ({envi['aofwriter']})"
    L.append(f"# AOF A/B: write(2) vs io_uring, rewrite off/on, {' and '.join(st['fs'])} (appendfsync always)")
    L.append("")
    L.append(f"`make run-ab{' QUICK=1' if st['quick'] else ''}`: {len(cells)} cells × {st['reps']} repetitions, "
             f"interleaved (round-robin, start rotated per repetition), {len(runs)} runs"
             + (f", {wall_s / 60:.1f} min wall time" if wall_s else "") + ".")
    if st["quick"]:
        L.append("")
        L.append("**QUICK run**: one repetition, few requests — the confidence intervals are missing and the "
                 "numbers are indicative only.")
    L.append("")
    L.append("## Environment")
    L.append("")
    L.append(f"- Kernel {envi['kernel']} ({envi['machine']}), Debian {envi['debian']}, {envi['cpus']} CPUs "
             f"({envi['cpu_model']}), memory {envi['memory']}")
    L.append(f"- Server: {srv}" + (f", args `{st['server_args']}`" if st["server_args"] else "")
             + f"; pinning: {'server on CPU ' + st['server_cpus'] + ', benchmark on CPU ' + st['bench_cpus'] if st['server_cpus'] else 'none (CPUS unset)'}")
    L.append(f"- Versions: {envi['aoftrace']}, {envi['aofwriter']}, {envi['redis_benchmark']}, "
             f"{envi['perf']}" + (f", server `{envi['server']}`" if envi.get("server") else ""))
    for fsn, fi in envi["fs"].items():
        ls = fi["loop_settings"]
        L.append(f"- {fsn}: `{fi['mkfs']}` on a {fi['image_mb']} MB sparse image (on {fi['image_on']}), "
                 f"device {fi['device']}, mount `{fi['mount_options']}`; loop: `{fi['loop']}` "
                 f"(NAME DIO LOG-SEC SIZELIMIT RO), direct I/O on, "
                 + ", ".join(f"{k} {v}" for k, v in ls.items() if k != "direct_io"))
    L.append(f"- Workload per run: fresh AOF directory; warm-up = preload `redis-benchmark -t set -d 100 -r 100000 "
             f"-c 50 -P 16 -n {st['preload']}` + `-n {st['warmup']}` unpipelined; measured = `redis-benchmark -t set "
             f"-d 100 -r 100000 -c 50 -n {st['requests']} --csv`, with aoftrace (`-j`, `-f`) and "
             f"`perf stat -e task-clock,context-switches,cpu-migrations,page-faults -p PID` attached for it only.")
    L.append("- rewrite on: " + ("a BGREWRITEAOF loop (the next one as soon as the previous ended)" if st["server"]
                                 else "aofwriter `--auto-rewrite` (the next rewrite starts as soon as the previous one ended)")
             + "; the preloaded keys make every rewrite copy the dataset while the measurement runs.")
    if not envi.get("hw_counters"):
        L.append("- perf: hardware counters not available here (cycles, instructions: <not supported>); "
                 "software counters only.")
    L.append("")
    return L


def _link(out, path):
    r = os.path.relpath(path, out)
    return f"[{r}]({r})"


def verdict_lines(comps, diffs=None, out="", diff_note=None):
    """The "Verdicts" section, each comparison with its differential flame graph, and the verdicts by comparison
    title (for summary.json)."""
    L = ["## Verdicts", "",
         "The first line of each comparison is its headline: a durability violation or missing work first (a run "
         "that broke durability or persisted less is never a speed-up), else the resolved effect, else \"No resolved "
         "difference\". A difference is resolved only when both cells have two or more repetitions and the 95% CIs "
         "of their run means do not overlap; components follow the same rule (docs/run-ab.md).", ""]
    all_verdicts = {}
    for title, kind, subj, ctx, a, b in comps:
        va, vb = explain.side_from_cell(a), explain.side_from_cell(b)
        v = explain.verdicts(va, vb, subj, ctx, kind)
        all_verdicts[title] = v
        d = (diffs or {}).get((a["key"], b["key"])) or {}
        link = (f" — differential off-CPU flame graph (B's stacks, red: more sleep per flush in B, blue: less): "
                f"{_link(out, d['svg'])}" if d.get("svg") else "")
        L.append(f"**{title}**{link}")
        L.append("")
        L += [f"- {x}" for x in v]
        L.append("")
    if not comps:
        L.append("(one cell only: nothing to compare)")
        L.append("")
    else:
        L += [f"- {n}" for n in flames.NOTES]
        if diff_note:
            L.append(f"- Differential flame graphs: {diff_note}.")
        L.append("")
    return L, all_verdicts


QUESTIONS = {"io": "io method", "rewrite": "AOF rewrite", "fs": "file system"}


def answer_lines(comps, runs, diffs, out):
    """The short answer per question asked (io method, rewrite, file system), durability violations first."""
    L = ["## Answers", ""]
    bad = [r for r in runs if analyze.durability_verdict(r.get("trace")) not in ("OK",)]
    if bad:
        L.append(f"**Durability: {len(bad)} of {len(runs)} runs did not pass** — "
                 + "; ".join(f"{os.path.basename(r['dir'])}: {analyze.durability_verdict(r.get('trace'))}"
                             for r in bad)
                 + ". No comparison with these runs is reported as a speed-up.")
    else:
        L.append(f"Durability: every run kept `appendfsync always` ({len(runs)} of {len(runs)} OK).")
    L.append("")
    answers = {}
    for kind, q in QUESTIONS.items():
        these = [c for c in comps if c[1] == kind]
        if not these:
            continue
        L.append(f"**{q}**")
        L.append("")
        for title, _, subj, ctx, a, b in these:
            va, vb = explain.side_from_cell(a), explain.side_from_cell(b)
            line = verdict.answer(va, vb, subj, ctx, kind)
            answers[title] = line
            d = (diffs or {}).get((a["key"], b["key"])) or {}
            fg = f" ([differential flame graph]({os.path.relpath(d['svg'], out)}))" if d.get("svg") else ""
            L.append(f"- {title}: {line}{fg}")
        L.append("")
    reps = min([len(c[4].get("per_rep", [])) for c in comps] + [len(c[5].get("per_rep", [])) for c in comps] or [0])
    if comps and reps < 2:
        L.append("One repetition per cell: no difference above can be resolved from run-to-run noise (`REPS=3` or "
                 "more); the verdicts below give the spread a second run would have to stay within.")
        L.append("")
    return L, answers


def durability_lines(runs):
    """The durability verdict of every run (docs/durability.md)."""
    L = ["## Durability (every run)", "", "| run | appendfsync seen | verdict |", "| --- | --- | --- |"]
    for r in runs:
        d = (r.get("trace") or {}).get("durability") or {}
        L.append(f"| {os.path.basename(r['dir'])} | {d.get('appendfsync', '?')} | "
                 f"{analyze.durability_verdict(r.get('trace'))} |")
    L.append("")
    return L


def throughput_lines(cells):
    L = ["## Throughput (SET ops/s)", ""]
    L.append("| cell | fs | io | rewrite | reps | ops/s mean | ±95% CI | per rep | SETs per flush |")
    L.append("| --- | --- | --- | --- | ---: | ---: | ---: | --- | ---: |")
    for k, c in cells.items():
        spf = c["requests_total"] / c["flush"]["count"] if c["flush"]["count"] else float("nan")
        L.append(f"| {k} | {c['fs']} | {c['io']} | {c['rewrite']} | {c['reps']} | {f0(c['ops_mean'])} | "
                 f"{f0(c['ops_ci95'])} | {', '.join(f0(x) for x in c['ops'])} | {f1(spf)} |")
    L.append("")
    L.append("CI: Student t, two-sided 95%, over repetitions (missing with one repetition). SETs per flush: "
             "requests of the measured parts / flushes traced (how many commands one flush and its fdatasync carry).")
    L.append("")
    return L


def _q(name):
    """The quantile of a percentile column ("p99.9" → 0.999), None for max."""
    return float(name[1:]) / 100.0 if name.startswith("p") else None


def latency_lines(cells):
    L = ["## Latency (us)", ""]
    L.append("Percentiles: the median across repetitions of each repetition's percentile (aoftrace's log-linear "
             "histograms, ±3%); count and mean: pooled over repetitions. fdatasync = the main thread's "
             "fdatasync/fsync calls of the AOF file (a rewrite's temp-file, manifest and directory fsyncs are "
             "counted apart, in each run's `sync_by_file`; with `uring-linked`/`uring-sqpoll` the data sync is an "
             "io_uring FSYNC: see the io_uring table).")
    L.append("")
    L.append("| cell | op | count | mean | " + " | ".join(n for n, _ in analyze.PCTS) + " | closure % |")
    L.append("| --- | --- | ---: | ---: | " + " | ".join("---:" for _ in analyze.PCTS) + " | ---: |")
    unresolved = False
    for k, c in cells.items():
        for op in analyze.OPS:
            p = c[op]
            if not p["count"]:
                L.append(f"| {k} | {op} | 0 | – | " + " | ".join("–" for _ in analyze.PCTS) + " | – |")
                continue
            n = c.get("min_count", {}).get(op, p["count"])
            vals = []
            for name, _ in analyze.PCTS:
                v, q = p["pct"][name], _q(name)
                if v is None or v != v:
                    vals.append("n/a")
                    continue
                mark = q is not None and n * (1.0 - q) < 10 - 1e-9
                unresolved |= mark
                vals.append(f1(v) + ("*" if mark else ""))
            L.append(f"| {k} | {op} | {p['count']} | {f1(p['mean_us'])} | " + " | ".join(vals)
                     + f" | {f1(p['closure_pct'])} |")
    L.append("")
    if unresolved:
        L.append("\\* not resolved: fewer than 10 operations beyond this percentile in a repetition (a percentile q "
                 "needs 10 / (1 − q) operations per run: 1 000 for p99, 10 000 for p99.9, 100 000 for p99.99); the "
                 "value is the slowest few operations of the run, not a tail estimate.")
    if all(c[op]["pct"].get("p99.99") != c[op]["pct"].get("p99.99") for c in cells.values() for op in analyze.OPS):
        L.append("p99.99: not available — aoftrace's JSON has percentiles up to p99.9 (`p999_us`) and the exact "
                 "`max_us`; no run keeps per-operation latencies to compute it from.")
    L.append("")
    return L


def component_lines(cells):
    """Where the time of a flush and of an fdatasync goes, one table each."""
    L = []
    for op in analyze.OPS:
        L.append(f"## Where the time of a {op} goes (mean us per {op})")
        L.append("")
        used = [cc for cc in analyze.COMPONENTS if any(c[op]["per_op_us"].get(cc, 0) >= 0.05 for c in cells.values())]
        L.append("| cell | total | " + " | ".join(explain.NAMES[cc] for cc in used) + " |")
        L.append("| --- | ---: | " + " | ".join("---:" for _ in used) + " |")
        for k, c in cells.items():
            L.append(f"| {k} | {f1(c[op]['mean_us'])} | " + " | ".join(f1(c[op]["per_op_us"].get(cc, 0)) for cc in used)
                     + " |")
        L.append("")
    L.append("Components: `components_us` / `count`, pooled over repetitions. Per SET: see the differential "
             "tables below.")
    L.append("")
    return L


def uring_lines(cells):
    """io_uring requests by opcode; nothing when no cell made any."""
    urows = [(k, opc, u) for k, c in cells.items() for opc, u in sorted(c["uring"].items()) if u["requests"]]
    if not urows:
        return []
    L = ["## io_uring requests (summed over repetitions)", ""]
    L.append("| cell | opcode | requests | inline | punted (io-wq) | hashed | failed | short | latency avg us | "
             "latency p99 us | io-wq queue avg us | worker run avg us |")
    L.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for k, opc, u in urows:
        L.append(f"| {k} | {opc} | {u['requests']} | {u['inline']} | {u['punted']} | {u['hashed']} | {u['failed']} | "
                 f"{u['short']} | {f1(u['latency_avg_us'])} | {f1(u['latency_p99_us'])} | {f1(u['queue_avg_us'])} | "
                 f"{f1(u['run_avg_us'])} |")
    L.append("")
    return L


def rewrite_lines(cells):
    L = ["## Rewrite", ""]
    L.append("| cell | rewrites (children) | child MB written | child fsyncs | fork avg us | fdatasyncs with a child "
             "alive | fdatasync mean idle / active us | flush mean idle / active us |")
    L.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for k, c in cells.items():
        rw = c["rewrite_stats"]
        L.append(f"| {k} | {rw['count']} | {rw['child_write_bytes'] / 1e6:.1f} | {rw['child_syncs']} | "
                 f"{f1(rw['fork_avg_us'])} | {rw['active_share_pct']:.0f}% | "
                 f"{f1(c['fdatasync_idle']['mean_us'])} / {f1(c['fdatasync_active']['mean_us'])} | "
                 f"{f1(c['flush_idle']['mean_us'])} / {f1(c['flush_active']['mean_us'])} |")
    L.append("")
    return L


def cpu_lines(cells):
    """perf stat's figures."""
    L = ["## CPU (perf stat on the server process, measured part only)", ""]
    L.append("| cell | CPUs utilized | context switches/s | migrations/s | page faults/s |")
    L.append("| --- | ---: | ---: | ---: | ---: |")
    for k, c in cells.items():
        p = c["perf"]
        L.append(f"| {k} | {p['cpus_utilized']:.2f} | {f0(p['ctx_per_s'])} | {f0(p['migr_per_s'])} | "
                 f"{f0(p['faults_per_s'])} |")
    L.append("")
    L.append("CPUs utilized = task-clock / elapsed time of the perf window; mean over repetitions. "
             "`perf stat -p` counts the server's threads (io-wq workers are threads of the server).")
    L.append("")
    return L


def differential_lines(comps):
    """explain's ranked B − A table of every comparison; nothing without one."""
    if not comps:
        return []
    L = ["## Differential attribution (B − A, mean us per operation, ranked)", ""]
    for title, kind, subj, ctx, a, b in comps:
        va, vb = explain.side_from_cell(a), explain.side_from_cell(b)
        L.append(f"### {title}")
        L.append("")
        L.append(f"A = {a['key']}, B = {b['key']}")
        L.append("")
        L.append(explain.table_md(va, vb))
        L.append("")
    return L


def flag_lines(cells):
    """What looks wrong or surprising, per run."""
    L = ["## Flags (what looks wrong or surprising)", ""]
    nflags = 0
    for k, c in cells.items():
        for run, f in c["flags"]:
            L.append(f"- {run}: {f}")
            nflags += 1
    if not nflags:
        L.append("- none: no lost events, no failed or short io_uring requests, no offset/growth mismatches, "
                 "every fdatasync forced a commit, closure ≥ 95%.")
    L.append("")
    return L


def figure_lines(out, pngs, plot_note, fl, flame_note, diffs=None):
    """Links to the plots, flame graphs and timeline under OUT, and to the raw data."""
    rel = lambda p: os.path.relpath(p, out)  # noqa: E731
    L = ["## Figures", ""]
    if pngs:
        L.append(f"- Latency percentiles per cell: [{rel(pngs['latency'])}]({rel(pngs['latency'])})")
        L.append(f"- Component breakdown per cell: [{rel(pngs['components'])}]({rel(pngs['components'])})")
        L.append(f"- Throughput with 95% CIs: [{rel(pngs['throughput'])}]({rel(pngs['throughput'])})")
    if plot_note:
        L.append(f"- {plot_note}")
    for k, m in fl.items():
        if m["svg"]:
            L.append(f"- Off-CPU flame graph with wakers, {k}: [{rel(m['svg'])}]({rel(m['svg'])}) "
                     f"(folded: {rel(m['folded'])})")
        else:
            L.append(f"- Off-CPU stacks with wakers, {k} (folded, no SVG): {rel(m['folded'])}")
    if flame_note:
        L.append(f"- {flame_note}")
    for (ka, kb), d in (diffs or {}).items():
        if d.get("svg"):
            L.append(f"- Differential off-CPU flame graph, {ka} → {kb} (µs of sleep per 1000 flushes; red: more in "
                     f"B, blue: less): {_link(out, d['svg'])}")
    for tl in sorted(glob.glob(os.path.join(out, "runs", "*", "timeline.json"))):
        L.append(f"- Timeline of one representative run (Chrome trace-event JSON: open it in Perfetto UI or "
                 f"chrome://tracing): [{rel(tl)}]({rel(tl)})")
    L.append("")
    L.append("Raw data per run (aoftrace JSON and text report, folded stacks, redis-benchmark CSV, perf stat "
             "output, run.json with the settings and timings): `runs/`.")
    L.append("")
    return L


def write(out, wall_s=None):
    """Render OUT/report.md (section by section, in this order), OUT/summary.json, the plots and flame graphs."""
    with open(os.path.join(out, "settings.json")) as f:
        meta = json.load(f)
    st, envi = meta["settings"], meta["environment"]
    runs = analyze.load_runs(out)
    cells_all = analyze.aggregate(runs)
    cells = {k: cells_all[k] for k in meta["cells"] if k in cells_all}
    comps = comparisons(cells)
    try:
        pngs = plots(out, cells)
        plot_note = None
    except Exception as e:  # a report without figures is still a report
        pngs, plot_note = {}, f"plots failed: {e!r}"
    fl, flame_note = flames.flames(out, cells, runs)
    diffs, diff_note = flames.diff_flames(out, [(c[4], c[5]) for c in comps], fl)

    L = header_lines(st, envi, cells, runs, wall_s)
    answers, all_answers = answer_lines(comps, runs, diffs, out)
    env_at = L.index("## Environment")
    L[env_at:env_at] = answers
    verdicts, all_verdicts = verdict_lines(comps, diffs, out, diff_note)
    L += verdicts
    L += durability_lines(runs)
    L += throughput_lines(cells)
    L += latency_lines(cells)
    L += component_lines(cells)
    L += uring_lines(cells)
    L += rewrite_lines(cells)
    L += cpu_lines(cells)
    L += differential_lines(comps)
    ulines, uftrace_rows = uftrace_section(runs, out)
    L += ulines
    L += flag_lines(cells)
    L += figure_lines(out, pngs, plot_note, fl, flame_note, diffs)
    path = os.path.join(out, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(L))
    summary = {"settings": st, "environment": envi, "wall_s": wall_s, "answers": all_answers, "verdicts": all_verdicts,
               "diff_flames": {f"{ka} -> {kb}": d for (ka, kb), d in diffs.items()},
               "cells": cells, "flame_note": flame_note}
    if uftrace_rows:
        summary["uftrace"] = uftrace_rows
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, default=str)
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m aofab.report OUT")
    print(write(sys.argv[1]))
