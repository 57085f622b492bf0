"""The kernel matrix (issue 20, docs/kernels.md): boot another kernel under qemu and run a command in it.

A kernel is a Debian linux-image package taken from the archive with `apt-get download` into .kernels/ (git-ignored,
kept across runs: a second run does no network). The guest boots a small initramfs of busybox-static and the kernel's
own modules (virtio, 9p, loop, ext4, xfs and what they depend on), loaded by insmod, mounts the host's root read-only
over 9p as its root, with tmpfs on /tmp and /run, a scratch ext4 disk on /var/tmp (HOME=/tmp: /root stays the host's, read-only), and runs one shell command in a chroot there. A
second 9p share, writable, brings back the command's exit code and whatever it writes (junit XML). TCG only
(`-accel tcg -cpu max`): this machine's /dev/kvm is a paravirtual KVM that hangs Debian's kernels.

    .venv/bin/python -m aofab.vm run debian-6.1 -- uname -r
    .venv/bin/python -m aofab.vm test [KERNEL...]     # make test-kernels
"""
import argparse
import glob
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

from aofab import env

ROOT = env.ROOT
CACHE = os.environ.get("AOFTRACE_KERNELS", os.path.join(ROOT, ".kernels"))
RUNS = os.path.join(env.BUILD, "kernels")        # one directory per kernel: the results share, console log, junit
BUSYBOX = "/bin/busybox"                          # busybox-static (scripts/deps.sh kernels)
QEMU = "qemu-system-x86_64"

# The matrix: a name and the Debian package family it comes from (the newest NN of linux-image-<series>-NN-<flavour>).
KERNELS = {
    "debian-6.1": ("6.1.0", "amd64"),             # Debian 12's kernel
}

# What the guest needs as modules (their dependencies are read from each .ko's modinfo): the 9p root over
# virtio-pci, the scratch disk (virtio-blk), loop devices, ext4 and XFS. crc32c comes through the crypto API
# (ext4/jbd2 metadata checksums, libcrc32c), which asks for it by request_module(): there is no modprobe in the
# guest, so it is loaded up front.
MODULES = ["virtio_pci", "virtio_blk", "9pnet_virtio", "9p", "loop", "crc32c_intel", "crc32c_generic", "ext4", "xfs"]

# The core subset run in each guest: attach, counts against a reference, the fs view, durability, --lite,
# --check, bad input. Short on purpose: under TCG a traced scenario costs ~10 s. Node ids: a renamed test makes
# the guest's pytest fail ("not found"), never pass silently.
CORE_TESTS = [
    "tests/test_aoftrace.py::test_check_reports_core_can_run",
    "tests/test_check.py::test_check_agrees_with_a_real_load",
    "tests/test_aoftrace.py::test_bad_input",
    "tests/test_aoftrace.py::test_not_root",
    "tests/test_lite.py::test_lite_counts_match_bpftrace[redis-server-xfs]",
    "tests/test_lite.py::test_lite_counts_match_bpftrace[aofwriter-ext4]",
    "tests/test_lite.py::test_lite_sees_the_rewrite_child[ext4]",
    "tests/test_lite.py::test_lite_names_injected_faults[xfs-skip-fsync-write]",
    "tests/test_lite.py::test_lite_names_injected_faults[ext4-reply-before-sync-uring-linked]",
    "tests/test_lite.py::test_lite_uring_counts[xfs-uring-linked]",
    "tests/test_aoftrace.py::test_counts_and_totals_match_bpftrace[redis-server-xfs]",
    "tests/test_aoftrace.py::test_counts_and_totals_match_bpftrace[aofwriter-ext4]",
    "tests/test_aoftrace.py::test_sigint_detaches_everything[xfs]",
    "tests/test_uring.py::test_fs_counts_uring_bytes_like_write[xfs-write]",
    "tests/test_uring.py::test_fs_counts_uring_bytes_like_write[ext4-write]",
    "tests/test_uring.py::test_fs_counts_uring_bytes_like_write[ext4-uring-async]",
    "tests/test_report_live.py::test_aof_syncs_apart_from_the_rewrites[redis-server]",
    "tests/test_durability.py::test_injected_fault_is_named[xfs-skip-fsync-write]",
    "tests/test_durability.py::test_correct_aofwriter_is_ok[ext4-write-plain]",
]

