"""Running the tracers: aoftrace itself, and bpftrace as an independent cross-check.

bpftrace's `tracepoint:` probes read tracepoint ids from tracefs, which a fresh machine does not mount:
`tracefs()` mounts it for the duration of a `with` block and unmounts it only if it mounted it.
"""
import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time

from . import env

TRACEFS = "/sys/kernel/tracing"
AOFTRACE = os.path.join(env.BUILD, "aoftrace")


@contextlib.contextmanager
def tracefs():
    mounted = False
    if not os.path.exists(os.path.join(TRACEFS, "events")):
        env.run(["mount", "-t", "tracefs", "tracefs", TRACEFS])
        mounted = True
    try:
        yield TRACEFS
    finally:
        if mounted:
            env.run(["umount", TRACEFS], check=False)


class _Proc:
    """A tracer process whose stdout is collected by a thread; `ready` is set when `marker` shows."""

    def __init__(self, argv, marker, timeout=30.0):
        self.argv, self.marker, self.timeout = argv, marker, timeout
        self.lines = []
        self.ready = threading.Event()
        self.proc = None

    def _reader(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            if self.marker in line:
                self.ready.set()

    def __enter__(self):
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.thread = threading.Thread(target=self._reader, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + self.timeout
        while not self.ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                raise RuntimeError(f"{self.argv[0]} did not become ready: rc={self.proc.returncode} "
                                   f"stderr={self.proc.stderr.read().strip()!r}")
        return self

    def stop(self, sig=signal.SIGINT, timeout=15.0):
        """Send `sig`, wait for the exit; returns the exit code (SIGKILL after `timeout`)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.thread.join(5)
        if not self.proc.stderr.closed:     # a second stop() (the with-exit) keeps what the first read
            self.stderr = self.proc.stderr.read()
            self.proc.stderr.close()
        return self.proc.returncode

    @property
    def output(self):
        return "".join(self.lines)

    def __exit__(self, *exc):
        self.stop(signal.SIGKILL if exc[0] else signal.SIGINT)
        return False


class Aoftrace(_Proc):
    """`aoftrace -p PID --json FILE [args]`; `.report()` loads the JSON after stop()."""

    def __init__(self, pid, json_path, args=()):
        self.json_path = json_path
        super().__init__([AOFTRACE, "-p", str(pid), "--json", json_path, *args], "Tracing ")

    def report(self):
        with open(self.json_path) as f:
            return json.load(f)


# The flushes that wrote, and the main thread's fdatasyncs, counted and timed by bpftrace alone.
BPFTRACE_FLUSH = r"""
uprobe:BINARY:flushAppendOnlyFile /pid == PID/ { @fs[tid] = nsecs; @w[tid] = 0; }
tracepoint:syscalls:sys_enter_write /pid == PID && @fs[tid]/ { @w[tid] = 1; }
uretprobe:BINARY:flushAppendOnlyFile /pid == PID && @fs[tid]/ {
    if (@w[tid]) { @flush_count = count(); @flush_ns = sum(nsecs - @fs[tid]); }
    delete(@fs[tid]); delete(@w[tid]);
}
tracepoint:syscalls:sys_enter_fdatasync,tracepoint:syscalls:sys_enter_fsync /tid == PID/ { @ss[tid] = nsecs; }
tracepoint:syscalls:sys_exit_fdatasync,tracepoint:syscalls:sys_exit_fsync /tid == PID && @ss[tid]/ {
    @sync_count = count(); @sync_ns = sum(nsecs - @ss[tid]); delete(@ss[tid]);
}
END { clear(@fs); clear(@w); clear(@ss); }
"""


class Bpftrace(_Proc):
    def __init__(self, script):
        super().__init__(["bpftrace", "-e", script], "Attaching ")

    def maps(self):
        """Scalar maps printed at exit, as {name: int}."""
        return {m.group(1): int(m.group(2)) for m in re.finditer(r"^@(\w+): (\d+)$", self.output, re.M)}


def bpftrace_flush(pid):
    exe = os.readlink(f"/proc/{pid}/exe")
    return Bpftrace(BPFTRACE_FLUSH.replace("BINARY", exe).replace("PID", str(pid)))


# io_uring requests of a process by opcode, as the tracepoints count them: submitted, queued to io-wq
# (io_uring_queue_async_work) and, of those, hashed (its `rw` field carries io_wq_is_hashed()).
BPFTRACE_URING = r"""
tracepoint:io_uring:io_uring_submit_req /pid == PID/ { @sub[args->opcode] = count(); }
tracepoint:io_uring:io_uring_queue_async_work /pid == PID/ { @queued[args->opcode] = count(); @hashed[args->opcode] = sum(args->rw); }
"""


def bpftrace_uring(pid):
    return Bpftrace(BPFTRACE_URING.replace("PID", str(pid)))


def keyed_maps(output):
    """Maps printed as @name[key]: value, as {name: {key: int}}."""
    out = {}
    for m in re.finditer(r"^@(\w+)\[(\d+)\]: (\d+)$", output, re.M):
        out.setdefault(m.group(1), {})[int(m.group(2))] = int(m.group(3))
    return out


def trace_event_problems(doc):
    """What keeps `doc` from being a valid Chrome trace-event file (JSON object form, as Perfetto UI and
    chrome://tracing read it, restricted to the phases aoftrace writes); an empty list when it is valid."""
    problems = []
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        return ["no traceEvents list"]
    begun = {}
    for e in doc["traceEvents"]:
        ph = e.get("ph")
        if ph not in ("X", "b", "e", "i", "M"):
            problems.append(f"unknown phase: {e}")
            continue
        if not isinstance(e.get("name"), str) or not isinstance(e.get("pid"), int) or not isinstance(e.get("tid"), int):
            problems.append(f"name/pid/tid missing: {e}")
            continue
        if ph == "M":
            if e["name"] not in ("process_name", "thread_name") or not e.get("args", {}).get("name"):
                problems.append(f"bad metadata: {e}")
            continue
        if not isinstance(e.get("ts"), (int, float)) or e["ts"] < 0:
            problems.append(f"bad ts: {e}")
        if ph == "X" and not (isinstance(e.get("dur"), (int, float)) and e["dur"] >= 0):
            problems.append(f"bad dur: {e}")
        if ph == "b":
            begun[(e.get("cat"), e.get("id"))] = e["ts"]
        if ph == "e":
            start = begun.pop((e.get("cat"), e.get("id")), None)
            if start is None or e["ts"] < start:
                problems.append(f"async end without a begin before it: {e}")
    problems += [f"async slice {k} never ended" for k in begun]
    return problems
