"""The work a run did for its time: what it persisted, how many syncs and journal/log commits, how many block
bytes, and whether it kept the promises of `appendfsync always` (docs/durability.md).

A run that got faster because it stopped persisting is not a speed-up: aofab.verdict compares the work of A and
B (`compare`) before it says anything about time, and a side that broke durability is never reported as faster.

From aoftrace's JSON (docs/json.md): bytes persisted = `fs.size_growth_bytes` (the AOF's growth across flushes),
not `fs.bytes_written` (bytes handed to write(2)/io_uring: an overwrite hands bytes over and persists none);
syncs = the AOF's own fdatasyncs (`sync_by_file.aof` when the JSON has it, else `fdatasync`); commits =
`fs.journal_commits`; block bytes = every `block.<issuer>.write*.bytes`; syncs with nothing to commit =
count − `sync_by_file.aof.size_changed` when present, else count − `fdatasync.forced_commits` (full mode).
"""
from . import analyze

DUR_COUNTERS = ("overwrites", "overwrite_bytes", "growth_mismatches", "growth_mismatch_bytes", "replies_before_sync",
                "replies_unsynced_any_policy", "sync_errors", "writes_to_unlinked", "writing_flushes",
                "syncing_flushes")
# B's ratio below this share of A's (or the other way round) is less work, not noise: a correct AOF writer
# persists what it writes (ratio 1.0), syncs once per writing flush and commits once per sync, whatever its speed.
LESS_WORK = 0.8


def kb(n):
    """Bytes in plain words: 576 KB, 2.9 MB."""
    if n is None:
        return "?"
    if abs(n) >= 1e6:
        return f"{n / 1e6:.1f} MB"
    if abs(n) >= 1e3:
        return f"{n / 1e3:.0f} KB"
    return f"{n:.0f} bytes"


def _aof_sync(t):
    """The AOF's own syncs: sync_by_file.aof (aoftrace with the per-file split), else fdatasync."""
    s = analyze.dig(t, "sync_by_file.aof")
    return (s, True) if isinstance(s, dict) else (t.get("fdatasync") or {}, False)


def of_traces(traces):
    """Pool the work of several aoftrace JSON reports (the repetitions of a cell, or one report)."""
    w = {"flushes": 0, "syncs": 0, "sync_total_us": 0.0, "flush_total_us": 0.0, "bytes_written": 0, "growth": 0,
         "journal_commits": 0, "forced_commits": 0, "size_changed": 0, "block_bytes": 0, "aof_block_bytes": 0,
         "by_file": True, "full": True, "has_block": True, "policies": set(), "ok": True, "max_unsynced_us": 0.0,
         "n": 0}
    w.update({k: 0 for k in DUR_COUNTERS})
    for t in traces:
        if not t:
            continue
        w["n"] += 1
        fl = t.get("flush") or {}
        s, by_file = _aof_sync(t)
        w["by_file"] &= by_file
        w["full"] &= t.get("mode", "full") != "lite" and "forced_commits" in (t.get("fdatasync") or {})
        w["flushes"] += fl.get("count", 0)
        w["flush_total_us"] += fl.get("total_us", 0.0)
        w["syncs"] += s.get("count", 0)
        w["sync_total_us"] += s.get("total_us", 0.0)
        w["size_changed"] += s.get("size_changed", 0) or 0
        w["aof_block_bytes"] += s.get("block_bytes", 0) or 0
        w["forced_commits"] += s.get("forced_commits", 0) or 0
        fs = t.get("fs") or {}
        w["bytes_written"] += fs.get("bytes_written", 0)
        w["growth"] += fs.get("size_growth_bytes", 0)
        w["journal_commits"] += fs.get("journal_commits", 0)
        blk = t.get("block")
        if isinstance(blk, dict) and blk:
            w["block_bytes"] += sum(v.get("bytes", 0) for iss in blk.values() if isinstance(iss, dict)
                                    for k, v in iss.items() if k.startswith("write") and isinstance(v, dict))
        else:
            w["has_block"] = False
        d = t.get("durability")
        if d:
            w["ok"] &= bool(d.get("ok"))
            w["policies"].add(d.get("appendfsync", "unknown"))
            for k in DUR_COUNTERS:
                w[k] += d.get(k, 0) or 0
            w["max_unsynced_us"] = max(w["max_unsynced_us"], d.get("max_unsynced_window_us", 0.0) or 0.0)
        else:
            w["policies"].add("not checked")
    w["policies"] = sorted(w["policies"])
    w["policy"] = ("always" if w["policies"] == ["always"] else
                   "not always" if "not always" in w["policies"] else
                   "/".join(w["policies"]) or "unknown")
    return derive(w)


def derive(w):
    """Ratios that do not depend on speed: a correct `always` writer has persisted ≈ 1, syncs/flush ≈ 1,
    commits/sync ≈ 1 (more with a rewrite's extra syncs)."""
    def ratio(a, b):
        return a / b if b else None
    w["persisted"] = ratio(w["growth"], w["bytes_written"])
    w["syncs_per_flush"] = ratio(w["syncs"], w["flushes"])
    w["commits_per_sync"] = ratio(w["journal_commits"], w["syncs"])
    # the shares compared for "less work", capped at 1: a rewrite's extra syncs and commits (manifest, directory,
    # temporary file) are not work done for the AOF's writes
    w["sync_coverage"] = (ratio(w["syncing_flushes"], w["writing_flushes"]) if w["writing_flushes"]
                          else ratio(w["syncs"], w["flushes"]))
    for k, src in (("sync_coverage", "sync_coverage"), ("persisted_share", "persisted"),
                   ("commit_share", "commits_per_sync")):
        w[k] = None if w[src] is None else min(1.0, w[src])
    w["block_per_sync"] = ratio(w["block_bytes"], w["syncs"]) if w["has_block"] else None
    # syncs that had nothing to commit: no size change (per-file split), else no forced journal/log commit
    if w["by_file"]:
        w["nothing_to_commit"], w["nothing_how"] = w["syncs"] - w["size_changed"], "had no size change to commit"
    elif w["full"]:
        w["nothing_to_commit"], w["nothing_how"] = (w["syncs"] - w["forced_commits"],
                                                    "forced no journal/log commit")
    else:
        w["nothing_to_commit"], w["nothing_how"] = None, None
    # cost per unit of work
    w["us_per_kb"] = ratio(w["flush_total_us"], w["growth"] / 1024.0) if w["growth"] > 0 else None
    w["us_per_commit"] = ratio(w["sync_total_us"], w["journal_commits"])
    return w


