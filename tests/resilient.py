"""Shared helpers for tests that drive IBClient against the simulator."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

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


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.002) -> bool:
    """Wait for a condition with a deadline (for state that has no event of its own)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return bool(predicate())
        time.sleep(interval)
    return True


def extra_threads(baseline: List[str]) -> List[str]:
    """Names of live threads that are not in ``baseline``."""
    return [t.name for t in threading.enumerate() if t.name not in baseline]


def wait_threads_back(baseline: List[str], timeout: float = 10.0) -> List[str]:
    """Names of threads still alive beyond ``baseline`` once ``timeout`` passes (or none)."""
    wait_until(lambda: not extra_threads(baseline), timeout, interval=0.02)  # foreign threads' exit: no event
    return extra_threads(baseline)


class InThread:
    """Run a blocking call on a thread; join it with a deadline."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.result = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc

    def join(self, timeout: float = 30.0) -> Any:
        """The call's result; re-raises what it raised; fails the test if it is still running."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the call did not return within its deadline"
        if self.error is not None:
            raise self.error
        return self.result


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
    # Sampling the pending table: the request is registered on another thread.
    wait_until(lambda: client.get_connection_status()["pending_requests"] > 0, timeout, interval=0.01)
    cut()
    thread.join(timeout)
    assert not thread.is_alive(), "the call did not end when its connection dropped"
    assert len(outcome) == 1, "the call returned although its connection dropped"
    return outcome[0]
