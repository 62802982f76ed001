"""The official EReader loses a read of exactly 4096 bytes followed by a quiet second
(``Connection._recvAllMsg`` reads again, the 1 s socket timeout fires, and ``recvMsg`` returns
b"" instead of what it had). This reproduces it with the bare official client and shows that
our bridge gets every byte from the same server."""

from __future__ import annotations

import struct
import threading

from ibapi.client import EClient
from ibapi.wrapper import EWrapper

from ib_resilience.bridge import Bridge

from .gwserver import VERSION_REPLY, ScriptedServer, ServerConn, frame
from .sinks import RecordingSink

BARE_CLIENT_WAIT = 2.5  # > the official 1 s recv timeout; the loss shows as "never arrived"


def startup_in_exactly_4096_bytes() -> bytes:
    head = frame(15, 1, "DU1234567") + frame(9, 1, 42)
    text_len = 4096 - len(head) - len(frame(4, 2, -1, 2104, ""))
    data = head + frame(4, 2, -1, 2104, "x" * text_len)
    assert len(data) == 4096
    return data


def script(conn: ServerConn) -> None:
    conn.read_handshake()
    conn.send(VERSION_REPLY)
    conn.read_frame()  # START_API
    conn.send(startup_in_exactly_4096_bytes())  # one write, one segment on loopback
    conn.drain()  # then silence


class BareApp(EWrapper, EClient):
    def __init__(self) -> None:
        EWrapper.__init__(self)
        EClient.__init__(self, wrapper=self)
        self.got_id = threading.Event()

    def nextValidId(self, orderId: int) -> None:  # noqa: N802, N803
        self.got_id.set()


def test_the_bare_client_loses_the_4096_bytes_and_ours_does_not() -> None:
    assert struct.calcsize("!I") == 4
    with ScriptedServer(script) as srv:
        app = BareApp()
        app.connect("127.0.0.1", srv.port, 1)
        runner = threading.Thread(target=app.run, name="bare-run", daemon=True)
        runner.start()
        try:
            lost = not app.got_id.wait(BARE_CLIENT_WAIT)
            still_connected = app.isConnected()
        finally:
            reader = app.reader  # disconnect() resets it to None
            app.disconnect()
            runner.join(5)
            if reader is not None:  # non-daemon; wakes within its 1 s recv timeout
                reader.join(5)
                assert not reader.is_alive()
        assert lost and still_connected, "the bare client should silently lose the 4096 bytes"

        sink = RecordingSink()
        bridge = Bridge(sink)
        info = bridge.open("127.0.0.1", srv.port, 1, 10.0)
        try:
            assert info.next_valid_id == 42 and info.accounts == ("DU1234567",)
            (err,) = sink.wait_for("error")
            assert err[1] == 2104 and len(err[2]) > 3000
            assert bridge.transport.bytes_in == len(VERSION_REPLY) + 4096  # type: ignore[union-attr]
        finally:
            bridge.close()
