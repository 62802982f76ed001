"""Bridge.open/close against a scripted gateway: the handshake, forwarding, error normalisation,
connection-closed exactly once per generation, stale frames, threads left behind."""

from __future__ import annotations

import logging
import struct
import threading
from typing import List

import pytest
from ibapi.client import EClient

from ib_resilience.bridge import IBAPI_LINE, Bridge, HandshakeInfo
from ib_resilience.errors import ClientIdInUseError, IBConnectionError
from ib_resilience.requests import PendingRequests

from .gwserver import VERSION_REPLY, ScriptedServer, ServerConn, frame, startup_burst, wait_until
from .sinks import RecordingSink

NOW = 1_764_489_900


def gateway(conn: ServerConn) -> None:
    conn.accept_client(next_id=42)
    conn.serve_current_time(NOW)


def test_open_returns_handshake_info_and_forwards_the_startup_burst() -> None:
    sink = RecordingSink()
    with ScriptedServer(gateway) as srv:
        bridge = Bridge(sink)
        info = bridge.open("127.0.0.1", srv.port, 7, 5.0)
        try:
            assert info == HandshakeInfo(
                server_version=157,
                connection_time="20261130 07:45:00 Greenwich Mean Time",
                next_valid_id=42,
                accounts=("DU1234567",),
                generation=1,
            )
            assert srv.conns[0].received[0] == [b"71", b"2", b"7", b""]  # START_API, official encoding
            assert bridge.isConnected() and bridge.serverVersion() == 157
            assert bridge.twsConnectionTime() == info.connection_time
            assert sink.named("managedAccounts") == [("DU1234567",)]
            assert sink.named("nextValidId") == [(42,)]
            errors = sink.wait_for("error")
            assert errors == [(-1, 2104, "Market data farm connection is OK:usfarm", "")]
            bridge.reqCurrentTime()
            (got,) = sink.wait_for("currentTime")
            assert got == (NOW,) and type(got[0]) is int
            assert bridge.last_rx > 0
        finally:
            bridge.close()
    assert sink.closes == [(1, "closed locally")]


def test_client_id_in_use_raises_and_closes_once() -> None:
    def script(conn: ServerConn) -> None:
        conn.read_handshake()
        conn.send(VERSION_REPLY)
        conn.read_frame()
        conn.send(frame(4, 2, -1, 326, "Unable to connect as the client id is already in use."))
        conn.close()

    sink = RecordingSink()
    with ScriptedServer(script) as srv:
        bridge = Bridge(sink)
        with pytest.raises(ClientIdInUseError) as info:
            bridge.open("127.0.0.1", srv.port, 0, 5.0)
        assert info.value.code == 326
        assert sink.wait_closes(1) and len(sink.closes) == 1 and sink.closes[0][0] == 1
        assert sink.named("error")[0][:2] == (-1, 326)
        assert not bridge.isConnected()
        bridge.close()
    assert len(sink.closes) == 1


def test_no_reply_to_start_api_is_bounded() -> None:
    def script(conn: ServerConn) -> None:
        conn.read_handshake()
        conn.send(VERSION_REPLY)
        conn.drain()  # START_API is never answered

    sink = RecordingSink()
    with ScriptedServer(script) as srv:
        bridge = Bridge(sink)
        with pytest.raises(IBConnectionError, match="timed out") as info:
            bridge.open("127.0.0.1", srv.port, 1, 0.3)
        assert isinstance(info.value.__cause__, TimeoutError)
        assert srv.conns[0].closed_by_peer.wait(5)
    assert len(sink.closes) == 1 and sink.closes[0][0] == 1


def test_stalled_version_reply_is_bounded() -> None:
    def script(conn: ServerConn) -> None:
        conn.read_handshake()
        conn.drain()

    sink = RecordingSink()
    with ScriptedServer(script) as srv:
        with pytest.raises(IBConnectionError, match="timed out"):
            Bridge(sink).open("127.0.0.1", srv.port, 1, 0.3)
    assert len(sink.closes) == 1


def test_close_before_ready_raises_connection_error() -> None:
    def script(conn: ServerConn) -> None:
        conn.read_handshake()
        conn.send(VERSION_REPLY)
        conn.read_frame()
        conn.send(frame(15, 1, "DU1"))  # accounts but no nextValidId
        conn.close()

    sink = RecordingSink()
    with ScriptedServer(script) as srv:
        with pytest.raises(IBConnectionError, match="closed before ready"):
            Bridge(sink).open("127.0.0.1", srv.port, 1, 5.0)
    assert sink.closes == [(1, "closed by peer")]


