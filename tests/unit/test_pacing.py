from __future__ import annotations

import bisect
import threading

import pytest

from ib_resilience.clock import ManualClock
from ib_resilience.config import PacingSettings
from ib_resilience.pacing import Pacer


def _max_in_window(times, window=1.0):
    """The largest number of grant times inside any closed interval of length ``window``."""
    times = sorted(times)
    best = 0
    for i, start in enumerate(times):
        j = bisect.bisect_right(times, start + window + 1e-9)
        best = max(best, j - i)
    return best


def _manual(rate=45.0, burst=4, **kwargs):
    clock = ManualClock()
    return clock, Pacer(rate, burst, clock, sleep=clock.advance, **kwargs)


def test_burst_goes_at_once_then_rate():
    clock, pacer = _manual(rate=10.0, burst=3)
    start = clock.monotonic()
    for _ in range(3):
        pacer.acquire()
    assert clock.monotonic() == start  # the burst did not wait
    pacer.acquire()
    assert clock.monotonic() == pytest.approx(start + 0.1)
    pacer.acquire()
    assert clock.monotonic() == pytest.approx(start + 0.2)


@pytest.mark.parametrize("rate, burst", [(45.0, 4), (45.0, 5), (10.0, 1), (3.5, 7), (100.0, 20)])
def test_any_one_second_window_is_bounded(rate, burst):
    clock, pacer = _manual(rate, burst)
    grants = []
    for i in range(400):
        pacer.acquire()
        grants.append(clock.monotonic())
        if i % 37 == 0:
            clock.advance(0.3)  # idle gaps let the bucket refill
    assert _max_in_window(grants) <= rate + burst


def test_a_busy_pacer_delivers_its_rate():
    clock, pacer = _manual(45.0, 4)
    grants = []
    for _ in range(300):
        pacer.acquire()
        grants.append(clock.monotonic())
    assert 45 <= _max_in_window(grants) <= 49
    assert grants[-1] - grants[0] == pytest.approx((300 - 4) / 45.0)


def test_default_settings_stay_below_the_gateway_limit():
    clock = ManualClock()
    pacer = Pacer.from_settings(PacingSettings(), clock, sleep=clock.advance)
    grants = []
    for _ in range(500):
        pacer.acquire()
        grants.append(clock.monotonic())
    assert _max_in_window(grants) < 50


