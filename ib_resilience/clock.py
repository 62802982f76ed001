"""The injectable clock: monotonic time for every deadline, wall time only for display."""

from __future__ import annotations

import threading
import time


class Clock:
    """The system clock. Subclass (or use :class:`ManualClock`) to control time in tests."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()


class ManualClock(Clock):
    """A clock that moves only when told to. Thread-safe."""

    def __init__(self, start: float = 1000.0, wall_start: float = 1_700_000_000.0) -> None:
        self._lock = threading.Lock()
        self._now = start
        self._wall_offset = wall_start - start

    def monotonic(self) -> float:
        with self._lock:
            return self._now

    def time(self) -> float:
        with self._lock:
            return self._now + self._wall_offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock never goes backwards")
        with self._lock:
            self._now += seconds


SYSTEM_CLOCK = Clock()