# Tests of the subset that fail on a kernel today, each with why: run there as xfail (strict=False: a fix shows as
# XPASS), by the pytest plugin below, so the guest's summary counts them apart and a new failure still fails.
# None on 6.1 since the full mode loads there (unrolled loops, module BTF, io_uring's renamed tracepoint).
KNOWN_FAILING = {
    "debian-6.1": {},
}


def pytest_collection_modifyitems(config, items):
    """In a guest (pytest -p aofab.vm): the KNOWN_FAILING tests of the kernel named by AOFVM_KERNEL are xfail."""
    known = KNOWN_FAILING.get(os.environ.get("AOFVM_KERNEL", ""), {})
    import pytest
    for item in items:
        if item.nodeid in known:
            item.add_marker(pytest.mark.xfail(reason=known[item.nodeid], strict=False))


class Unavailable(Exception):
    """A kernel (or qemu) this machine cannot get: the matrix says so and skips it."""


def log(msg):
    print(f"vm: {msg}", file=sys.stderr, flush=True)


# ---- kernels -------------------------------------------------------------------------------------------

class Kernel:
    def __init__(self, name, release, tree):
        self.name, self.release, self.tree = name, release, tree
        self.vmlinuz = os.path.join(tree, "boot", f"vmlinuz-{release}")
        self.moddir = os.path.join(tree, "lib", "modules", release)

    def __repr__(self):
        return f"Kernel({self.name}, {self.release})"


def _apt_packages(series, flavour):
    names = subprocess.run(["apt-cache", "pkgnames", f"linux-image-{series}-"], capture_output=True,
                           text=True).stdout.split()
    pat = re.compile(rf"^linux-image-{re.escape(series)}-(\d+)-{re.escape(flavour)}$")
    return sorted((int(m.group(1)), n) for n in names if (m := pat.match(n)))


def _cached(series, flavour):
    """Extracted trees in the cache, newest ABI number first."""
    pat = re.compile(rf"/linux-image-{re.escape(series)}-(\d+)-{re.escape(flavour)}$")
    found = [(int(m.group(1)), d) for d in glob.glob(os.path.join(CACHE, "linux-image-*"))
             if (m := pat.search(d)) and os.path.exists(os.path.join(d, ".complete"))]
    return [d for _, d in sorted(found, reverse=True)]


