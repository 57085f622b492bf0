"""make run-ab (tools/aofab/runab.py, analyze.py, report.py, explain.py): a QUICK run end to end, the report's
figures against the raw JSON, figures and flame graphs, the explanation engine on synthetic and real pairs,
Ctrl-C / SIGTERM cleanup, and bad settings. About 1.5 minutes on the 2-core VM."""
import contextlib
import copy
import glob
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

from aofab import analyze, env, explain
from aofab.env import ROOT

PY = os.path.join(ROOT, ".venv", "bin", "python")

WATCHED = ("aofwriter", "aoftrace", "redis-benchmark", "perf")


def our_pids():
    """pids of the processes a run starts (by executable name)."""
    out = set()
    for d in glob.glob("/proc/[0-9]*"):
        try:
            comm = open(os.path.join(d, "comm")).read().strip()
        except OSError:
            continue
        if comm in WATCHED:
            out.add(int(os.path.basename(d)))
    return out


def snapshot():
    """What exists now that a run could leave behind: processes by name, and loop devices, mounts and
    directories of run-ab's private directories (/var/tmp/aofab-runab-*)."""
    loops = {l.split(":")[0] for l in subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout.splitlines()
             if "aofab-runab-" in l}
    mounts = {l.split()[1] for l in open("/proc/mounts") if "aofab-runab-" in l}
    return {"pids": our_pids(), "loops": loops, "mounts": mounts, "dirs": set(glob.glob("/var/tmp/aofab-runab-*"))}


def leftovers(before):
    """What appeared since `before` (a snapshot()) and is still there."""
    now = snapshot()
    return (sorted(now["loops"] - before["loops"]), sorted(now["mounts"] - before["mounts"]),
            sorted(now["pids"] - before["pids"]), sorted(now["dirs"] - before["dirs"]))


def assert_clean(before, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        loops, mounts, procs, dirs = leftovers(before)
        if not (loops or mounts or procs or dirs) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not loops, loops
    assert not mounts, mounts
    assert not procs, [open(f"/proc/{p}/cmdline").read() for p in procs if os.path.exists(f"/proc/{p}")]
    assert not dirs, dirs


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("runab") / "out")
    before = snapshot()
    t0 = time.monotonic()
    r = subprocess.run(["make", "-s", "run-ab", "QUICK=1", f"OUT={out}"], cwd=ROOT, capture_output=True, text=True,
                       timeout=240)
    wall = time.monotonic() - t0
    assert r.returncode == 0, r.stderr[-3000:]
    print(f"QUICK run: {wall:.0f} s")
    return {"out": out, "before": before, "wall": wall, "stdout": r.stdout, "stderr": r.stderr}


def table(md, header_start):
    """Rows (lists of cells) of the markdown table whose header line starts with header_start."""
    lines = md.splitlines()
    for i, l in enumerate(lines):
        if l.startswith(header_start):
            rows = []
            for l2 in lines[i + 2:]:
                if not l2.startswith("|"):
                    break
                rows.append([c.strip() for c in l2.strip().strip("|").split("|")])
            return rows
    raise AssertionError(f"no table starting with {header_start!r}")


def runs_of(out):
    by = {}
    for d in sorted(glob.glob(os.path.join(out, "runs", "*"))):
        meta = json.load(open(os.path.join(d, "run.json")))
        trace = json.load(open(os.path.join(d, "aoftrace.json")))
        by.setdefault(meta["cell"], []).append((meta, trace, d))
    return by


def test_quick_run_succeeds_within_budget_and_cleans_up(quick):
    assert quick["wall"] < 180
    assert_clean(quick["before"])
    out = quick["out"]
    for f in ("report.md", "summary.json", "settings.json", "plots/latency.png", "plots/components.png",
              "plots/throughput.png"):
        assert os.path.exists(os.path.join(out, f)), f
    by = runs_of(out)
    # both io methods and both rewrite settings
    assert {k.split("-", 1)[1] for k in by} >= {"write-off", "write-on", "uring-off", "uring-on"}
    for cell, rs in by.items():
        for meta, trace, d in rs:
            for f in ("aoftrace.json", "offcpu.folded", "benchmark.csv", "perf.txt", "run.json"):
                assert os.path.getsize(os.path.join(d, f)) > 0, (d, f)
            assert trace["schema"] == "aoftrace/1"
            assert trace["flush"]["count"] > 0 and trace["fdatasync"]["count"] > 0
            assert "task-clock" in open(os.path.join(d, "perf.txt")).read()
            if meta["rewrite"] == "on":
                assert trace["rewrite"]["count"] > 0, "rewrites must overlap the measurement"


