"""Recovery after a gateway restart, computed on paper from each client's reconnect schedule.

Parameters are those in ``shared/reference/peers.md`` (read from the peers' sources):

* ib_async 2.1.0 reconnects only through its ``Watchdog`` (with an IBC controller): on a
  disconnect it terminates the gateway, waits ``retryDelay`` 2 s, starts it, waits
  ``appStartupTime`` 30 s, then connects (``connectTimeout`` 2 s). A silent socket is noticed
  after ``appTimeout`` 20 s idle plus a ``probeTimeout`` 4 s historical-data probe. Without a
  Watchdog it does not reconnect at all.
* nautilus_trader's IB adapter sleeps 5 s after a drop, then backs off 5·2^(n-2) s capped at
  300 s (plus jitter, whose size is not part of the schedule and is left out here).
* rust-ibapi: Fibonacci delays 1, 2, 3, 5, 8 ... for 20 attempts.
* ours: an immediate attempt, then full-jitter delays uniform in [0, min(cap, base·2^n)]
  (defaults base 1 s, cap 300 s); the expectation is taken over the jitter (Monte Carlo with
  the library's own ``ReconnectSchedule``).

"Ready" is the first attempt at or after the gateway is back (the handshake itself, a few
milliseconds, is left out for every client alike).
"""

from __future__ import annotations

import random
from typing import Dict, Iterator, List

from common import percentile

from ib_resilience.backoff_policy import ReconnectSchedule

WATCHDOG_RETRY_DELAY = 2.0
WATCHDOG_APP_STARTUP = 30.0
WATCHDOG_APP_TIMEOUT = 20.0
WATCHDOG_PROBE_TIMEOUT = 4.0


def _first_at_or_after(attempts: Iterator[float], downtime: float) -> float:
    for t in attempts:
        if t >= downtime:
            return t
    return float("inf")


def nautilus_attempts() -> Iterator[float]:
    t = 5.0
    yield t
    n = 2
    while t < 1e6:
        t += min(300.0, 5.0 * 2 ** (n - 2))
        n += 1
        yield t


def rust_ibapi_attempts() -> Iterator[float]:
    a, b, t = 1.0, 2.0, 0.0
    for _ in range(20):
        t += a
        yield t
        a, b = b, a + b


def ib_async_watchdog_ready(downtime: float) -> float:
    """The Watchdog restarts the gateway itself: every cycle is retryDelay + appStartupTime."""
    cycle = WATCHDOG_RETRY_DELAY + WATCHDOG_APP_STARTUP
    t = cycle
    while t < downtime:
        t += cycle
    return t


def ours_attempts(base: float, cap: float, rng: random.Random) -> Iterator[float]:
    schedule = ReconnectSchedule(base, cap, rng)
    t = 0.0
    yield t
    while t < 1e6:
        t += schedule.next_delay()
        yield t


def ours_ready(downtime: float, base: float, cap: float, draws: int = 4000) -> Dict[str, float]:
    rng = random.Random(6)
    samples = [_first_at_or_after(ours_attempts(base, cap, rng), downtime) for _ in range(draws)]
    return {"p50": percentile(samples, 50), "p99": percentile(samples, 99)}


def table(downtimes: List[float], base: float = 1.0, cap: float = 300.0) -> List[Dict[str, object]]:
    rows: List[Dict[str, object]] = []
    for d in downtimes:
        ours = ours_ready(d, base, cap)
        rows.append({
            "downtime": d,
            "ours_p50": ours["p50"],
            "ours_p99": ours["p99"],
            "nautilus": _first_at_or_after(nautilus_attempts(), d),
            "rust_ibapi": _first_at_or_after(rust_ibapi_attempts(), d),
            "ib_async_watchdog": ib_async_watchdog_ready(d),
        })
    return rows


def ib_async_blackhole_detection() -> float:
    return WATCHDOG_APP_TIMEOUT + WATCHDOG_PROBE_TIMEOUT
