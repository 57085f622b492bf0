"""Off-CPU flame graphs of a run-ab output directory: one per cell (all repetitions' folded stacks merged) and
one differential graph per A/B pair the report compares (inferno-diff-folded + inferno-flamegraph).

A differential graph is drawn with B's stacks, each frame coloured by how its sleep time changed from A (red:
more in B, blue: less). Both sides are first scaled to microseconds of sleep per 1000 flushes of their cell, so
that a cell that made more flushes does not look slower for it.

What they cannot show, and why their figures differ from the tables (NOTES, printed in the report):
"""
import os
import shutil
import subprocess

from . import env

NOTES = [
    "Flame graphs cannot show run-queue wait: a thread waiting for a CPU is runnable, not asleep, so it has no "
    "off-CPU stack; the tables' run-queue wait comes from the scheduler tracepoints (docs/attribution.md).",
    "Their block (and journal) figures differ from the tables': a flame graph counts whole sleeps, labelled by the "
    "sleeping stack, including the time the awaited thread itself waited for a CPU or a commit, which the tables' "
    "split charges to run-queue wait and journal/log commit instead (and the graphs sum all threads' sleeps, the "
    "rewrite child's too, where the tables give µs per flush or fdatasync of the main thread).",
]


def read_folded(path):
    stacks = {}
    if not os.path.exists(path):
        return stacks
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if stack and n.isdigit():
                stacks[stack] = stacks.get(stack, 0) + int(n)
    return stacks


def write_folded(path, stacks):
    with open(path, "w") as f:
        for st, n in sorted(stacks.items()):
            f.write(f"{st} {n}\n")


def inferno(name="inferno-flamegraph"):
    for p in (shutil.which(name), os.path.join(env.ROOT, ".cargo-tools", "bin", name),
              os.path.expanduser(f"~/.cargo/bin/{name}")):
        if p and os.access(p, os.X_OK):
            return p
    return None


def flames(out, cells, runs):
    """Merge each cell's folded stacks (all reps) and render them with inferno-flamegraph if it is here."""
    fdir = os.path.join(out, "flame")
    os.makedirs(fdir, exist_ok=True)
    tool = inferno()
    made, note = {}, None
    for key in cells:
        stacks = {}
        for r in runs:
            if r["cell"] != key:
                continue
            for st, n in read_folded(os.path.join(r["dir"], "offcpu.folded")).items():
                stacks[st] = stacks.get(st, 0) + n
        folded = os.path.join(fdir, f"{key}.folded")
        write_folded(folded, stacks)
        made[key] = {"folded": folded, "svg": None}
        if not stacks or not tool:
            continue
        svg = os.path.join(fdir, f"{key}.svg")
        with open(folded) as fin, open(svg, "w") as fout:
            r = subprocess.run([tool, "--title", f"off-CPU stacks with wakers: {key} (us, all reps)",
                                "--countname", "us", "--width", "1400"], stdin=fin, stdout=fout,
                               stderr=subprocess.PIPE, text=True, timeout=120)
        if r.returncode == 0:
            made[key]["svg"] = svg
        else:
            os.unlink(svg)
            note = f"inferno-flamegraph failed: {r.stderr.strip()[:200]}"
    if not tool:
        note = ("inferno-flamegraph is not installed (make deps installs it with cargo into .cargo-tools/): "
                "only the folded files are here; render them with inferno-flamegraph or flamegraph.pl")
    return made, note


def diff_name(a_key, b_key):
    return f"diff-{a_key}-vs-{b_key}"


def diff_flames(out, pairs, made):
    """A differential flame graph per (A cell, B cell) pair: {(a_key, b_key): {"svg", "folded"}} and a note when
    it could not be drawn. `made`: flames()'s per-cell folded files; each side is scaled to µs of sleep per 1000
    flushes of its cell before the diff."""
    fdir = os.path.join(out, "flame", "diff")
    os.makedirs(fdir, exist_ok=True)
    diff_tool, fg = inferno("inferno-diff-folded"), inferno()
    res, note = {}, None
    for a, b in pairs:
        ka, kb = a["key"], b["key"]
        if (ka, kb) in res or ka not in made or kb not in made:
            continue
        name = diff_name(ka, kb)
        scaled = []
        for c in (a, b):
            n = c["flush"]["count"] or c["fdatasync"]["count"] or 1
            st = {k: max(1, round(v * 1000.0 / n)) for k, v in read_folded(made[c["key"]]["folded"]).items()}
            p = os.path.join(fdir, f"{name}.{'a' if c is a else 'b'}.folded")
            write_folded(p, st)
            scaled.append((p, st))
        res[(ka, kb)] = {"svg": None, "folded": None}
        if not (scaled[0][1] and scaled[1][1]):
            continue
        if not (diff_tool and fg):
            note = ("inferno-diff-folded or inferno-flamegraph is not installed (make deps installs both into "
                    ".cargo-tools/): no differential flame graphs, only the scaled folded files")
            continue
        folded, svg = os.path.join(fdir, f"{name}.folded"), os.path.join(fdir, f"{name}.svg")
        with open(folded, "w") as fout:
            r = subprocess.run([diff_tool, scaled[0][0], scaled[1][0]], stdout=fout, stderr=subprocess.PIPE,
                               text=True, timeout=120)
        if r.returncode != 0:
            note = f"inferno-diff-folded failed: {r.stderr.strip()[:200]}"
            continue
        res[(ka, kb)]["folded"] = folded
        with open(folded) as fin, open(svg, "w") as fout:
            r = subprocess.run([fg, "--title", f"off-CPU sleep per 1000 flushes: {ka} → {kb} (red: more in B, blue: "
                                "less)", "--countname", "us per 1000 flushes", "--width", "1400"],
                               stdin=fin, stdout=fout, stderr=subprocess.PIPE, text=True, timeout=120)
        if r.returncode == 0:
            res[(ka, kb)]["svg"] = svg
        else:
            os.unlink(svg)
            note = f"inferno-flamegraph failed on a differential: {r.stderr.strip()[:200]}"
    return res, note