def test_version_reply_followed_by_unframeable_garbage_fails_fast() -> None:
    def script(conn: ServerConn) -> None:
        conn.read_handshake()
        conn.send(VERSION_REPLY + b"\xff\xfe\xfd\xfc garbage")
        conn.drain()

    sink = RecordingSink()
    with ScriptedServer(script) as srv:
        with pytest.raises(IBConnectionError, match="protocol error"):
            Bridge(sink).open("127.0.0.1", srv.port, 1, 30.0)
    assert len(sink.closes) == 1 and sink.closes[0][1].startswith("protocol error")


def test_version_reply_followed_by_a_malformed_frame_is_counted_and_survived() -> None:
    def script(conn: ServerConn) -> None:
        conn.read_handshake()
        conn.send(VERSION_REPLY + frame(1, "x") + frame(2, 6, 1, 0, "not-a-size"))
        conn.read_frame()
        conn.send(startup_burst(5))
        conn.serve_current_time(NOW)

    sink = RecordingSink()
    with ScriptedServer(script) as srv:
        bridge = Bridge(sink)
        info = bridge.open("127.0.0.1", srv.port, 1, 5.0)
        assert info.next_valid_id == 5
        assert bridge.counters().decode_errors == 2
        bridge.reqCurrentTime()
        assert sink.wait_for("currentTime") == [(NOW,)]
        bridge.close()


def test_a_non_numeric_message_id_closes_the_connection_and_nothing_after_it_is_decoded() -> None:
    def script(conn: ServerConn) -> None:
        conn.accept_client()
        conn.read_frame()
        # One write: the reader gets these together (or in pieces; either way nothing after the
        # garbage may be decoded, since the stream is out of step from there on).
        conn.send(frame(49, 1, NOW) + frame("garbage", 1, 2) + frame(49, 1, NOW + 1))
        conn.drain()

    sink = RecordingSink()
    with ScriptedServer(script) as srv:
        bridge = Bridge(sink)
        bridge.open("127.0.0.1", srv.port, 1, 5.0)
        bridge.reqCurrentTime()
        closes = sink.wait_closes(1)
        assert closes[0][0] == 1 and closes[0][1].startswith("protocol error")
        assert bridge.counters().decode_errors == 1
        assert sink.named("currentTime") == [(NOW,)]
        bridge.close()
    assert len(sink.closes) == 1


def test_sink_exceptions_never_reach_the_reader() -> None:
    sink = RecordingSink(raise_in=("*",))
    with ScriptedServer(gateway) as srv:
        bridge = Bridge(sink)
        bridge.open("127.0.0.1", srv.port, 1, 5.0)
        for i in range(3):
            bridge.reqCurrentTime()
            assert len(sink.wait_for("currentTime", i + 1)) == i + 1
        assert bridge.isConnected()
        assert bridge.counters().sink_errors >= 5  # accounts, id, 2104 error, 3 x currentTime
        bridge.close()


def test_peer_drop_disconnects_before_the_sink_hears_and_requests_then_get_504() -> None:
    states: List[bool] = []
    drop = threading.Event()

    def script(conn: ServerConn) -> None:
        conn.accept_client()
        drop.wait(10)
        conn.close()

    sink = RecordingSink()
    with ScriptedServer(script) as srv:
        bridge = Bridge(sink)
        sink.on_close_hook = lambda gen, reason: states.append(bridge.isConnected())
        bridge.open("127.0.0.1", srv.port, 1, 5.0)
        drop.set()
        assert sink.wait_closes(1) == [(1, "closed by peer")]
        assert states == [False] and bridge.connState == EClient.DISCONNECTED
        bridge.reqCurrentTime()
        assert sink.named("error")[-1][:2] == (-1, 504)
        bridge.close()
        bridge.close()
    assert sink.closes == [(1, "closed by peer")]