def durability_problems(w, other=None, name="B"):
    """Plain sentences, one per broken promise of `name` (empty: none). `other`: the side it is compared with —
    a side whose policy is weaker than the other's `always` (it stopped syncing) counts too."""
    out = []
    if w["overwrites"]:
        out.append(f"{w['overwrites']} of {name}'s writes landed below the end of the AOF ({kb(w['overwrite_bytes'])} "
                   "of acknowledged data overwritten)")
    if w["growth_mismatches"]:
        out.append(f"{w['growth_mismatches']} of its flushes did not grow the file by what they wrote "
                   f"({kb(w['growth_mismatch_bytes'])} short)")
    if w["replies_before_sync"]:
        out.append(f"{w['replies_before_sync']} replies left before their data was synced")
    if w["sync_errors"]:
        out.append(f"{w['sync_errors']} syncs or AOF writes failed")
    if w["writes_to_unlinked"]:
        out.append(f"{w['writes_to_unlinked']} writes went to an AOF file that was unlinked or renamed away")
    weaker = other is not None and other["policy"] == "always" and w["policy"] != "always" and w["n"]
    if weaker:
        out.append(f"{name} synced in {w['syncing_flushes']} of its {w['writing_flushes']} writing flushes "
                   f"(the other side in {other['syncing_flushes']} of {other['writing_flushes']}): it no longer "
                   "kept appendfsync always"
                   + (f", and {w['replies_unsynced_any_policy']} replies left with AOF bytes unsynced (for up to "
                      f"{w['max_unsynced_us'] / 1000:.0f} ms)" if w["replies_unsynced_any_policy"] else ""))
    return out


def less_work(wa, wb):
    """[(what, a_value, b_value)] for the ratios where B did less than LESS_WORK of A's work per operation."""
    out = []
    for k in ("persisted_share", "sync_coverage", "commit_share"):
        a, b = wa.get(k), wb.get(k)
        if a and b is not None and b < LESS_WORK * a:
            out.append((k, a, b))
    return out


def missing_work_sentence(wa, wb, name="B", faster=True, other="A", skip=()):
    """The plain-words reason B's syncs were cheaper, when it did less work ("" when it did not); `skip`: the
    shares already said (durability_problems says when a side stopped syncing)."""
    lw = dict((k, (a, b)) for k, a, b in less_work(wa, wb) if k not in skip)
    if not lw:
        return ""
    parts = []
    ntc = wb.get("nothing_to_commit")
    if wb["syncs"] and ntc is not None and ntc > 0 and ("persisted_share" in lw or "commit_share" in lw):
        pct = 100.0 * ntc / wb["syncs"]
        lead = f"{name}'s fdatasyncs got faster because" if faster else f"{name}'s fdatasyncs had less to do:"
        parts.append(f"{lead} {pct:.0f}% of them {wb['nothing_how']}")
    if "persisted_share" in lw:
        s = f"{name} wrote {kb(wb['bytes_written'])} but its file grew {kb(wb['growth'])}"
        if wb["overwrites"]:
            s += " — its writes landed below the end of the file"
        parts.append(s)
    if "sync_coverage" in lw:
        parts.append(f"{name} synced in {wb['syncing_flushes']} of its {wb['writing_flushes']} writing flushes "
                     f"({other}: {wa['syncing_flushes']} of {wa['writing_flushes']}) and made {wb['syncs']} "
                     f"fdatasyncs for {wb['flushes']} flushes")
    if "commit_share" in lw and not parts[:1]:
        parts.append(f"{name}'s syncs forced {wb['commits_per_sync']:.2f} journal/log commits each "
                     f"({other} {wa['commits_per_sync']:.2f})")
    return ": ".join(parts[:1]) + ("; " + "; ".join(parts[1:]) if len(parts) > 1 else "")


def work_line(wa, wb):
    """One line: the work of both sides, per unit, and the cost per unit of work beside the cost per op."""
    def one(w):
        s = (f"persisted {kb(w['growth'])} of {kb(w['bytes_written'])} written in {w['flushes']} flushes and "
             f"{w['syncs']} fdatasyncs, {w['journal_commits']} journal/log commits")
        if w["commits_per_sync"] is not None:
            s += f" ({w['commits_per_sync']:.2f} per sync)"
        if w["block_per_sync"] is not None:
            s += f", {kb(w['block_per_sync'])} of block writes per sync"
        cost = []
        if w["us_per_kb"] is not None:
            cost.append(f"{w['us_per_kb']:.1f} us of flush per KB persisted")
        elif w["flushes"]:
            cost.append("nothing persisted")
        if w["us_per_commit"] is not None:
            cost.append(f"{w['us_per_commit']:.0f} us of fdatasync per commit")
        return s + ("; " + ", ".join(cost) if cost else "")
    return f"Work: A {one(wa)}. B {one(wb)}."
