"""The reconnect schedule: the ``backoff`` package's exponential generator with full jitter."""

from __future__ import annotations

import random
from typing import Iterator, Optional

import backoff


class ReconnectSchedule:
    """Delays between reconnect attempts: full-jitter exponential, ``base`` doubling up to ``cap``.

    The n-th delay (n from 0) is uniform in ``[0, min(cap, base * 2**n)]``. ``reset()`` starts
    over, which the manager does once a connection has been stable.
    """

    def __init__(self, base: float, cap: float, rng: Optional[random.Random] = None) -> None:
        self._base = base
        self._cap = cap
        self._rng = rng or random.Random()
        self._gen: Iterator[float] = iter(())
        self.failures = 0
        self.reset()

    def reset(self) -> None:
        gen = backoff.expo(base=2, factor=self._base, max_value=self._cap)
        next(gen)  # backoff's generators are primed by one send(None)
        self._gen = gen
        self.failures = 0

    def ceiling(self) -> float:
        """The upper bound of the next delay (before jitter)."""
        return min(self._cap, self._base * (2 ** self.failures))

    def next_delay(self) -> float:
        """Record one failed attempt and return how long to wait before the next one."""
        self.failures += 1
        value = next(self._gen)
        # backoff.full_jitter uses the module-level random; ours is injectable for tests.
        return self._rng.uniform(0.0, value)
