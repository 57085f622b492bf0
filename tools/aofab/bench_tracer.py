"""`make bench`'s tracer processes: aoftrace or the equivalent bpftrace script (BPFTRACE) attached to the
server, timed from launch to ready, their peak RSS and attach file descriptors read from /proc, stopped with
SIGINT and reaped with wait4; bpftrace's JSON output read back (maps, histograms, lost events)."""
import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time

from . import env, tracing

READY_TIMEOUT, STOP_TIMEOUT = 30.0, 30.0

# The bpftrace equivalent of what aoftrace times at the least: every flushAppendOnlyFile() call (uprobe +
# uretprobe) and every fdatasync/fsync of the server (syscall tracepoints), both filtered by pid, as counts and
# latency histograms — 6 probes, plus BEGIN for the ready line. bpftrace prints "Attaching N probes..." BEFORE
# it attaches them; bpftrace 0.17 fires BEGIN before attaching the others too, but only starts reading the
# perf buffers that carry BEGIN's printf once every probe is attached, so "ready" shows after attaching
# (each run checks it: its attach file descriptors are all open when "ready" arrives, see `attach_fds`).
BPFTRACE = r"""
BEGIN { printf("ready\n"); }
uprobe:BINARY:flushAppendOnlyFile /pid == PID/ { @fs[tid] = nsecs; }
uretprobe:BINARY:flushAppendOnlyFile /pid == PID && @fs[tid]/ {
    @flush_us = hist((nsecs - @fs[tid]) / 1000); @flushes = count(); delete(@fs[tid]);
}
tracepoint:syscalls:sys_enter_fdatasync,tracepoint:syscalls:sys_enter_fsync /pid == PID/ { @ss[tid] = nsecs; }
tracepoint:syscalls:sys_exit_fdatasync,tracepoint:syscalls:sys_exit_fsync /pid == PID && @ss[tid]/ {
    @sync_us = hist((nsecs - @ss[tid]) / 1000); @syncs = count(); delete(@ss[tid]);
}
"""



def attach_fds(pid):
    """How many perf-event and BPF-link file descriptors `pid` holds: one or two per attached probe (uprobes and
    tracepoints through perf_event_open, tp_btf and uprobe links), plus perf buffers opened before attaching."""
    n = 0
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                n += os.readlink(f"/proc/{pid}/fd/{fd}") in ("anon_inode:[perf_event]", "anon_inode:bpf_link")
    return n


