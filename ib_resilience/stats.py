"""Connection statistics: uptime, latency, counts, and the connection-quality rule.

Quality rule (documented in docs/architecture.md):

* POOR      — not connected, or upstream (gateway ↔ IB) connectivity is down.
* EXCELLENT — average heartbeat latency below 50 ms and no disconnect in the last hour.
* GOOD      — average latency below 250 ms and at most one disconnect in the last hour.
* FAIR      — average latency below 1 s and at most three disconnects in the last hour.
* POOR      — anything worse.

The average is over the last 20 heartbeat round trips; with no sample yet, latency counts as 0.
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Deque, Dict, Optional

from .clock import SYSTEM_CLOCK, Clock

QUALITY_WINDOW_S = 3600.0
LATENCY_SAMPLES = 20


class ConnectionStats:
    """Thread-safe counters written by the connection manager, read by anyone."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._first_connected_at: Optional[float] = None
        self._connected_since: Optional[float] = None
        self._connected_total = 0.0
        self._disconnect_times: Deque[float] = collections.deque(maxlen=64)
        self._latencies: Deque[float] = collections.deque(maxlen=LATENCY_SAMPLES)
        self.total_connections = 0
        self.total_disconnections = 0
        self.failed_attempts = 0
        self.last_heartbeat_at: Optional[float] = None  # wall time of the last answered heartbeat
        self.last_error: Optional[str] = None
        self.errors_by_code: Dict[int, int] = collections.Counter()
        self.errors_by_category: Dict[str, int] = collections.Counter()

    def on_connected(self) -> None:
        now = self._clock.monotonic()
        with self._lock:
            if self._first_connected_at is None:
                self._first_connected_at = now
            self._connected_since = now
            self.total_connections += 1

    def on_disconnected(self) -> None:
        now = self._clock.monotonic()
        with self._lock:
            if self._connected_since is None:
                return
            self._connected_total += now - self._connected_since
            self._connected_since = None
            self.total_disconnections += 1
            self._disconnect_times.append(now)

    def on_failed_attempt(self, error: str) -> None:
        with self._lock:
            self.failed_attempts += 1
            self.last_error = error

    def on_error(self, code: int, category: str, text: str) -> None:
        with self._lock:
            self.errors_by_code[code] += 1
            self.errors_by_category[category] += 1
            if category not in ("INFO",):
                self.last_error = f"{code}: {text}"

    def on_latency(self, seconds: float) -> None:
        with self._lock:
            self._latencies.append(seconds)
            self.last_heartbeat_at = self._clock.time()

    def uptime_percentage(self) -> float:
        now = self._clock.monotonic()
        with self._lock:
            if self._first_connected_at is None:
                return 0.0
            up = self._connected_total
            if self._connected_since is not None:
                up += now - self._connected_since
            span = now - self._first_connected_at
        return 100.0 if span <= 0 else min(100.0, 100.0 * up / span)

    def average_latency_ms(self) -> float:
        with self._lock:
            if not self._latencies:
                return 0.0
            return 1000.0 * sum(self._latencies) / len(self._latencies)

    def recent_disconnects(self) -> int:
        horizon = self._clock.monotonic() - QUALITY_WINDOW_S
        with self._lock:
            return sum(1 for t in self._disconnect_times if t >= horizon)

    def quality(self, connected: bool, upstream_ok: bool = True) -> str:
        if not connected or not upstream_ok:
            return "POOR"
        latency = self.average_latency_ms()
        drops = self.recent_disconnects()
        if latency < 50 and drops == 0:
            return "EXCELLENT"
        if latency < 250 and drops <= 1:
            return "GOOD"
        if latency < 1000 and drops <= 3:
            return "FAIR"
        return "POOR"

    def snapshot(self) -> Dict[str, Any]:
        with self._lock:
            return {
                "total_connections": self.total_connections,
                "total_disconnections": self.total_disconnections,
                "failed_attempts": self.failed_attempts,
                "last_error": self.last_error,
                "last_heartbeat_at": self.last_heartbeat_at,
                "errors_by_code": dict(self.errors_by_code),
                "errors_by_category": dict(self.errors_by_category),
            }
