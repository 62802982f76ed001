"""The two routes a tick takes into a subscription give the user the same ``Tick``s: claimed
straight from the fast path (``claim_tick``: a price with the size of its message) and through
the official callbacks (``tickPrice`` then ``tickSize``, joined by ``on_tick``). The second is
what a client without the fast path (another server version) gets."""

from __future__ import annotations

import threading
from typing import Any, List

import pytest
from ibapi.contract import Contract

from ib_resilience import subscriptions
from ib_resilience.clock import ManualClock
from ib_resilience.dispatcher import Dispatcher
from ib_resilience.fastpath import FastPath
from ib_resilience.subscriptions import SubscriptionManager, Tick
from tests.bridge.gwserver import encode_fields

REQ = 1_000_000_001

# (price ticks with and without a size, sizes alone, delayed types, repeats, odd values)
FRAMES = [
    encode_fields(1, 6, REQ, 4, "101.25", 300, 0),  # LAST + LAST_SIZE
    encode_fields(1, 6, REQ, 1, "101.20", 100, 1),  # BID + BID_SIZE
    encode_fields(1, 6, REQ, 2, "101.30", 200, 0),  # ASK + ASK_SIZE
    encode_fields(2, 6, REQ, 0, 150),  # BID_SIZE alone
    encode_fields(1, 6, REQ, 6, "102.00", 0, 0),  # HIGH: no size
    encode_fields(2, 6, REQ, 8, 123456789012),  # VOLUME
    encode_fields(1, 6, REQ, 68, "99.5", 7, 0),  # DELAYED_LAST + DELAYED_LAST_SIZE
    encode_fields(1, 6, REQ, 4, "101.25", "", 0),  # an empty size decodes as 0
    encode_fields(1, 6, REQ, 9, "100.00", 0, 0),  # CLOSE
    encode_fields(2, 6, REQ, 5, 0),  # LAST_SIZE alone
    encode_fields(1, 6, REQ, 4, "-1", 0, 0),
]


class _Callbacks:
    """The official route: an EWrapper's tickPrice/tickSize as the router forwards them."""

    def __init__(self, subs: SubscriptionManager) -> None:
        self.subs = subs

    def tickPrice(self, req_id: int, tick_type: int, price: float, attrib: Any) -> None:  # noqa: N802
        assert self.subs.on_tick(req_id, tick_type, price)

    def tickSize(self, req_id: int, tick_type: int, size: Any) -> None:  # noqa: N802
        assert self.subs.on_tick(req_id, tick_type, size)


def _route(claimed: bool) -> List[Tick]:
    dispatcher = Dispatcher(name="test-dispatcher")
    subs = SubscriptionManager(dispatcher, send=lambda req_id, c: None, cancel=lambda req_id: None,
                               next_req_id=lambda: REQ, clock=ManualClock())
    got: List[Tick] = []
    done = threading.Event()
    contract = Contract()
    contract.symbol = "AAPL"
    subs.subscribe(contract, got.append, connected=True)
    fast = FastPath(_Callbacks(subs), subs.claim_tick if claimed else None)
    for frame in FRAMES:
        assert fast.handle(frame)
    # A final tick of another type flushes a price the official route may still hold.
    assert fast.handle(encode_fields(1, 6, REQ, 7, "98.00", 0, 0))
    dispatcher.start()
    dispatcher.submit(done.set)
    assert done.wait(10)
    assert dispatcher.stop(10)
    return got


def test_claimed_and_official_routes_deliver_the_same_ticks() -> None:
    claimed, official = _route(True), _route(False)
    assert claimed == official
    assert len(claimed) == len(FRAMES) + 1
    last = claimed[0]
    assert (last.field, last.value, last.size) == ("last", 101.25, 300.0)
    assert [t.field for t in claimed[3:6]] == ["bid_size", "high", "volume"]
    assert claimed[4].size is None


def test_past_the_buffer_limit_ticks_are_coalesced_per_tick_type_newest_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subscriptions, "MAX_BUFFERED_TICKS", 3)
    dispatcher = Dispatcher(name="test-dispatcher")
    subs = SubscriptionManager(dispatcher, send=lambda req_id, c: None, cancel=lambda req_id: None,
                               next_req_id=lambda: REQ, clock=ManualClock())
    got: List[Tick] = []
    contract = Contract()
    contract.symbol = "AAPL"
    subs.subscribe(contract, got.append, connected=True)
    for price in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0):  # the dispatcher is not running: nothing drains
        assert subs.claim_tick(REQ, 4, price, 1)
    assert subs.claim_tick(REQ, 1, 9.0, 2)
    done = threading.Event()
    dispatcher.start()
    dispatcher.submit(done.set)
    assert done.wait(10)
    assert dispatcher.stop(10)
    assert [(t.field, t.value) for t in got] == [("last", 1.0), ("last", 2.0), ("last", 3.0), ("last", 6.0), ("bid", 9.0)]
    assert subs.stats()["coalesced"] == 4
