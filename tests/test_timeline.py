"""aoftrace -T: the trace-event timeline draws right in Perfetto: on every track, two complete ("X") slices are
either disjoint or one holds the other (Perfetto stacks slices by nesting and misdraws a partial overlap).
Block requests (queue depth > 1) and io-wq requests overlap in time, so aoftrace spreads them over lanes."""
import collections
import json
import os
import signal
import subprocess
import time

from aofab import env, tracing


BLOCK_NAMES = {"write", "write FUA", "flush", "read", "other", "?"}


def slices_by_track(doc):
    """The "X" slices as {(pid, tid): [(start_ns, end_ns, name)]}, in integer ns (ts and dur are microseconds with
    three decimals)."""
    tracks = collections.defaultdict(list)
    for e in doc["traceEvents"]:
        if e["ph"] == "X":
            s = round(e["ts"] * 1000)
            tracks[(e["pid"], e["tid"])].append((s, s + round(e["dur"] * 1000), e["name"]))
    return tracks


def partial_overlaps(slices):
    """The slices that overlap an earlier-starting one on the same track without nesting in it."""
    bad, stack = [], []
    for s, e, name in sorted(slices, key=lambda x: (x[0], -x[1])):
        while stack and stack[-1][1] <= s:
            stack.pop()
        if stack and stack[-1][1] < e:
            bad.append((stack[-1], (s, e, name)))
        stack.append((s, e, name))
    return bad


def max_concurrent(slices):
    """The most slices in progress at one time."""
    edges = sorted([(s, 1) for s, e, _ in slices] + [(e, -1) for s, e, _ in slices])
    depth = most = 0
    for _, d in edges:
        depth += d
        most = max(most, depth)
    return most


def load(path):
    """The timeline at `path`, checked for format: (its thread names by (pid, tid), its "X" slices by track)."""
    with open(path) as f:
        doc = json.load(f)
    assert tracing.trace_event_problems(doc) == []
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in doc["traceEvents"]
             if e["ph"] == "M" and e["name"] == "thread_name"}
    return doc, names, slices_by_track(doc)


def count_partial_overlaps(what, names, tracks):
    """Print the tracks with slices that overlap without nesting; return how many such slices there are."""
    bad = {k: partial_overlaps(v) for k, v in tracks.items()}
    for k, b in bad.items():
        if b:
            print(f"{what}: track {k} ({names.get(k, '?')}): {len(b)} of {len(tracks[k])} slices overlap "
                  f"without nesting, e.g. {b[0]}")
    nbad = sum(len(b) for b in bad.values())
    print(f"{what}: {nbad} of {sum(len(v) for v in tracks.values())} slices overlap without nesting")
    return nbad


def test_tracks_nest(loopfs, port, tmp_path):
    """Overlapping block requests (a rewrite's writeback beside the AOF's) and io-wq requests (IOSQE_ASYNC writes,
    8 in flight): no track has two slices that overlap without nesting; block requests spread over as many
    "AOF device N" lanes as were in flight at once, none lost."""
    trace = tmp_path / "trace.json"
    extra = ["--uring-async", "--uring-chunk", "512", "--uring-inflight", "8"]
    with env.aofwriter(loopfs.mnt, port, io="uring-linked", extra=extra) as srv:
        env.benchmark(srv.port, requests=20000, clients=20, size=1000)  # ~20 MB for the rewrites to write
        with tracing.Aoftrace(srv.pid, str(tmp_path / "a.json"), ["-T", str(trace)]) as at:
            srv.cli("BGREWRITEAOF")
            env.benchmark(srv.port, requests=6000, clients=20, size=1000)
            srv.cli("BGREWRITEAOF", check=False)
            time.sleep(0.5)
            assert at.stop() == 0, at.stderr
    rep = at.report()
    doc, names, tracks = load(trace)
    nbad = count_partial_overlaps(loopfs.fstype, names, tracks)

    block = [e for e in doc["traceEvents"] if e.get("cat") == "block"]
    assert block, "no block requests on the AOF device"
    assert len(block) == sum(k["count"] for iss in rep["block"].values() for k in iss.values())
    lanes = {(e["pid"], e["tid"]) for e in block}
    depth = max_concurrent([s for k in lanes for s in tracks[k]])
    assert all(s[2] in BLOCK_NAMES for k in lanes for s in tracks[k])  # block lanes hold block requests only
    print(f"{loopfs.fstype}: {len(block)} block requests, up to {depth} at once, on {len(lanes)} lanes")
    assert depth >= 2, "the workload made no overlapping block requests: the test tests nothing"
    assert nbad == 0
    assert all(names.get(k, "").startswith("AOF device") for k in lanes), [names.get(k) for k in lanes]
    # Records come in completion order: the best-fit lanes are as many as were in flight at once (one more
    # allowed for records from two CPUs that arrive a little out of order).
    assert len(lanes) <= depth + 1


def test_worker_lanes_nest(xfs, tmp_path):
    """O_DIRECT writes punted to io-wq (uringwriter --direct --force-async, 8 in flight per ring, traced with -a):
    a worker takes up the next write before the previous one's completion is posted, so its requests overlap;
    they go on extra lanes named after the worker, and no track has slices that overlap without nesting."""
    trace = tmp_path / "trace.json"
    w = env.spawn([os.path.join(env.BUILD, "uringwriter"), "--file", os.path.join(xfs.mnt, "out.bin"),
                   "--threads", "2", "--count", "1000000", "--depth", "8", "--direct", "--force-async"],
                  stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        with tracing.Aoftrace(w.pid, str(tmp_path / "a.json"), ["-a", "-T", str(trace)]) as at:
            time.sleep(1.5)
            assert at.stop() == 0, at.stderr
    finally:
        w.send_signal(signal.SIGKILL)
        w.wait()
    doc, names, tracks = load(trace)
    nbad = count_partial_overlaps("io-wq", names, tracks)
    by_worker = collections.defaultdict(list)  # the requests each worker ran, whichever lane they are on
    for e in doc["traceEvents"]:
        if e["ph"] == "X" and e["name"].startswith("io-wq ") and e["name"] != "io-wq queue":
            s = round(e["ts"] * 1000)
            by_worker[e.get("args", {}).get("worker", e["tid"])].append((s, s + round(e["dur"] * 1000), e["name"]))
    depth = max((max_concurrent(v) for v in by_worker.values()), default=0)
    extra = {k for k, v in tracks.items() if k[1] not in by_worker and any(s[2].startswith("io-wq ") for s in v)}
    print(f"io-wq: {len(by_worker)} workers, up to {depth} requests at once in one, {len(extra)} extra lanes")
    assert depth >= 2, "no worker ran overlapping requests: the test tests nothing"
    assert nbad == 0
    assert extra and all(f"(worker " in names.get(k, "") for k in extra), [names.get(k) for k in extra]
