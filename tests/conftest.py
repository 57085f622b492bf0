import os
import subprocess

import pytest

from aofab import env   # installed editable into .venv by make deps (pyproject.toml)


def pytest_configure(config):
    if os.geteuid() != 0:
        pytest.exit("the tests load BPF programs and mount loop devices: run them as root", returncode=2)


@pytest.fixture(params=["xfs", "ext4"])
def loopfs(request):
    """A fresh loop-mounted XFS or ext4 file system, removed afterwards even when the test fails."""
    with env.LoopFS(request.param) as fs:
        yield fs


@pytest.fixture
def xfs():
    with env.LoopFS("xfs") as fs:
        yield fs


@pytest.fixture
def ext4():
    with env.LoopFS("ext4") as fs:
        yield fs


@pytest.fixture
def port():
    return env.free_port()


X86_64 = os.uname().machine == "x86_64"
# The `server` fixture's kinds; a test module names those it runs with in SERVERS (see pytest_generate_tests).
SERVER_KINDS = {
    "redis-server": (),
    "aofwriter": (),
    "aofwriter-cet": pytest.mark.skipif(not X86_64, reason="endbr64: x86-64"),
}


@pytest.hookimpl(tryfirst=True)   # before the fixtures' own params (loopfs's): ids stay kind-fs, e.g. [aofwriter-xfs]
def pytest_generate_tests(metafunc):
    """A test taking `server` runs once per kind its module lists in SERVERS (each file keeps its own set)."""
    if "server" in metafunc.fixturenames:
        metafunc.parametrize("server", [pytest.param(k, marks=SERVER_KINDS[k]) for k in metafunc.module.SERVERS],
                             indirect=True)


@pytest.fixture
def server(request, loopfs, port, tmp_path):
    """Debian's redis-server, or our aofwriter with --io write: the same symbols, the same tool. aofwriter-cet
    opens every function with endbr64 (-fcf-protection), which aoftrace's uprobes step over. On a fresh port if
    the first is taken before it binds: use server.port."""
    log = str(tmp_path / "server.log")
    if request.param == "redis-server":
        srv = env.redis_server(loopfs.mnt, port, log=log, port_tries=env.PORT_TRIES)
    else:
        srv = env.aofwriter(loopfs.mnt, port, log=log, port_tries=env.PORT_TRIES,
                            exe=env.CET_AOFWRITER if request.param == "aofwriter-cet" else None)
    with srv:
        yield srv


@pytest.fixture
def sleeper():
    """A process that is not a server, for aoftrace's bad-input tests."""
    p = subprocess.Popen(["sleep", "60"])
    yield p
    p.kill()
    p.wait()
