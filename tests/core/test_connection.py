"""The connection core against the simulator: real ibapi client, real loopback sockets."""

from __future__ import annotations

import socket
import threading
import time
from typing import Callable, List

import pytest

from ib_resilience.client import IBClient
from ib_resilience.errors import IBConnectionError, RequestTimeoutError
from ib_resilience.sim import FakeGateway
from ib_resilience.state import ConnectionState

from resilient import Recorder, drop_while_pending, extra_threads, wait_threads_back, wait_until

S = ConnectionState


def test_connect_status_and_clean_disconnect(make_client: Callable[..., IBClient], gw: FakeGateway) -> None:
    baseline = [t.name for t in threading.enumerate()]
    client = make_client()
    rec = Recorder(client)
    assert client.connect() is True
    assert client.is_connected() and client.state is S.CONNECTED
    assert client.get_current_time() > 1_600_000_000
    status = client.get_connection_status()
    for key in (
        "state", "uptime_percentage", "connection_quality", "average_latency_ms", "total_connections",
        "total_disconnections", "is_healthy", "last_error", "reconnect_attempts", "state_since",
        "last_heartbeat_at",
    ):
        assert key in status
    assert status["state"] == "CONNECTED" and status["is_healthy"] is True
    assert status["total_connections"] == 1 and status["total_disconnections"] == 0
    assert status["connection_quality"] in ("EXCELLENT", "GOOD", "FAIR", "POOR")
    client.disconnect()
    client.disconnect()  # idempotent
    assert client.state is S.DISCONNECTED
    assert rec.wait(S.DISCONNECTED)
    assert [(o, n) for o, n, _ in rec.seen] == [
        (S.DISCONNECTED, S.CONNECTING), (S.CONNECTING, S.CONNECTED), (S.CONNECTED, S.DISCONNECTED)
    ]
    assert wait_threads_back(baseline) == []
    assert gw.wait_for(lambda: not gw.connections, timeout=5.0)


def test_heartbeat_measures_latency(make_client: Callable[..., IBClient]) -> None:
    client = make_client()
    assert client.connect()

    def heartbeat_seen() -> bool:
        client.get_current_time()  # any traffic; the watchdog's heartbeat fires on its own interval
        return client.get_connection_status()["last_heartbeat_at"] is not None

    wait_until(heartbeat_seen, 10, interval=0.05)
    status = client.get_connection_status()
    assert status["last_heartbeat_at"] is not None
    assert status["average_latency_ms"] > 0


def test_calls_while_not_connected_raise_at_once_and_send_nothing(make_client: Callable[..., IBClient], gw: FakeGateway) -> None:
    client = make_client()
    with pytest.raises(IBConnectionError) as info:
        client.get_current_time()
    assert isinstance(info.value, ConnectionError)
    assert gw.messages_received() == 0


@pytest.mark.parametrize("fault", ["drop_connections", "reset_connections"])
def test_drop_and_reset_recover(make_client: Callable[..., IBClient], gw: FakeGateway, fault: str) -> None:
    client = make_client()
    rec = Recorder(client)
    assert client.connect()
    first_gen = client.get_connection_status()["generation"]
    getattr(gw, fault)()
    assert rec.wait(S.RECONNECTING)
    assert rec.wait(S.CONNECTED, count=2)
    assert client.get_connection_status()["generation"] > first_gen
    assert client.get_current_time() > 0
    status = client.get_connection_status()
    assert status["total_disconnections"] == 1 and status["total_connections"] == 2


def test_blackhole_is_detected_and_recovered(make_client: Callable[..., IBClient], gw: FakeGateway) -> None:
    client = make_client()
    rec = Recorder(client)
    assert client.connect()
    gw.blackhole(1.0)
    assert rec.wait(S.RECONNECTING)
    reason = [r for _, n, r in rec.seen if n is S.RECONNECTING][0]
    assert "heartbeat" in reason
    assert rec.wait(S.CONNECTED, count=2)
    assert client.get_current_time() > 0


def test_stalled_handshake_is_bounded_by_connect_timeout(make_client: Callable[..., IBClient], gw: FakeGateway) -> None:
    gw.stall_handshake(30.0)
    client = make_client(connect_timeout=0.3, max_reconnect_attempts=2)
    rec = Recorder(client)
    started = time.monotonic()
    assert client.connect() is False
    assert time.monotonic() - started < 20.0  # the bare client would block for the whole stall
    assert client.state is S.ERROR
    assert rec.wait(S.ERROR)
    assert "timed out" in (client.get_connection_status()["last_error"] or "")


