"""uringwriter: one file written from N threads, one io_uring ring each (or pwrite with --sync).

Every mode on loop-mounted XFS and ext4: exit status, the summary line, the file size and the content of a
sample of blocks (each block carries its offset, thread and index). Then bad input: one-line error, exit 2,
nothing created.
"""
import os
import random
import re
import resource
import signal
import struct
import subprocess

import pytest

from aofab import env

URINGWRITER = os.path.join(env.BUILD, "uringwriter")
SUMMARY = re.compile(
    r"mode=(?P<mode>uring|sync) threads=(?P<threads>\d+) direct=(?P<direct>[01]) attach_wq=(?P<attach_wq>[01]) "
    r"writes=(?P<writes>\d+) bytes=(?P<bytes>\d+) seconds=(?P<seconds>\d+\.\d{3}) MBps=(?P<MBps>\d+\.\d) "
    r"iops=(?P<iops>\d+) size=(?P<size>\d+) depth=(?P<depth>\d+) force_async=(?P<force_async>[01]) "
    r"fsyncs=(?P<fsyncs>\d+)"
)
MODES = {
    "uring": [],
    "uring-attach-wq": ["--attach-wq"],
    "uring-direct": ["--direct"],
    "uring-force-async": ["--force-async"],
    "sync": ["--sync"],
}


@pytest.fixture(scope="module", autouse=True)
def binary():
    if not os.access(URINGWRITER, os.X_OK):
        pytest.skip(f"{URINGWRITER} is not built")


def uringwriter(*args, **kw):
    kw.setdefault("check", False)
    kw.setdefault("timeout", 60)
    return env.run([URINGWRITER, *map(str, args)], **kw)


def summary(out):
    lines = out.splitlines()
    assert len(lines) == 1, out
    m = SUMMARY.fullmatch(lines[0])
    assert m, lines[0]
    return {k: (v if k == "mode" else float(v)) for k, v in m.groupdict().items()}


def expected_block(t, i, count, size):
    off = (t * count + i) * size
    hdr = struct.pack("<QII", off, t, i)[:size]
    return hdr + bytes([(t * 31 + i) & 0xFF]) * (size - len(hdr))


