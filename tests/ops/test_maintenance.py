"""Maintenance windows: expected disconnects neither exhaust reconnects nor open breakers."""

from __future__ import annotations

import socket
from typing import Any, Callable, Dict

from ib_resilience.client import IBClient
from ib_resilience.errors import IBConnectionError
from ib_resilience.sim import FakeGateway
from ib_resilience.state import ConnectionState

from resilient import FAST, drop_while_pending

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
    error = drop_while_pending(client, gw.drop_connections, lambda: client.get_current_price("AAPL"))
    assert isinstance(error, IBConnectionError)
    stats = client.get_connection_status()["circuit_breakers"]["get_current_price"]
    assert stats["failure_count"] == 0 and stats["state"] == "CLOSED"
