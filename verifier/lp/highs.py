"""HiGHS instances made quietly: HiGHS prints a banner on stdout when an instance is made, before
any option can silence it, and stdout carries the verdict; so an instance is made with stdout
pointed at /dev/null, then set quiet and to one thread."""
from __future__ import annotations

import os
import sys
import threading

_local = threading.local()


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
