"""Transport: bounded handshake, framing however the bytes arrive, closing exactly once."""

from __future__ import annotations

import socket
import struct
import threading
from typing import List, Tuple

import pytest

from ib_resilience import transport as transport_module
from ib_resilience.errors import IBConnectionError
from ib_resilience.transport import MAX_CLIENT_VERSION, MIN_CLIENT_VERSION, Transport

from .gwserver import VERSION_REPLY, ScriptedServer, ServerConn, frame, wait_until


class Recorder:
    def __init__(self) -> None:
        self.frames: List[bytes] = []
        self.closes: List[Tuple[int, str]] = []
        self.closed = threading.Event()
        self.cond = threading.Condition()

    def on_frames(self, gen: int, payloads: List[bytes]) -> None:
        with self.cond:
            self.frames.extend(payloads)
            self.cond.notify_all()

    def on_close(self, gen: int, reason: str) -> None:
        self.closes.append((gen, reason))
        self.closed.set()

    def wait_frames(self, n: int, timeout: float = 10.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.frames) >= n, timeout)


def open_transport(port: int, rec: Recorder, timeout: float = 5.0, **kw: object) -> Transport:
    t = Transport(1, rec.on_frames, rec.on_close, **kw)  # type: ignore[arg-type]
    t.connect("127.0.0.1", port, timeout)
    t.start()
    return t


def hold(conn: ServerConn, ready: threading.Event) -> None:
    conn.read_handshake()
    conn.send(VERSION_REPLY)
    ready.set()
    conn.drain()


def test_handshake_offers_v100_157_and_returns_version_and_time() -> None:
    seen: List[str] = []

    def script(conn: ServerConn) -> None:
        seen.append(conn.read_handshake())
        conn.send(VERSION_REPLY)
        conn.drain()

    rec = Recorder()
    with ScriptedServer(script) as srv:
        t = Transport(1, rec.on_frames, rec.on_close)
        assert t.connect("127.0.0.1", srv.port, 5.0) == (157, "20261130 07:45:00 Greenwich Mean Time")
        t.close()
    assert seen == [f"v{MIN_CLIENT_VERSION}..{MAX_CLIENT_VERSION}"] == ["v100..157"]
    assert rec.closes == [(1, "closed locally")]


def test_stalled_handshake_is_bounded_and_closes() -> None:
    def script(conn: ServerConn) -> None:
        conn.read_handshake()
        conn.drain()  # never answers

    rec = Recorder()
    with ScriptedServer(script) as srv:
        t = Transport(1, rec.on_frames, rec.on_close)
        with pytest.raises(IBConnectionError, match="timed out") as info:
            t.connect("127.0.0.1", srv.port, 0.3)
        assert isinstance(info.value.__cause__, TimeoutError)
        assert srv.conns and srv.conns[0].closed_by_peer.wait(5)
    assert len(rec.closes) == 1 and "timed out" in rec.closes[0][1]
    assert not t.isConnected()


def test_close_before_version_reply_raises() -> None:
    def script(conn: ServerConn) -> None:
        conn.read_handshake()
        conn.close()

    rec = Recorder()
    with ScriptedServer(script) as srv:
        t = Transport(1, rec.on_frames, rec.on_close)
        with pytest.raises(IBConnectionError, match="before the version reply"):
            t.connect("127.0.0.1", srv.port, 5.0)
    assert len(rec.closes) == 1


def test_refused_port_raises_connection_error() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    rec = Recorder()
    t = Transport(1, rec.on_frames, rec.on_close)
    with pytest.raises(IBConnectionError) as info:
        t.connect("127.0.0.1", port, 2.0)
    assert isinstance(info.value, ConnectionError) and info.value.port == port
    assert len(rec.closes) == 1


def test_server_version_outside_our_range_is_refused() -> None:
    def script(conn: ServerConn) -> None:
        conn.read_handshake()
        conn.send(frame(176, "20261130 07:45:00 GMT"))
        conn.drain()

    rec = Recorder()
    with ScriptedServer(script) as srv:
        with pytest.raises(IBConnectionError, match="176"):
            Transport(1, rec.on_frames, rec.on_close).connect("127.0.0.1", srv.port, 5.0)


def test_bytes_that_arrive_with_the_version_reply_are_kept() -> None:
    def script(conn: ServerConn) -> None:
        conn.read_handshake()
        conn.send(VERSION_REPLY + frame(49, 1, 123) + frame(49, 1, 456)[:5])
        conn.send(frame(49, 1, 456)[5:])
        conn.drain()

    rec = Recorder()
    with ScriptedServer(script) as srv:
        t = open_transport(srv.port, rec)
        assert rec.wait_frames(2)
        t.close()
    assert rec.frames == [b"49\x001\x00123\x00", b"49\x001\x00456\x00"]


