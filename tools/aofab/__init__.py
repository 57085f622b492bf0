"""aofab: orchestration for aoftrace — loop-mounted file systems, servers, benchmarks, A/B runs, reports.

One package for all the Python of the project; the tests import the same fixtures the runner uses.
"""
