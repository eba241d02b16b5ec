"""A progress bar on stderr: one redrawn line on a terminal, one line per instance otherwise (logs)."""
from __future__ import annotations

import sys
import time
from collections import Counter
from typing import TextIO

from .runner import Result


class Progress:
    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total, self.done = total, 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.counts: Counter[str] = Counter()
        self.start = time.monotonic()

    def update(self, r: Result) -> None:
        self.done += 1
        self.counts[r.verdict] += 1
        self.counts["wrong"] += r.correct == "no"
        if not self.enabled:
            return
        if self.tty:
            width = 30
            filled = width * self.done // max(self.total, 1)
            bar = "#" * filled + "." * (width - filled)
            self.stream.write(f"\r[{bar}] {self.done}/{self.total} {self._counts()} {self._elapsed()}\x1b[K")
        else:
            mark = {"no": " WRONG", "disputed": " DISPUTED"}.get(r.correct, "")
            self.stream.write(f"[{self.done}/{self.total}] {r.bench} {r.onnx} {r.vnnlib}: {r.verdict}"
                              f" {r.seconds:.2f} s{mark}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def _counts(self) -> str:
        keys = ("sat", "unsat", "unknown", "timeout", "error", "wrong")
        return " ".join(f"{k} {self.counts[k]}" for k in keys)

    def _elapsed(self) -> str:
        s = int(time.monotonic() - self.start)
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
