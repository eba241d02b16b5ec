"""The one time budget of a query, passed down and checked cooperatively."""
from __future__ import annotations

import time


class OutOfTime(Exception):
    """Raised by Deadline.check once the budget is spent; caught once, at the top."""


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
