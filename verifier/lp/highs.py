"""HiGHS instances made quietly: HiGHS prints a banner on stdout when an instance is made, before
any option can silence it, and stdout carries the verdict; so an instance is made with stdout
pointed at /dev/null, then set quiet and to one thread."""
from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager

_local = threading.local()

# solver calls of this process by kind ("LP", "MILP", "SDP"): [count, seconds]; the stages log
# what theirs added, which the benchmark logs keep (the time per call the reports quote)
CALLS: dict[str, list] = {}


@contextmanager
def timed(kind: str):
    """Count one solver call of this kind and its wall time in CALLS."""
    t0 = time.monotonic()
    try:
        yield
    finally:
        entry = CALLS.setdefault(kind, [0, 0.0])
        entry[0] += 1
        entry[1] += time.monotonic() - t0


def calls_since(before: dict) -> str:
    """What CALLS gained since the copy `before` (snapshot()), as "LP 12 calls, 0.031 s each"."""
    parts = []
    for kind, (n, s) in sorted(CALLS.items()):
        n0, s0 = before.get(kind, (0, 0.0))
        if n > n0:
            parts.append(f"{kind} {n - n0} call(s), {(s - s0) / (n - n0):.3f} s each")
    return "; ".join(parts) or "no solver calls"


def snapshot() -> dict:
    return {k: tuple(v) for k, v in CALLS.items()}


def quiet_highs(**options):
    """A new HiGHS instance, quiet, on one thread, with the given options."""
    import highspy

    sys.stdout.flush()
    saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        h = highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    for k, v in options.items():
        h.setOptionValue(k, v)
    return h


def thread_highs(key: str, **options):
    """This thread's instance for `key` (made once with the options), emptied: each user of HiGHS
    keeps its own, so options never leak between them."""
    store = getattr(_local, "instances", None)
    if store is None:
        store = _local.instances = {}
    if key not in store:
        store[key] = quiet_highs(**options)
    h = store[key]
    h.clearModel()
    return h
