"""The outbound pacer: one token bucket that every message to the gateway passes.

The gateway allows 50 messages per second from a client, all kinds combined, and answers an
excess with error 100 (and "will likely disconnect"). The pacer is a token bucket with
``rate`` tokens per second and room for ``burst``: in any one-second window it grants at most
``rate + burst`` messages (the defaults, 45 + 4, stay below 50).

It is implemented as virtual scheduling (GCRA): under a short lock each caller *reserves* the
next free send time, then waits for it outside the lock. Callers are therefore served in the
order they arrived (no starvation) and nobody holds the lock while waiting. Both the clock and
the ``sleep`` function are injectable, so tests drive a :class:`~ib_resilience.clock.ManualClock`
with ``sleep=clock.advance`` and never wait for real.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable, Dict, Optional

from ib_resilience.clock import SYSTEM_CLOCK, Clock

__all__ = ["Pacer"]


class Pacer:
    """A thread-safe token bucket: ``acquire()`` blocks until a message may be sent."""

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Clock = SYSTEM_CLOCK,
        *,
        sleep: Callable[[float], Any] = time.sleep,
        slowdown_factor: float = 0.5,
        slowdown_duration: float = 10.0,
    ) -> None:
        if isinstance(rate, bool) or not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a finite number > 0, got {rate!r}")
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ValueError(f"burst must be an integer >= 1, got {burst!r}")
        _check_slowdown(slowdown_factor, slowdown_duration)
        self._base_rate = float(rate)
        self._burst = burst
        self._clock = clock
        self._sleep = sleep
        self._default_factor = slowdown_factor
        self._default_duration = slowdown_duration
        self._lock = threading.Lock()
        # The theoretical arrival time: when the bucket would be full again if nothing else
        # were sent. A message may go at ``tat - (burst - 1) * interval``.
        self._tat = clock.monotonic()
        self._slow_factor = 1.0
        self._slow_until = -math.inf
        self._sent = 0
        self._waited = 0.0
        self._max_wait = 0.0
        self._slowdowns = 0

    @classmethod
    def from_settings(cls, settings: Any, clock: Clock = SYSTEM_CLOCK, **kwargs: Any) -> Pacer:
        """A pacer from :class:`~ib_resilience.config.PacingSettings`."""
        return cls(
            settings.max_messages_per_second,
            settings.burst,
            clock,
            slowdown_factor=settings.slowdown_factor,
            slowdown_duration=settings.slowdown_duration,
            **kwargs,
        )

    # -- the rate -------------------------------------------------------------------------

    def _rate_at(self, now: float) -> float:
        if now < self._slow_until:
            return self._base_rate * self._slow_factor
        return self._base_rate

    @property
    def rate(self) -> float:
        """The rate in force now (lowered during a slow-down)."""
        with self._lock:
            return self._rate_at(self._clock.monotonic())

    @property
    def burst(self) -> int:
        return self._burst

    def slow_down(self, factor: Optional[float] = None, duration: Optional[float] = None) -> None:
        """Lower the rate to ``factor`` × the configured rate for ``duration`` seconds.

        Feedback for RATE_LIMIT errors. Slow-downs do not compound: while one is in force a
        new one keeps the lower factor and the later end.
        """
        factor = self._default_factor if factor is None else factor
        duration = self._default_duration if duration is None else duration
        _check_slowdown(factor, duration)
        with self._lock:
            now = self._clock.monotonic()
            if now < self._slow_until:
                self._slow_factor = min(self._slow_factor, factor)
                self._slow_until = max(self._slow_until, now + duration)
            else:
                self._slow_factor = factor
                self._slow_until = now + duration
            self._slowdowns += 1

    # -- granting -------------------------------------------------------------------------

    def _reserve(self, now: float) -> float:
        """Reserve the next send time (the caller holds the lock)."""
        interval = 1.0 / self._rate_at(now)
        tolerance = (self._burst - 1) * interval
        tat = max(self._tat, now)
        send_at = max(now, tat - tolerance)
        self._tat = tat + interval
        self._sent += 1
        return send_at

    def acquire(self) -> None:
        """Block until one message may be sent (at most ``queue ahead / rate`` seconds)."""
        with self._lock:
            now = self._clock.monotonic()
            send_at = self._reserve(now)
            wait = send_at - now
            self._waited += wait
            self._max_wait = max(self._max_wait, wait)
        # Wait outside the lock: later callers reserve later slots meanwhile.
        while True:
            remaining = send_at - self._clock.monotonic()
            if remaining <= 0:
                return
            self._sleep(remaining)

    def try_acquire(self) -> bool:
        """Take a slot only if one is free right now; never blocks."""
        with self._lock:
            now = self._clock.monotonic()
            interval = 1.0 / self._rate_at(now)
            if max(self._tat, now) - (self._burst - 1) * interval > now:
                return False
            self._reserve(now)
            return True

    def stats(self) -> Dict[str, Any]:
        """Messages granted, total and longest wait (s), the rate now, slow-downs so far."""
        with self._lock:
            now = self._clock.monotonic()
            return {
                "messages_sent": self._sent,
                "total_wait": self._waited,
                "max_wait": self._max_wait,
                "current_rate": self._rate_at(now),
                "configured_rate": self._base_rate,
                "burst": self._burst,
                "slowed_for": max(0.0, self._slow_until - now),
                "slowdowns": self._slowdowns,
            }


def _check_slowdown(factor: float, duration: float) -> None:
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 < factor <= 1:
        raise ValueError(f"slow-down factor must be in (0, 1], got {factor!r}")
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not 0 <= duration < math.inf:
        raise ValueError(f"slow-down duration must be a finite number >= 0, got {duration!r}")
