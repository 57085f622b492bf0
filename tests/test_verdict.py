"""Verdicts that can be trusted (aofab.verdict, aofab.work, aofab.explain): on the real kernel and real XFS/ext4,
aofwriter's overwrite and skip-fsync faults as B against a clean A give a first verdict line that names the
violation and the missing work, never a speed-up; two runs of the same configuration give "No resolved
difference"; a full trace against a --lite one is refused in one line. Then the same rules on synthetic reports
(repetitions, the per-file sync split, run-ab output directories). About 40 s on the 2-core VM."""
import copy
import json
import os
import subprocess

import pytest

from aofab import analyze, env, explain, tracing, verdict, work
from aofab.env import ROOT

PY = os.path.join(ROOT, ".venv", "bin", "python")
REQUESTS = 3000   # a few thousand SETs per run: enough flushes for every figure, about a second each
FAULT = ["--enable-test-faults", "--test-fault-every", "1", "--test-fault"]
RUNS = {"clean": [], "clean2": [], "overwrite": FAULT + ["overwrite"], "skip-fsync": FAULT + ["skip-fsync"],
        "lite": []}


@pytest.fixture(scope="module", params=["xfs", "ext4"])
def traced(request, tmp_path_factory):
    """One aofwriter run per RUNS entry on a fresh file system, each traced by aoftrace -j (and -f, --lite for
    "lite") under the same redis-benchmark load: {name: JSON path}."""
    out = tmp_path_factory.mktemp(f"verdict-{request.param}")
    paths = {}
    with env.LoopFS(request.param) as fs:
        for name, extra in RUNS.items():
            d = os.path.join(fs.mnt, name)
            os.mkdir(d)
            with env.aofwriter(d, env.free_port(), extra=extra, port_tries=env.PORT_TRIES) as w:
                env.benchmark(w.port, requests=500, clients=20)     # a short warm-up
                paths[name] = str(out / f"{name}.json")
                args = ["--lite"] if name == "lite" else ["-f", str(out / f"{name}.folded")]
                with tracing.Aoftrace(w.pid, paths[name], args) as at:
                    env.benchmark(w.port, requests=REQUESTS, clients=20, timeout=120)
                    assert at.stop() == 0, at.stderr
    paths["fs"] = request.param
    return paths


def explain_cli(*args):
    return subprocess.run([PY, "-m", "aofab.explain", *args], capture_output=True, text=True, timeout=60)