def test_one_representative_timeline(quick):
    """One run (the first repetition of the busiest cell) carries a trace-event timeline, linked from the report."""
    from aofab import tracing
    out = quick["out"]
    tls = glob.glob(os.path.join(out, "runs", "*", "timeline.json"))
    assert len(tls) == 1, tls
    doc = json.load(open(tls[0]))
    assert tracing.trace_event_problems(doc) == []
    cats = {e.get("cat") for e in doc["traceEvents"]}
    assert {"flush", "block"} <= cats, cats
    assert os.path.relpath(tls[0], out) in open(os.path.join(out, "report.md")).read()


def test_report_carries_every_runs_durability_verdict(quick):
    out = quick["out"]
    md = open(os.path.join(out, "report.md")).read()
    rows = table(md, "| run | appendfsync seen | verdict |")
    runs = sorted(os.listdir(os.path.join(out, "runs")))
    assert sorted(r[0] for r in rows) == runs
    for name, seen, verdict in rows:
        trace = json.load(open(os.path.join(out, "runs", name, "aoftrace.json")))
        assert seen == trace["durability"]["appendfsync"] == "always"
        assert verdict == "OK", (name, verdict)     # aofwriter's correct modes


def test_report_figures_equal_the_raw_json(quick):
    out = quick["out"]
    md = open(os.path.join(out, "report.md")).read()
    by = runs_of(out)
    # throughput: the mean of the runs' redis-benchmark CSV
    rows = table(md, "| cell | fs | io | rewrite | reps | ops/s mean")
    assert len(rows) == len(by)
    for row in rows:
        cell = row[0]
        ops = []
        for meta, trace, d in by[cell]:
            for line in open(os.path.join(d, "benchmark.csv")):
                cells = [c.strip('"') for c in line.strip().split('","')]
                if cells[0] == "SET":
                    ops.append(float(cells[1]))
        assert abs(float(row[5]) - statistics.fmean(ops)) <= 0.51, (cell, row)
    # latency: count pooled, mean = total/count, percentiles = median across reps of the JSON's
    rows = table(md, "| cell | op | count | mean | p50")
    assert len(rows) == 2 * len(by)
    for row in rows:
        cell, op = row[0], row[1]
        traces = [t for _, t, _ in by[cell]]
        assert int(row[2]) == sum(t[op]["count"] for t in traces)
        mean = sum(t[op]["total_us"] for t in traces) / sum(t[op]["count"] for t in traces)
        assert abs(float(row[3]) - mean) <= 0.051, (cell, op)
        n = min(t[op]["count"] for t in traces)
        for col, key, q in ((4, "p50_us", 0.5), (6, "p99_us", 0.99), (7, "p999_us", 0.999), (9, "max_us", None)):
            assert abs(float(row[col].rstrip("*")) - statistics.median(t[op][key] for t in traces)) <= 0.051, \
                (cell, op, key)
            # a percentile with fewer than 10 operations beyond it in a run is marked not resolved
            assert row[col].endswith("*") == (q is not None and n * (1 - q) < 10), (cell, op, key, row[col])
        assert row[8] == "n/a"     # p99.99: not in aoftrace's JSON
    # components per fdatasync: components_us / count
    rows = table(md, "| cell | total | ")
    hdr = [l for l in md.splitlines() if l.startswith("| cell | total | ")][0]
    names = [c.strip() for c in hdr.strip().strip("|").split("|")]
    rq = names.index("run-queue wait")
    jn = names.index("journal/log commit")
    for row in rows:
        traces = [t for _, t, _ in by[row[0]]]
        n = sum(t["flush"]["count"] for t in traces)
        for col, comp in ((rq, "runqueue"), (jn, "journal")):
            want = sum(t["flush"]["components_us"][comp] for t in traces) / n
            assert abs(float(row[col]) - want) <= 0.051, (row[0], comp)


