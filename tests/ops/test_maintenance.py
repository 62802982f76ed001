"""Maintenance windows: expected disconnects neither exhaust reconnects nor open breakers."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Callable, Dict, List

from ib_resilience.client import IBClient
from ib_resilience.errors import IBConnectionError
from ib_resilience.sim import FakeGateway
from ib_resilience.state import ConnectionState

from resilient import FAST

ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
# Three windows that together cover every minute of every day, in UTC.
ALWAYS: Dict[str, Any] = {
    "enabled": True,
    "windows": [
        {"days": ALL_DAYS, "start": "00:00", "end": "12:00", "tz": "UTC"},
        {"days": ALL_DAYS, "start": "12:00", "end": "23:59", "tz": "UTC"},
        {"days": ALL_DAYS, "start": "23:59", "end": "00:00", "tz": "UTC"},
    ],
}


def test_attempts_inside_a_window_do_not_count_towards_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    client = IBClient(config=dict(FAST, port=dead_port, max_reconnect_attempts=2, maintenance=ALWAYS))
    try:
        assert client.connect(timeout=1.0) is False
        status = client.get_connection_status()
        assert status["failed_attempts"] > 2  # past the limit, and still trying
        assert client.state is ConnectionState.CONNECTING
    finally:
        client.disconnect()
    assert client.state is ConnectionState.DISCONNECTED


def test_connection_failures_inside_a_window_do_not_count_for_breakers(
    make_client: Callable[..., IBClient], gw: FakeGateway
) -> None:
    client = make_client(maintenance=ALWAYS, heartbeat_interval=30.0, request_timeout=30.0)
    gw.set_latency(30.0)
    errors: List[BaseException] = []

    def call() -> None:
        try:
            client.get_current_price("AAPL")
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.monotonic() + 10
    while client.get_connection_status()["pending_requests"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    gw.drop_connections()
    thread.join(10)
    assert len(errors) == 1 and isinstance(errors[0], IBConnectionError)
    stats = client.get_connection_status()["circuit_breakers"]["get_current_price"]
    assert stats["failure_count"] == 0 and stats["state"] == "CLOSED"