def test_frames_split_at_every_byte_boundary() -> None:
    frames = [frame(1, 6, 5, 1, "101.25", 300, 3), frame(4, 2, -1, 2104, "x" * 40), frame(49, 1, 7)]
    go = threading.Event()
    progress: List[int] = []

    def script(conn: ServerConn) -> None:
        conn.read_handshake()
        conn.send(VERSION_REPLY)
        go.wait(10)
        for f in frames:
            for k in range(1, len(f)):
                before = len(progress)
                conn.send(f[:k])
                # Wait until the client has read the first part, so the parts are separate reads.
                assert wait_until(lambda k=k: t.bytes_in >= base[0] + k)
                conn.send(f[k:])
                base[0] += len(f)
                assert wait_until(lambda before=before: len(rec.frames) > before)
                progress.append(k)
        conn.drain()

    rec = Recorder()
    base = [0]
    with ScriptedServer(script) as srv:
        t = open_transport(srv.port, rec)
        base[0] = t.bytes_in
        go.set()
        expected = sum(len(f) - 1 for f in frames)
        assert wait_until(lambda: len(progress) == expected, 30)
        t.close()
        assert not srv.errors
    want = [f[4:] for f in frames for _ in range(len(f) - 1)]
    assert rec.frames == want


def test_many_frames_in_one_read_and_a_large_frame() -> None:
    frames = [frame(1, 6, i, 2, f"{i}.5", i, 0) for i in range(2000)]
    big = frame(10, "y" * 300_000)  # larger than one recv, arrives in pieces

    def script(conn: ServerConn) -> None:
        conn.read_handshake()
        conn.send(VERSION_REPLY + b"".join(frames) + big)
        conn.drain()

    rec = Recorder()
    with ScriptedServer(script) as srv:
        t = open_transport(srv.port, rec)
        assert rec.wait_frames(2001)
        t.close()
    assert rec.frames == [f[4:] for f in frames] + [big[4:]]
    assert t.frames_in == 2001


def test_exactly_4096_bytes_then_silence_are_delivered() -> None:
    payload_frames = [frame(49, 1, 1_764_489_900 + i) for i in range(10)]
    body = b"".join(payload_frames)
    pad = 4096 - len(body) - 4
    padded = body + struct.pack("!I", pad) + b"9\x001\x00" + b"7" * (pad - 5) + b"\x00"
    assert len(padded) == 4096

    def script(conn: ServerConn) -> None:
        conn.read_handshake()
        conn.send(VERSION_REPLY)
        conn.read_frame()  # wait for the client's go
        conn.send(padded)
        conn.drain()  # then silence

    rec = Recorder()
    with ScriptedServer(script) as srv:
        t = open_transport(srv.port, rec)
        t.sendMsg(frame(49, 1))
        assert rec.wait_frames(11)
        t.close()
    assert len(rec.frames) == 11 and rec.frames[-1].startswith(b"9\x001\x00777")


@pytest.mark.parametrize("length", [16 * 1024 * 1024 + 1, 0xFFFFFFFF])
def test_oversized_length_closes_with_protocol_error(length: int) -> None:
    def script(conn: ServerConn) -> None:
        conn.read_handshake()
        conn.send(VERSION_REPLY)
        conn.send(frame(49, 1, 5) + struct.pack("!I", length) + b"junk")
        conn.drain()

    rec = Recorder()
    with ScriptedServer(script) as srv:
        t = open_transport(srv.port, rec)
        assert rec.closed.wait(10)
        assert srv.conns[0].closed_by_peer.wait(10)
    assert rec.frames == [b"49\x001\x005\x00"]
    assert len(rec.closes) == 1 and rec.closes[0][1].startswith("protocol error")
    assert not t.isConnected()


def test_peer_close_fires_close_once_and_send_then_raises() -> None:
    def script(conn: ServerConn) -> None:
        conn.read_handshake()
        conn.send(VERSION_REPLY)
        conn.close()

    rec = Recorder()
    with ScriptedServer(script) as srv:
        t = open_transport(srv.port, rec)
        assert rec.closed.wait(10)
        with pytest.raises(IBConnectionError):
            t.sendMsg(frame(49, 1))
        t.close()
        t.close()
        assert t.join(5)
    assert rec.closes == [(1, "closed by peer")]