def test_refused_for_a_while_backs_off_then_connects(make_client: Callable[..., IBClient], gw: FakeGateway) -> None:
    gw.refuse_connections(0.5)
    client = make_client()
    assert client.connect() is True
    assert client.get_connection_status()["failed_attempts"] >= 1


def test_exhausted_attempts_end_in_error_and_connect_can_be_called_again(make_client: Callable[..., IBClient]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]  # nothing listens here once the socket closes
    client = make_client(port=dead_port, max_reconnect_attempts=3)
    rec = Recorder(client)
    assert client.connect() is False
    assert client.state is S.ERROR and rec.wait(S.ERROR)
    assert client.get_connection_status()["failed_attempts"] == 3
    assert client.connect() is False  # ERROR -> CONNECTING is allowed
    assert rec.count(S.CONNECTING) == 2


def test_client_id_in_use_waits_then_connects_when_the_old_session_ends(
    make_client: Callable[..., IBClient], gw: FakeGateway
) -> None:
    holder = make_client(client_id=5)
    assert holder.connect()
    waiter = make_client(client_id=5)
    result: List[bool] = []
    thread = threading.Thread(target=lambda: result.append(waiter.connect()))
    thread.start()
    assert gw.wait_for(lambda: gw.errors_sent.get(326, 0) >= 1, timeout=10.0)
    assert waiter.state is S.CONNECTING
    holder.disconnect()
    thread.join(timeout=30.0)
    assert result == [True]
    assert waiter.get_connection_status()["client_id"] == 5  # orders belong to their client id


def test_client_id_in_use_rotates_to_a_fallback_id_when_configured(
    make_client: Callable[..., IBClient], gw: FakeGateway
) -> None:
    holder = make_client(client_id=5)
    assert holder.connect()
    other = make_client(client_id=5, fallback_client_ids=[6])
    assert other.connect()
    assert other.get_connection_status()["client_id"] == 6


def test_pending_request_fails_at_once_when_the_connection_drops(
    make_client: Callable[..., IBClient], gw: FakeGateway
) -> None:
    client = make_client(request_timeout=60.0, heartbeat_interval=30.0)
    assert client.connect()
    gw.set_latency(30.0)  # the reply would come far beyond the test's patience
    error = drop_while_pending(client, gw.drop_connections, client.get_current_time)
    assert isinstance(error, IBConnectionError) and not isinstance(error, RequestTimeoutError)


def test_garbage_from_the_gateway_is_survived(make_client: Callable[..., IBClient], gw: FakeGateway) -> None:
    client = make_client()
    assert client.connect()
    for kind in ("bad_field", "unknown_id", "random_bytes"):
        gw.send_garbage(kind)
        # Either the frame was skipped or the connection was rebuilt: both end connected and working.
        assert client.wait_for_state(S.CONNECTED, timeout=10.0)
        deadline = time.monotonic() + 10
        while True:
            try:
                assert client.get_current_time(timeout=2.0) > 0
                break
            except (IBConnectionError, RequestTimeoutError):
                if time.monotonic() > deadline:
                    raise
                client.wait_for_state(S.CONNECTED, timeout=5.0)


@pytest.mark.timeout(240)
def test_threads_back_to_baseline_after_100_drop_reconnect_cycles(
    make_client: Callable[..., IBClient], gw: FakeGateway
) -> None:
    baseline = [t.name for t in threading.enumerate()]
    client = make_client(stable_after=0.0)
    rec = Recorder(client)
    assert client.connect()
    for i in range(100):
        gen = client.get_connection_status()["generation"]
        gw.drop_connections()
        assert rec.wait(S.CONNECTED, count=i + 2, timeout=20.0), f"cycle {i}"
        assert client.get_connection_status()["generation"] > gen
    # Watchdog, dispatcher, one reader: nothing accumulates (the last old reader may still be ending).
    wait_until(lambda: len(extra_threads(baseline)) <= 3, 10, interval=0.02)
    alive = extra_threads(baseline)
    assert len(alive) <= 3, alive
    client.disconnect()
    assert wait_threads_back(baseline) == []