def test_plots_and_flame_graphs(quick):
    import matplotlib.image as mpimg
    out = quick["out"]
    for name in ("latency", "components", "throughput"):
        img = mpimg.imread(os.path.join(out, "plots", f"{name}.png"))
        assert img.shape[0] > 200 and img.shape[1] > 300
        assert img.std() > 0.02, f"{name}.png looks blank"
    md = open(os.path.join(out, "report.md")).read()
    svgs = glob.glob(os.path.join(out, "flame", "*.svg"))
    folded = glob.glob(os.path.join(out, "flame", "*.folded"))
    assert folded
    if not svgs:
        assert "without" in md or "no SVG" in md
        pytest.skip("inferno-flamegraph not installed: folded stacks only")
    for svg in svgs:
        root = ET.parse(svg).getroot()
        text = " ".join(t for t in root.itertext())
        assert "fdatasync" in text and ("xlog" in text or "jbd2" in text or "journal" in text), svg
        assert os.path.relpath(svg, out) in md


def synthetic(count=100, base=None, add=None):
    comps = {c: 0.0 for c in analyze.COMPONENTS}
    comps.update(base or {})
    for c, v in (add or {}).items():
        comps[c] += v
    per_op = dict(comps)
    op = {"count": count, "total_us": sum(per_op.values()) * count, "components_us": {c: v * count for c, v in per_op.items()}}
    op["avg_us"] = op["total_us"] / count
    return {"schema": "aoftrace/1", "flush": copy.deepcopy(op), "fdatasync": copy.deepcopy(op),
            "rewrite": {"count": 0, "child_write_bytes": 0}}


