"""aofwriter's durability under SIGKILL: four clients write while build/aofwriter is killed at random
moments, and every acknowledged write must be in what redis-server 7 loads (docs/aofwriter.md)."""
import os
import random
import shutil
import signal
import subprocess
import threading
import time

import pytest

from aofab import env
from aofwriter_helpers import IO_MODES, KILL_FS, Resp, check_aof, dump, redis_load

STRESS = os.environ.get("AOF_STRESS") == "1"
KILLS = 20
STRESS_KILLS = 200
OTHER_FS = {"xfs": "ext4", "ext4": "xfs"}


# ------------------------------------------------------------------ durability under SIGKILL

class AckClient(threading.Thread):
    """Writes unique keys (and overwrites of its own acknowledged keys) in pipelined batches and
    records every acknowledged SET; `inflight` holds what was sent but not acknowledged."""

    def __init__(self, port, prefix, seed):
        super().__init__(daemon=True)
        self.port, self.prefix, self.rnd = port, prefix, random.Random(seed)
        self.acked, self.inflight, self.keys = {}, {}, []
        self.error = None

    def run(self):
        seq = 0
        try:
            c = Resp(self.port, timeout=15)
        except OSError:
            return
        try:
            while True:
                batch = {}
                for _ in range(6):
                    batch[f"{self.prefix}:{seq}".encode()] = b"%d-%d" % (seq, self.rnd.getrandbits(32))
                    seq += 1
                for k in self.rnd.sample(self.keys, min(2, len(self.keys))):
                    batch[k] = b"over-%d-%d" % (seq, self.rnd.getrandbits(32))
                self.inflight = dict(batch)
                c.send_raw(b"".join(Resp.encode("SET", k, v) for k, v in batch.items()))
                for k, v in batch.items():
                    reply = c.read()
                    if reply != "OK":
                        self.error = f"SET {k!r}: {reply!r}"
                        return
                    if k not in self.acked:
                        self.keys.append(k)
                    self.acked[k] = v
                    del self.inflight[k]
        except (OSError, ConnectionError, ValueError):
            pass
        finally:
            c.close()


def run_kills(fs, port, io, kills):
    aofdir = os.path.join(fs.mnt, "appendonlydir")
    expected = {}
    total_acked = rewrite_kills = truncated = 0
    rnd = random.Random(f"{io}-{kills}")
    for it in range(kills):
        if it and it % 25 == 0:                     # bound the data set (and check time) of long runs
            shutil.rmtree(aofdir)
            expected = {}
        extra = []
        if it % 3 != 2:
            extra.append("--auto-rewrite")          # back-to-back rewrites: many kills hit one
        if io != "write" and it % 2:
            extra += ["--uring-chunk", "4k"]        # several linked chunks per flush
        with env.aofwriter(fs.mnt, port, io=io, extra=extra) as w:
            with Resp(port) as c:                  # it reloaded exactly what redis-server loaded
                assert c.call("DBSIZE") == len(expected), f"kill {it}: reload differs"
            clients = [AckClient(port, f"i{it}c{n}", rnd.random()) for n in range(4)]
            for t in clients:
                t.start()
            time.sleep(rnd.uniform(0.15, 0.6))
            os.kill(w.pid, signal.SIGKILL)
            w.proc.wait(10)
            for t in clients:
                t.join(30)
                assert not t.is_alive()
                assert t.error is None, t.error
        # the rewrite child dies with its parent (PR_SET_PDEATHSIG); its temp file shows it was running
        deadline = time.monotonic() + 5
        while subprocess.run(["pgrep", "-x", "aof-rewrite"], capture_output=True).returncode == 0:
            assert time.monotonic() < deadline, "rewrite child outlived its parent"
            time.sleep(0.02)
        rewrite_kills += any(n.startswith("temp-rewriteaof-") for n in os.listdir(aofdir))
        truncated += check_aof(aofdir) == "truncated"
        loaded = redis_load(aofdir, fs.mnt)
        for t in clients:
            total_acked += len(t.acked)
            for k, v in t.acked.items():
                allowed = {v, t.inflight.get(k, v)}
                assert loaded.get(k) in allowed, f"kill {it}: acknowledged {k!r} lost or wrong: {loaded.get(k)!r}"
            for k, v in t.inflight.items():
                if k not in t.acked:
                    assert loaded.get(k) in (None, v), f"kill {it}: {k!r} has a value never sent"
        fresh = {k for t in clients for k in list(t.acked) + list(t.inflight)}
        stray = {k for k in loaded if k not in expected and k not in fresh}
        assert not stray, f"kill {it}: keys nobody wrote: {sorted(stray)[:5]}"
        for k, v in expected.items():
            assert loaded.get(k) == v, f"kill {it}: earlier key {k!r} changed"
        expected = loaded
    # aofwriter itself reloads the final directory to the same state
    with env.aofwriter(fs.mnt, port, io=io):
        assert dump(port) == expected
    assert total_acked >= kills * 20, "the load client got too few writes acknowledged to mean anything"
    assert rewrite_kills >= 1, "no kill landed during a rewrite"
    print(f"{io} on {fs.fstype}: {kills} kills, {total_acked} acknowledged SETs, {rewrite_kills} kills during "
          f"a rewrite, {truncated} truncated tails")


@pytest.mark.parametrize("io", IO_MODES)
def test_durability_sigkill(io, port):
    with env.LoopFS(KILL_FS[io]) as fs:
        run_kills(fs, port, io, KILLS)


@pytest.mark.stress
@pytest.mark.skipif(not STRESS, reason="set AOF_STRESS=1 (make stress)")
@pytest.mark.parametrize("io", IO_MODES)
def test_durability_sigkill_stress(io, port):
    with env.LoopFS(OTHER_FS[KILL_FS[io]], size_mb=1024) as fs:
        run_kills(fs, port, io, STRESS_KILLS)