class RecordingPacer(Pacer):
    """Records every reserved send time (``_reserve`` runs under the pacer's lock)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.slots = []

    def _reserve(self, now):
        slot = super()._reserve(now)
        self.slots.append(slot)
        return slot


def test_many_threads_never_exceed_the_bound_and_all_finish():
    clock = ManualClock()
    pacer = RecordingPacer(45.0, 4, clock, sleep=clock.advance)
    start = threading.Barrier(8)
    returned_late = []

    def worker():
        start.wait(timeout=10)
        for _ in range(60):
            pacer.acquire()
            returned_late.append(clock.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive()
    assert len(returned_late) == len(pacer.slots) == 480
    # The slots the threads were given, whatever the interleaving, respect rate + burst.
    # (Threads advance the shared clock independently, so the times they return at only say
    # that nobody returned before its slot: time ran faster than the schedule.)
    assert _max_in_window(pacer.slots) <= 49
    assert max(returned_late) >= max(pacer.slots)
    assert pacer.stats()["messages_sent"] == 480


def test_callers_are_served_in_arrival_order():
    clock = ManualClock()
    slept = []
    cond = threading.Condition()
    release = threading.Event()

    def gated_sleep(seconds):
        with cond:
            slept.append(seconds)
            cond.notify_all()
        release.wait(timeout=10)

    pacer = Pacer(10.0, 1, clock, sleep=gated_sleep)
    pacer.acquire()  # takes the burst: no wait
    threads = []
    for k in range(1, 4):
        thread = threading.Thread(target=pacer.acquire)
        thread.start()
        threads.append(thread)
        with cond:  # the next caller arrives only once this one is waiting
            assert cond.wait_for(lambda k=k: len(slept) >= k, timeout=10)
    # Each later caller reserved the next slot, although nobody has been granted yet.
    assert slept == pytest.approx([0.1, 0.2, 0.3])
    clock.advance(1.0)
    release.set()
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive()


def test_sleeps_only_as_long_as_needed():
    clock = ManualClock()
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        clock.advance(seconds)

    pacer = Pacer(4.0, 1, clock, sleep=sleep)
    pacer.acquire()
    pacer.acquire()
    assert slept == [pytest.approx(0.25)]
    clock.advance(10.0)
    pacer.acquire()
    assert len(slept) == 1  # idle time refilled the bucket


def test_sleep_that_returns_early_is_retried():
    clock = ManualClock()
    calls = []

    def short_sleep(seconds):
        calls.append(seconds)
        clock.advance(seconds / 2)  # e.g. an interrupted sleep

    pacer = Pacer(1.0, 1, clock, sleep=short_sleep)
    pacer.acquire()
    before = clock.monotonic()
    pacer.acquire()
    assert clock.monotonic() >= before + 1.0 - 1e-9
    assert len(calls) > 1


def test_try_acquire():
    clock, pacer = _manual(rate=2.0, burst=2)
    assert pacer.try_acquire() and pacer.try_acquire()
    assert not pacer.try_acquire()
    clock.advance(0.5)
    assert pacer.try_acquire()
    assert not pacer.try_acquire()
    assert pacer.stats()["messages_sent"] == 3


def test_slow_down_lowers_the_rate_for_a_while():
    clock, pacer = _manual(rate=40.0, burst=1)
    assert pacer.rate == 40.0
    pacer.slow_down(0.25, 5.0)
    assert pacer.rate == 10.0
    grants = []
    for _ in range(40):
        pacer.acquire()
        grants.append(clock.monotonic())
    assert _max_in_window([g for g in grants if g < 1004.0]) <= 10 + 1
    clock.advance(5.0)
    assert pacer.rate == 40.0
    assert pacer.stats()["slowdowns"] == 1


def test_slow_downs_do_not_compound():
    clock, pacer = _manual(rate=40.0, burst=1)
    pacer.slow_down(0.5, 10.0)
    clock.advance(2.0)
    pacer.slow_down(0.5, 1.0)
    assert pacer.rate == 20.0  # not 10
    clock.advance(7.9)
    assert pacer.rate == 20.0  # the later end of the two is kept
    clock.advance(0.2)
    assert pacer.rate == 40.0


def test_slow_down_defaults_come_from_construction():
    clock, pacer = _manual(rate=40.0, burst=1, slowdown_factor=0.1, slowdown_duration=2.0)
    pacer.slow_down()
    assert pacer.rate == pytest.approx(4.0)
    assert pacer.stats()["slowed_for"] == pytest.approx(2.0)


def test_stats():
    clock, pacer = _manual(rate=10.0, burst=1)
    for _ in range(3):
        pacer.acquire()
    stats = pacer.stats()
    assert stats["messages_sent"] == 3
    assert stats["total_wait"] == pytest.approx(0.2)  # 0, then 0.1 and 0.1
    assert stats["max_wait"] == pytest.approx(0.1)
    assert stats["current_rate"] == stats["configured_rate"] == 10.0
    assert stats["burst"] == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate": 0, "burst": 1},
        {"rate": -1.0, "burst": 1},
        {"rate": float("inf"), "burst": 1},
        {"rate": True, "burst": 1},
        {"rate": 10.0, "burst": 0},
        {"rate": 10.0, "burst": 1.5},
        {"rate": 10.0, "burst": 1, "slowdown_factor": 0},
        {"rate": 10.0, "burst": 1, "slowdown_factor": 2},
        {"rate": 10.0, "burst": 1, "slowdown_duration": -1},
    ],
)
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        Pacer(**kwargs)


def test_invalid_slow_down():
    _, pacer = _manual()
    with pytest.raises(ValueError):
        pacer.slow_down(1.5, 1.0)
    with pytest.raises(ValueError):
        pacer.slow_down(0.5, float("inf"))


def test_real_clock_small_burst_needs_no_wait():
    # With the system clock the burst is granted immediately (nothing to sleep for).
    pacer = Pacer(1.0, 3)
    for _ in range(3):
        pacer.acquire()
    assert pacer.stats()["total_wait"] == pytest.approx(0.0, abs=1e-3)
