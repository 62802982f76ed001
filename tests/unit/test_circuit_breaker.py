from __future__ import annotations

import threading

import pybreaker
import pytest

from ib_resilience.circuit_breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    Breaker,
    BreakerRegistry,
    categorize,
    circuit,
)
from ib_resilience.clock import ManualClock
from ib_resilience.config import BreakerSettings, load_config
from ib_resilience.error_codes import ErrorCategory, exception_for
from ib_resilience.errors import (
    CircuitOpenError,
    IBConnectionError,
    IBRequestError,
    OrderRejectedError,
    RateLimitError,
    RequestTimeoutError,
)


def connection_error():
    return IBConnectionError("connection lost", host="127.0.0.1", port=4002)


def transient_error():
    return exception_for(322, "Error processing request", 5)


def permanent_error():
    return exception_for(201, "Order rejected - reason: no funds", 5)


def timeout_error():
    return RequestTimeoutError("no reply", operation="get_current_price", timeout=1.0)


def rate_limit_error():
    return exception_for(100, "Max rate of messages per second has been exceeded", 5)


def fail(breaker, exc):
    ticket = breaker.before_call()
    breaker.record_failure(exc, ticket)


def succeed(breaker):
    ticket = breaker.before_call()
    breaker.record_success(ticket)


def make(fail_max=3, reset_timeout=30.0, **kwargs):
    clock = ManualClock()
    return clock, Breaker("place_bracket_order", BreakerSettings(fail_max, reset_timeout), clock, **kwargs)


@pytest.mark.parametrize("factory", [connection_error, transient_error, timeout_error, rate_limit_error])
def test_trips_after_threshold(factory):
    _, breaker = make(fail_max=3)
    fail(breaker, factory())
    fail(breaker, factory())
    assert breaker.state == CLOSED and breaker.failure_count == 2
    fail(breaker, factory())
    assert breaker.state == OPEN


def test_open_circuit_refuses_with_name_and_retry_after():
    clock, breaker = make(fail_max=1, reset_timeout=30.0)
    fail(breaker, connection_error())
    clock.advance(10.0)
    with pytest.raises(CircuitOpenError) as info:
        breaker.before_call()
    assert info.value.operation == "place_bracket_order"
    assert info.value.retry_after == pytest.approx(20.0)
    assert "place_bracket_order" in str(info.value)
    assert breaker.stats()["rejected"] == 1


def test_open_circuit_never_runs_the_guarded_function():
    _, breaker = make(fail_max=1)
    fail(breaker, connection_error())
    ran = []
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: ran.append(1))
    assert ran == []


def test_permanent_errors_neither_count_nor_reset():
    _, breaker = make(fail_max=3)
    fail(breaker, transient_error())
    fail(breaker, transient_error())
    for _ in range(10):
        fail(breaker, permanent_error())
        fail(breaker, ValueError("bad argument"))
    assert breaker.state == CLOSED
    assert breaker.failure_count == 2  # unchanged: not reset as pybreaker's "excluded" would
    fail(breaker, transient_error())
    assert breaker.state == OPEN


def test_info_and_circuit_open_never_count():
    _, breaker = make(fail_max=1)
    fail(breaker, IBRequestError(2104, "Market data farm connection is OK", -1, ErrorCategory.INFO))
    fail(breaker, CircuitOpenError("other_operation", 3.0))
    assert breaker.state == CLOSED and breaker.failure_count == 0
    stats = breaker.stats()["failures_by_category"]
    assert stats["INFO"] == 1 and stats["OTHER"] == 1


def test_success_resets_the_count():
    _, breaker = make(fail_max=3)
    fail(breaker, connection_error())
    fail(breaker, connection_error())
    succeed(breaker)
    assert breaker.failure_count == 0
    fail(breaker, connection_error())
    fail(breaker, connection_error())
    assert breaker.state == CLOSED


def test_half_open_after_reset_timeout_then_closes_on_success():
    clock, breaker = make(fail_max=2, reset_timeout=30.0)
    fail(breaker, connection_error())
    fail(breaker, connection_error())
    assert breaker.state == OPEN
    clock.advance(29.9)
    with pytest.raises(CircuitOpenError):
        breaker.before_call()
    clock.advance(0.1)
    trial = breaker.before_call()
    assert trial.trial and breaker.state == HALF_OPEN
    breaker.record_success(trial)
    assert breaker.state == CLOSED and breaker.failure_count == 0


