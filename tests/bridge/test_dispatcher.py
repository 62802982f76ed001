"""Dispatcher: order, coalescing, never-dropped events, isolation from slow callbacks,
errors contained, bounded stop, restart."""

from __future__ import annotations

import threading
from typing import Any, List

from ib_resilience.dispatcher import Dispatcher

from resilient import wait_until


class Gate:
    """A callback that blocks the dispatcher until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> None:
        self.entered.set()
        assert self.release.wait(20)


def test_events_run_in_submission_order_on_the_dispatcher_thread() -> None:
    d = Dispatcher(name="test-dispatcher")
    d.start()
    seen: List[Any] = []
    threads: List[str] = []
    done = threading.Event()
    for i in range(500):
        d.submit(seen.append, i)
    d.submit(lambda: threads.append(threading.current_thread().name))
    d.submit(done.set)
    assert done.wait(10)
    assert seen == list(range(500)) and threads == ["test-dispatcher"]
    assert d.stop(5)
    stats = d.stats()
    assert stats.submitted == stats.executed == 502 and stats.errors == 0 and stats.depth == 0


def test_latest_values_are_coalesced_per_key_and_keep_their_place() -> None:
    d = Dispatcher()
    gate = Gate()
    calls: List[Any] = []
    d.start()
    d.submit(gate)
    assert gate.entered.wait(10)
    for i in range(100):
        d.submit_latest(("AAPL", 1), lambda *a: calls.append(a), "AAPL", i)
        d.submit_latest(("MSFT", 1), lambda *a: calls.append(a), "MSFT", i)
        if i == 50:
            d.submit(calls.append, "order-filled")  # never coalesced, never dropped
    assert d.depth() == 3
    assert sorted(d.pending_keys()) == [("AAPL", 1), ("MSFT", 1)]
    gate.release.set()
    assert d.stop(10)
    assert calls == [("AAPL", 99), ("MSFT", 99), "order-filled"]
    stats = d.stats()
    assert stats.coalesced == 198 and stats.max_depth == 3 and stats.depth == 0


def test_a_key_submitted_while_its_callback_runs_is_queued_again() -> None:
    d = Dispatcher()
    gate_in_callback = threading.Event()
    resume = threading.Event()
    calls: List[int] = []

    def slow(i: int) -> None:
        calls.append(i)
        if i == 0:
            gate_in_callback.set()
            assert resume.wait(10)

    d.start()
    d.submit_latest("k", slow, 0)
    assert gate_in_callback.wait(10)
    d.submit_latest("k", slow, 1)
    d.submit_latest("k", slow, 2)
    resume.set()
    assert d.stop(10)
    assert calls == [0, 2]


def test_a_slow_callback_never_blocks_the_submitter_and_the_backlog_is_visible() -> None:
    d = Dispatcher()
    gate = Gate()
    d.start()
    d.submit(gate)
    assert gate.entered.wait(10)
    ran: List[int] = []
    producer_done = threading.Event()

    def producer() -> None:  # stands in for the reader thread
        for i in range(10_000):
            d.submit(ran.append, i)
        producer_done.set()

    threading.Thread(target=producer).start()
    assert producer_done.wait(20)  # finished while the dispatcher is still blocked
    assert d.depth() == 10_000 and d.stats().max_depth == 10_000 and ran == []
    gate.release.set()
    assert d.stop(20)
    assert ran == list(range(10_000))


def test_exceptions_are_counted_and_contained() -> None:
    d = Dispatcher()
    d.start()
    after = threading.Event()

    def boom() -> None:
        raise RuntimeError("user bug")

    d.submit(boom)
    d.submit_latest("x", boom)
    d.submit(after.set)
    assert after.wait(10)
    assert d.stop(5)
    assert d.stats().errors == 2 and d.stats().executed == 3


def test_stop_drains_the_queue_and_leaves_no_thread() -> None:
    before = set(threading.enumerate())
    d = Dispatcher()
    gate = Gate()
    ran: List[int] = []
    d.start()
    d.submit(gate)
    assert gate.entered.wait(10)
    for i in range(5):
        d.submit(ran.append, i)
    assert d.stop(0.05) is False  # the gate still runs: bounded, reports it
    gate.release.set()
    assert wait_until(lambda: set(threading.enumerate()) <= before, 10)
    assert ran == [0, 1, 2, 3, 4]  # drained in the background, then ended
    assert d.stop(1) is True  # idempotent


def test_restart_after_stop_runs_what_was_submitted_meanwhile() -> None:
    d = Dispatcher()
    d.start()
    assert d.stop(5)
    ran: List[str] = []
    done = threading.Event()
    d.submit(ran.append, "while stopped")
    assert d.depth() == 1 and not d.running
    d.start()
    d.start()  # idempotent
    d.submit(done.set)
    assert done.wait(10)
    assert ran == ["while stopped"] and d.running
    assert d.stop(5)


def test_stop_from_a_callback_does_not_join_itself() -> None:
    d = Dispatcher()
    result: List[bool] = []
    d.start()
    d.submit(lambda: result.append(d.stop(5)))
    d.submit(result.append, True)
    assert wait_until(lambda: len(result) == 2, 10)
    assert result == [False, True]
    assert wait_until(lambda: not d.running, 10)
    assert d.is_dispatcher_thread() is False