def get_kernel(name):
    """The newest Debian package of the family `name`, downloaded and extracted once into CACHE."""
    if name not in KERNELS:
        raise Unavailable(f"unknown kernel {name!r} (known: {', '.join(KERNELS)})")
    series, flavour = KERNELS[name]
    if not shutil.which("apt-cache"):
        cached = _cached(series, flavour)
        if cached:
            return _kernel_from_tree(name, cached[0])
        raise Unavailable(f"{name}: no apt-cache to find linux-image-{series}-*-{flavour} with")
    pkgs = _apt_packages(series, flavour)
    if not pkgs:
        cached = _cached(series, flavour)
        if cached:                                # offline, or the lists are gone: what we have will do
            return _kernel_from_tree(name, cached[0])
        log("no linux-image package in apt's lists: apt-get update")
        subprocess.run(["apt-get", "update", "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pkgs = _apt_packages(series, flavour)
    if not pkgs:
        raise Unavailable(f"{name}: apt knows no linux-image-{series}-*-{flavour} package")
    pkg = pkgs[-1][1]
    tree = os.path.join(CACHE, pkg)
    if not os.path.exists(os.path.join(tree, ".complete")):
        _download_and_extract(pkg, tree)
    return _kernel_from_tree(name, tree)


def _download_and_extract(pkg, tree):
    os.makedirs(CACHE, exist_ok=True)
    debs = glob.glob(os.path.join(CACHE, f"{pkg}_*.deb"))
    if not debs:
        log(f"apt-get download {pkg} (~70 MB, once) into {CACHE}")
        r = subprocess.run(["apt-get", "download", "-q", pkg], cwd=CACHE, capture_output=True, text=True)
        debs = glob.glob(os.path.join(CACHE, f"{pkg}_*.deb"))
        if r.returncode != 0 or not debs:
            raise Unavailable(f"apt-get download {pkg} failed: {(r.stderr or r.stdout).strip()[-300:]}")
    shutil.rmtree(tree, ignore_errors=True)
    tmp = tree + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"extracting {os.path.basename(debs[0])}")
    env.run(["dpkg-deb", "-x", debs[0], tmp])
    os.rename(tmp, tree)
    open(os.path.join(tree, ".complete"), "w").close()


def _kernel_from_tree(name, tree):
    boots = glob.glob(os.path.join(tree, "boot", "vmlinuz-*"))
    if not boots:
        raise Unavailable(f"{name}: no vmlinuz in {tree}")
    release = os.path.basename(boots[0])[len("vmlinuz-"):]
    return Kernel(name, release, tree)


# ---- initramfs ------------------------------------------------------------------------------------------

def _modinfo_depends(path):
    with open(path, "rb") as f:
        data = f.read()
    m = re.search(rb"(?:^|\0)depends=([^\0]*)\0", data)
    return [d.replace("-", "_") for d in m.group(1).decode().split(",") if d] if m else []


def resolve_modules(moddir, wanted=MODULES):
    """The .ko files for `wanted` and their dependencies, each after what it depends on (modules built into
    the kernel are skipped)."""
    index = {}
    for path in glob.glob(os.path.join(moddir, "kernel", "**", "*.ko"), recursive=True):
        index[os.path.basename(path)[:-3].replace("-", "_")] = path
    builtin = set()
    with open(os.path.join(moddir, "modules.builtin")) as f:
        builtin = {os.path.basename(l.strip())[:-3].replace("-", "_") for l in f}
    order, seen = [], set()

    def visit(name):
        if name in seen or name in builtin:
            return
        seen.add(name)
        if name not in index:
            raise Unavailable(f"module {name} is neither built in nor in {moddir}")
        for dep in _modinfo_depends(index[name]):
            visit(dep)
        order.append(index[name])
    for name in wanted:
        visit(name.replace("-", "_"))
    return order


# The guest's /init (busybox sh). The host's root, read-only, becomes /newroot; the command runs chrooted there.
INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /newroot /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in /modules/*.ko; do insmod "$m" || echo "aofvm: insmod $m failed"; done
fail() { echo "aofvm: $*"; echo "AOFVM-EXIT=125"; poweroff -f; sleep 10; }
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=524288 root /newroot || fail "cannot mount the host root"
for d in tmp run; do mount -t tmpfs -o mode=1777 tmpfs /newroot/$d || fail "tmpfs on /$d"; done
# /var/tmp (LoopFS's images) on the scratch disk: losetup --direct-io=on needs O_DIRECT, which 6.1's tmpfs lacks.
mount -t ext4 /dev/vda /newroot/var/tmp || fail "cannot mount the scratch disk on /var/tmp"
chmod 1777 /newroot/var/tmp
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs tmpfs /newroot/dev/shm
mount -t tracefs tracefs /newroot/sys/kernel/tracing
mount -t debugfs debugfs /newroot/sys/kernel/debug
mount -t bpf bpf /newroot/sys/fs/bpf
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup
mkdir -p /newroot/tmp/aofvm
mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 results /newroot/tmp/aofvm || fail "cannot mount the results share"
ip link set lo up
hostname aofvm
echo "AOFVM-SHELL $(cut -d' ' -f1 /proc/uptime)"
chroot /newroot /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp \
    TERM=dumb LANG=C.UTF-8 /bin/sh /tmp/aofvm/cmd.sh </dev/null
rc=$?
echo $rc > /newroot/tmp/aofvm/rc
sync
umount /newroot/tmp/aofvm
echo "AOFVM-EXIT=$rc $(cut -d' ' -f1 /proc/uptime)"
poweroff -f
"""


def _cpio_newc(entries):
    """An uncompressed newc cpio archive of (name, mode, data) entries (the kernel unpacks it as the initramfs)."""
    out = bytearray()

    def add(name, mode, data, ino, rdev=(0, 0)):
        name_b = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (ino, mode, 0, 0, 1, 0, len(data), 0, 0, *rdev, len(name_b), 0))
        out.extend(hdr.encode() + name_b)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))
    for ino, (name, mode, data, *rdev) in enumerate(entries, 1):
        add(name, mode, data, ino, *rdev)
    add("TRAILER!!!", 0, b"", 0)
    return bytes(out)


def build_initramfs(kernel, out):
    if not os.path.exists(BUSYBOX):
        raise Unavailable(f"{BUSYBOX} is missing (busybox-static: scripts/deps.sh kernels)")
    mods = resolve_modules(kernel.moddir)
    d = stat.S_IFDIR | 0o755
    entries = [("bin", d, b""), ("modules", d, b""), ("dev", d, b""),
               ("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1))]    # init's stdio, before devtmpfs is mounted
    with open(BUSYBOX, "rb") as f:
        entries.append(("bin/busybox", stat.S_IFREG | 0o755, f.read()))
    entries.append(("init", stat.S_IFREG | 0o755, INIT.encode()))
    for i, path in enumerate(mods):
        with open(path, "rb") as f:
            entries.append((f"modules/{i:02d}-{os.path.basename(path)}", stat.S_IFREG | 0o644, f.read()))
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(_cpio_newc(entries))
    os.replace(tmp, out)
    return [os.path.basename(p) for p in mods]


# ---- running a command in a guest ------------------------------------------------------------------------

def _die_with_parent():
    """In the child before exec: SIGKILL when the process that started qemu dies (even by SIGKILL)."""
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)       # PR_SET_PDEATHSIG


class Result:
    def __init__(self, rc, console, rundir, boot_s, wall_s):
        self.rc, self.console, self.rundir, self.boot_s, self.wall_s = rc, console, rundir, boot_s, wall_s

    @property
    def output(self):
        p = os.path.join(self.rundir, "output.txt")
        return open(p, errors="replace").read() if os.path.exists(p) else ""


def run(kernel, command, timeout=600, mem="2G", smp=2, scratch_gb=8, echo=False):
    """Boot `kernel`, run the shell `command` (cwd: this tree) as root in the guest, power off. Returns a Result;
    rc is None when the guest did not say (timeout, panic). The guest is killed on timeout or interrupt."""
    if not shutil.which(QEMU):
        raise Unavailable(f"{QEMU} is missing (qemu-system-x86: scripts/deps.sh kernels)")
    rundir = os.path.join(RUNS, kernel.name)
    shutil.rmtree(rundir, ignore_errors=True)
    os.makedirs(rundir)
    initrd = os.path.join(RUNS, f"{kernel.name}.initramfs.cpio")
    build_initramfs(kernel, initrd)
    # sh (dash) has no PIPESTATUS: the command's own status goes through a file.
    with open(os.path.join(rundir, "cmd.sh"), "w") as f:
        f.write(f"cd {shlex.quote(ROOT)} || exit 125\n"
                f"{{ ( {command} ); echo $? > /tmp/aofvm/cmd.rc; }} 2>&1 | tee /tmp/aofvm/output.txt\n"
                "exit $(cat /tmp/aofvm/cmd.rc)\n")
    # The guest's /var/tmp: a sparse ext4 image made here (mkfs on a file of ours), removed after the run.
    scratch = os.path.join(RUNS, f"{kernel.name}.scratch.img")
    if os.path.exists(scratch):     # left by a run that was killed: ours, in build/kernels
        os.unlink(scratch)
    env.new_fs_image(scratch, "ext4", scratch_gb << 30, lazy=True)
    argv = [QEMU, "-accel", "tcg", "-cpu", "max", "-m", mem, "-smp", str(smp), "-nographic", "-no-reboot",
            "-kernel", kernel.vmlinuz, "-initrd", initrd,
            "-append", "console=ttyS0 quiet panic=-1 rdinit=/init",
            "-nic", "none",
            "-virtfs", "local,path=/,mount_tag=root,security_model=none,readonly=on,multidevs=remap",
            "-virtfs", f"local,path={rundir},mount_tag=results,security_model=none",
            "-drive", f"file={scratch},format=raw,if=virtio,cache=unsafe"]
    console = []
    t0 = time.monotonic()
    boot_s = None
    proc = env.spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                     start_new_session=True, preexec_fn=_die_with_parent)
    try:
        import selectors
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        buf = b""
        while True:
            left = timeout - (time.monotonic() - t0)
            if left <= 0:
                log(f"{kernel.name}: timeout after {timeout} s, killing the guest")
                break
            if not sel.select(min(left, 1.0)):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for l in lines:
                line = l.decode(errors="replace").rstrip("\r")
                console.append(line)
                if "AOFVM-SHELL" in line and boot_s is None:
                    boot_s = time.monotonic() - t0
                if echo:
                    print(line, flush=True)
    finally:
        env.stop_process(proc, 15, 5)
        os.unlink(scratch)
    wall_s = time.monotonic() - t0
    with open(os.path.join(rundir, "console.log"), "w") as f:
        f.write("\n".join(console) + "\n")
    rc = None
    rcfile = os.path.join(rundir, "rc")
    if os.path.exists(rcfile):
        with open(rcfile) as f:
            rc = int(f.read().strip() or 125)
    return Result(rc, console, rundir, boot_s, wall_s)


def guest_pytest_argv(kernel_name, tests, junit="/tmp/aofvm/junit.xml"):
    args = [".venv/bin/python", "-m", "pytest", "-p", "no:cacheprovider", "-p", "aofab.vm", "-ra", "-m", "not stress",
            "--durations=5", f"--junitxml={junit}", *tests]
    # The tree is read-only in the guest: no bytecode written; tmp_path goes to the guest's tmpfs, LoopFS's images to
    # /var/tmp, its scratch disk.
    return f"PYTHONDONTWRITEBYTECODE=1 AOFVM_GUEST=1 AOFVM_KERNEL={shlex.quote(kernel_name)} " + " ".join(shlex.quote(a) for a in args)


def summary_line(output):
    """pytest's final `=== N passed, ... in Xs ===` line."""
    lines = [l for l in output.splitlines() if re.match(r"^=+ .*\b(passed|failed|error|skipped|deselected|no tests ran)\b.* in [\d.]+s", l)]
    return lines[-1] if lines else "(no pytest summary)"


def junit_cases(rundir):
    """(nodeid, outcome, message) for each test case of the guest's junit XML."""
    p = os.path.join(rundir, "junit.xml")
    if not os.path.exists(p):
        return []
    out = []
    for tc in ET.parse(p).getroot().iter("testcase"):
        nodeid = tc.get("classname", "").replace(".", "/") + ".py::" + tc.get("name", "")
        outcome, msg = "passed", ""
        for child in tc:
            if child.tag in ("failure", "error", "skipped"):
                outcome, msg = child.tag, (child.get("message") or "")[:300]
        out.append((nodeid, outcome, msg))
    return out


def run_core_tests(name, timeout=1500, echo=False):
    kernel = get_kernel(name)
    return kernel, run(kernel, guest_pytest_argv(name, CORE_TESTS), timeout=timeout, echo=echo)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="aofab.vm", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a shell command in a kernel's guest")
    r.add_argument("kernel")
    r.add_argument("--timeout", type=int, default=600)
    r.add_argument("command", nargs="+")
    t = sub.add_parser("test", help="run the core test subset in each kernel (make test-kernels)")
    t.add_argument("kernels", nargs="*", default=list(KERNELS))
    t.add_argument("--timeout", type=int, default=1500)
    a = ap.parse_args(argv)
    if a.cmd == "run":
        try:
            kernel = get_kernel(a.kernel)
        except Unavailable as e:
            log(f"SKIPPED: {e}")
            return 77
        res = run(kernel, " ".join(a.command), timeout=a.timeout, echo=True)
        log(f"{kernel.release}: rc={res.rc} boot-to-shell={res.boot_s and round(res.boot_s, 1)} s "
            f"wall={res.wall_s:.1f} s")
        return 1 if res.rc is None else res.rc
    failed = False
    summaries = []
    for name in a.kernels:
        try:
            kernel, res = run_core_tests(name, timeout=a.timeout, echo=True)
        except Unavailable as e:
            summaries.append(f"{name}: SKIPPED: {e}")
            continue
        line = summary_line(res.output)
        boot = f"{res.boot_s:.1f} s" if res.boot_s else "?"
        summaries.append(f"{name} ({kernel.release}): {line.strip('= ')} [boot {boot}, wall {res.wall_s:.0f} s, "
                         f"rc {res.rc}]")
        failed |= res.rc != 0
    print("\n== kernel matrix")
    for s in summaries:
        print(s)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
