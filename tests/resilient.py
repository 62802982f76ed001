"""Shared helpers for tests that drive IBClient against the simulator."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List, Tuple

from ib_resilience.client import IBClient
from ib_resilience.state import ConnectionState

# Sub-second intervals so that every fault resolves quickly; nothing asserts on timing.
FAST: Dict[str, Any] = {
    "connect_timeout": 2.0,
    "max_reconnect_attempts": 0,
    "reconnect_delay_base": 0.05,
    "reconnect_delay_max": 0.2,
    "heartbeat_interval": 0.2,
    "heartbeat_timeout": 0.4,
    "request_timeout": 5.0,
    "stable_after": 60.0,
    "client_id_in_use_delay": 0.1,
}


def wait_threads_back(baseline: List[str], timeout: float = 10.0) -> List[str]:
    """Names of threads still alive beyond ``baseline`` once ``timeout`` passes (or none)."""
    deadline = time.monotonic() + timeout
    while True:
        extra = [t.name for t in threading.enumerate() if t.name not in baseline]
        if not extra or time.monotonic() >= deadline:
            return extra
        time.sleep(0.02)  # polling foreign threads' exit: there is no event to wait on


Transition = Tuple[ConnectionState, ConnectionState, str]


class Recorder:
    """A state listener that lets a test wait for a transition."""

    def __init__(self, client: IBClient) -> None:
        self.seen: List[Transition] = []
        self._cond = threading.Condition()
        client.add_state_listener(self)

    def __call__(self, old: ConnectionState, new: ConnectionState, reason: str) -> None:
        with self._cond:
            self.seen.append((old, new, reason))
            self._cond.notify_all()

    def count(self, new: ConnectionState) -> int:
        with self._cond:
            return sum(1 for _, n, _ in self.seen if n is new)

    def wait(self, new: ConnectionState, count: int = 1, timeout: float = 15.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: sum(1 for _, n, _ in self.seen if n is new) >= count, timeout)


def drop_while_pending(client: IBClient, cut: Callable[[], None], call: Callable[[], Any],
                       timeout: float = 10.0) -> BaseException:
    """Run ``call`` on a thread; once its request is pending, ``cut()`` the connection; return
    what the call raised (it must end within ``timeout``, far below any request timeout)."""
    outcome: List[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while client.get_connection_status()["pending_requests"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)  # sampling the pending table: the request is registered on another thread
    cut()
    thread.join(timeout)
    assert not thread.is_alive(), "the call did not end when its connection dropped"
    assert len(outcome) == 1, "the call returned although its connection dropped"
    return outcome[0]