def check_content(path, threads, count, size, samples=40, seed=0):
    """Every thread's first, middle and last block plus a random sample."""
    rnd = random.Random(seed)
    blocks = {(t, i) for t in range(threads) for i in (0, count // 2, count - 1)}
    blocks |= {(rnd.randrange(threads), rnd.randrange(count)) for _ in range(samples)}
    with open(path, "rb") as f:
        for t, i in sorted(blocks):
            f.seek((t * count + i) * size)
            assert f.read(size) == expected_block(t, i, count, size), f"block t={t} i={i}"


def run_ok(path, threads, count, size, *extra):
    r = uringwriter("--file", path, "--threads", threads, "--count", count, "--size", size, *extra)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    s = summary(r.stdout)
    assert s["threads"] == threads
    assert s["writes"] == threads * count
    assert s["bytes"] == threads * count * size
    assert s["size"] == size
    assert s["seconds"] >= 0 and s["MBps"] > 0 and s["iops"] > 0
    assert os.stat(path).st_size == threads * count * size
    check_content(path, threads, count, size)
    return s


# ------------------------------------------------------------------ every mode, both file systems

@pytest.mark.parametrize("mode", list(MODES))
def test_modes(loopfs, mode):
    path = os.path.join(loopfs.mnt, "out.bin")
    s = run_ok(path, 4, 200, 4096, *MODES[mode])
    assert s["mode"] == ("sync" if mode == "sync" else "uring")
    assert s["direct"] == ("--direct" in MODES[mode])
    assert s["attach_wq"] == ("--attach-wq" in MODES[mode])
    assert s["force_async"] == ("--force-async" in MODES[mode])
    assert s["fsyncs"] == 0


def test_rewrite_truncates(xfs):
    """An existing, longer file is truncated first: the size is exactly threads*count*size afterwards."""
    path = os.path.join(xfs.mnt, "out.bin")
    with open(path, "wb") as f:
        f.write(b"\xee" * (1 << 20))
    run_ok(path, 2, 10, 4096)


@pytest.mark.parametrize("extra", [
    ["--depth", "8", "--fsync-every", "25"],
    ["--depth", "8", "--fsync-every", "25", "--force-async", "--attach-wq", "--direct"],
    ["--sync", "--fsync-every", "25"],
], ids=["uring-depth8", "uring-depth8-all", "sync"])
def test_depth_and_fsync(ext4, extra):
    s = run_ok(os.path.join(ext4.mnt, "out.bin"), 3, 100, 8192, *extra)
    assert s["fsyncs"] == 3 * (100 // 25)
    assert s["depth"] == (0 if "--sync" in extra else 8)


@pytest.mark.parametrize("size", ["1000", "5", "1k", "1m"])
def test_odd_sizes(tmp_path, size):
    """Unaligned and tiny blocks (header cut short) and the k/m suffixes, buffered, 3 in flight."""
    nbytes = int(size[:-1]) * {"k": 1024, "m": 1 << 20}[size[-1]] if size[-1] in "km" else int(size)
    count = 4 if nbytes >= 1 << 20 else 50
    run_ok(str(tmp_path / "out.bin"), 3, count, nbytes, "--depth", "3")


@pytest.mark.parametrize("extra", [[], ["--depth", "4", "--force-async"], ["--sync"]],
                         ids=["uring", "uring-depth4-async", "sync"])
def test_short_write_then_error(tmp_path, extra):
    """RLIMIT_FSIZE (SIGXFSZ ignored) cuts the write that crosses the limit short; the remainder is
    resubmitted at the right offset and fails with EFBIG, which must end the run with status 1."""
    limit = 2 * 4096 + 1808
    path = tmp_path / "out.bin"

    def limit_fsize():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    r = uringwriter("--file", path, "--threads", "1", "--count", "5", *extra, preexec_fn=limit_fsize)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stdout == ""
    assert r.stderr == f"uringwriter: write failed: {os.strerror(27)}\n"  # EFBIG
    data = path.read_bytes()
    assert len(data) == limit
    assert data == b"".join(expected_block(0, i, 5, 4096) for i in range(3))[:limit]


# ------------------------------------------------------------------ bad input

def assert_refused(r, status=2, what=""):
    assert r.returncode == status, (r.stdout, r.stderr)
    assert r.stdout == ""
    assert r.stderr.startswith("uringwriter: ") and r.stderr.endswith("\n"), r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert what in r.stderr


@pytest.mark.parametrize("args, what", [
    ([], "--file PATH is required"),
    (["--threads", "0"], "--threads"),
    (["--threads", "65"], "--threads"),
    (["--threads", "4x"], "not a number"),
    (["--threads", "-1"], "not a number"),
    (["--size", "1000", "--direct"], "multiple of 4096"),
    (["--size", "0"], "--size"),
    (["--size", "65m"], "--size"),
    (["--depth", "0"], "--depth"),
    (["--depth", "257"], "--depth"),
    (["--count", "0"], "--count"),
    (["--count"], "needs an argument"),
    (["--bogus"], "'--bogus'"),
    (["-x"], "'-x'"),
    (["--direct=1"], "'--direct=1'"),
    (["stray"], "unexpected argument 'stray'"),
    (["--sync", "--attach-wq"], "--sync"),
    (["--sync", "--force-async"], "--sync"),
    (["--sync", "--depth", "4"], "--sync"),
    (["--threads", "64", "--depth", "256", "--size", "64m"], "1 GiB"),
])
def test_bad_input(tmp_path, args, what):
    # every case but the first also names a file, which must not appear
    r = uringwriter(*(["--file", tmp_path / "out.bin", *args] if args else []))
    assert_refused(r, 2, what)
    assert list(tmp_path.iterdir()) == []


def test_directory_refused(tmp_path):
    d = tmp_path / "dir"
    d.mkdir()
    assert_refused(uringwriter("--file", d), 2, "not a regular file")
    assert d.is_dir() and list(d.iterdir()) == []


def test_fifo_refused(tmp_path):
    """A FIFO must be refused, not opened (opening it for writing would block)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert_refused(uringwriter("--file", fifo, timeout=10), 2, "not a regular file")


def test_open_error(tmp_path):
    """A path that cannot be created is a run-time error (status 1), not a usage error."""
    r = uringwriter("--file", tmp_path / "missing" / "out.bin")
    assert_refused(r, 1, "No such file or directory")
    assert list(tmp_path.iterdir()) == []


def test_help():
    r = uringwriter("--help")
    assert r.returncode == 0 and r.stderr == ""
    for opt in ["--file", "--threads", "--size", "--count", "--depth", "--attach-wq", "--direct", "--sync",
                "--force-async", "--fsync-every", "--help"]:
        assert opt in r.stdout
