"""Headline end-to-end scenarios: orders and streams through gateway faults, with the real ibapi
client over loopback against the simulator. Every scenario ends by checking the simulator's
book: exactly the orders the caller was told about, none twice.
"""

from __future__ import annotations

import collections
import time
from typing import Any, Callable, Dict

import pytest

from ib_resilience import (
    BracketResult,
    IBClient,
    IBConnectionError,
    OrderCancelError,
    OrderStateUnknownError,
)
from ib_resilience.sim import FakeGateway
from ib_resilience.state import ConnectionState

from resilient import InThread, Recorder


@pytest.fixture
def make_client(new_client: Callable[..., IBClient]) -> Callable[..., IBClient]:
    def make(**overrides: Any) -> IBClient:
        client = new_client(**{"client_id": 7, "request_timeout": 20.0, **overrides})
        assert client.connect()
        return client

    return make


def live_refs(gw: FakeGateway) -> Dict[str, int]:
    """orderRef -> how many orders the simulator booked under it (rejected ones excluded)."""
    counts: Dict[str, int] = collections.Counter()
    for order in gw.orders:
        if order.status not in ("Rejected",) and order.order_ref:
            counts[order.order_ref] += 1
    return counts


def assert_book_matches(gw: FakeGateway, result: BracketResult) -> None:
    refs = live_refs(gw)
    expected = {result.order_ref, result.order_ref + "-tp", result.order_ref + "-sl"}
    assert {r: refs.get(r, 0) for r in expected} == {r: 1 for r in expected}, refs
    booked = {o.order_id for o in gw.orders if o.order_ref in expected}
    assert set(result.order_ids) <= booked


def bracket(client: IBClient, **kw: Any) -> BracketResult:
    return client.place_bracket_order("AAPL", "BUY", 10, 100.0, 110.0, 95.0, **kw)


def test_a_bracket_placed_normally_is_booked_once(make_client: Callable[..., IBClient], gw: FakeGateway) -> None:
    client = make_client()
    result = bracket(client)
    assert all(r.status for r in (result.parent, result.take_profit, result.stop_loss))
    assert_book_matches(gw, result)


def test_drop_before_send_raises_and_sends_nothing(make_client: Callable[..., IBClient], gw: FakeGateway) -> None:
    client = make_client(reconnect_delay_base=5.0, reconnect_delay_max=5.0)
    rec = Recorder(client)
    gw.refuse_connections(3.0)
    gw.drop_connections()
    assert rec.wait(ConnectionState.RECONNECTING)
    with pytest.raises(IBConnectionError):
        bracket(client)
    assert live_refs(gw) == {}


def test_drop_after_send_before_the_ack_returns_the_booked_orders(
    make_client: Callable[..., IBClient], gw: FakeGateway
) -> None:
    client = make_client()
    gw.hold_order_acks(True)
    call = InThread(lambda: bracket(client))
    assert gw.wait_for(lambda: len(gw.orders) == 3, timeout=10)
    gw.drop_connections()
    gw.hold_order_acks(False)
    result = call.join()
    assert_book_matches(gw, result)


def test_drop_after_the_ack_changes_nothing_and_orders_are_readopted(
    make_client: Callable[..., IBClient], gw: FakeGateway
) -> None:
    client = make_client()
    rec = Recorder(client)
    result = bracket(client)
    gw.drop_connections()
    assert rec.wait(ConnectionState.CONNECTED)
    open_ids = {o.order_id for o in client.open_orders()}
    assert set(result.order_ids) <= open_ids
    assert_book_matches(gw, result)


def test_drop_between_parent_and_children_completes_the_bracket_once(
    make_client: Callable[..., IBClient], gw: FakeGateway
) -> None:
    # A slow pacer holds the children back long enough to cut the line after the parent.
    client = make_client(pacing={"max_messages_per_second": 2.0, "burst": 1}, heartbeat_interval=30.0)
    before = len(gw.orders)
    call = InThread(lambda: bracket(client, timeout=30.0))
    assert gw.wait_for(lambda: len(gw.orders) >= before + 1, timeout=10)
    gw.drop_connections()
    result = call.join(60)
    assert_book_matches(gw, result)


def test_unknown_fate_when_the_gateway_does_not_come_back_in_time(
    make_client: Callable[..., IBClient], gw: FakeGateway
) -> None:
    client = make_client()
    gw.hold_order_acks(True)
    call = InThread(lambda: bracket(client, timeout=1.0))
    assert gw.wait_for(lambda: len(gw.orders) == 3, timeout=10)
    gw.refuse_connections(5.0)
    gw.drop_connections()
    with pytest.raises(OrderStateUnknownError) as info:
        call.join()
    assert info.value.order_ref  # the caller can look the order up later by its key
    gw.hold_order_acks(False)


def test_cancel_during_a_drop_reports_the_truth(make_client: Callable[..., IBClient], gw: FakeGateway) -> None:
    client = make_client()
    result = bracket(client)
    gw.hold_order_acks(True)
    call = InThread(lambda: client.cancel_order(result.parent.order_id))
    # The gateway has processed the cancel; its confirmation is held back and the line cut.
    assert gw.wait_for(lambda: any(o.order_id == result.parent.order_id and o.status.endswith("Cancelled")
                                   for o in gw.orders), timeout=10)
    gw.drop_connections()
    gw.hold_order_acks(False)
    cancelled = call.join()
    assert cancelled.status in ("Cancelled", "ApiCancelled")
    assert not any(o.order_id == result.parent.order_id and o.is_open for o in gw.orders)


def test_cancel_of_a_filled_order_says_so(make_client: Callable[..., IBClient], gw: FakeGateway) -> None:
    client = make_client()
    result = bracket(client)
    gw.fill_order(result.parent.order_id, client_id=7)
    assert client._orders.wait_until(lambda: client.order_status(result.parent.order_id).status == "Filled", 10)
    with pytest.raises(OrderCancelError) as info:
        client.cancel_order(result.parent.order_id)
    assert info.value.state == "Filled"


def test_order_ids_never_go_backwards_across_a_restart(make_client: Callable[..., IBClient], gw: FakeGateway) -> None:
    client = make_client()
    rec = Recorder(client)
    first = bracket(client)
    gw.restart(0.2)
    assert rec.wait(ConnectionState.CONNECTED)
    second = bracket(client)
    assert min(second.order_ids) > max(first.order_ids)
    assert gw.errors_sent.get(103, 0) == 0
    assert_book_matches(gw, second)


def test_orders_wait_out_an_upstream_outage(make_client: Callable[..., IBClient], gw: FakeGateway) -> None:
    client = make_client()
    gw.upstream_outage(1.0, data_lost=False)
    assert client._manager.wait_for_upstream(10, ok=False)  # 1100 arrived; the socket stays up
    assert client.state is ConnectionState.CONNECTED
    call = InThread(lambda: bracket(client))  # held until 1102, then placed
    while gw.upstream_down:
        assert gw.orders == [], "an order reached the gateway during the outage"
        time.sleep(0.01)  # sampling the book while the outage lasts
    result = call.join()
    assert gw.errors_sent.get(1102, 0) >= 1
    assert_book_matches(gw, result)


def test_orders_fail_at_once_during_an_outage_when_configured(
    make_client: Callable[..., IBClient], gw: FakeGateway
) -> None:
    client = make_client(orders={"hold_during_upstream_outage": False})
    gw.upstream_outage(30.0, data_lost=True)
    assert client._manager.wait_for_upstream(10, ok=False)
    with pytest.raises(IBConnectionError, match="1100"):
        bracket(client)
    assert live_refs(gw) == {}
