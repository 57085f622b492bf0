"""Running the tracers: aoftrace itself, and bpftrace as an independent cross-check.

bpftrace's `tracepoint:` probes read tracepoint ids from tracefs, which a fresh machine does not mount:
`tracefs()` mounts it for the duration of a `with` block and unmounts it only if it mounted it.
"""
import contextlib
import glob
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
    """tracefs mounted for the block (a fresh machine has none), and unmounted after only if we mounted it."""
    events = os.path.join(TRACEFS, "events")
    if os.path.exists(events):
        yield TRACEFS
        return
    try:
        env.run(["mount", "-t", "tracefs", "tracefs", TRACEFS])
        yield TRACEFS
    finally:   # by what exists: an interrupted mount(8) may have mounted it all the same
        if os.path.exists(events):
            env.finish(lambda: env.run(["umount", TRACEFS], check=False))


class _Proc:
    """A tracer process whose stdout is collected by a thread; `ready` is set when `marker` shows."""

    def __init__(self, argv, marker, timeout=30.0):
        self.argv, self.marker, self.timeout = argv, marker, timeout
        self.lines = []
        self.ready = threading.Event()
        self.proc = self.thread = self.stderr = None

    def _reader(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            if self.marker in line:
                self.ready.set()

    def __enter__(self):
        try:
            self.proc = env.spawn(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
            self.thread = threading.Thread(target=self._reader, daemon=True)
            self.thread.start()
            deadline = time.monotonic() + self.timeout
            while not self.ready.wait(0.05):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop(signal.SIGKILL)
                    raise RuntimeError(f"{self.argv[0]} did not become ready: rc={self.proc.returncode} "
                                       f"stderr={self.stderr.strip()!r}")
            return self
        except BaseException:   # interrupted while it starts (__exit__ will not run): kill it
            env.finish(lambda: self.stop(signal.SIGKILL))
            raise

    def stop(self, sig=signal.SIGINT, timeout=15.0):
        """Send `sig`, wait for the exit; returns the exit code (SIGKILL after `timeout`)."""
        if self.proc is None:
            return None
        env.stop_process(self.proc, sig, timeout)
        if self.thread is not None:
            self.thread.join(5)
        if self.stderr is None:
            self.stderr = self.proc.stderr.read()
        return self.proc.returncode

    @property
    def output(self):
        return "".join(self.lines)

    def __exit__(self, *exc):
        sig = signal.SIGKILL if exc[0] else signal.SIGINT
        env.finish(lambda: self.stop(sig))
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
tracepoint:io_uring:SUBMIT /pid == PID/ { @sub[args->opcode] = count(); }
tracepoint:io_uring:io_uring_queue_async_work /pid == PID/ { @queued[args->opcode] = count(); @hashed[args->opcode] = sum(args->rw); }
"""


def bpftrace_uring(pid):
    """io_uring_submit_sqe was renamed io_uring_submit_req in 6.3: the name the kernel has (tracefs mounted)."""
    submit = "io_uring_submit_req"
    if not os.path.exists(f"{TRACEFS}/events/io_uring/{submit}"):
        submit = "io_uring_submit_sqe"
    return Bpftrace(BPFTRACE_URING.replace("PID", str(pid)).replace("SUBMIT", submit))


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


# ---- what aoftrace leaves in the kernel once it has exited: nothing ---------------------------------------------
#
# Debian's bpftool 7.1 does not say which process holds a program or link (no "pids"), so holders are read
# from /proc/PID/fdinfo: a program or link fd shows its prog_id / link_id there. That also keeps these checks
# right while other aoftrace processes run on the machine: their programs have a holder.

BPF_SRCS = sorted(glob.glob(os.path.join(env.ROOT, "bpf", "*.bpf.[ch]")))
BPF_OBJ_NAME_LEN = 16


def aoftrace_prog_names():
    """The names of aoftrace's BPF programs as the kernel shows them (cut to 15 characters)."""
    src = ""
    for path in BPF_SRCS:  # the object is aoftrace.bpf.c and a header per concern beside it
        with open(path) as f:
            src += f.read()
    names = re.findall(r'SEC\("(?:uprobe|uretprobe|tp_btf/[^"]+)"\)\s*\n\s*int\s+BPF_\w+\((\w+)', src)
    # the syscall tracepoint programs: SEC("tracepoint") int sys_enter_tp(struct ... *ctx)
    names += re.findall(r'SEC\("tracepoint"\)\s*\n\s*int\s+(\w+)\(', src)
    return frozenset(n[:BPF_OBJ_NAME_LEN - 1] for n in names)


def bpf_fds(pid):
    """The BPF objects process `pid` holds through file descriptors, as {"prog": ids, "link": ids, "map": ids}
    (a link fd counts for its program too). Empty sets once it has exited."""
    held = {"prog": set(), "link": set(), "map": set()}
    try:
        fds = os.listdir(f"/proc/{pid}/fdinfo")
    except OSError:
        return held
    for fd in fds:
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                text = f.read()
        except OSError:
            continue
        for kind, ids in held.items():
            m = re.search(rf"^{kind}_id:\s+(\d+)$", text, re.M)
            if m:
                ids.add(int(m.group(1)))
    return held


def _bpf_held_by_anyone():
    progs, links = set(), set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            h = bpf_fds(int(d))
            progs |= h["prog"]
            links |= h["link"]
    return progs, links


def _bpftool(*args):
    out = env.run(["bpftool", "-j", *args], check=False).stdout.strip()
    try:
        return json.loads(out) if out else []
    except ValueError:
        return []


def our_progs(pid=None):
    """Names of the loaded BPF programs that come from aoftrace.bpf.c; with `pid`, only those it holds."""
    names = aoftrace_prog_names()
    ids = bpf_fds(pid)["prog"] if pid is not None else None
    return [p["name"] for p in _bpftool("prog", "show")
            if _short(p) in names and (ids is None or p["id"] in ids)]


def _short(prog):
    """A program's name as the kernel keeps it (15 characters): bpftool 7 prints longer ones whole, from BTF."""
    return prog.get("name", "")[:BPF_OBJ_NAME_LEN - 1]


def bpf_leftovers(held=None, pid=None):
    """What aoftrace left in the kernel, as a list of descriptions (empty: nothing):
    - programs of aoftrace.bpf.c (by name) that no process holds (leaked or pinned);
    - with `held` (bpf_fds() of an aoftrace process, taken while it ran; check once it has exited): any of
      those programs or links still loaded;
    - links of those programs; perf events (uprobes, tracepoints) of `pid` or with one of those programs;
    - legacy uprobes libbpf would have made through tracefs for `pid`, where tracefs or debugfs is mounted."""
    names = aoftrace_prog_names()
    progs = _bpftool("prog", "show")
    held_progs, held_links = _bpf_held_by_anyone()
    held = held or {"prog": set(), "link": set()}
    found = []
    suspects = set(held["prog"])
    for p in progs:
        if _short(p) in names and p["id"] not in held_progs:
            found.append(f"program {p['id']} {p['name']} held by no process")
            suspects.add(p["id"])
        elif p["id"] in held["prog"]:
            found.append(f"program {p['id']} {p.get('name')} still loaded")
    for l in _bpftool("link", "show"):
        if l["id"] in held["link"] or (l.get("prog_id") in suspects and l["id"] not in held_links):
            found.append(f"link {l['id']} ({l.get('type')}) of program {l.get('prog_id')}")
    for e in _bpftool("perf", "show"):
        if (pid is not None and e.get("pid") == pid) or e.get("prog_id") in held["prog"]:
            found.append(f"perf event {e}")
    if pid is not None:
        for tdir in (TRACEFS, "/sys/kernel/debug/tracing"):
            with contextlib.suppress(OSError), open(os.path.join(tdir, "uprobe_events")) as f:
                found += [f"uprobe event {l.strip()}" for l in f if f"libbpf_{pid}_" in l]
    return found


def wait_bpf_clean(held=None, pid=None, timeout=3.0):
    """bpf_leftovers() once it is empty, or what is left after `timeout` seconds: the kernel frees detached
    programs asynchronously."""
    deadline = time.monotonic() + timeout
    while True:
        left = bpf_leftovers(held, pid)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def no_progs_left(timeout=3.0, held=None, pid=None):
    """True once aoftrace has left nothing in the kernel (see bpf_leftovers)."""
    return not wait_bpf_clean(held, pid, timeout)
