"""Market data subscriptions that survive drops, 1101 and 1102, against the simulator."""

from __future__ import annotations

import threading
from typing import Callable, List

import pytest

from ib_resilience.client import IBClient
from ib_resilience.errors import IBRequestError
from ib_resilience.sim import FakeGateway
from ib_resilience.state import ConnectionState
from ib_resilience.subscriptions import Tick

from resilient import Recorder, wait_until


class Ticks:
    """An on_tick callback a test can wait on."""

    def __init__(self) -> None:
        self.items: List[Tick] = []
        self._cond = threading.Condition()

    def __call__(self, tick: Tick) -> None:
        with self._cond:
            self.items.append(tick)
            self._cond.notify_all()

    def wait_more(self, than: int, timeout: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.items) > than, timeout)

    def __len__(self) -> int:
        with self._cond:
            return len(self.items)


@pytest.fixture
def streaming(gw: FakeGateway) -> FakeGateway:
    gw.set_tick_interval(0.02)
    return gw


def test_ticks_stream_to_the_callback_off_the_reader_thread(client: IBClient, streaming: FakeGateway) -> None:
    threads: List[str] = []
    ticks = Ticks()

    def on_tick(tick: Tick) -> None:
        threads.append(threading.current_thread().name)
        ticks(tick)

    sub = client.subscribe_market_data("AAPL", on_tick)
    assert ticks.wait_more(5)
    assert {t.symbol for t in ticks.items} == {"AAPL"}
    assert all(not name.startswith("ib-reader") for name in threads)
    assert sub.last_tick_at is not None and sub.gaps == []
    sub.cancel()
    sub.cancel()  # idempotent
    assert client.get_connection_status()["subscriptions"]["active"] == 0


def test_unknown_symbol_is_refused_with_code_200(client: IBClient) -> None:
    with pytest.raises(IBRequestError) as info:
        client.subscribe_market_data("NOSUCHSYM", lambda tick: None)
    assert info.value.code == 200
    assert client.subscriptions() == []


def test_bad_callback_is_a_value_error(client: IBClient) -> None:
    with pytest.raises(ValueError):
        client.subscribe_market_data("AAPL", "not callable")  # type: ignore[arg-type]


def test_stream_is_restored_after_a_reconnect_and_the_gap_recorded(client: IBClient, streaming: FakeGateway) -> None:
    rec = Recorder(client)
    ticks = Ticks()
    sub = client.subscribe_market_data("MSFT", ticks)
    assert ticks.wait_more(3)
    streaming.drop_connections()
    assert rec.wait(ConnectionState.CONNECTED)  # the reconnect (the first CONNECTED preceded the recorder)
    seen = len(ticks)
    assert ticks.wait_more(seen + 3)
    gaps = sub.gaps
    assert len(gaps) == 1 and gaps[0][1] is not None and gaps[0][0] <= gaps[0][1]
    assert sub.restores >= 1


def test_1101_restores_streams_and_1102_keeps_them(client: IBClient, streaming: FakeGateway) -> None:
    ticks = Ticks()
    sub = client.subscribe_market_data("SPY", ticks)
    assert ticks.wait_more(3)
    restores = sub.restores
    streaming.upstream_outage(0.2, data_lost=True)
    assert streaming.wait_for(lambda: streaming.errors_sent.get(1101, 0) >= 1, timeout=10)
    seen = len(ticks)
    assert ticks.wait_more(seen + 3)
    assert sub.restores == restores + 1
    assert len(sub.gaps) == 1 and sub.gaps[0][1] is not None

    streaming.upstream_outage(0.2, data_lost=False)
    assert streaming.wait_for(lambda: streaming.errors_sent.get(1102, 0) >= 1, timeout=10)
    seen = len(ticks)
    assert ticks.wait_more(seen + 3)
    assert sub.restores == restores + 1  # 1102: data kept, nothing re-requested
    assert client.get_connection_status()["upstream_ok"] is True


def test_a_stream_that_goes_silent_while_others_tick_is_re_requested(
    make_client: Callable[..., IBClient], streaming: FakeGateway
) -> None:
    # Frequent checks (the watchdog runs one at every heartbeat), but a patient liveness
    # deadline: on a loaded machine a reconnect would restore the stream and hide the check.
    client = make_client(subscriptions={"staleness_timeout": 0.3}, heartbeat_interval=0.1, heartbeat_timeout=10.0)
    quiet, busy = Ticks(), Ticks()
    sub = client.subscribe_market_data("MSFT", quiet)
    client.subscribe_market_data("AAPL", busy)
    assert quiet.wait_more(3) and busy.wait_more(3)
    assert streaming.silence_market_data("MSFT") == 1
    # Sampling a counter the watchdog's staleness check writes.
    wait_until(lambda: client.get_connection_status()["subscriptions"]["stale_rerequests"] > 0, 15, interval=0.02)
    assert client.get_connection_status()["subscriptions"]["stale_rerequests"] >= 1
    seen = len(quiet)
    assert quiet.wait_more(seen + 3, timeout=15)  # the re-requested stream ticks again
    assert client.get_connection_status()["total_disconnections"] == 0
    assert len(sub.gaps) == 1 and sub.gaps[0][1] is not None


def test_nothing_is_re_requested_when_every_stream_is_quiet(
    make_client: Callable[..., IBClient], gw: FakeGateway
) -> None:
    gw.set_tick_interval(3600.0)  # a closed market: nobody ticks
    client = make_client(subscriptions={"staleness_timeout": 0.2}, heartbeat_interval=0.05, heartbeat_timeout=10.0)
    client.subscribe_market_data("MSFT", Ticks())
    # Eleven answered heartbeats (0.05 s apart) later the staleness check has run again and again,
    # well past the 0.2 s staleness timeout (the watchdog runs it at every wake).
    beats = set()

    def twelve_beats_seen() -> bool:
        beats.add(client.get_connection_status()["last_heartbeat_at"])  # a timestamp the watchdog writes
        return len(beats) >= 12

    wait_until(twelve_beats_seen, 15, interval=0.02)
    assert len(beats) >= 12
    assert client.get_connection_status()["subscriptions"]["stale_rerequests"] == 0


def test_a_price_carries_the_size_that_came_with_it(client: IBClient, gw: FakeGateway) -> None:
    ticks = Ticks()
    client.subscribe_market_data("QQQ", ticks)
    seen = len(ticks)
    gw.set_price("QQQ", 444.25)
    assert ticks.wait_more(seen)
    with ticks._cond:
        assert ticks._cond.wait_for(lambda: any(t.field == "last" and t.value == 444.25 for t in ticks.items), 10)
        last = [t for t in ticks.items if t.field == "last" and t.value == 444.25][-1]
    assert last.size is not None and last.size > 0
    assert not any(t.field == "last_size" for t in ticks.items)  # merged into the price, not separate
