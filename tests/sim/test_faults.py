"""Every connection fault, and what the bare ibapi client sees (ibapi-behaviour.md)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from ib_resilience.sim import FakeGateway
from ib_resilience.sim.wire import split_fields

from .rawclient import ERROR_HAS_TIME, RawClient
from .test_core import raw_connect, recv_frames
from .test_orders import stock

STARTUP = {2104, 2106, 2158}


def test_drop_connections_fin_gives_connection_closed_without_error(gw: FakeGateway, client: RawClient) -> None:
    gw.drop_connections()
    client.wait_event("connectionClosed")
    assert set(client.error_codes()) <= STARTUP  # no error code, just the close
    gw.wait_for(lambda: not gw.connections)


def test_drop_sends_fin_seen_as_eof_by_a_raw_socket(gw: FakeGateway) -> None:
    sock = raw_connect(gw.port)
    try:
        recv_frames(sock, 1)
        gw.drop_connections()
        sock.settimeout(5.0)
        assert sock.recv(100) == b""  # orderly EOF, not a reset
    finally:
        sock.close()


def test_reset_connections_sends_rst(gw: FakeGateway, client: RawClient) -> None:
    sock = raw_connect(gw.port)
    try:
        recv_frames(sock, 1)
        gw.reset_connections()
        sock.settimeout(5.0)
        try:
            data = sock.recv(100)
        except ConnectionResetError:
            data = None
        assert data is None  # RST, not FIN
    finally:
        sock.close()
    client.wait_event("connectionClosed")
    assert set(client.error_codes()) <= STARTUP


def test_refuse_connections_gives_502_and_keeps_live_clients(gw: FakeGateway, client: RawClient, clients) -> None:
    gw.refuse_connections(30.0)
    assert not gw.listening
    refused = clients()
    assert not refused.start(gw.port, client_id=2, timeout=5.0)
    refused.wait_error(502)
    client.reqCurrentTime()
    client.wait_event("currentTime")  # the live connection is untouched
    assert [c.client_id for c in gw.connections] == [1]


def test_refusal_ends_and_the_same_port_listens_again(gw: FakeGateway, client: RawClient, clients) -> None:
    port = gw.port
    gw.refuse_connections(0.3)
    gw.wait_for(lambda: gw.listening, timeout=10.0)  # rebinds despite the live connection
    assert gw.port == port
    c = clients()
    assert c.start(gw.port, client_id=2)
    assert sorted(conn.client_id for conn in gw.connections) == [1, 2]


def test_blackhole_silences_without_closing(gw: FakeGateway, client: RawClient) -> None:
    seconds = 1.5
    t0 = time.monotonic()
    gw.blackhole(seconds)
    client.reqCurrentTime()
    time.sleep(0.5)  # observe silence for a while (absence has no event to wait on)
    answered, received = client.has("currentTime"), gw.messages_received(1)
    if time.monotonic() < t0 + seconds:  # both looked at inside the blackhole, even on a loaded machine
        assert not answered
        assert received == 0  # not even read
    assert not client.has("connectionClosed")
    assert [c.client_id for c in gw.connections] == [1]
    client.wait_event("currentTime", timeout=15.0)  # served once it ends
    assert client.first_time("currentTime") >= t0 + seconds
    assert not client.has("connectionClosed")


def test_stall_handshake_withholds_the_version_reply(gw: FakeGateway) -> None:
    seconds = 1.0
    t0 = time.monotonic()
    gw.stall_handshake(seconds)
    sock = raw_connect(gw.port)
    try:
        frames = recv_frames(sock, 1, timeout=15.0)
        assert time.monotonic() >= t0 + seconds
        assert split_fields(frames[0])[0] == "157"
    finally:
        sock.close()


def test_stall_handshake_blocks_the_bare_connect(gw: FakeGateway, clients) -> None:
    seconds = 1.0
    t0 = time.monotonic()
    gw.stall_handshake(seconds)
    c = clients()
    assert c.start(gw.port, client_id=3, timeout=15.0)  # connect() returns only after the stall
    assert c.first_time("connectAck") >= t0 + seconds


def test_set_latency_delays_replies(gw: FakeGateway, client: RawClient) -> None:
    gw.set_latency(0.4)
    t0 = time.monotonic()
    client.reqCurrentTime()
    client.wait_event("currentTime")
    assert client.first_time("currentTime") >= t0 + 0.4
    gw.set_latency(0.0)


def test_inject_error(gw: FakeGateway, client: RawClient) -> None:
    gw.inject_error(2110)
    assert client.wait_error(2110)[0] == -1
    gw.inject_error(162, req_id=42, text="Historical Market Data Service error message:pacing violation")
    assert client.wait_error(162) == (42, 162, "Historical Market Data Service error message:pacing violation")
    assert gw.errors_sent[162] == 1


def test_upstream_outage_with_data_lost(gw: FakeGateway, client: RawClient) -> None:
    client.reqMktData(5, stock("AAPL"), "", False, False, [])
    client.wait_event("tickPrice")
    gw.upstream_outage(0.3, data_lost=True)
    assert client.wait_error(1100)[0] == -1
    assert client.wait_error(1101)[0] == -1
    assert gw.wait_for(lambda: gw.market.subscription_count() == 0)
    assert not client.has("connectionClosed")  # the socket stays open


def test_upstream_outage_with_data_kept(gw: FakeGateway, client: RawClient) -> None:
    client.reqMktData(5, stock("MSFT"), "", False, False, [])
    client.wait_event("tickPrice")
    gw.upstream_outage(0.3, data_lost=False)
    client.wait_error(1100)
    client.wait_error(1102)
    assert gw.market.subscription_count() == 1
    seen = len(client.named("tickPrice"))
    gw.set_price("MSFT", 333.0)
    client.wait_for(lambda: len(client.named("tickPrice")) > seen)  # data flows again


def test_restart_drops_refuses_and_comes_back(gw: FakeGateway, client: RawClient, clients) -> None:
    gw.restart(30.0)
    client.wait_event("connectionClosed")
    assert set(client.error_codes()) <= STARTUP  # a restart produces no code at all
    during = clients()
    assert not during.start(gw.port, client_id=1, timeout=5.0)
    during.wait_error(502)


def test_restart_comes_back_on_the_same_port(gw: FakeGateway, client: RawClient, clients) -> None:
    port = gw.port
    gw.restart(0.3)
    client.wait_event("connectionClosed")
    gw.wait_for(lambda: gw.listening, timeout=10.0)
    again = clients()
    assert again.start(port, client_id=1)


# the bare client's run() thread dies on the ValueError: that is the behaviour under test
_RUN_DIES = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")


@_RUN_DIES
def test_send_garbage_kills_the_bare_client_run_loop(gw: FakeGateway, client: RawClient) -> None:
    gw.send_garbage("bad_field")
    client.wait_event("connectionClosed")  # the ValueError escapes run(), whose finally disconnects
    client.join()  # let the dying thread finish inside this test


@_RUN_DIES
def test_send_random_garbage(gw: FakeGateway, client: RawClient) -> None:
    gw.send_garbage("random_bytes")
    client.wait_event("connectionClosed")
    client.join()


def test_faults_are_safe_from_many_threads(gw: FakeGateway, client: RawClient) -> None:
    errors: list = []

    def hammer() -> None:
        try:
            for _ in range(5):
                gw.inject_error(2119)
                gw.set_latency(0.0)
                gw.stall_handshake(0.01)
                gw.refuse_connections(0.01)
        except Exception as exc:  # pragma: no cover - what the test looks for
            errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10.0)
    assert not errors
    client.wait_for(lambda: client.error_codes().count(2119) == 20)
    gw.wait_for(lambda: gw.listening, timeout=10.0)


def test_connections_reports_address_and_since(gw: FakeGateway, client: RawClient) -> None:
    [conn] = gw.connections
    assert conn.client_id == 1 and conn.ready
    assert conn.since <= time.time()
    host, port = conn.address
    assert host == "127.0.0.1" and port > 0


def test_refused_port_is_really_closed(gw: FakeGateway) -> None:
    gw.refuse_connections(30.0)
    probe = socket.socket()
    try:
        assert probe.connect_ex(("127.0.0.1", gw.port)) != 0
    finally:
        probe.close()


def test_send_garbage_unknown_message_id(gw: FakeGateway, client: RawClient) -> None:
    gw.send_garbage("unknown_id")
    client.reqCurrentTime()
    client.wait_event("currentTime")  # still connected on both lines
    if ERROR_HAS_TIME:
        client.wait_error(505)  # 10.x reports the unknown id
    else:
        assert 505 not in client.error_codes()  # 9.81 ignores it (it came before currentTime)
    assert not client.has("connectionClosed")
