"""The bridge against the gateway simulator: handshake, faults, garbage, streaming ticks, and
the fast-path differential over frames recorded from the simulator."""

from __future__ import annotations

import logging
import threading
from typing import List

import pytest
from ibapi.contract import Contract

from ib_resilience.bridge import IBAPI_LINE, Bridge
from ib_resilience.errors import IBConnectionError
from ib_resilience.sim import FakeGateway

from .recording import RecordingWrapper
from .sinks import RecordingSink
from .test_fastpath_differential import fastpath, official
from resilient import wait_until


class RecordingBridge(Bridge):
    """Keeps a copy of every inbound frame (test only)."""

    def __init__(self, sink: object) -> None:
        super().__init__(sink)
        self.frames: List[bytes] = []

    def _on_frames(self, gen: int, frames: List[bytes]) -> None:
        self.frames.extend(frames)
        super()._on_frames(gen, frames)


def stock(symbol: str = "AAPL") -> Contract:
    c = Contract()
    c.symbol, c.secType, c.exchange, c.currency = symbol, "STK", "SMART", "USD"
    return c


def test_open_current_time_and_close() -> None:
    with FakeGateway(port=0, seed=7) as gw:
        sink = RecordingSink()
        bridge = Bridge(sink)
        info = bridge.open("127.0.0.1", gw.port, 3, 5.0)
        assert info.server_version == 157 and info.accounts and info.generation == 1
        bridge.reqCurrentTime()
        (t,) = sink.wait_for("currentTime")
        assert type(t[0]) is int and t[0] > 1_600_000_000
        bridge.close()
    assert sink.closes == [(1, "closed locally")]


@pytest.mark.parametrize("fault", ["drop_connections", "reset_connections"])
def test_a_dropped_connection_is_reported_once_and_reopens(fault: str) -> None:
    with FakeGateway(port=0, seed=7) as gw:
        sink = RecordingSink()
        bridge = Bridge(sink)
        bridge.open("127.0.0.1", gw.port, 3, 5.0)
        getattr(gw, fault)()
        closes = sink.wait_closes(1)
        assert len(closes) == 1 and closes[0][0] == 1
        assert not bridge.isConnected()
        info = bridge.open("127.0.0.1", gw.port, 3, 5.0)
        assert info.generation == 2
        bridge.reqCurrentTime()
        assert sink.wait_for("currentTime")
        bridge.close()
    assert [g for g, _ in sink.closes] == [1, 2]


def test_stalled_handshake_is_bounded() -> None:
    with FakeGateway(port=0, seed=7) as gw:
        gw.stall_handshake(30)
        sink = RecordingSink()
        with pytest.raises(IBConnectionError, match="timed out"):
            Bridge(sink).open("127.0.0.1", gw.port, 3, 0.3)
        assert len(sink.closes) == 1