def test_half_open_reopens_on_failure():
    clock, breaker = make(fail_max=2, reset_timeout=5.0)
    fail(breaker, transient_error())
    fail(breaker, transient_error())
    clock.advance(5.0)
    trial = breaker.before_call()
    breaker.record_failure(timeout_error(), trial)
    assert breaker.state == OPEN
    with pytest.raises(CircuitOpenError) as info:
        breaker.before_call()
    assert info.value.retry_after == pytest.approx(5.0)  # a fresh reset timeout
    assert breaker.stats()["times_opened"] == 2


def test_half_open_admits_one_trial_only():
    clock, breaker = make(fail_max=1, reset_timeout=5.0)
    fail(breaker, connection_error())
    clock.advance(5.0)
    trial = breaker.before_call()
    clock.advance(1.0)
    with pytest.raises(CircuitOpenError) as info:
        breaker.before_call()
    assert info.value.retry_after == pytest.approx(4.0)
    breaker.record_success(trial)
    assert breaker.state == CLOSED
    breaker.before_call()  # open for business again


def test_a_permanent_trial_frees_the_slot_and_keeps_half_open():
    clock, breaker = make(fail_max=1, reset_timeout=5.0)
    fail(breaker, connection_error())
    clock.advance(5.0)
    trial = breaker.before_call()
    breaker.record_failure(permanent_error(), trial)
    assert breaker.state == HALF_OPEN
    second = breaker.before_call()
    assert second.trial
    breaker.record_success(second)
    assert breaker.state == CLOSED


def test_a_lost_trial_is_given_up_after_one_reset_timeout():
    clock, breaker = make(fail_max=1, reset_timeout=5.0)
    fail(breaker, connection_error())
    clock.advance(5.0)
    breaker.before_call()  # never reports back
    clock.advance(5.0)
    assert breaker.before_call().trial


def test_late_results_from_before_the_trip_do_not_move_the_breaker():
    clock, breaker = make(fail_max=1, reset_timeout=5.0)
    slow = breaker.before_call()  # admitted while closed, settles much later
    fail(breaker, connection_error())
    assert breaker.state == OPEN
    breaker.record_success(slow)
    assert breaker.state == OPEN  # a success from before the trip does not close it
    clock.advance(5.0)
    trial = breaker.before_call()
    breaker.record_failure(connection_error(), slow)  # stale: ignored by the state machine
    assert breaker.state == HALF_OPEN
    breaker.record_success(trial)
    assert breaker.state == CLOSED


def test_callbacks_fire_for_connection_and_rate_limit():
    woken, slowed = [], []
    _, breaker = make(
        fail_max=10,
        on_connection_failure=lambda name, exc: woken.append((name, exc)),
        on_rate_limit=lambda name, exc: slowed.append((name, exc)),
    )
    conn, rate = connection_error(), rate_limit_error()
    fail(breaker, conn)
    fail(breaker, rate)
    fail(breaker, transient_error())
    fail(breaker, permanent_error())
    assert woken == [("place_bracket_order", conn)]
    assert slowed == [("place_bracket_order", rate)]


def test_a_raising_callback_is_contained():
    def boom(name, exc):
        raise RuntimeError("listener bug")

    _, breaker = make(fail_max=5, on_connection_failure=boom)
    fail(breaker, connection_error())  # does not raise
    assert breaker.failure_count == 1


def test_categorize():
    assert categorize(connection_error()) is ErrorCategory.CONNECTION
    assert categorize(ConnectionResetError()) is ErrorCategory.CONNECTION
    assert categorize(timeout_error()) is ErrorCategory.TRANSIENT
    assert categorize(RateLimitError(100, "pace")) is ErrorCategory.RATE_LIMIT
    assert categorize(OrderRejectedError(201, "no", 1, ErrorCategory.PERMANENT)) is ErrorCategory.PERMANENT
    assert categorize(IBRequestError(322, "server error")) is ErrorCategory.TRANSIENT  # by code
    assert categorize(CircuitOpenError("x", 1.0)) is None
    assert categorize(ValueError("bad")) is None


def test_stats():
    clock, breaker = make(fail_max=2, reset_timeout=10.0)
    succeed(breaker)
    fail(breaker, timeout_error())
    fail(breaker, permanent_error())
    fail(breaker, connection_error())
    stats = breaker.stats()
    assert stats["state"] == "OPEN"
    assert stats["failure_count"] == 2
    assert stats["calls"] == 4 and stats["successes"] == 1
    assert stats["success_rate"] == pytest.approx(0.25)
    assert stats["failures_by_category"]["TIMEOUT"] == 1
    assert stats["failures_by_category"]["PERMANENT"] == 1
    assert stats["failures_by_category"]["CONNECTION"] == 1
    assert stats["last_opened_at"] == clock.time()
    assert stats["retry_after"] == pytest.approx(10.0)
    assert make()[1].stats()["success_rate"] is None


