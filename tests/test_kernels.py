"""The kernel matrix (issue 20, docs/kernels.md): the core subset (aofab.vm.CORE_TESTS) run inside each kernel of
aofab.vm.KERNELS, booted under qemu with the host's root read-only over 9p. The running kernel is covered by the
rest of `make test`. A kernel this machine cannot get is a skip with the reason, never a pass."""
import os

import pytest

from aofab import vm

pytestmark = pytest.mark.skipif(os.environ.get("AOFVM_GUEST") == "1", reason="already inside a guest")


@pytest.mark.parametrize("name", list(vm.KERNELS))
def test_core_subset_in_guest(name, capsys):
    try:
        kernel, res = vm.run_core_tests(name)
    except vm.Unavailable as e:
        pytest.skip(f"{name}: {e}")
    summary = vm.summary_line(res.output)
    boot = f"{res.boot_s:.1f} s" if res.boot_s else "?"
    with capsys.disabled():
        print(f"\n{name} ({kernel.release}) guest: {summary.strip('= ')} [boot {boot}, wall {res.wall_s:.0f} s]")
    notes = [f"{n}: {o} {m}" for n, o, m in vm.junit_cases(res.rundir) if o != "passed"]
    assert res.rc == 0, "\n".join([f"guest rc={res.rc}, {summary}", *notes,
                                   *res.console[-40:], f"(console log: {res.rundir}/console.log)"])
