"""Pure pieces of the connection core: transitions, pending requests, backoff, statistics."""

from __future__ import annotations

import random
import threading

import pytest

from ib_resilience.backoff_policy import ReconnectSchedule
from ib_resilience.clock import ManualClock
from ib_resilience.errors import IBConnectionError, RequestTimeoutError
from ib_resilience.requests import REQUEST_ID_BASE, PendingRequests
from ib_resilience.state import ALLOWED_TRANSITIONS, ConnectionState, InvalidTransition, check_transition
from ib_resilience.stats import ConnectionStats

S = ConnectionState


def test_every_state_has_a_row_and_no_self_loops() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(ConnectionState)
    for old, targets in ALLOWED_TRANSITIONS.items():
        assert old not in targets


@pytest.mark.parametrize(
    "old,new",
    [(S.DISCONNECTED, S.CONNECTED), (S.DISCONNECTED, S.RECONNECTING), (S.ERROR, S.CONNECTED), (S.CONNECTING, S.RECONNECTING)],
)
def test_forbidden_transitions_raise(old: ConnectionState, new: ConnectionState) -> None:
    with pytest.raises(InvalidTransition):
        check_transition(old, new)


def test_the_recovery_path_is_allowed() -> None:
    path = [S.DISCONNECTED, S.CONNECTING, S.CONNECTED, S.RECONNECTING, S.CONNECTED, S.RECONNECTING, S.ERROR, S.CONNECTING]
    for old, new in zip(path, path[1:]):
        check_transition(old, new)


def test_register_requires_a_live_generation() -> None:
    table = PendingRequests()
    with pytest.raises(IBConnectionError):
        table.register("current_time")
    table.open_generation(1)
    pending = table.register("current_time")
    assert pending.key >= REQUEST_ID_BASE and pending.generation == 1


def test_close_generation_fails_everything_pending_at_once() -> None:
    table = PendingRequests()
    table.open_generation(3)
    a, b = table.register("x"), table.register("y")
    assert table.close_generation(3, lambda p: IBConnectionError(f"lost {p.kind}")) == 2
    for p, kind in ((a, "x"), (b, "y")):
        with pytest.raises(IBConnectionError, match=f"lost {kind}"):
            p.result(timeout=0.0)
    with pytest.raises(IBConnectionError):
        table.register("z")  # the generation is no longer live
    assert len(table) == 0


def test_a_late_reply_for_an_old_generation_is_not_delivered() -> None:
    table = PendingRequests()
    table.open_generation(1)
    old = table.register("x")
    table.close_generation(1, lambda p: IBConnectionError("lost"))
    table.open_generation(2)
    new = table.register("x")
    assert table.get(old.key) is None
    assert table.get(new.key, generation=1) is None
    assert table.resolve(old.key, "stale") is False
    assert not new.done()


def test_wait_raises_our_timeout_and_forgets_the_request() -> None:
    table = PendingRequests()
    table.open_generation(1)
    pending = table.register("current_time")
    with pytest.raises(RequestTimeoutError) as info:
        table.wait(pending, 0.01, "get_current_time")
    assert isinstance(info.value, TimeoutError) and info.value.operation == "get_current_time"
    assert len(table) == 0


def test_wait_returns_a_value_resolved_from_another_thread() -> None:
    table = PendingRequests()
    table.open_generation(1)
    pending = table.register("current_time")
    threading.Thread(target=table.resolve, args=(pending.key, 42)).start()
    assert table.wait(pending, 5.0, "get_current_time") == 42


def test_backoff_is_full_jitter_exponential_capped_and_resettable() -> None:
    schedule = ReconnectSchedule(base=1.0, cap=8.0, rng=random.Random(1))
    ceilings = []
    for _ in range(6):
        ceilings.append(schedule.ceiling())
        delay = schedule.next_delay()
        assert 0.0 <= delay <= ceilings[-1]
    assert ceilings == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert schedule.failures == 6
    schedule.reset()
    assert schedule.failures == 0 and schedule.ceiling() == 1.0


def test_uptime_counts_from_the_first_connect() -> None:
    clock = ManualClock()
    stats = ConnectionStats(clock)
    assert stats.uptime_percentage() == 0.0
    clock.advance(100)  # time before the first connect does not count against uptime
    stats.on_connected()
    clock.advance(30)
    stats.on_disconnected()
    clock.advance(10)
    stats.on_connected()
    clock.advance(60)
    assert stats.uptime_percentage() == pytest.approx(90.0)
    assert stats.total_connections == 2 and stats.total_disconnections == 1


def test_quality_rule() -> None:
    clock = ManualClock()
    stats = ConnectionStats(clock)
    stats.on_connected()
    assert stats.quality(connected=False) == "POOR"
    assert stats.quality(connected=True, upstream_ok=False) == "POOR"
    stats.on_latency(0.010)
    assert stats.quality(connected=True) == "EXCELLENT"
    stats.on_disconnected()
    stats.on_connected()
    assert stats.quality(connected=True) == "GOOD"
    for _ in range(20):
        stats.on_latency(0.5)
    assert stats.quality(connected=True) == "FAIR"
    for _ in range(3):
        stats.on_disconnected()
        stats.on_connected()
    assert stats.quality(connected=True) == "POOR"
    clock.advance(3601)  # old disconnects age out of the window
    assert stats.quality(connected=True) == "FAIR"