def verdict_lines(stdout):
    lines = stdout.split("Verdict:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    return [l[2:] for l in lines if l.startswith("- ")]


def test_overwrite_fault_is_missing_work_not_a_speed_up(traced):
    r = explain_cli(traced["clean"], traced["overwrite"])
    assert r.returncode == 0, r.stderr
    v = verdict_lines(r.stdout)
    print(f"{traced['fs']} overwrite: {v[0]}")
    assert v[0].startswith("Not a speed-up: B broke durability"), v
    assert "landed below the end of the AOF" in v[0], v[0]
    assert "but its file grew" in v[0], v[0]                 # the missing work, in plain words
    assert not any(" cut " in x for x in v), v             # never a speed-up
    assert v[1].startswith("Work: A persisted") and "B persisted " in v[1], v[1]
    wb = work.of_traces([json.load(open(traced["overwrite"]))])
    assert wb["growth"] < 0.01 * wb["bytes_written"] and wb["overwrites"] > 0.9 * wb["flushes"], wb


def test_skip_fsync_fault_is_missing_work_not_a_speed_up(traced):
    r = explain_cli(traced["clean"], traced["skip-fsync"])
    assert r.returncode == 0, r.stderr
    v = verdict_lines(r.stdout)
    print(f"{traced['fs']} skip-fsync: {v[0]}")
    assert v[0].startswith("Not a speed-up: B broke durability"), v
    assert "no longer kept appendfsync always" in v[0] and "replies left with AOF bytes unsynced" in v[0], v[0]
    assert not any(" cut " in x for x in v), v
    flush = [x for x in v if x.startswith("flush:")][0]
    assert "not a speed-up: B broke durability" in flush, flush


def test_same_configuration_twice_is_no_resolved_difference(traced):
    r = explain_cli(traced["clean"], traced["clean2"])
    assert r.returncode == 0, r.stderr
    v = verdict_lines(r.stdout)
    print(f"{traced['fs']} same cell: {v[0]}")
    assert v[0].startswith("No resolved difference between A and B"), v
    assert "one run per side" in v[0]
    # no line states a cause: components are moves "not causes until resolved"
    assert not any(" of it from " in x or "mostly" in x for x in v), v
    for x in v:
        if x.startswith(("flush:", "fdatasync:")):
            assert "not resolved" in x, x


def test_full_against_lite_is_refused(traced):
    for a, b in ((traced["clean"], traced["lite"]), (traced["lite"], traced["clean"])):
        r = explain_cli(a, b)
        assert r.returncode == 2, r.stdout
        assert r.stdout == "" and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert r.stderr.startswith("explain: cannot compare") and "lite" in r.stderr
        assert "Traceback" not in r.stderr
    # lite against lite compares times and counts, without components
    r = explain_cli(traced["lite"], traced["lite"])
    assert r.returncode == 0, r.stderr
    assert "no components" in r.stdout and "run-queue wait" not in r.stdout


# --- synthetic reports ------------------------------------------------------------------------------------------

def report(count=400, us=800.0, comps=None, growth=None, commits=None, mode="full", dur=None, by_file=None):
    comps = comps or {"runqueue": 0.3 * us, "journal": 0.5 * us, "block": 0.2 * us}
    op = {"count": count, "total_us": us * count, "avg_us": us, "p999_us": 2 * us, "max_us": 3 * us}
    if mode == "full":
        op["components_us"] = {c: v * count for c, v in comps.items()}
    t = {"schema": "aoftrace/1", "mode": mode, "flush": copy.deepcopy(op), "fdatasync": copy.deepcopy(op),
         "rewrite": {"count": 0, "child_write_bytes": 0},
         "fs": {"bytes_written": count * 1000, "size_growth_bytes": count * 1000 if growth is None else growth,
                "journal_commits": count if commits is None else commits},
         "durability": {"ok": True, "appendfsync": "always", "writing_flushes": count, "syncing_flushes": count,
                        **(dur or {})}}
    if mode == "full":
        t["fdatasync"]["forced_commits"] = t["fs"]["journal_commits"]
        t["block"] = {"kworker": {"write": {"count": count, "bytes": count * 8192}}}
    if by_file:
        t["sync_by_file"] = by_file
    return t


def test_resolution_needs_repetitions_and_separate_intervals():
    a = [report(us=800 + j) for j in (-10, 0, 10)]
    b = [report(us=600 + j, comps={"runqueue": 240 + j, "journal": 200, "block": 160}) for j in (-10, 0, 10)]
    va, vb = explain.side_from_traces(a, 3000), explain.side_from_traces(b, 3000)
    v = verdict.verdicts(va, vb, "io_uring", "with io_uring", "io")
    assert v[0].startswith("io_uring cut flush time by 200 us") and "do not overlap" in v[0], v
    assert "200 us of it from journal/log commit" in v[0], v[0]
    # the same means with wide run-to-run spread: the CIs overlap, nothing is a cause
    a = [report(us=800 + j) for j in (-300, 0, 300)]
    b = [report(us=600 + j) for j in (-300, 0, 300)]
    v = verdict.verdicts(explain.side_from_traces(a), explain.side_from_traces(b))
    assert v[0].startswith("No resolved difference") and "95% CIs overlap" in v[0], v
    # one run per side: the spread a second run would have to stay within, |d| / t(0.975, 1)
    r = verdict.resolve([800.0], [600.0])
    assert not r["resolved"] and abs(r["need"] - 200 / 12.706) < 0.01 and "agree within 16 us" in r["why"], r


def test_growth_mismatch_without_durability_check_is_still_less_work():
    """A report from before the durability checks (no `durability`) whose file stopped growing: the work rule
    alone catches it."""
    a, b = report(), report(us=300, growth=0, commits=0)
    for t in (a, b):
        del t["durability"]
    v = verdict.verdicts(explain.side_from_trace(a), explain.side_from_trace(b))
    assert v[0].startswith("Not a speed-up: B did less work than A"), v
    assert "100% of them forced no journal/log commit" in v[0] and "but its file grew 0 bytes" in v[0], v[0]


def test_sync_by_file_is_used_when_present():
    aof = {"count": 400, "total_us": 400 * 300.0, "size_changed": 40, "forced_commits": 40, "block_bytes": 0}
    b = report(us=300, growth=40 * 1000, commits=40, by_file={"aof": aof, "rewrite": {"count": 0}})
    w = work.of_traces([b])
    assert w["by_file"] and w["nothing_to_commit"] == 360 and w["nothing_how"] == "had no size change to commit"
    v = verdict.verdicts(explain.side_from_trace(report()), explain.side_from_trace(b))
    assert "B's fdatasyncs got faster because 90% of them had no size change to commit" in v[0], v[0]
    # without the key: forced commits stand in
    assert work.of_traces([report()])["nothing_how"] == "forced no journal/log commit"
    # --lite: neither
    assert work.of_traces([report(mode="lite")])["nothing_to_commit"] is None


def test_a_violating_baseline_is_no_baseline():
    a = report(dur={"ok": False, "overwrites": 5, "overwrite_bytes": 500})
    v = verdict.verdicts(explain.side_from_trace(a), explain.side_from_trace(report(us=900)))
    assert v[0].startswith("Not comparable: A broke durability") and "A is no baseline" in v[0], v
    assert not any(" cut " in x for x in v), v


def write_outdir(out, cells):
    """A minimal run-ab output directory: runs/NNN-cell-rK/{run.json,aoftrace.json}."""
    i = 0
    for cell, traces in cells.items():
        fs, io, rw = cell.split("-")
        for k, t in enumerate(traces, 1):
            i += 1
            d = out / "runs" / f"{i:03d}-{cell}-r{k}"
            d.mkdir(parents=True)
            (d / "aoftrace.json").write_text(json.dumps(t))
            (d / "run.json").write_text(json.dumps({"cell": cell, "fs": fs, "io": io, "rewrite": rw, "rep": k,
                                                    "requests": 3000, "ops_per_sec": 20000.0 + k}))


def test_output_directories_are_paired_by_cell(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_outdir(a, {"xfs-write-off": [report()], "ext4-write-off": [report()]})
    write_outdir(b, {"xfs-write-off": [report(us=700)], "xfs-uring-off": [report()]})
    r = explain_cli(str(a), str(b))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("=== ") == 0 and "xfs-write-off" in r.stdout and "ext4" not in r.stdout
    assert "No resolved difference" in r.stdout
    r = subprocess.run(["make", "-s", "explain", f"A={a}", f"B={b}"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "No resolved difference" in r.stdout, r.stderr
    # the forms it takes, in one line
    c = tmp_path / "c"
    write_outdir(c, {"ext4-uring-on": [report()]})
    for args, want in (([str(a), str(c)], "have no cell in common"),
                       ([str(a), str(tmp_path / "nope.json")], "is a run-ab output directory and the other side"),
                       ([str(tmp_path), str(tmp_path)], "OUT::cell"),
                       ([f"{a}::xfs-uring-on", f"{b}::xfs-uring-off"], "no runs of cell 'xfs-uring-on'")):
        r = explain_cli(*args)
        assert r.returncode == 2, (args, r.stdout)
        assert len(r.stderr.strip().splitlines()) == 1 and want in r.stderr and "Traceback" not in r.stderr, r.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "other"}')
    r = explain_cli(str(bad), str(bad))
    assert r.returncode == 2 and "is not an aoftrace JSON report" in r.stderr and "OUT::cell" in r.stderr, r.stderr


def test_cell_answer_for_the_report():
    a = analyze.aggregate([{"cell": "xfs-write-off", "fs": "xfs", "io": "write", "rewrite": "off", "rep": k,
                            "requests": 3000, "ops_per_sec": 20000.0 + 100 * k, "trace": report(us=800 + k),
                            "dir": f"/x/runs/{k}", "perf": {}, "perf_notes": [], "flags": []} for k in (1, 2, 3)])
    b = analyze.aggregate([{"cell": "xfs-uring-off", "fs": "xfs", "io": "uring", "rewrite": "off", "rep": k,
                            "requests": 3000, "ops_per_sec": 30000.0 + 100 * k,
                            "trace": report(us=500 + k, comps={"runqueue": 100 + k, "journal": 250, "block": 150}),
                            "dir": f"/y/runs/{k}", "perf": {}, "perf_notes": [], "flags": []} for k in (1, 2, 3)])
    va, vb = explain.side_from_cell(a["xfs-write-off"]), explain.side_from_cell(b["xfs-uring-off"])
    line = verdict.answer(va, vb, "io_uring", "with io_uring", "io")
    assert line.startswith("throughput 20200 ± 248 → 30200 ± 248 ops/s (+49.5%, resolved)"), line
    assert "flush 802 ± 2 → 502 ± 2 us (-37%, resolved)" in line, line
    assert "top cause: journal/log commit -151 us per flush (shorter journal" in line, line
