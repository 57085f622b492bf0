"""The command-line runners' settings (run-ab, bench): each may be empty, meaning its default, so that make can
pass its variables through unchanged. A bad one is a UsageError: one line on stderr and exit status 2
(`parse`), before anything is created."""
import os
import re
import sys


class UsageError(Exception):
    pass


def parse(parse_settings, argv, prog):
    """`parse_settings(argv)`, or None once its UsageError is said on stderr as `prog: message`."""
    try:
        return parse_settings(argv)
    except UsageError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return None


def integer(value, default, what, lo):
    """`value` as an integer of at least `lo`; empty means `default`."""
    if value in (None, ""):
        return default
    try:
        n = int(value)
    except ValueError:
        raise UsageError(f"{what} must be an integer, not {value!r}")
    if n < lo:
        raise UsageError(f"{what} must be at least {lo}, not {n}")
    return n


def cpu_pair(value, form):
    """SERVER_CPUS:BENCH_CPUS, each a taskset CPU list of this machine, as (server, bench); `form` describes what
    is accepted in the error message."""
    m = re.fullmatch(r"([0-9,-]+):([0-9,-]+)", value)
    if not m:
        raise UsageError(f"CPUS must be {form}, not {value!r}")
    n = os.cpu_count() or 1
    for part in m.groups():
        for tok in part.split(","):
            bounds = tok.split("-")
            if len(bounds) > 2 or not all(b.isdigit() for b in bounds) or any(int(b) >= n for b in bounds):
                raise UsageError(f"CPUS {value!r}: {tok!r} is not a CPU list of this {n}-CPU machine")
    return m.group(1), m.group(2)
