"""Pending blocking requests: ids, futures tagged with the connection generation, fail-all.

A caller registers a :class:`Pending` before sending; the reader thread resolves it from a
callback; the connection manager fails every pending request the moment a connection ends.
A reply that arrives for a generation other than the one a request was sent on is dropped, so
a late answer from a dead connection can never reach a new caller.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any, Callable, Dict, List, Optional

from .errors import IBConnectionError, RequestTimeoutError

# Request ids live far above any order id a gateway hands out, so an error() carrying an id can
# be routed without asking which namespace it belongs to.
REQUEST_ID_BASE = 1_000_000_000


Waker = Callable[[Callable[[], None]], None]


def _now(fn: Callable[[], None]) -> None:
    fn()


class NoReplyYet(Exception):
    """Internal: a pending request is still unanswered at the waiter's timeout."""


class Pending:
    """One request awaiting its reply. Rows of multi-message replies accumulate in ``rows``.

    A one-shot result: a plain lock held from birth and released by whoever settles it, which
    is cheaper than a ``concurrent.futures.Future`` on the hot request path. Only the thread
    that removed it from the table (under the table's lock) settles it, so it settles once.
    """

    __slots__ = ("key", "kind", "generation", "rows", "data", "_gate", "_settled", "_value", "_error")

    def __init__(self, key: int, kind: str, generation: int) -> None:
        self.key = key
        self.kind = kind
        self.generation = generation
        self.rows: List[Any] = []
        self.data: Dict[Any, Any] = {}
        self._gate = threading.Lock()
        self._gate.acquire()
        self._settled = False
        self._value: Any = None
        self._error: Optional[BaseException] = None

    def done(self) -> bool:
        return self._settled

    def resolve(self, value: Any, wake: Waker = _now) -> bool:
        """Settle with ``value``; ``wake(release)`` opens the gate (now, by default)."""
        if self._settled:
            return False
        self._value = value
        self._settled = True
        wake(self._gate.release)
        return True

    def fail(self, exc: BaseException, wake: Waker = _now) -> bool:
        if self._settled:
            return False
        self._error = exc
        self._settled = True
        wake(self._gate.release)
        return True

    def result(self, timeout: float) -> Any:
        """The reply; raises the failure, or :class:`NoReplyYet` past ``timeout``."""
        if self._gate.acquire(timeout=max(timeout, 0.0)):
            self._gate.release()  # stays open for any later reader
        elif not self._settled:  # settled with its wake-up still due counts as answered
            raise NoReplyYet
        if self._error is not None:
            raise self._error
        return self._value


class PendingRequests:
    """The table of requests in flight. Thread-safe."""

    def __init__(self, wake: Waker = _now) -> None:
        """``wake(release)`` opens a settled request's gate from :meth:`resolve` and
        :meth:`fail` (the reader thread defers it to the end of its read; see
        ``Bridge.wake_later``)."""
        self._wake = wake
        self._lock = threading.Lock()
        self._pending: Dict[int, Pending] = {}
        self._ids = itertools.count(REQUEST_ID_BASE)
        self._live_generation: Optional[int] = None

    def next_id(self) -> int:
        with self._lock:
            return next(self._ids)

    def open_generation(self, generation: int) -> None:
        """Accept registrations for a newly ready connection."""
        with self._lock:
            self._live_generation = generation

    def close_generation(self, generation: int, exc_factory: Callable[[Pending], BaseException]) -> int:
        """Fail every request of ``generation`` (or older) at once; returns how many."""
        with self._lock:
            if self._live_generation is not None and self._live_generation <= generation:
                self._live_generation = None
            doomed = [p for p in self._pending.values() if p.generation <= generation]
            for p in doomed:
                del self._pending[p.key]
        for p in doomed:
            p.fail(exc_factory(p))
        return len(doomed)

    def register(self, kind: str, key: Optional[int] = None) -> Pending:
        """Register a request on the live connection; raises IBConnectionError when there is none."""
        with self._lock:
            if self._live_generation is None:
                raise IBConnectionError(f"not connected: cannot send {kind}")
            if key is None:
                key = next(self._ids)
            if key in self._pending:
                raise ValueError(f"request id {key} is already pending")
            pending = Pending(key, kind, self._live_generation)
            self._pending[key] = pending
            return pending

    def get(self, key: int, generation: Optional[int] = None) -> Optional[Pending]:
        with self._lock:
            pending = self._pending.get(key)
        if pending is None or (generation is not None and pending.generation != generation):
            return None
        return pending

    def oldest_of_kind(self, kind: str) -> Optional[Pending]:
        with self._lock:
            for pending in self._pending.values():
                if pending.kind == kind:
                    return pending
        return None

    def resolve_oldest(self, kind: str, value: Any) -> bool:
        """Settle the oldest request of ``kind`` (for replies that carry no request id)."""
        with self._lock:
            for key, pending in self._pending.items():
                if pending.kind == kind:
                    del self._pending[key]
                    break
            else:
                return False
        return pending.resolve(value, self._wake)

    def discard(self, pending: Pending) -> None:
        with self._lock:
            if self._pending.get(pending.key) is pending:
                del self._pending[pending.key]

    def resolve(self, key: int, value: Any) -> bool:
        with self._lock:
            pending = self._pending.pop(key, None)
        return pending.resolve(value, self._wake) if pending is not None else False

    def fail(self, key: int, exc: BaseException) -> bool:
        with self._lock:
            pending = self._pending.pop(key, None)
        return pending.fail(exc, self._wake) if pending is not None else False

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def wait(self, pending: Pending, timeout: float, operation: str) -> Any:
        """Block until the reply, the connection's end, or the deadline (RequestTimeoutError)."""
        try:
            return pending.result(timeout)
        except NoReplyYet:
            raise RequestTimeoutError(
                f"{operation} got no reply within {timeout:g} s",
                operation=operation,
                timeout=timeout,
                req_id=pending.key,
            ) from None
        finally:
            if not pending.done():  # a settled request has already left the table
                self.discard(pending)
