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


@pytest.fixture
def sleeper():
    """A process that is not a server, for aoftrace's bad-input tests."""
    p = subprocess.Popen(["sleep", "60"])
    yield p
    p.kill()
    p.wait()
