"""Handshake, startup burst, framing and the core requests, through the real ibapi client."""

from __future__ import annotations

import socket
import struct
import time

from ib_resilience.sim import FakeGateway
from ib_resilience.sim.protocol import In
from ib_resilience.sim.wire import API_PREFIX, FrameParser, encode_frame, frame_raw, split_fields

from .rawclient import RawClient


def raw_connect(port: int, versions: bytes = b"v100..157") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5.0)
    sock.sendall(API_PREFIX + frame_raw(versions))
    return sock


def recv_frames(sock: socket.socket, count: int, timeout: float = 5.0) -> list:
    """Read exactly ``count`` frames (raw payloads)."""
    parser = FrameParser()
    frames: list = []
    deadline = time.monotonic() + timeout
    while len(frames) < count:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = sock.recv(65536)
        if not data:
            break
        frames.extend(parser.feed(data))
    return frames


def ready_socket(port: int, client_id: int) -> socket.socket:
    """A raw connection past the handshake and START_API, its startup burst read."""
    sock = raw_connect(port)
    recv_frames(sock, 1)
    sock.sendall(encode_frame([In.START_API, 2, client_id, ""]))
    recv_frames(sock, 5)
    return sock


def test_version_reply_is_one_frame_of_two_fields(gw: FakeGateway) -> None:
    sock = raw_connect(gw.port)
    try:
        sock.settimeout(5.0)
        data = sock.recv(4096)
        (size,) = struct.unpack("!I", data[:4])
        assert len(data) == 4 + size  # one frame, nothing else before START_API
        fields = split_fields(data[4:])
        assert fields[0] == "157" and len(fields) == 2
        assert fields[1].endswith("Greenwich Mean Time")
    finally:
        sock.close()


def test_negotiates_down_to_157_and_refuses_too_new_clients(gw: FakeGateway) -> None:
    sock = raw_connect(gw.port, b"v100..226 +PACEAPI")
    try:
        assert split_fields(recv_frames(sock, 1)[0])[0] == "157"
    finally:
        sock.close()
    sock = raw_connect(gw.port, b"v170..178")
    try:
        sock.settimeout(5.0)
        assert sock.recv(4096) == b""  # closed without an answer
    finally:
        sock.close()


def test_startup_burst_in_gateway_order(gw: FakeGateway, client: RawClient) -> None:
    client.wait_for(lambda: len(client.errors()) >= 3)
    names = client.names()
    assert names[:3] == ["connectAck", "managedAccounts", "nextValidId"]
    assert client.named("managedAccounts")[0] == ("DU1234567",)
    assert client.named("nextValidId")[0] == (1,)
    assert [code for _, code, _ in client.errors()[:3]] == [2104, 2106, 2158]
    assert all(req_id == -1 for req_id, _, _ in client.errors()[:3])
    [conn] = gw.connections
    assert conn.client_id == 1 and conn.ready and conn.address[0] == "127.0.0.1"


def test_nothing_but_the_version_reply_before_start_api(gw: FakeGateway) -> None:
    sock = raw_connect(gw.port)
    try:
        recv_frames(sock, 1)
        gw.inject_error(2110)  # must not reach a client that has not sent START_API
        sock.sendall(encode_frame([71, 2, 5, ""]))
        frames = [split_fields(f) for f in recv_frames(sock, 5)]
        assert [f[0] for f in frames] == ["15", "9", "4", "4", "4"]
        assert gw.errors_sent.get(2110, 0) == 0
    finally:
        sock.close()


def test_client_id_in_use_gets_326_and_close(gw: FakeGateway, client: RawClient, clients) -> None:
    second = clients()
    assert not second.start(gw.port, client_id=1, timeout=5.0)
    req_id, code, text = second.wait_error(326)
    assert req_id == -1 and "client id is already in use" in text
    second.wait_event("connectionClosed")
    assert [c.client_id for c in gw.connections] == [1]
    # the id is free again once its owner leaves
    client.stop()
    gw.wait_for(lambda: not gw.connections)
    third = clients()
    assert third.start(gw.port, client_id=1)


def test_current_time_and_ids(gw: FakeGateway, client: RawClient) -> None:
    before = int(time.time())
    client.reqCurrentTime()
    (epoch,) = client.wait_event("currentTime")
    assert before - 1 <= epoch <= int(time.time()) + 1
    client.reqIds(1)
    client.wait_for(lambda: len(client.named("nextValidId")) == 2)
    assert client.named("nextValidId")[1] == (1,)
    assert gw.messages_received(1) == 2


def test_serves_32_clients_at_once(gw: FakeGateway, clients) -> None:
    made = []
    for i in range(32):
        c = clients()
        assert c.start(gw.port, client_id=100 + i)
        made.append(c)
    for c in made:
        c.reqCurrentTime()
    for c in made:
        c.wait_event("currentTime")
    assert len(gw.connections) == 32


def test_close_is_idempotent() -> None:
    gateway = FakeGateway().start()
    gateway.close()
    gateway.close()
    assert gateway.connections == []
