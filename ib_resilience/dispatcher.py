"""The thread that runs user callbacks and state listeners, so a slow one never stalls the
reader thread (heartbeats, order acknowledgements).

Queue policy (bounded where it can be, observable everywhere):

- :meth:`Dispatcher.submit` is for events that must never be lost (order events, state
  changes). They go to one FIFO that is *not* bounded; its length is :meth:`depth` (and
  ``stats().max_depth``), so a dispatcher that falls behind is visible in the status.
- :meth:`Dispatcher.submit_latest` is for updates where only the latest value matters (ticks
  per symbol and field). While an entry for ``key`` is still queued, a new submission replaces
  its arguments in place (it keeps its queue position) instead of queueing another one. So
  coalesced entries never number more than the distinct keys.
- Callbacks run one at a time, in submission order. An exception is logged and counted and
  never propagates.

Lifecycle: :meth:`start` (restartable after :meth:`stop`); :meth:`stop` lets the thread run
everything queued so far and waits up to ``timeout`` for it. If a callback is still running
then, the (daemon) thread finishes the queue in the background and exits; ``stop`` returns
False. Entries submitted while stopped stay queued for the next :meth:`start`.
"""

from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, Hashable, List, Optional

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DispatcherStats:
    """Counters since construction."""

    submitted: int
    coalesced: int
    executed: int
    errors: int
    depth: int
    max_depth: int


class _Entry:
    __slots__ = ("fn", "args", "key")

    def __init__(self, fn: Callable[..., Any], args: tuple, key: Optional[Hashable]) -> None:
        self.fn = fn
        self.args = args
        self.key = key


_NO_KEY: Any = object()  # plain submit(); any hashable, None included, is a valid key


class Dispatcher:
    """One worker thread with a FIFO of never-dropped events and coalesced latest-value updates."""

    def __init__(self, name: str = "ib-dispatcher") -> None:
        self.name = name
        self._cond = threading.Condition(threading.Lock())
        self._queue: Deque[_Entry] = collections.deque()
        self._latest: Dict[Hashable, _Entry] = {}
        self._thread: Optional[threading.Thread] = None
        self._stopping = False
        self._submitted = 0
        self._coalesced = 0
        self._executed = 0
        self._errors = 0
        self._max_depth = 0

    # ------------------------------------------------------------------ submitting

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)``; never dropped, never coalesced."""
        with self._cond:
            self._queue.append(_Entry(fn, args, _NO_KEY))
            self._submitted += 1
            depth = len(self._queue)
            if depth > self._max_depth:
                self._max_depth = depth
            self._cond.notify()

    def submit_latest(self, key: Hashable, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)`` unless an entry for ``key`` is still queued: then that entry's
        function and arguments are replaced (it keeps its place in the queue)."""
        with self._cond:
            self._submitted += 1
            entry = self._latest.get(key)
            if entry is not None:
                entry.fn = fn
                entry.args = args
                self._coalesced += 1
                return
            entry = _Entry(fn, args, key)
            self._latest[key] = entry
            self._queue.append(entry)
            depth = len(self._queue)
            if depth > self._max_depth:
                self._max_depth = depth
            self._cond.notify()

    # ------------------------------------------------------------------ observing

    def depth(self) -> int:
        """Entries waiting to run (not counting the one running now)."""
        return len(self._queue)

    def stats(self) -> DispatcherStats:
        with self._cond:
            return DispatcherStats(
                submitted=self._submitted,
                coalesced=self._coalesced,
                executed=self._executed,
                errors=self._errors,
                depth=len(self._queue),
                max_depth=self._max_depth,
            )

    def is_dispatcher_thread(self) -> bool:
        """True when called from a callback this dispatcher is running."""
        thread = self._thread
        return thread is not None and thread is threading.current_thread()

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive() and not self._stopping

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the worker thread (a daemon). Idempotent; restarts after :meth:`stop`."""
        with self._cond:
            self._stopping = False
            if self._thread is not None:  # running, or still draining after a stop: keep it
                self._cond.notify()
                return
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Run what is queued, then end the thread; wait up to ``timeout`` seconds.

        Returns True if the thread has ended. From a callback (the dispatcher thread itself)
        it only asks the thread to end after the queue, and returns False.
        """
        with self._cond:
            thread = self._thread
            self._stopping = True
            self._cond.notify_all()
        if thread is None:
            return True
        if thread is threading.current_thread():
            return False
        thread.join(timeout)
        if thread.is_alive():
            logger.error(
                "dispatcher %s still busy after %.1f s (%d queued); it finishes in the background",
                self.name,
                timeout,
                len(self._queue),
            )
            return False
        return True

    def _run(self) -> None:
        me = threading.current_thread()
        cond = self._cond
        queue = self._queue
        ran = 0
        while True:
            with cond:
                self._executed += ran
                ran = 0
                while not queue:
                    if self._stopping:
                        if self._thread is me:
                            self._thread = None
                        return
                    cond.wait()
                entry = queue.popleft()
                if entry.key is not _NO_KEY:
                    del self._latest[entry.key]
                fn, args = entry.fn, entry.args
            try:
                fn(*args)
            except Exception:
                with cond:
                    self._errors += 1
                logger.exception("dispatched callback %r raised; ignored", fn)
            ran = 1

    def pending_keys(self) -> List[Hashable]:
        """Keys of coalesced entries still queued (for status and tests)."""
        with self._cond:
            return list(self._latest)