def test_send_error_closes_and_raises() -> None:
    def script(conn: ServerConn) -> None:
        conn.read_handshake()
        conn.send(VERSION_REPLY)
        conn.reset()  # RST: the next sends fail

    rec = Recorder()
    with ScriptedServer(script) as srv:
        t = open_transport(srv.port, rec)
        assert rec.closed.wait(10)  # the reader saw the reset
    with pytest.raises(IBConnectionError):
        t.sendMsg(frame(49, 1))
    assert len(rec.closes) == 1 and not t.isConnected()


@pytest.fixture(params=["non-blocking sends", "socket timeout"])
def send_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of sending: per-call non-blocking sends on a blocking socket (POSIX), and
    ``sendall`` on a socket with a timeout (where MSG_DONTWAIT is missing, e.g. Windows)."""
    if request.param == "socket timeout":
        monkeypatch.setattr(transport_module, "_DONTWAIT", 0)
    elif not transport_module._DONTWAIT:
        pytest.skip("no MSG_DONTWAIT on this platform")
    return str(request.param)


def test_every_message_passes_the_pacer_and_is_sent_whole(send_mode: str) -> None:
    class CountingPacer:
        def __init__(self) -> None:
            self.n = 0

        def acquire(self) -> None:
            self.n += 1

    got: List[List[bytes]] = []
    done = threading.Event()

    def script(conn: ServerConn) -> None:
        conn.read_handshake()
        conn.send(VERSION_REPLY)
        for _ in range(3):
            got.append(conn.read_frame())
        done.set()
        conn.drain()

    pacer = CountingPacer()
    rec = Recorder()
    with ScriptedServer(script) as srv:
        t = open_transport(srv.port, rec, pacer=pacer)
        big = "z" * 2_000_000  # larger than the socket buffer: sendall must loop
        for msg in (frame(49, 1), frame(10, big), frame(8, 1, 1)):
            assert t.sendMsg(msg) == len(msg)
        assert done.wait(20)
        t.close()
    assert pacer.n == 3
    assert got == [[b"49", b"1"], [b"10", big.encode()], [b"8", b"1", b"1"]]


def test_close_from_another_thread_wakes_the_reader_and_leaves_no_thread() -> None:
    before = set(threading.enumerate())
    ready = threading.Event()
    rec = Recorder()
    with ScriptedServer(lambda c: hold(c, ready)) as srv:
        t = open_transport(srv.port, rec)
        assert ready.wait(5)
        reader = t.reader_thread
        assert reader is not None and reader.daemon and reader.name == "ib-reader-1"
        closer = threading.Thread(target=t.close)
        closer.start()
        closer.join(5)
        assert t.join(5)
        assert srv.conns[0].closed_by_peer.wait(5)
    assert rec.closes == [(1, "closed locally")]
    assert wait_until(lambda: set(threading.enumerate()) <= before, 5)


def test_last_rx_moves_with_inbound_bytes() -> None:
    def script(conn: ServerConn) -> None:
        conn.read_handshake()
        conn.send(VERSION_REPLY)
        conn.read_frame()
        conn.send(frame(49, 1, 1))
        conn.drain()

    rec = Recorder()
    with ScriptedServer(script) as srv:
        t = open_transport(srv.port, rec)
        first = t.last_rx
        assert first > 0
        t.sendMsg(frame(49, 1))
        assert rec.wait_frames(1)
        assert t.last_rx >= first and t.bytes_in > len(VERSION_REPLY)
        t.close()


def test_a_send_into_a_peer_that_stopped_reading_times_out_and_closes(send_mode: str) -> None:
    release = threading.Event()

    def script(conn: ServerConn) -> None:
        conn.read_handshake()
        conn.send(VERSION_REPLY)
        release.wait(30)  # never reads again: the buffers fill up

    rec = Recorder()
    with ScriptedServer(script) as srv:
        t = open_transport(srv.port, rec, send_timeout=0.2)
        chunk = frame(10, "q" * 1_000_000)
        with pytest.raises(IBConnectionError, match="send failed"):
            for _ in range(500):  # far more than any loopback buffer holds
                t.sendMsg(chunk)
        assert rec.closed.wait(10)
        release.set()
    assert len(rec.closes) == 1 and "send failed" in rec.closes[0][1]


def test_an_idle_connection_survives_the_socket_timeout() -> None:
    go = threading.Event()

    def script(conn: ServerConn) -> None:
        conn.read_handshake()
        conn.send(VERSION_REPLY)
        go.wait(30)
        conn.send(frame(49, 1, 9))
        conn.drain()

    rec = Recorder()
    with ScriptedServer(script) as srv:
        t = open_transport(srv.port, rec, send_timeout=0.05)
        # Let the reader's recv time out a few times: wait for something that takes longer.
        assert not rec.closed.wait(0.3)
        go.set()
        assert rec.wait_frames(1)
        assert t.isConnected() and rec.closes == []
        t.close()
