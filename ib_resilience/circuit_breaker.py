"""Circuit breakers per guarded operation, on pybreaker, fed by the IB error classifier.

pybreaker's own ``call()`` is unsuitable around a gateway request: it holds one lock for the
whole guarded call (so two callers of the same operation would run one after the other, and a
caller waiting for a reply would block everybody), it treats excluded errors as successes
(a PERMANENT rejection would reset the failure count) and it reads the wall clock.

So the guarded call is split in two, and pybreaker's lock is held only for an instant:

* :meth:`Breaker.before_call` decides, under our own short lock, whether a call may start:
  closed → yes; open → :class:`CircuitOpenError` until the reset timeout (measured on our
  injectable :class:`~ib_resilience.clock.Clock`) has passed, then ``half_open()`` and one
  trial call; half-open → the one trial, everybody else is refused.
* :meth:`Breaker.record_success` / :meth:`Breaker.record_failure` report the outcome when the
  call has settled. A counted failure or a success is fed to the pybreaker object through its
  public ``call()`` with a function that returns (or raises) at once, so pybreaker keeps the
  state, the consecutive-failure counter, the storage and the listeners as usual.

What counts: CONNECTION, TRANSIENT and RATE_LIMIT errors and timeouts. PERMANENT errors (and
anything unrecognised, such as a ``ValueError`` from validation) neither count nor reset the
count; INFO never reaches a breaker; :class:`CircuitOpenError` never counts. A CONNECTION
failure also calls ``on_connection_failure`` (wake the watchdog), a RATE_LIMIT failure
``on_rate_limit`` (slow the pacer).

The pybreaker object is exposed as :attr:`Breaker.pybreaker` for reading state and adding
listeners; change the state through :meth:`Breaker.force_open` / :meth:`Breaker.reset`
(they take our lock first, keeping one lock order).
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, TypeVar

import pybreaker

from ib_resilience.clock import SYSTEM_CLOCK, Clock
from ib_resilience.config import BreakerSettings
from ib_resilience.error_codes import ErrorCategory, classify, counts_as_failure
from ib_resilience.errors import (
    CircuitOpenError,
    IBConnectionError,
    IBRequestError,
    RateLimitError,
    RequestTimeoutError,
)

__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "Breaker",
    "BreakerRegistry",
    "Ticket",
    "categorize",
    "circuit",
]

log = logging.getLogger(__name__)

CLOSED = pybreaker.STATE_CLOSED
OPEN = pybreaker.STATE_OPEN
HALF_OPEN = pybreaker.STATE_HALF_OPEN
# The names the status report uses (the vocabulary) for pybreaker's state names.
PUBLIC_STATE = {CLOSED: "CLOSED", OPEN: "OPEN", HALF_OPEN: "HALF_OPEN"}

# Keys of the ``failures_by_category`` statistic: the categories, plus timeouts (counted like
# TRANSIENT) and "OTHER" (exceptions that say nothing about the gateway; not counted).
TIMEOUT = "TIMEOUT"
OTHER = "OTHER"

FailureCallback = Callable[[str, BaseException], Any]
F = TypeVar("F", bound=Callable[..., Any])


def categorize(exc: BaseException) -> Optional[ErrorCategory]:
    """The category of a failed call's exception; None when it is not the gateway's doing.

    An explicit ``.category`` (as :class:`IBRequestError` carries) wins; then the type:
    rate limit, connection (ours or the builtin ``ConnectionError``), timeout (ours or the
    builtin ``TimeoutError``: TRANSIENT). :class:`CircuitOpenError` is None: it never counts.
    """
    if isinstance(exc, CircuitOpenError):
        return None
    category = getattr(exc, "category", None)
    if isinstance(category, ErrorCategory):
        return category
    if isinstance(exc, RateLimitError):
        return ErrorCategory.RATE_LIMIT
    if isinstance(exc, IBRequestError):
        return classify(exc.code, exc.text)
    if isinstance(exc, (IBConnectionError, ConnectionError)):
        return ErrorCategory.CONNECTION
    if isinstance(exc, (RequestTimeoutError, TimeoutError)):
        return ErrorCategory.TRANSIENT
    return None


def _stat_key(exc: BaseException, category: Optional[ErrorCategory]) -> str:
    if category is None:
        return OTHER
    if category is ErrorCategory.TRANSIENT and isinstance(exc, TimeoutError):
        return TIMEOUT
    return category.name


@dataclass(frozen=True)
class Ticket:
    """Handed out by :meth:`Breaker.before_call`, handed back with the outcome.

    ``epoch`` identifies the breaker state the call was admitted in: an outcome that arrives
    after the state changed (say, a slow call admitted while closed that settles after the
    circuit opened) updates the statistics but does not move the breaker.
    """

    epoch: int
    trial: bool


def _succeed() -> None:
    return None


def _fail(exc: BaseException) -> None:
    raise exc


class _StateListener(pybreaker.CircuitBreakerListener):
    def __init__(self, owner: Breaker) -> None:
        self._owner = owner

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        self._owner._on_state_change(getattr(old_state, "name", None), new_state.name)


class Breaker:
    """One operation's breaker. Thread-safe; no lock is held while the guarded call runs."""

    def __init__(
        self,
        name: str,
        settings: BreakerSettings = BreakerSettings(),
        clock: Clock = SYSTEM_CLOCK,
        *,
        on_connection_failure: Optional[FailureCallback] = None,
        on_rate_limit: Optional[FailureCallback] = None,
        expected_disconnects: Optional[Callable[[], bool]] = None,
    ) -> None:
        self.name = name
        # True while disconnects are expected (a maintenance window): CONNECTION failures
        # then neither count nor trip the breaker.
        self._expected_disconnects = expected_disconnects
        self.settings = settings
        self._clock = clock
        self._on_connection_failure = on_connection_failure
        self._on_rate_limit = on_rate_limit
        # Reentrant: pybreaker calls our listener synchronously while we hold this lock.
        self._lock = threading.RLock()
        self._epoch = 0
        self._opened_mono: Optional[float] = None
        self._last_opened_at: Optional[float] = None  # wall time, for display
        self._trial_started: Optional[float] = None  # monotonic; None = no trial in flight
        self._calls = 0
        self._successes = 0
        self._rejected = 0
        self._times_opened = 0
        self._failures: Dict[str, int] = {c.name: 0 for c in ErrorCategory}
        self._failures[TIMEOUT] = 0
        self._failures[OTHER] = 0
        self._cb = pybreaker.CircuitBreaker(
            fail_max=settings.fail_max,
            reset_timeout=settings.reset_timeout,
            name=name,
            listeners=[_StateListener(self)],
            # Re-raise our own exception when a failure trips the breaker.
            throw_new_error_on_trip=False,
        )

    @property
    def pybreaker(self) -> pybreaker.CircuitBreaker:
        """The underlying pybreaker object (read state, add listeners; don't change state)."""
        return self._cb

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"`` (pybreaker's names)."""
        return self._cb.current_state

    @property
    def failure_count(self) -> int:
        """Counted failures in a row (reset by a success, untouched by PERMANENT errors)."""
        return self._cb.fail_counter

    def retry_after(self) -> float:
        """Seconds until a call may be admitted again (0 when one may be now)."""
        with self._lock:
            return max(0.0, self._refusal_wait(self._clock.monotonic()))

    def _refusal_wait(self, now: float) -> float:
        state = self._cb.current_state
        timeout = self.settings.reset_timeout
        if state == OPEN:
            opened = self._opened_mono if self._opened_mono is not None else now
            return opened + timeout - now
        if state == HALF_OPEN and self._trial_started is not None:
            # A trial that never reports back is given up after one reset timeout.
            return self._trial_started + timeout - now
        return 0.0

    # -- the two halves of a guarded call --------------------------------------------------

    def before_call(self) -> Ticket:
        """Admit a call or raise :class:`CircuitOpenError` (nothing must be sent then)."""
        with self._lock:
            now = self._clock.monotonic()
            state = self._cb.current_state
            if state == OPEN:
                wait = self._refusal_wait(now)
                if wait > 0:
                    self._rejected += 1
                    raise CircuitOpenError(self.name, wait)
                self._cb.half_open()
                state = HALF_OPEN
            if state == HALF_OPEN:
                wait = self._refusal_wait(now)
                if wait > 0:
                    self._rejected += 1
                    raise CircuitOpenError(self.name, wait)
                if self._trial_started is not None:
                    log.warning("breaker %s: trial call never reported back; admitting another", self.name)
                self._trial_started = now
                self._calls += 1
                return Ticket(self._epoch, trial=True)
            self._calls += 1
            return Ticket(self._epoch, trial=False)

    def record_success(self, ticket: Optional[Ticket] = None) -> None:
        """The call admitted with ``ticket`` succeeded: reset the count; a trial closes."""
        with self._lock:
            self._successes += 1
            if not self._settles_trial(ticket):
                return
            if self._cb.current_state == OPEN:
                return  # a late result from before the circuit opened
            self._cb.call(_succeed)

    def record_failure(self, exc: BaseException, ticket: Optional[Ticket] = None) -> Optional[ErrorCategory]:
        """The call admitted with ``ticket`` failed with ``exc``; returns its category.

        CONNECTION, TRANSIENT (timeouts included) and RATE_LIMIT count towards opening (a
        failed trial re-opens); anything else leaves the breaker exactly as it was.
        """
        category = categorize(exc)
        counted = category is not None and counts_as_failure(category)
        if counted and category is ErrorCategory.CONNECTION and self._expected_disconnects is not None:
            counted = not self._expected_disconnects()
        with self._lock:
            self._failures[_stat_key(exc, category)] += 1
            current = self._settles_trial(ticket)
            if counted and current and self._cb.current_state != OPEN:
                try:
                    self._cb.call(_fail, exc)
                except BaseException as raised:  # pybreaker re-raises what it was given
                    if raised is not exc:
                        raise
        if category is ErrorCategory.CONNECTION:
            self._notify(self._on_connection_failure, exc)
        elif category is ErrorCategory.RATE_LIMIT:
            self._notify(self._on_rate_limit, exc)
        return category

    def _settles_trial(self, ticket: Optional[Ticket]) -> bool:
        """Whether this outcome may move the breaker; frees the trial slot (lock held)."""
        if ticket is not None and ticket.epoch != self._epoch:
            return False
        if ticket is None or ticket.trial:
            self._trial_started = None
        return True

    def _notify(self, callback: Optional[FailureCallback], exc: BaseException) -> None:
        if callback is None:
            return
        try:
            callback(self.name, exc)
        except Exception:
            log.exception("breaker %s: failure callback raised", self.name)

    # -- conveniences ------------------------------------------------------------------------

    def call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``func`` guarded: ``before_call``, the call (no lock held), then the record."""
        ticket = self.before_call()
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            self.record_failure(exc, ticket)
            raise
        self.record_success(ticket)
        return result

    def force_open(self) -> None:
        """Open the circuit now (for an operator, or tests)."""
        with self._lock:
            self._cb.open()

    def reset(self) -> None:
        """Close the circuit and clear the failure count."""
        with self._lock:
            self._trial_started = None
            self._cb.close()

    def _on_state_change(self, old: Optional[str], new: str) -> None:
        with self._lock:
            self._epoch += 1
            if new == OPEN:
                self._opened_mono = self._clock.monotonic()
                self._last_opened_at = self._clock.time()
                self._times_opened += 1
            if new != HALF_OPEN:
                self._trial_started = None
        level = logging.WARNING if new == OPEN else logging.INFO
        log.log(level, "breaker %s: %s -> %s", self.name, old, new)

    def stats(self) -> Dict[str, Any]:
        """State, failure count, calls, successes, success rate, failures by category, …"""
        with self._lock:
            settled = self._successes + sum(self._failures.values())
            return {
                "state": PUBLIC_STATE[self._cb.current_state],
                "failure_count": self._cb.fail_counter,
                "fail_max": self.settings.fail_max,
                "reset_timeout": self.settings.reset_timeout,
                "calls": self._calls,
                "successes": self._successes,
                "success_rate": (self._successes / settled) if settled else None,
                "failures_by_category": dict(self._failures),
                "rejected": self._rejected,
                "times_opened": self._times_opened,
                "last_opened_at": self._last_opened_at,
                "retry_after": max(0.0, self._refusal_wait(self._clock.monotonic())),
            }


class BreakerRegistry:
    """The breakers of all guarded operations, built from config."""

    def __init__(
        self,
        settings: Mapping[str, BreakerSettings],
        clock: Clock = SYSTEM_CLOCK,
        on_connection_failure: Optional[FailureCallback] = None,
        on_rate_limit: Optional[FailureCallback] = None,
        expected_disconnects: Optional[Callable[[], bool]] = None,
    ) -> None:
        self._breakers: Dict[str, Breaker] = {
            name: Breaker(
                name,
                s,
                clock,
                on_connection_failure=on_connection_failure,
                on_rate_limit=on_rate_limit,
                expected_disconnects=expected_disconnects,
            )
            for name, s in settings.items()
        }

    def get(self, name: str) -> Breaker:
        """The breaker of operation ``name`` (KeyError names the known ones)."""
        try:
            return self._breakers[name]
        except KeyError:
            raise KeyError(f"no breaker for operation {name!r}; known: {', '.join(sorted(self._breakers))}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._breakers

    def __iter__(self) -> Iterator[str]:
        return iter(self._breakers)

    def stats(self) -> Dict[str, Dict[str, Any]]:
        """``{operation: Breaker.stats()}``."""
        return {name: breaker.stats() for name, breaker in self._breakers.items()}


def circuit(name: str) -> Callable[[F], F]:
    """Guard a method of an object that has a ``_breakers: BreakerRegistry`` attribute.

    The method runs with no breaker lock held, so it may block on a reply and two threads
    may run it at once. Its exception is recorded, then re-raised unchanged.
    """

    def decorate(method: F) -> F:
        @functools.wraps(method)
        def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
            breaker = self._breakers.get(name)
            ticket = breaker.before_call()
            try:
                result = method(self, *args, **kwargs)
            except BaseException as exc:
                breaker.record_failure(exc, ticket)
                raise
            breaker.record_success(ticket)
            return result

        return guarded  # type: ignore[return-value]

    return decorate