def test_state_is_pybreakers():
    _, breaker = make(fail_max=1)
    events = []

    class Listener(pybreaker.CircuitBreakerListener):
        def state_change(self, cb, old_state, new_state):
            events.append(new_state.name)

    breaker.pybreaker.add_listener(Listener())
    fail(breaker, connection_error())
    assert breaker.pybreaker.current_state == pybreaker.STATE_OPEN
    breaker.reset()
    assert breaker.pybreaker.current_state == pybreaker.STATE_CLOSED
    breaker.force_open()
    assert events == ["open", "closed", "open"]


def test_call_wrapper_records_and_reraises():
    _, breaker = make(fail_max=1)
    assert breaker.call(lambda x: x * 2, 21) == 42
    exc = connection_error()
    with pytest.raises(IBConnectionError) as info:
        breaker.call(_raiser(exc))
    assert info.value is exc  # the original exception, not pybreaker's
    assert breaker.state == OPEN


def _raiser(exc):
    def raiser():
        raise exc

    return raiser


# --- two callers at once -----------------------------------------------------------------------


class Client:
    def __init__(self, registry):
        self._breakers = registry

    @circuit("get_current_price")
    def get_current_price(self, inside, release):
        inside.wait(timeout=10)  # only returns once the *other* caller is inside too
        release.wait(timeout=10)
        return 1.5

    @circuit("cancel_order")
    def cancel_order(self, exc):
        raise exc


def test_two_threads_run_the_same_operation_concurrently():
    client = Client(BreakerRegistry(load_config().breakers, ManualClock()))
    barrier = threading.Barrier(2)
    both_inside = threading.Event()
    release = threading.Event()
    results = []

    class Arrive:
        def wait(self, timeout):
            barrier.wait(timeout=timeout)  # raises BrokenBarrierError if we were serialised
            both_inside.set()

    def run():
        results.append(client.get_current_price(Arrive(), release))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    assert both_inside.wait(timeout=10), "the second caller could not enter while the first was inside"
    release.set()
    for t in threads:
        t.join(timeout=10)
        assert not t.is_alive()
    assert results == [1.5, 1.5]
    assert client._breakers.get("get_current_price").stats()["successes"] == 2


def test_decorator_counts_failures_and_refuses_without_calling():
    registry = BreakerRegistry(load_config().breakers, ManualClock())
    client = Client(registry)
    for _ in range(3):  # cancel_order: 3 failures
        with pytest.raises(IBConnectionError):
            client.cancel_order(connection_error())
    assert registry.get("cancel_order").state == OPEN
    with pytest.raises(CircuitOpenError) as info:
        client.cancel_order(AssertionError("must not run"))
    assert info.value.operation == "cancel_order"
    assert registry.get("get_current_price").state == CLOSED  # breakers are per operation


def test_registry():
    woken = []
    registry = BreakerRegistry(
        load_config().breakers, ManualClock(), on_connection_failure=lambda n, e: woken.append(n)
    )
    assert set(registry) == {
        "place_bracket_order",
        "place_strangle",
        "get_current_price",
        "cancel_order",
        "close_position_at_market",
    }
    assert registry.get("get_current_price").settings == BreakerSettings(5, 60.0)
    assert "cancel_order" in registry
    with pytest.raises(KeyError, match="cancel_order"):
        registry.get("cancel")
    fail(registry.get("place_strangle"), connection_error())
    assert woken == ["place_strangle"]
    stats = registry.stats()
    assert stats["place_strangle"]["failure_count"] == 1
    expected = {"state", "failure_count", "calls", "successes", "success_rate", "failures_by_category", "last_opened_at"}
    assert expected <= set(stats["cancel_order"])


@pytest.mark.parametrize(
    "name, fail_max, reset_timeout",
    [
        ("place_bracket_order", 3, 30.0),
        ("place_strangle", 3, 30.0),
        ("get_current_price", 5, 60.0),
        ("cancel_order", 3, 30.0),
        ("close_position_at_market", 3, 30.0),
    ],
)
def test_each_default_breaker_cycle(name, fail_max, reset_timeout):
    clock = ManualClock()
    breaker = BreakerRegistry(load_config().breakers, clock).get(name)
    for _ in range(fail_max - 1):
        fail(breaker, transient_error())
    fail(breaker, permanent_error())
    assert breaker.state == CLOSED
    fail(breaker, connection_error())
    assert breaker.state == OPEN
    clock.advance(reset_timeout)
    succeed(breaker)
    assert breaker.state == CLOSED
