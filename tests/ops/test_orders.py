"""The order operations end to end against the simulator's order engine."""

from __future__ import annotations

from typing import Any, Callable, Dict

import pytest

from ib_resilience import OrderCancelError, OrderRejectedError, ReadOnlyError
from ib_resilience.client import IBClient
from ib_resilience.sim import FakeGateway


def test_bracket_is_three_orders_in_one_oca_group_children_linked(client: IBClient, gw: FakeGateway) -> None:
    result = client.place_bracket_order("AAPL", "BUY", 10, 100.0, 110.0, 95.0)
    book = {o.order_id: o for o in gw.orders}
    parent, tp, sl = (book[i] for i in result.order_ids)
    assert (parent.order_type, tp.order_type, sl.order_type) == ("LMT", "LMT", "STP")
    assert (parent.action, tp.action, sl.action) == ("BUY", "SELL", "SELL")
    assert tp.parent_id == sl.parent_id == parent.order_id and parent.parent_id == 0
    assert tp.oca_group and tp.oca_group == sl.oca_group
    assert (tp.lmt_price, sl.aux_price) == (110.0, 95.0)
    assert all(o.order_ref.startswith(result.order_ref) for o in (parent, tp, sl))
    assert result.parent.status in ("PreSubmitted", "Submitted")


def test_market_entry_bracket_fills_and_creates_a_position(client: IBClient, gw: FakeGateway) -> None:
    gw.set_price("MSFT", 400.0)
    result = client.place_bracket_order("MSFT", "BUY", 5, None, 420.0, 380.0)
    assert client._orders.wait_until(lambda: client.order_status(result.parent.order_id).status == "Filled", 10)
    positions = {(c.symbol, c.secType): size for _, c, size, _ in client.positions()}
    assert positions[("MSFT", "STK")] == 5


def test_close_position_at_market_sends_the_opposite_side(client: IBClient, gw: FakeGateway) -> None:
    gw.set_price("SPY", 500.0)
    result = client.place_bracket_order("SPY", "BUY", 3, None, 550.0, 450.0)
    assert client._orders.wait_until(lambda: client.order_status(result.parent.order_id).status == "Filled", 10)
    closing = client.close_position_at_market("SPY")
    assert closing is not None
    book = {o.order_id: o for o in gw.orders}
    assert (book[closing.order_id].action, book[closing.order_id].quantity, book[closing.order_id].order_type) == (
        "SELL", 3, "MKT")


def test_close_position_without_a_position_sends_nothing(client: IBClient, gw: FakeGateway) -> None:
    before = len(gw.orders)
    assert client.close_position_at_market("QQQ") is None
    assert len(gw.orders) == before


def test_cancel_returns_once_cancelled(client: IBClient, gw: FakeGateway) -> None:
    result = client.place_bracket_order("AAPL", "BUY", 10, 100.0, 110.0, 95.0)
    cancelled = client.cancel_order(result.parent.order_id)
    assert cancelled.status in ("Cancelled", "ApiCancelled")
    assert not any(o.is_open for o in gw.orders if o.order_id in result.order_ids)


def test_cancel_of_an_unknown_order_says_it_does_not_exist(client: IBClient) -> None:
    with pytest.raises(OrderCancelError) as info:
        client.cancel_order(987654)
    assert info.value.state is None and "does not exist" in str(info.value)


def test_strangle_as_one_combo_order(client: IBClient, gw: FakeGateway) -> None:
    expiry, call, put = _strikes(gw, "AAPL")
    result = client.place_strangle("AAPL", expiry, call, put, 1, action="SELL", limit_price=2.5)
    assert len(result.order_ids) == 1
    booked = next(o for o in gw.orders if o.order_id == result.order_ids[0])
    assert booked.contract.sec_type == "BAG" and booked.order_ref == result.order_ref


def test_strangle_as_two_legs_when_configured(make_client: Callable[..., IBClient], gw: FakeGateway) -> None:
    client = make_client(orders={"strangle_as_combo": False})
    expiry, call, put = _strikes(gw, "AAPL")
    result = client.place_strangle("AAPL", expiry, call, put, 2, action="SELL", limit_price=1.0)
    assert len(result.order_ids) == 2
    rights = sorted(o.contract.right for o in gw.orders if o.order_id in result.order_ids)
    assert rights == ["C", "P"]


