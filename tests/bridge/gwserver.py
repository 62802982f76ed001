"""A tiny scripted gateway for the bridge tests: a real TCP server on 127.0.0.1, standard library
only. Each accepted connection runs ``script(conn)`` on its own thread."""

from __future__ import annotations

import socket
import struct
import threading
from typing import Callable, List, Optional, Sequence, Union

from resilient import wait_until  # noqa: F401 - re-exported for the bridge tests

Field = Union[str, int, float, bytes]


def encode_fields(*fields: Field) -> bytes:
    out = b""
    for f in fields:
        out += (f if isinstance(f, bytes) else str(f).encode("ascii")) + b"\0"
    return out


def frame(*fields: Field) -> bytes:
    body = encode_fields(*fields)
    return struct.pack("!I", len(body)) + body


VERSION_REPLY = frame(157, "20261130 07:45:00 Greenwich Mean Time")


def startup_burst(next_id: int = 1, accounts: str = "DU1234567") -> bytes:
    return (
        frame(15, 1, accounts)
        + frame(9, 1, next_id)
        + frame(4, 2, -1, 2104, "Market data farm connection is OK:usfarm")
    )


class ServerConn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = b""
        self.received: List[List[bytes]] = []
        self.closed_by_peer = threading.Event()

    def _read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                self.closed_by_peer.set()
                raise EOFError("peer closed")
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def read_handshake(self) -> str:
        prefix = self._read_exact(4)
        assert prefix == b"API\0", prefix
        (size,) = struct.unpack("!I", self._read_exact(4))
        return self._read_exact(size).decode("ascii")

    def read_frame(self) -> List[bytes]:
        (size,) = struct.unpack("!I", self._read_exact(4))
        fields = self._read_exact(size).split(b"\0")[:-1]
        self.received.append(fields)
        return fields

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def accept_client(self, next_id: int = 1) -> List[bytes]:
        """Handshake, START_API, startup burst; returns the START_API fields."""
        self.read_handshake()
        self.send(VERSION_REPLY)
        start = self.read_frame()
        self.send(startup_burst(next_id))
        return start

    def serve_current_time(self, now: int = 1_764_489_900) -> None:
        """Answer REQ_CURRENT_TIME until the peer goes; record every other frame."""
        try:
            while True:
                fields = self.read_frame()
                if fields[:1] == [b"49"]:
                    self.send(frame(49, 1, now))
        except (EOFError, OSError):
            self.closed_by_peer.set()

    def drain(self) -> None:
        """Read until the peer closes."""
        try:
            while self.sock.recv(65536):
                pass
        except OSError:
            pass
        self.closed_by_peer.set()

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def reset(self) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


class ScriptedServer:
    """``with ScriptedServer(script) as srv: srv.port``; joins every thread on exit."""

    def __init__(self, script: Callable[[ServerConn], None]) -> None:
        self._script = script
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.conns: List[ServerConn] = []
        self.errors: List[BaseException] = []
        self.accepted = threading.Event()
        self._threads: List[threading.Thread] = []
        self._stop = threading.Event()
        self._acceptor = threading.Thread(target=self._accept_loop, name="test-gw-accept", daemon=True)

    def __enter__(self) -> ScriptedServer:
        self._acceptor.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            conn = ServerConn(sock)
            self.conns.append(conn)
            t = threading.Thread(target=self._run, args=(conn,), name="test-gw-conn", daemon=True)
            self._threads.append(t)
            t.start()
            self.accepted.set()

    def _run(self, conn: ServerConn) -> None:
        try:
            self._script(conn)
        except (EOFError, ConnectionError):
            pass
        except BaseException as exc:  # surfaced by the test via .errors
            self.errors.append(exc)

    def stop(self) -> None:
        self._stop.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
        except OSError:
            pass
        try:
            self._listener.close()
        except OSError:
            pass
        for conn in list(self.conns):
            conn.close()
        self._acceptor.join(5)
        for t in self._threads:
            t.join(5)
            assert not t.is_alive(), "a test gateway thread did not stop"


def stay_open(conn: ServerConn) -> None:
    conn.drain()


def fields_of(frames: Optional[Sequence[List[bytes]]]) -> List[List[bytes]]:
    return list(frames or [])
