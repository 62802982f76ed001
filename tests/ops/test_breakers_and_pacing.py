"""Breakers and the pacer on the real path: IBClient -> bridge -> simulator."""

from __future__ import annotations

import threading
import time
from typing import Callable, List

import pytest

from ib_resilience.client import IBClient
from ib_resilience.errors import CircuitOpenError, IBConnectionError, IBRequestError, RequestTimeoutError
from ib_resilience.sim import FakeGateway

from resilient import drop_while_pending, wait_until

BREAKERS = {"get_current_price": {"fail_max": 3, "reset_timeout": 0.3}}


def breaker(client: IBClient, name: str = "get_current_price") -> dict:
    return client.get_connection_status()["circuit_breakers"][name]


def test_timeouts_trip_the_breaker_then_it_refuses_without_sending(
    make_client: Callable[..., IBClient], gw: FakeGateway
) -> None:
    client = make_client(breakers=BREAKERS, heartbeat_interval=30.0)
    gw.set_latency(5.0)
    for _ in range(3):
        with pytest.raises(RequestTimeoutError):
            client.get_current_price("AAPL", timeout=0.1)
    assert breaker(client)["state"] == "OPEN"
    sent = gw.messages_received(1)
    with pytest.raises(CircuitOpenError) as info:
        client.get_current_price("AAPL")
    assert info.value.operation == "get_current_price" and info.value.retry_after > 0
    assert gw.messages_received(1) == sent  # nothing touched the socket


def test_half_open_after_reset_time_then_closes_on_success(
    make_client: Callable[..., IBClient], gw: FakeGateway
) -> None:
    client = make_client(breakers=BREAKERS, heartbeat_interval=30.0)
    gw.set_latency(0.5)  # replies queue behind this delay, so keep it short
    for _ in range(3):
        with pytest.raises(RequestTimeoutError):
            client.get_current_price("AAPL", timeout=0.1)
    gw.set_latency(0.0)
    b = client._breakers.get("get_current_price")
    time.sleep(b.retry_after() + 0.01)  # the configured reset period itself, not a guess
    assert client.get_current_price("AAPL") > 0  # the trial call
    assert breaker(client)["state"] == "CLOSED"
    assert breaker(client)["failure_count"] == 0


def test_permanent_errors_never_open_the_breaker(make_client: Callable[..., IBClient]) -> None:
    client = make_client(breakers=BREAKERS)
    for _ in range(6):
        with pytest.raises(IBRequestError) as info:
            client.get_current_price("NOSUCHSYM")
        assert info.value.code == 200
    stats = breaker(client)
    assert stats["state"] == "CLOSED" and stats["failure_count"] == 0


def test_a_dropped_connection_counts_as_a_connection_failure(
    make_client: Callable[..., IBClient], gw: FakeGateway
) -> None:
    client = make_client(breakers=BREAKERS, heartbeat_interval=30.0, request_timeout=30.0)
    gw.set_latency(30.0)
    error = drop_while_pending(client, gw.drop_connections, lambda: client.get_current_price("AAPL"))
    assert isinstance(error, IBConnectionError)
    stats = breaker(client)
    assert stats["failure_count"] == 1
    assert sum(stats["failures_by_category"].values()) == 1


def test_two_callers_of_one_operation_run_concurrently(make_client: Callable[..., IBClient], gw: FakeGateway) -> None:
    client = make_client(heartbeat_interval=30.0)
    gw.set_latency(0.5)
    results: List[float] = []

    def call() -> None:
        results.append(client.get_current_price("MSFT"))

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    both_pending = wait_until(lambda: client.get_connection_status()["pending_requests"] == 2, 10, interval=0.005)
    for t in threads:
        t.join(10)
    assert both_pending  # both requests were in flight at once: no lock held across the wait
    assert len(results) == 2


@pytest.mark.timeout(120)
def test_a_burst_of_500_requests_from_several_threads_never_draws_error_100(
    make_client: Callable[..., IBClient], gw: FakeGateway
) -> None:
    client = make_client(heartbeat_interval=30.0, request_timeout=60.0)
    failures: List[BaseException] = []

    def burst() -> None:
        for _ in range(100):
            try:
                client.get_current_time(timeout=60.0)
            except BaseException as exc:  # noqa: BLE001
                failures.append(exc)

    threads = [threading.Thread(target=burst) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(100)
    assert failures == []
    assert gw.errors_sent.get(100, 0) == 0
    assert client.is_connected()
    assert client.get_connection_status()["pacer"]["messages_sent"] >= 500
