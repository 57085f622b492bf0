#!/usr/bin/env bash
# Install what the build, the tools and the tests need, only what is missing.
# Idempotent: a second run with everything present does no network access.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages and why each is here (see README.md, "Dependencies").
PKGS=(
  clang llvm            # compile the CO-RE BPF programs (-target bpf)
  libbpf-dev            # load/attach BPF from the C tools (skeletons)
  bpftool               # generate skeletons and vmlinux.h
  libelf-dev zlib1g-dev pkg-config   # libbpf's link dependencies
  liburing-dev          # aofwriter's io_uring I/O modes
  redis-server redis-tools   # real server, redis-benchmark, redis-check-aof
  xfsprogs e2fsprogs    # mkfs for the loop-mounted test file systems
  bpftrace              # independent cross-check of aoftrace's counts
  util-linux procps     # losetup, mount, taskset, pgrep
  python3-venv          # the venv below
  linux-perf            # perf stat in the A/B runs (make run-ab)
  uftrace               # make run-ab UFTRACE=1: flush/fdatasync totals cross-checked with uftrace (the method of the Valkey #750 discussion)
)

# `make fuzz` (scripts/deps.sh fuzz): clang's sanitizer and libFuzzer runtimes, which Debian ships apart from clang.
if [ "${1:-}" = fuzz ]; then
  PKGS+=("libclang-rt-$(clang --version | sed -n 's/.*clang version \([0-9]*\)\..*/\1/p' | head -n 1)-dev")
fi

# `make test-kernels` and `make test` (scripts/deps.sh kernels): the kernel matrix boots Debian's kernels under qemu
# (docs/kernels.md).
if [ "${1:-}" = kernels ]; then
  PKGS+=(
    qemu-system-x86     # qemu-system-x86_64, TCG: boots the other kernels
    busybox-static      # the guest initramfs's /init, insmod, mount, chroot, ip (static: nothing else to copy; provides busybox)
  )
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's redis-server package starts a server where systemd runs; we only want the binaries.
if command -v systemctl >/dev/null && systemctl is-active -q redis-server 2>/dev/null; then
  systemctl disable --now redis-server >/dev/null 2>&1 || true
fi

# Python venv from the pinned requirements; rebuilt only when requirements.txt changes.
if [ ! -x .venv/bin/python ] || ! cmp -s requirements.txt .venv/requirements.txt; then
  echo "deps: creating .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
  cp requirements.txt .venv/requirements.txt
fi

# The package aofab (tools/aofab, declared in pyproject.toml), installed editable so that `python -m aofab.runab`
# and the tests import this checkout's source with no path settings. Reinstalled only when pyproject.toml changes
# or the venv was installed from another checkout; built by the venv's pinned setuptools, offline (--no-index
# --no-build-isolation: nothing is downloaded).
stamp=$(printf '%s\n' "$PWD"; cat pyproject.toml)
if [ "$stamp" != "$(cat .venv/aofab.stamp 2>/dev/null)" ]; then
  if [ -L .venv ]; then   # a venv shared with another checkout: installing here would point it at this one
    echo "deps: .venv links to $(readlink -f .venv), not installed from this checkout: its aofab would not be" \
         "this tree's. Give this checkout its own venv: rm .venv && make deps" >&2
    exit 1
  fi
  echo "deps: installing aofab (editable) into .venv"
  .venv/bin/pip install -q --disable-pip-version-check --no-index --no-deps --no-build-isolation -e .
  printf '%s\n' "$stamp" > .venv/aofab.stamp
fi

# Flame graphs of the A/B runs: inferno-flamegraph, built with cargo into a project-local root (git-ignored),
# only when missing and only if cargo is there (make run-ab then writes folded stacks without SVGs).
if [ ! -x .cargo-tools/bin/inferno-flamegraph ] && ! command -v inferno-flamegraph >/dev/null; then
  CARGO=$(command -v cargo || echo "$HOME/.cargo/bin/cargo")
  if [ -x "$CARGO" ]; then
    echo "deps: cargo install inferno into .cargo-tools (a few minutes)"
    "$CARGO" install -q --locked --root .cargo-tools inferno >/dev/null 2>&1 ||
      echo "deps: cargo install inferno failed; run-ab will write folded stacks without flame graph SVGs" >&2
  else
    echo "deps: cargo not found; run-ab will write folded stacks without flame graph SVGs" >&2
  fi
fi