def test_explain_names_the_injected_difference(tmp_path):
    base = {"oncpu": 50, "runqueue": 200, "block": 100, "journal": 300}
    a = synthetic(100, base)
    b = synthetic(80, base, {"journal": 500, "runqueue": 4, "oncpu": 3, "block": 3})
    va, vb = explain.side_from_trace(a, 10000), explain.side_from_trace(b, 10000)
    d = explain.diff(va, vb)
    for op in ("flush", "fdatasync"):
        assert d[op]["rows"][0][0] == "journal"
        assert abs(d[op]["rows"][0][3] - 500) < 1e-6
        assert abs(d[op]["delta"] - 510) < 1e-6
    # one run per side: nothing is resolved, the components are moves, not causes
    v = explain.verdicts(va, vb, "B", "in B")
    assert v[0].startswith("No resolved difference"), v
    fdl = [x for x in v if x.startswith("fdatasync:")][0]
    assert "not resolved" in fdl and "journal/log commit +500 us" in fdl and "mostly" not in fdl, fdl
    # three runs per side, a little noise on each: resolved, and the journal named as the cause
    ra = [synthetic(100, {k: x + j for k, x in base.items()}) for j in (-2, 0, 2)]
    rb = [synthetic(80, {k: x + j for k, x in base.items()}, {"journal": 500, "runqueue": 4, "oncpu": 3, "block": 3})
          for j in (-2, 0, 2)]
    va3, vb3 = explain.side_from_traces(ra, 30000), explain.side_from_traces(rb, 30000)
    v = explain.verdicts(va3, vb3, "B", "in B")
    fdl = [x for x in v if "fdatasync" in x and "grew" in x][0]
    assert "mostly journal/log commit (+500 us" in fdl, fdl
    assert "510 us" in fdl and "do not overlap" in fdl
    # and the other way round: a cut, journal first
    v = explain.verdicts(vb3, va3, "A", "in A")
    assert "cut flush time by 510 us" in v[0] and "500 us of it from journal/log commit" in v[0], v
    # the command line on JSON files
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(json.dumps(a))
    pb.write_text(json.dumps(b))
    r = subprocess.run([PY, "-m", "aofab.explain", str(pa), str(pb)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    i = lines.index([l for l in lines if l.startswith("fdatasync:")][0])
    assert lines[i + 2].split()[0] == "journal/log", lines[i:i + 4]
    assert "+500.0" in lines[i + 2]
    assert "No resolved difference" in r.stdout.split("Verdict:")[1].splitlines()[1]


def test_explain_on_a_real_pair(quick):
    out = quick["out"]
    fs = sorted({k.split("-")[0] for k in runs_of(out)})[0]
    r = subprocess.run([PY, "-m", "aofab.explain", f"{out}::{fs}-write-off", f"{out}::{fs}-write-on"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    grew = [m.group(1) for m in re.finditer(r"^  (.+?)\s+-?\d+\.\d\s+-?\d+\.\d\s+\+(\d+\.\d)", r.stdout, re.M)
            if float(m.group(2)) > 0]
    assert grew, r.stdout
    verdict = r.stdout.split("Verdict:")[1]
    assert any(explain.NAMES[c] in verdict for c in explain.NAMES if explain.NAMES[c] in grew), r.stdout
    # a single run directory works too (request count from run.json → per-SET column)
    d = sorted(glob.glob(os.path.join(out, "runs", "*")))
    r = subprocess.run(["make", "-s", "explain", f"A={d[0]}", f"B={d[1]}"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "B-A per SET" in r.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_cleans_up(tmp_path, sig):
    before = snapshot()
    out = str(tmp_path / "out")
    p = subprocess.Popen([PY, "-m", "aofab.runab", "--quick=1", f"--out={out}"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(5)
    assert p.poll() is None, "the run ended before the signal"
    # it must be in the middle of something
    assert leftovers(before)[0], "no loop device while running?"
    p.send_signal(sig)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 130, stderr
    assert "interrupted; cleaned up" in stderr
    assert "Traceback" not in stderr, stderr
    assert_clean(before)


@pytest.mark.parametrize("args", [["--fs=btrfs"], ["--io=foo"], ["--reps=0"], ["--server=/nonexistent"],
                                  ["--cpus=7:0"], ["--requests=abc"]])
def test_bad_settings(tmp_path, args):
    before = snapshot()
    out = tmp_path / "out"
    r = subprocess.run([PY, "-m", "aofab.runab", f"--out={out}", *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2, (args, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("run-ab: ")
    assert not out.exists()
    assert_clean(before)


def test_bad_setting_through_make(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run(["make", "-s", "run-ab", "FS=btrfs", f"OUT={out}"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    assert "run-ab: unsupported file system 'btrfs'" in r.stderr
    assert not out.exists()


def test_uftrace_cross_check(tmp_path):
    """make run-ab UFTRACE=1: aofwriter's -pg build under uftrace record, aoftrace on the same process; the report's
    "uftrace cross-check" agrees with aoftrace within 5% (counts and totals), and nothing is left behind."""
    def uftrace_pids():
        pids = set()
        for d in glob.glob("/proc/[0-9]*"):
            try:
                if open(os.path.join(d, "comm")).read().strip() == "uftrace":
                    pids.add(int(os.path.basename(d)))
            except OSError:
                pass
        return pids
    before, ubefore = snapshot(), uftrace_pids()
    out = str(tmp_path / "out")
    t0 = time.monotonic()
    r = subprocess.run(["make", "-s", "run-ab", "QUICK=1", "UFTRACE=1", "FS=xfs", "IO=write", "REWRITE=off",
                        f"OUT={out}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    wall = time.monotonic() - t0
    assert r.returncode == 0, r.stderr[-3000:]
    assert wall <= 60, wall
    assert_clean(before)
    assert not uftrace_pids() - ubefore
    assert os.access(os.path.join(ROOT, "build", "pg", "aofwriter"), os.X_OK)
    md = open(os.path.join(out, "report.md")).read()
    assert "## uftrace cross-check" in md
    rows = table(md, "| run | function | uftrace calls")
    (d,) = glob.glob(os.path.join(out, "runs", "*"))
    trace = json.load(open(os.path.join(d, "aoftrace.json")))
    meta = json.load(open(os.path.join(d, "run.json")))
    assert meta["uftrace"]["rc"] == 0 and "uftrace record" in meta["uftrace"]["command"]
    assert os.path.getsize(os.path.join(d, "uftrace.txt")) > 0 and os.path.isdir(os.path.join(d, "uftrace.data"))
    fl, fd = trace["flush"], trace["fdatasync"]
    want = {"flushAppendOnlyFile, all calls": (fl["calls"], fl["total_us"] + fl["empty_total_us"]),
            "flushAppendOnlyFile, calls that wrote": (fl["count"], fl["total_us"]),
            "fdatasync+fsync, main thread": (fd["count"], fd["total_us"])}
    assert sorted(row[1] for row in rows) == sorted(want)
    for row in rows:
        u_calls, a_calls, u_ms, a_ms = int(row[2]), int(row[3]), float(row[5]), float(row[6])
        # aoftrace's side is the JSON's; uftrace's side saw the same calls
        assert a_calls == want[row[1]][0] and abs(a_ms - want[row[1]][1] / 1000) <= 0.0006, row
        assert a_calls > 100 and a_ms > 10, row
        assert abs(u_calls / a_calls - 1) <= 0.05, row
        assert abs(u_ms / a_ms - 1) <= 0.05, row
        assert abs(float(row[4]) - u_calls / a_calls) <= 0.0001 and abs(float(row[7]) - u_ms / a_ms) <= 0.001, row
        assert row[8] == "✓", row
    assert "uftrace:" not in md.split("## Flags")[1]


def test_uftrace_with_server_is_refused(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([PY, "-m", "aofab.runab", f"--out={out}", "--uftrace=1", "--server=/usr/bin/redis-server"],
                       cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == "run-ab: UFTRACE=1 runs aofwriter's -pg build under uftrace; it does not apply to SERVER"
    assert not out.exists()


# --- a port taken between env.free_port and the server's bind ----------------------------------------------------

@pytest.fixture
def taken_port(monkeypatch):
    """A port held listening on 127.0.0.1 (and never answered), which env.free_port hands out first, as if it were
    taken the instant after it was picked; later calls pick truly free ones."""
    with contextlib.closing(socket.socket()) as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        picks, real = [port], env.free_port
        monkeypatch.setattr(env, "free_port", lambda: picks.pop() if picks else real())
        yield port


@pytest.mark.parametrize("kind", ["redis-server", "aofwriter"])
def test_server_starts_again_on_a_fresh_port(kind, taken_port, tmp_path, capfd):
    """The server's bind finds the port taken: it is started again on another one, not failed."""
    start = env.redis_server if kind == "redis-server" else env.aofwriter
    with start(str(tmp_path), env.free_port(), log=str(tmp_path / "server.log"), port_tries=env.PORT_TRIES) as srv:
        assert srv.port != taken_port and f"--port {srv.port}" in " ".join(srv.argv)
        assert env.holds_listener(srv.pid, srv.port) and not env.holds_listener(srv.pid, taken_port)
        assert srv.cli("SET", "k", "v") == "OK"
    assert f"port {taken_port} was taken before the server bound it" in capfd.readouterr().err
    assert "Address already in use" in (tmp_path / "server.log").read_text()
    # without port_tries, the same bind failure is an error (what every start did before)
    with pytest.raises(env.ServerExited):
        with env.aofwriter(str(tmp_path), taken_port):
            pass


def test_a_server_already_answering_on_the_port_is_not_taken_for_ours(tmp_path):
    """The port's taker answers PING itself (another test's redis-server): its +PONG must not pass for our
    server's; ours fails to bind and starts again elsewhere."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    with env.redis_server(str(a), env.free_port()) as other:
        with env.aofwriter(str(b), other.port, port_tries=env.PORT_TRIES) as ours:
            assert ours.port != other.port and env.holds_listener(ours.pid, ours.port)
            assert "aofwriter" in ours.cli("INFO", "server")


def test_run_ab_run_survives_a_taken_port(taken_port, tmp_path, monkeypatch):
    """make run-ab's Errno 98 (Address already in use) on a run's server: one run of run-ab's, on a loop-mounted
    XFS, whose first port is taken, succeeds on a fresh one and records that one's command line."""
    from aofab import runab
    monkeypatch.setattr(env, "interrupted", False)
    s = runab.parse_settings(["--quick=1", "--fs=xfs", "--io=write", "--rewrite=off", "--requests=2000",
                              "--preload=0", f"--out={tmp_path / 'out'}"])
    s.warmup = 200
    cell = {"fs": "xfs", "io": "write", "rewrite": "off", "key": "xfs-write-off"}
    with env.LoopFS("xfs") as fs:
        meta, rdir = runab.one_run(s, cell, 0, 1, fs, hw_ok=False)
    assert "error" not in meta, meta["error"]
    assert meta["ops_per_sec"] > 0
    port = int(meta["server_argv"][meta["server_argv"].index("--port") + 1])
    assert port != taken_port
    assert "Address already in use" in open(os.path.join(rdir, "server.log")).read()
    assert json.load(open(os.path.join(rdir, "aoftrace.json")))["flush"]["count"] > 0