def test_each_generation_is_closed_once_and_stale_frames_are_dropped() -> None:
    sink = RecordingSink()
    with ScriptedServer(gateway) as srv:
        bridge = Bridge(sink)
        first = bridge.open("127.0.0.1", srv.port, 1, 5.0)
        second = bridge.open("127.0.0.1", srv.port, 1, 5.0)
        assert (first.generation, second.generation) == (1, 2)
        assert sink.closes == [(1, "superseded by a new connection")]
        # A frame the old generation's reader might still hand over is dropped.
        bridge._on_frames(1, [b"49\x001\x00123\x00"])
        assert bridge.counters().stale_dropped == 1
        assert sink.named("currentTime") == []
        bridge.reqCurrentTime()
        assert sink.wait_for("currentTime") == [(NOW,)]
        bridge.close()
    assert sink.closes == [(1, "superseded by a new connection"), (2, "closed locally")]


def test_close_is_idempotent_and_leaves_no_thread_behind() -> None:
    before = set(threading.enumerate())
    sink = RecordingSink()
    with ScriptedServer(gateway) as srv:
        bridge = Bridge(sink)
        bridge.close()  # before any open: harmless
        bridge.open("127.0.0.1", srv.port, 1, 5.0)
        reader = bridge.transport.reader_thread  # type: ignore[union-attr]
        assert reader is not None and reader.is_alive()
        bridge.close()
        assert not reader.is_alive()
        bridge.close()
        threading.Thread(target=bridge.close).start()
    assert wait_until(lambda: set(threading.enumerate()) <= before, 5)
    assert sink.closes == [(1, "closed locally")]


def test_close_from_a_sink_callback_on_the_reader_thread() -> None:
    sink = RecordingSink()
    with ScriptedServer(gateway) as srv:
        bridge = Bridge(sink)
        bridge.open("127.0.0.1", srv.port, 1, 5.0)
        sink.currentTime = lambda t: bridge.close("closed by the sink")  # type: ignore[method-assign]
        bridge._sink_fns["currentTime"] = sink.currentTime
        bridge.reqCurrentTime()
        assert sink.wait_closes(1) == [(1, "closed by the sink")]
        assert bridge.transport.join(5)  # type: ignore[union-attr]


def test_cancel_order_uses_the_installed_lines_signature() -> None:
    got = threading.Event()

    def script(conn: ServerConn) -> None:
        conn.accept_client()
        conn.read_frame()
        got.set()
        conn.drain()

    sink = RecordingSink()
    with ScriptedServer(script) as srv:
        bridge = Bridge(sink)
        bridge.open("127.0.0.1", srv.port, 1, 5.0)
        bridge.cancel_order(77)
        assert got.wait(5)
        cancel = srv.conns[0].received[-1]
        assert cancel[0] == b"4" and b"77" in cancel
        assert sink.named("error") == [(-1, 2104, "Market data farm connection is OK:usfarm", "")]
        bridge.close()


def test_commission_report_reaches_sink_commission_report_on_both_lines() -> None:
    def script(conn: ServerConn) -> None:
        conn.accept_client()
        conn.read_frame()
        conn.send(frame(59, 1, "0001.01", 1.25, "USD", "1.7976931348623157E308", "", ""))
        conn.drain()

    sink = RecordingSink()
    with ScriptedServer(script) as srv:
        bridge = Bridge(sink)
        bridge.open("127.0.0.1", srv.port, 1, 5.0)
        bridge.reqCurrentTime()
        (args,) = sink.wait_for("commissionReport")
        report = args[0]
        assert report.execId == "0001.01"
        assert (getattr(report, "commissionAndFees", None) or getattr(report, "commission", None)) == 1.25
        assert sink.named("commissionAndFeesReport") == []
        bridge.close()


def test_error_is_normalised_from_every_signature() -> None:
    sink = RecordingSink()
    bridge = Bridge(sink)
    if IBAPI_LINE >= 10:
        bridge.error(3, 1_700_000_000_000, 200, "No security definition", "{}")
        bridge.error(4, 0, 162, "cancelled")
    else:
        bridge.error(3, 200, "No security definition")
    assert sink.named("error")[0][:3] == (3, 200, "No security definition")
    assert all(len(args) == 4 and isinstance(args[3], str) for args in sink.named("error"))


def test_frame_too_long_for_the_configured_limit_closes() -> None:
    def script(conn: ServerConn) -> None:
        conn.accept_client()
        conn.read_frame()
        conn.send(struct.pack("!I", 5000) + b"x" * 5000)
        conn.drain()

    sink = RecordingSink()
    with ScriptedServer(script) as srv:
        bridge = Bridge(sink, max_frame_len=4096)
        bridge.open("127.0.0.1", srv.port, 1, 5.0)
        bridge.reqCurrentTime()
        assert sink.wait_closes(1)[0][1].startswith("protocol error")
        bridge.close()