def _strikes(gw: FakeGateway, symbol: str) -> Any:
    expiry = gw.market.expiries(symbol)[0]
    price = gw.market.price(symbol)
    strikes = sorted({i.strike for i in gw.market.instruments() if i.symbol == symbol and i.sec_type == "OPT"
                      and i.expiry == expiry})
    call = min(s for s in strikes if s > price)
    put = max(s for s in strikes if s < price)
    return expiry, call, put


@pytest.mark.parametrize(
    "args,message",
    [
        (("AAPL", "BUY", 10, 100.0, 110.0, 105.0), "stop"),  # stop above entry for a BUY
        (("AAPL", "SELL", 10, 100.0, 110.0, 95.0), "SELL"),  # SELL needs take-profit < entry < stop
        (("AAPL", "BUY", 0, 100.0, 110.0, 95.0), "quantity"),
        (("AAPL", "BUY", -5, 100.0, 110.0, 95.0), "quantity"),
        (("AAPL", "BUY", 10, float("nan"), 110.0, 95.0), "entry_price"),
        (("AAPL", "BUY", 10, 100.0, float("inf"), 95.0), "take_profit_price"),
        (("AAPL", "HOLD", 10, 100.0, 110.0, 95.0), "action"),
        (("", "BUY", 10, 100.0, 110.0, 95.0), "symbol"),
    ],
)
def test_bad_bracket_arguments_raise_before_sending(
    client: IBClient, gw: FakeGateway, args: tuple, message: str
) -> None:
    before = gw.messages_received(1)
    with pytest.raises(ValueError, match=message):
        client.place_bracket_order(*args)
    assert gw.messages_received(1) == before


@pytest.mark.parametrize(
    "kwargs",
    [
        {"call_strike": 100.0, "put_strike": 110.0},  # call must be above put
        {"quantity": 0},
        {"expiry": "not-a-date"},
        {"action": "SHORT"},
        {"tif": "FOREVER"},
        {"quantity": 1.5},  # a combo order takes whole contracts
        {"limit_price": float("nan")},
    ],
)
def test_bad_strangle_arguments_raise_before_sending(client: IBClient, gw: FakeGateway, kwargs: Dict[str, Any]) -> None:
    args: Dict[str, Any] = {"symbol": "AAPL", "expiry": "20261218", "call_strike": 110.0, "put_strike": 100.0,
                            "quantity": 1}
    args.update(kwargs)
    before = gw.messages_received(1)
    with pytest.raises(ValueError):
        client.place_strangle(**args)
    assert gw.messages_received(1) == before


def test_read_only_refuses_every_order_method_without_sending(
    make_client: Callable[..., IBClient], gw: FakeGateway
) -> None:
    client = make_client(read_only=True)
    before = gw.messages_received(1)
    calls = [
        lambda: client.place_bracket_order("AAPL", "BUY", 1, 100.0, 110.0, 95.0),
        lambda: client.place_strangle("AAPL", "20261218", 110.0, 100.0, 1),
        lambda: client.cancel_order(1),
        lambda: client.close_position_at_market("AAPL"),
    ]
    for call in calls:
        with pytest.raises(ReadOnlyError):
            call()
    assert gw.messages_received(1) == before
    assert client.get_current_price("AAPL") > 0  # reading still works


@pytest.mark.parametrize(
    "safety,args",
    [
        ({"max_order_quantity": 5}, ("AAPL", "BUY", 10, 100.0, 110.0, 95.0)),
        ({"max_order_notional": 500.0}, ("AAPL", "BUY", 10, 100.0, 110.0, 95.0)),
    ],
)
def test_oversized_orders_are_refused_before_sending(
    make_client: Callable[..., IBClient], gw: FakeGateway, safety: Dict[str, float], args: tuple
) -> None:
    client = make_client(safety=safety)
    before = gw.messages_received(1)
    with pytest.raises(ValueError, match="max_order"):
        client.place_bracket_order(*args)
    assert gw.messages_received(1) == before


def test_a_rejected_order_raises_order_rejected(client: IBClient, gw: FakeGateway) -> None:
    # An order for a symbol the gateway does not know is rejected (PERMANENT): raised at once,
    # and the breaker does not count it.
    with pytest.raises(OrderRejectedError) as info:
        client.place_bracket_order("NOSUCHSYM", "BUY", 1, 100.0, 110.0, 95.0)
    assert info.value.code == 200
    assert client.get_connection_status()["circuit_breakers"]["place_bracket_order"]["failure_count"] == 0