def vm_hwm_kb(pid, field="VmHWM"):
    """VmHWM (the peak resident memory) or another /proc/PID/status figure in kB: VmRSS, what it holds now."""
    with contextlib.suppress(OSError, ValueError, IndexError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def reset_hwm(pid):
    """The VmHWM of `pid` so far, then reset to its current RSS (clear_refs 5, Linux 4.0+): from here on VmHWM is
    the peak of what the attached tracer holds, apart from what it needed to start (libbpf's copies of the
    kernel BTF, for aoftrace)."""
    hwm = vm_hwm_kb(pid)
    with contextlib.suppress(OSError), open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")
    return hwm


class Tracer:
    """A tracer process, timed from spawn to the first stdout line containing `marker` (`ready_s`), and to
    `early` if given (`early_s`); stopped with SIGINT and reaped with os.wait4. Killed on any error.

    Peak RSS is its VmHWM: at the ready line (`startup_hwm_kb`, the peak of starting), which is then reset, and
    read every 2 ms from the SIGINT until it exits (`hwm_kb`, the peak while attached, the report it writes at
    exit included, all but its last 2 ms). Not ru_maxrss: execve()
    seeds the new program's ru_maxrss with the RSS high-water mark of the process that spawned it (this
    Python process, ~20 MB), so wait4 reports max(that, the tracer's own peak). `ru_maxrss_kb` is kept in the
    JSON as an upper bound. (Checked: sh spawned from here reports 18 MB, under GNU time 1.4 MB.)"""

    def __init__(self, argv, marker, early=None):
        self.argv, self.marker, self.early = argv, marker, early
        self.lines, self.proc = [], None
        self.ready = threading.Event()
        self.ready_s = self.early_s = self.fds_at_ready = None
        self.returncode = self.maxrss_kb = self.hwm_kb = self.hwm_at_stop_kb = self.fds_at_stop = None
        self.rss_at_stop_kb = self.startup_hwm_kb = None
        self.stderr = ""

    def _reader(self):
        for line in self.proc.stdout:
            t = time.monotonic() - self.t0
            self.lines.append(line)
            if self.early and self.early_s is None and self.early in line:
                self.early_s = t
            if not self.ready.is_set() and self.marker in line:
                self.ready_s = t
                self.fds_at_ready = attach_fds(self.proc.pid)
                self.startup_hwm_kb = reset_hwm(self.proc.pid)
                self.ready.set()

    def _drain_stderr(self):
        self.stderr = self.proc.stderr.read()

    def __enter__(self):
        self.t0 = time.monotonic()
        try:
            self.proc = env.spawn(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
            self.threads = [threading.Thread(target=f, daemon=True) for f in (self._reader, self._drain_stderr)]
            for t in self.threads:
                t.start()
            deadline = self.t0 + READY_TIMEOUT
            while not self.ready.wait(0.01):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self._reap(signal.SIGKILL)
                    raise RuntimeError(f"{os.path.basename(self.argv[0])} did not become ready in "
                                       f"{READY_TIMEOUT:.0f} s (rc={self.returncode}): "
                                       f"{self.stderr.strip()[-300:]!r}")
            self.t_on = time.monotonic()
            return self
        except BaseException:   # interrupted or failed while it starts (__exit__ will not run): kill it
            env.finish(lambda: self._reap(signal.SIGKILL))
            raise

    def _reap(self, sig, timeout=STOP_TIMEOUT):
        """Send `sig`, wait up to `timeout` (then SIGKILL) with wait4, sampling VmHWM until the exit; sets
        returncode, hwm_kb and maxrss_kb."""
        if self.proc is None or self.returncode is not None:
            return self.returncode
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)
        deadline = time.monotonic() + timeout
        try:
            while True:
                hwm = vm_hwm_kb(self.proc.pid)   # none once it has released its memory (exiting, zombie)
                if hwm:
                    self.hwm_kb = max(self.hwm_kb or 0, hwm)
                pid, status, ru = os.wait4(self.proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.proc.pid, signal.SIGKILL)
                    pid, status, ru = os.wait4(self.proc.pid, 0)
                    break
                time.sleep(0.002)
        except ChildProcessError:     # reaped already (an interrupted earlier call): nothing left to wait for
            if self.proc.returncode is None:
                self.proc.returncode = -signal.SIGKILL
            self.returncode = self.proc.returncode
            return self.returncode
        self.returncode = self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.maxrss_kb = ru.ru_maxrss
        for t in getattr(self, "threads", ()):
            t.join(5)
        return self.returncode

    def stop(self):
        """SIGINT (the tracers print their report and exit); returns the exit code."""
        if self.returncode is None:
            self.t_off = time.monotonic()
            self.hwm_at_stop_kb = vm_hwm_kb(self.proc.pid)
            self.rss_at_stop_kb = vm_hwm_kb(self.proc.pid, "VmRSS")
            self.fds_at_stop = attach_fds(self.proc.pid)
            self._reap(signal.SIGINT)
            self.stop_s = time.monotonic() - self.t_off
        return self.returncode

    @property
    def window_s(self):
        return self.t_off - self.t_on

    def __exit__(self, exc_type, *exc):
        # env.finish: an interrupt inside the stop must not leave the tracer running
        env.finish((lambda: self._reap(signal.SIGKILL)) if exc_type is not None else self.stop)
        return False


def aoftrace_tracer(pid, json_path, exe=tracing.AOFTRACE, args=()):
    # Full attribution mode is aoftrace's default: no option selects it; args=("--lite",) the lite mode.
    return Tracer([exe, "-p", str(pid), "-j", json_path, *args], "Tracing ")


def bpftrace_tracer(pid):
    script = BPFTRACE.replace("BINARY", os.readlink(f"/proc/{pid}/exe")).replace("PID", str(pid))
    return Tracer(["bpftrace", "-f", "json", "-e", script], '"data": "ready', early='"attached_probes"')


def bpftrace_maps(lines):
    """bpftrace -f json output: {name: value} of its maps and histograms, plus `lost` from "Lost N events"."""
    maps, lost = {}, 0
    for line in lines:
        try:
            msg = json.loads(line)
        except ValueError:
            m = re.search(r"Lost (\d+) events", line)
            lost += int(m.group(1)) if m else 0
            continue
        if msg.get("type") in ("map", "hist"):
            maps.update(msg.get("data", {}))
        elif msg.get("type") == "lost_events":
            lost += int(msg.get("data", {}).get("events", 0))
    maps["lost"] = lost
    return maps


def hist_quantile(buckets, q):
    """Upper bound of the power-of-two bucket that holds quantile q of a bpftrace hist() (JSON)."""
    total = sum(b.get("count", 0) for b in buckets)
    seen = 0
    for b in buckets:
        seen += b.get("count", 0)
        if total and seen >= q * total:
            return b.get("max", b.get("min"))
    return None
