"""Pacing, hostile clients, and a seeded fuzz of the frame parser and the request handlers."""

from __future__ import annotations

import random
import socket
import struct
import time
from typing import Iterator, List

import pytest

from ib_resilience.sim import FakeGateway
from ib_resilience.sim.protocol import In
from ib_resilience.sim.wire import FrameParser, ProtocolError, encode_frame, frame_raw, split_fields

from .rawclient import RawClient
from .test_core import ready_socket


@pytest.fixture
def strict_gw() -> Iterator[FakeGateway]:
    """Short handshake and partial-frame deadlines, disconnect after the second pacing violation."""
    with FakeGateway(handshake_timeout=0.5, frame_timeout=0.5, pacing_disconnect_after=2) as gateway:
        yield gateway


def closed_by_peer(sock: socket.socket, timeout: float = 10.0) -> bool:
    """Read until EOF/reset (True) or timeout (False), discarding data."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
    return False


def assert_still_serving(gw: FakeGateway, client: RawClient) -> None:
    count = len(client.named("currentTime"))
    client.reqCurrentTime()
    client.wait_for(lambda: len(client.named("currentTime")) > count)
    assert not client.has("connectionClosed")


# ---------------------------------------------------------------------------- pacing


def test_more_than_50_messages_a_second_gets_error_100(gw: FakeGateway, client: RawClient) -> None:
    for _ in range(120):
        client.reqCurrentTime()
    req_id, code, text = client.wait_error(100)
    assert req_id == -1 and "max=50" in text
    assert gw.errors_sent[100] >= 1
    client.wait_for(lambda: len(client.named("currentTime")) == 120)  # still served, once


def test_repeated_pacing_violations_disconnect(strict_gw: FakeGateway, clients) -> None:
    c = clients()
    assert c.start(strict_gw.port, client_id=1)
    deadline = time.monotonic() + 20.0
    while not c.has("connectionClosed") and time.monotonic() < deadline:
        for _ in range(60):
            if not c.isConnected():
                break
            try:
                c.reqCurrentTime()
            except (OSError, AttributeError):
                # 9.81 raises from send once the gateway has hung up, and its run() thread may
                # reset() the client (conn = None) between isConnected() and the send.
                break
        try:
            c.wait_event("connectionClosed", timeout=0.3)
        except TimeoutError:
            pass
    assert c.has("connectionClosed")
    assert c.error_codes().count(100) >= 2


def test_pacing_can_be_disabled(clients) -> None:
    with FakeGateway(pacing_limit=None) as gateway:
        c = clients()
        assert c.start(gateway.port, client_id=1)
        for _ in range(200):
            c.reqCurrentTime()
        c.wait_for(lambda: len(c.named("currentTime")) == 200)
        assert 100 not in c.error_codes()
        c.stop()


# ---------------------------------------------------------------------------- hostile clients


def tcp(port: int) -> socket.socket:
    """A bare TCP connection: no handshake sent."""
    return socket.create_connection(("127.0.0.1", port), timeout=5.0)


def hangs_up_after(sock: socket.socket, data: bytes) -> bool:
    """Send ``data``; True if the gateway then closes the connection. Closes ``sock`` either way."""
    try:
        sock.sendall(data)
        return closed_by_peer(sock)
    finally:
        sock.close()


def test_random_bytes_instead_of_a_handshake(gw: FakeGateway, client: RawClient) -> None:
    assert hangs_up_after(tcp(gw.port), random.Random(1).randbytes(256))
    assert_still_serving(gw, client)


def test_huge_length_prefix(gw: FakeGateway, client: RawClient) -> None:
    assert hangs_up_after(ready_socket(gw.port, 9), struct.pack("!I", 0x7FFFFFFF) + b"71\0")
    assert gw.malformed_disconnects == 1
    assert_still_serving(gw, client)


def test_bad_version_string(gw: FakeGateway, client: RawClient) -> None:
    assert hangs_up_after(tcp(gw.port), b"API\0" + frame_raw(b"hello"))
    assert_still_serving(gw, client)


def test_malformed_request_fields(gw: FakeGateway, client: RawClient) -> None:
    assert hangs_up_after(ready_socket(gw.port, 9), encode_frame([In.PLACE_ORDER, "x"]))  # far too short
    assert_still_serving(gw, client)


def test_slowloris_partial_frame(strict_gw: FakeGateway, clients) -> None:
    c = clients()
    assert c.start(strict_gw.port, client_id=1)
    # a frame that never completes
    assert hangs_up_after(ready_socket(strict_gw.port, 9), struct.pack("!I", 100) + b"49\0")
    assert_still_serving(strict_gw, c)


def test_slowloris_handshake(strict_gw: FakeGateway, clients) -> None:
    c = clients()
    assert c.start(strict_gw.port, client_id=1)
    assert hangs_up_after(tcp(strict_gw.port), b"AP")
    assert_still_serving(strict_gw, c)


def test_binds_loopback_by_default() -> None:
    with FakeGateway() as gateway:
        assert gateway.host == "127.0.0.1"


# ---------------------------------------------------------------------------- fuzzing


def test_fuzz_parser_random_streams_never_escape() -> None:
    rnd = random.Random(20261130)
    for _ in range(300):
        parser = FrameParser(max_frame=4096, expect_prefix=rnd.random() < 0.5)
        data = rnd.randbytes(rnd.randrange(1, 600))
        if rnd.random() < 0.5:
            data = b"API\0" + data
        try:
            i = 0
            while i < len(data):
                step = rnd.randrange(1, 64)
                for payload in parser.feed(data[i : i + step]):
                    assert 0 < len(payload) <= 4096
                i += step
                assert parser.buffered <= 4096 + 4
        except ProtocolError:
            pass


def test_fuzz_parser_reassembles_split_frames() -> None:
    rnd = random.Random(7)
    for _ in range(200):
        frames: List[list] = [
            [str(rnd.randrange(100)) for _ in range(rnd.randrange(1, 30))] for _ in range(rnd.randrange(1, 8))
        ]
        stream = b"API\0" + b"".join(encode_frame(f) for f in frames)
        parser = FrameParser(expect_prefix=True)
        got: List[list] = []
        i = 0
        while i < len(stream):  # truncated at every random point, then completed
            step = rnd.randrange(1, 17)
            got.extend(split_fields(p) for p in parser.feed(stream[i : i + step]))
            i += step
        assert got == frames and parser.buffered == 0


def _random_field(rnd: random.Random) -> str:
    return rnd.choice(["", "0", "1", "-1", "AAPL", "STK", "OPT", "BAG", "SMART", "1.5", "x", "1e308",
                       str(rnd.randrange(-5, 10**6)), "1.7976931348623157e+308"])


def test_fuzz_gateway_with_random_and_truncated_requests(gw: FakeGateway, client: RawClient) -> None:
    """Random field lists for every handled message id: handled or disconnected, never a crash."""
    rnd = random.Random(99)
    ids = sorted(gw._handlers)  # every message id the gateway answers
    for n in range(120):
        sock = ready_socket(gw.port, 1000 + n)
        try:
            msg_id = rnd.choice(ids)
            fields = [str(msg_id)] + [_random_field(rnd) for _ in range(rnd.randrange(0, 40))]
            frame = encode_frame(fields)
            if rnd.random() < 0.3:
                sock.sendall(frame[: rnd.randrange(4, len(frame))])  # truncated: the parser must wait
                continue
            sock.sendall(frame + encode_frame([In.REQ_CURRENT_TIME, 1]))
            assert _answered_or_closed(sock)  # processed before we hang up
        finally:
            sock.close()
    gw.wait_for(lambda: [c.client_id for c in gw.connections] == [1], timeout=10.0)
    assert gw.malformed_disconnects > 0  # the fuzz did reach the handlers' validation
    assert_still_serving(gw, client)


def _answered_or_closed(sock: socket.socket, timeout: float = 10.0) -> bool:
    """True once the gateway answered REQ_CURRENT_TIME (request handled) or hung up."""
    parser = FrameParser()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        if not data:
            return True
        if any(split_fields(p)[0] == "49" for p in parser.feed(data)):
            return True
    return False