@pytest.mark.parametrize("kind", ["bad_field", "unknown_id", "random_bytes"])
def test_garbage_is_survived_or_recovered(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    # 10.x logs an unknown id with a broken format string ("%d" given a tuple); pytest's capture
    # handler raises on that at DEBUG, which a normal logging handler only reports.
    caplog.set_level(logging.INFO, logger="ibapi.decoder")
    with FakeGateway(port=0, seed=7) as gw:
        sink = RecordingSink()
        bridge = Bridge(sink)
        bridge.open("127.0.0.1", gw.port, 3, 5.0)
        gw.send_garbage(kind)
        if kind == "random_bytes":
            # The stream can't be trusted after random bytes: closed, then a new connection works.
            closes = sink.wait_closes(1)
            assert closes and closes[0][1].startswith("protocol error")
            bridge.open("127.0.0.1", gw.port, 3, 5.0)
        bridge.reqCurrentTime()
        assert sink.wait_for("currentTime")
        if kind == "bad_field":
            assert bridge.counters().decode_errors == 1 and bridge.isConnected()
        if kind == "unknown_id":
            assert bridge.counters().decode_errors == 0
            if IBAPI_LINE >= 10:
                assert any(code == 505 for _, code, _, _ in sink.named("error"))
        bridge.close()


def test_injected_errors_are_normalised() -> None:
    with FakeGateway(port=0, seed=7) as gw:
        sink = RecordingSink()
        bridge = Bridge(sink)
        bridge.open("127.0.0.1", gw.port, 3, 5.0)
        gw.inject_error(1100, -1, "Connectivity between IB and TWS has been lost.")
        gw.inject_error(200, 17, "No security definition has been found for the request")
        errors = sink.wait_for("error", 5)  # after the 2104, 2106, 2158 of the startup burst
        assert (-1, 1100, "Connectivity between IB and TWS has been lost.", "") in errors
        assert (17, 200, "No security definition has been found for the request", "") in errors
        bridge.close()


def test_streamed_ticks_reach_the_sink_and_match_the_official_decoder() -> None:
    with FakeGateway(port=0, seed=7, tick_interval=0.01) as gw:
        sink = RecordingSink()
        bridge = RecordingBridge(sink)
        bridge.open("127.0.0.1", gw.port, 3, 5.0)
        bridge.reqMktData(1, stock("AAPL"), "", False, False, [])
        bridge.reqMktData(2, stock("MSFT"), "", True, False, [])  # snapshot
        bridge.reqCurrentTime()
        assert len(sink.wait_for("tickPrice", 40)) >= 40
        assert sink.wait_for("tickSnapshotEnd")
        bridge.cancelMktData(1)
        bridge.close()
    frames = list(bridge.frames)
    kinds = {f.split(b"\0", 1)[0] for f in frames}
    assert {b"1", b"2", b"4", b"9", b"15", b"49"} <= kinds
    sizes = sink.named("tickSize")
    size_type = int if IBAPI_LINE < 10 else type(sizes[0][2])
    assert all(type(args[2]) is size_type for args in sizes)
    fast_count = 0
    for frame in frames:
        handled, ours = fastpath(frame)
        if handled:
            fast_count += 1
            theirs, raised = official(frame)
            assert raised is None and ours == theirs, frame
        else:
            assert ours == []
    assert fast_count >= 40
    assert bridge.counters().fast_path >= 40 and bridge.counters().decode_errors == 0


def test_fast_and_official_paths_give_the_sink_the_same_calls() -> None:
    """The same simulator stream through a bridge with and one without the fast path."""
    with FakeGateway(port=0, seed=7, tick_interval=0.01) as gw:
        sinks = []
        for use_fast in (True, False):
            sink = RecordingSink()
            bridge = Bridge(sink, use_fast_path=use_fast)
            bridge.open("127.0.0.1", gw.port, 10 + use_fast, 5.0)
            bridge.reqMktData(1, stock("AAPL"), "", False, False, [])
            assert len(sink.wait_for("tickPrice", 20)) >= 20
            bridge.close()
            assert (bridge.counters().fast_path > 0) == use_fast
            sinks.append(sink)
    names = [[n for n, _ in s.calls if n in ("tickPrice", "tickSize")][:40] for s in sinks]
    assert names[0] == names[1]
    arg_types = [[tuple(type(a).__name__ for a in args) for n, args in s.calls if n == "tickSize"][:10] for s in sinks]
    assert arg_types[0] == arg_types[1]


def test_official_path_recorder_is_not_vacuous() -> None:
    rec = RecordingWrapper()
    rec.tickPrice(1, 1, 1.0, object.__new__(type("A", (), {})))
    assert rec.calls and rec.calls[0][0] == "tickPrice"
    assert threading.current_thread() is threading.main_thread()


def test_a_blocked_user_callback_on_the_dispatcher_never_stalls_the_reader() -> None:
    from ib_resilience.dispatcher import Dispatcher

    dispatcher = Dispatcher()
    dispatcher.start()
    release = threading.Event()
    user_calls: List[float] = []

    def user_callback(req_id: int, tick_type: int, price: float) -> None:
        user_calls.append(price)
        release.wait(20)  # a user callback that hangs

    class Sink(RecordingSink):
        def tickPrice(self, req_id: int, tick_type: int, price: float, attrib: object) -> None:  # noqa: N802
            dispatcher.submit_latest((req_id, tick_type), user_callback, req_id, tick_type, price)

    with FakeGateway(port=0, seed=7, tick_interval=0.01) as gw:
        sink = Sink()
        bridge = Bridge(sink)
        bridge.open("127.0.0.1", gw.port, 3, 5.0)
        bridge.reqMktData(1, stock("AAPL"), "", False, False, [])
        assert wait_until(lambda: len(user_calls) == 1)
        for i in range(5):  # heartbeats keep flowing while the user callback hangs
            bridge.reqCurrentTime()
            assert len(sink.wait_for("currentTime", i + 1)) == i + 1
        assert wait_until(lambda: dispatcher.stats().coalesced > 0)
        assert dispatcher.depth() <= 3  # one entry per (reqId, tickType): bid, ask, last
        bridge.close()
    release.set()
    assert dispatcher.stop(10)
