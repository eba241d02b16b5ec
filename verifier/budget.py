"""The one time budget of a query, passed down and checked cooperatively; and its memory budget,
which every pass over the property's rows is chunked to fit."""
from __future__ import annotations

import os
import time


class OutOfTime(Exception):
    """Raised by Deadline.check once the budget is spent; caught once, at the top."""


class OutOfMemory(MemoryError):
    """The query, or one step of it, does not fit the memory budget even in the smallest chunks;
    caught with every MemoryError at the top, where the answer becomes unknown."""


def memory_budget(device, megabytes: float) -> int:
    """Bytes a query may hold (its cases, open branch-and-bound domains and the working tensors
    of each pass): `megabytes` when positive, otherwise half of the GPU's free memory, or 40 %
    of the machine's memory on the CPU."""
    if megabytes > 0:
        return int(megabytes * 2 ** 20)
    if getattr(device, "type", device) == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return int(0.5 * free)
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        total = 8 * 2 ** 30
    return int(0.4 * total)


def working_memory(budget: int) -> int:
    """Of a query's budget, what one pass (a bound, an attack step) may use for its working
    tensors at once: a third.  The rest holds the cases and the open domains, and what the
    allocator keeps: glibc holds on to freed blocks between a pass's chunks (its adaptive mmap
    threshold), and a pass on 10^6 rows kept 1.4 times its working bytes resident."""
    return budget // 3


DEFAULT_WORK = 1 << 30   # bytes a pass may use when its caller gives no budget


def fitting(n: int, bytes_each: int, memory: int | None, what: str = "the property's rows") -> int:
    """How many of n items of bytes_each bytes fit in memory bytes at once (DEFAULT_WORK when
    None): at least 1, at most n (1 when n is 0).  OutOfMemory when not even one fits."""
    memory = DEFAULT_WORK if memory is None else memory
    if bytes_each > memory:
        raise OutOfMemory(f"{what} need {bytes_each / 2 ** 20:.3g} MB at once, over the "
                          f"{max(0, memory) / 2 ** 20:.3g} MB a pass may use (--memory-mb)")
    return max(1, min(n, memory // max(1, bytes_each)))


class Deadline:
    def __init__(self, seconds: float, start: float | None = None):
        self.start = time.monotonic() if start is None else start
        self.end = self.start + max(0.0, seconds)

    def left(self) -> float:
        return self.end - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def expired(self) -> bool:
        return time.monotonic() >= self.end

    def check(self) -> None:
        if self.expired():
            raise OutOfTime()


def process_age() -> float:
    """Seconds since this process started (the interpreter's own start-up included), from
    /proc on Linux; 0 where that cannot be read."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


class Watchdog:
    """The command line's hard stop: at the deadline, unless the answer was claimed first, write
    `text` to the standard output as it was when the watchdog started (later redirections do not
    matter) and end the process with status 0.  A daemon thread that sleeps in short steps, so it
    fires within a few hundredths of a second, also while the main thread imports or computes."""

    STEP = 0.02

    def __init__(self, deadline: Deadline, text: str):
        import threading

        try:
            self._fd: int | None = os.dup(1)
        except OSError:     # no standard output to answer on: the watchdog only ends the process
            self._fd = None
        self._lock = threading.Lock()
        self._taken = False
        self._deadline, self._text = deadline, text
        threading.Thread(target=self._run, daemon=True, name="watchdog").start()

    def _run(self) -> None:
        while (left := self._deadline.left()) > 0:
            time.sleep(min(left, self.STEP))
        with self._lock:
            if self._taken:
                return
            self._taken = True
            if self._fd is not None:
                try:
                    os.write(self._fd, self._text.encode())
                except OSError:
                    pass
            os._exit(0)

    def claim(self) -> bool:
        """True when the caller may give its answer (the watchdog will then stay silent); False
        when the watchdog has already answered (the process is ending)."""
        with self._lock:
            if self._taken:
                return False
            self._taken = True
            return True