def test_an_injected_clock_stamps_last_rx_while_socket_deadlines_stay_real() -> None:
    from ib_resilience.clock import ManualClock

    def stall(conn: ServerConn) -> None:
        conn.read_handshake()
        conn.send(VERSION_REPLY)
        conn.drain()

    clock = ManualClock(start=5000.0)
    sink = RecordingSink()
    with ScriptedServer(gateway) as srv:
        bridge = Bridge(sink, clock=clock)
        bridge.open("127.0.0.1", srv.port, 1, 5.0)
        assert bridge.last_rx == 5000.0
        clock.advance(7.0)
        bridge.reqCurrentTime()
        assert sink.wait_for("currentTime")
        assert bridge.last_rx == 5007.0
        bridge.close()
    with ScriptedServer(stall) as srv:
        with pytest.raises(IBConnectionError, match="timed out"):
            Bridge(RecordingSink(), clock=clock).open("127.0.0.1", srv.port, 1, 0.3)


def test_wake_later_defers_to_the_end_of_the_read_on_the_reader_and_runs_at_once_elsewhere() -> None:
    events: List[str] = []
    reader_threads: List[threading.Thread] = []
    with ScriptedServer(gateway) as srv:
        sink = RecordingSink()
        bridge = Bridge(sink)
        bridge.open("127.0.0.1", srv.port, 1, 5.0)

        def on_time(t: int) -> None:
            bridge.wake_later(lambda: (events.append("woken"), reader_threads.append(threading.current_thread())))
            events.append("callback returned")  # the wake-up has not run inside the callback
            sink._record("currentTime", (t,))

        bridge._sink_fns["currentTime"] = on_time
        bridge.reqCurrentTime()
        sink.wait_for("currentTime")
        assert wait_until(lambda: "woken" in events, 5)
        assert events == ["callback returned", "woken"]
        assert reader_threads == [bridge.transport.reader_thread]  # type: ignore[union-attr]
        bridge.wake_later(lambda: events.append("now"))  # not the reader: runs before returning
        assert events[-1] == "now"
        bridge.close()


def test_a_reply_and_a_close_in_the_same_read_resolve_the_waiter_with_the_reply() -> None:
    """Wake-ups deferred to the end of a read run before the close is announced, so a request
    answered just before the stream broke gets its answer, not a connection error or a hang."""

    def script(conn: ServerConn) -> None:
        conn.accept_client()
        conn.read_frame()
        conn.send(frame(49, 1, NOW) + frame("garbage", 1, 2))  # the reply, then a protocol error
        conn.drain()

    sink = RecordingSink()
    with ScriptedServer(script) as srv:
        bridge = Bridge(sink)
        pending = PendingRequests(wake=bridge.wake_later)
        sink.on_close_hook = lambda gen, reason: pending.close_generation(
            gen, lambda p: IBConnectionError("connection closed")
        )
        bridge._sink_fns["currentTime"] = lambda t: pending.resolve(request.key, t)
        info = bridge.open("127.0.0.1", srv.port, 1, 5.0)
        pending.open_generation(info.generation)
        request = pending.register("current_time")
        bridge.reqCurrentTime()
        assert pending.wait(request, 5.0, "get_current_time") == NOW
        assert sink.wait_closes(1)[0][1].startswith("protocol error")
        bridge.close()


def test_requests_keep_ibapis_sending_log_line_when_its_logger_is_enabled(caplog: pytest.LogCaptureFixture) -> None:
    """Bridge.sendMsg builds ibapi's "SENDING" line only when ibapi.client logs at INFO; then it
    is the official line (message name and framed bytes)."""
    sink = RecordingSink()
    with ScriptedServer(gateway) as srv:
        bridge = Bridge(sink)
        bridge.open("127.0.0.1", srv.port, 1, 5.0)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="ibapi.client"):
            bridge.reqCurrentTime()
        sink.wait_for("currentTime")
        with caplog.at_level(logging.WARNING, logger="ibapi.client"):
            bridge.reqCurrentTime()
        assert len(sink.wait_for("currentTime", 2)) == 2
        bridge.close()
    sending = [r.getMessage() for r in caplog.records if r.getMessage().startswith("SENDING")]
    assert sending == ["SENDING reqCurrentTime b'\\x00\\x00\\x00\\x0549\\x001\\x00'"]
