"""The order engine through the real ibapi client: fills, brackets, OCA, combos, ids, cancels."""

from __future__ import annotations

import inspect
from typing import Optional

import pytest
from ibapi.client import EClient
from ibapi.contract import ComboLeg, Contract
from ibapi.order import Order

from ib_resilience.sim import FakeGateway

from .rawclient import RawClient
from .test_core import ready_socket, recv_frames

ETRADE_ON_THE_WIRE = "order.eTradeOnly" in inspect.getsource(EClient.placeOrder)

# PLACE_ORDER exactly as 9.81 sends it with Order() defaults (reference wire trace): eTradeOnly=1
PLACE_ORDER_981 = (
    "3|50|0|AAPL|STK||0.0|||SMART||USD|||||BUY|100|LMT|150.0||||||0||1|0|0|0|0|0|0|0||0||||||||0||-1|0|||"
    "0|||1|1||0||||||0|||||0|||||||||||0|||0|0|||0||0|0|0|0||~|~|~|~|~|0||||~|||||0|0|0|"
).replace("~", "1.7976931348623157e+308").split("|")


def stock(symbol: str = "AAPL") -> Contract:
    c = Contract()
    c.symbol, c.secType, c.exchange, c.currency = symbol, "STK", "SMART", "USD"
    return c


def order(action: str = "BUY", qty: int = 100, kind: str = "MKT", lmt: Optional[float] = None,
          aux: Optional[float] = None, ref: str = "", transmit: bool = True, parent: int = 0,
          oca: str = "", tif: str = "DAY") -> Order:
    o = Order()
    o.action, o.totalQuantity, o.orderType, o.tif = action, qty, kind, tif
    if lmt is not None:
        o.lmtPrice = lmt
    if aux is not None:
        o.auxPrice = aux
    o.orderRef, o.transmit, o.parentId, o.ocaGroup = ref, transmit, parent, oca
    o.eTradeOnly = False
    o.firmQuoteOnly = False
    return o


def statuses(client: RawClient, order_id: int) -> list:
    return [a[1] for a in client.named("orderStatus") if a[0] == order_id]


def wait_status(client: RawClient, order_id: int, status: str) -> tuple:
    return client.wait_event("orderStatus", lambda a: a[0] == order_id and a[1] == status)


def test_market_order_fills_with_the_gateway_message_sequence(gw: FakeGateway, client: RawClient) -> None:
    gw.set_price("AAPL", 200.0)
    client.placeOrder(1, stock(), order(ref="ref-1"))
    wait_status(client, 1, "Filled")
    client.wait_event("commissionReport")
    seq = [n for n in client.names() if n in ("openOrder", "orderStatus", "execDetails", "commissionReport")]
    assert seq == ["openOrder", "orderStatus", "execDetails", "openOrder", "orderStatus", "commissionReport"]
    _, status, filled, remaining, avg, perm, parent, last, client_id, _, _ = wait_status(client, 1, "Filled")
    assert (float(filled), float(remaining), avg, last, client_id) == (100, 0, 200.0, 200.0, 1)
    req_id, contract, execution = client.named("execDetails")[0]
    assert req_id == -1 and contract.symbol == "AAPL" and execution.side == "BOT"
    assert float(execution.shares) == 100 and execution.price == 200.0 and execution.orderRef == "ref-1"
    assert execution.permId == perm and execution.clientId == 1
    (report,) = client.named("commissionReport")[0]
    commission = getattr(report, "commission", getattr(report, "commissionAndFees", None))
    assert report.execId == execution.execId and commission == 1.0
    [rec] = gw.orders
    assert (rec.client_id, rec.order_id, rec.order_ref, rec.status, rec.filled) == (1, 1, "ref-1", "Filled", 100)
    assert rec.perm_id == perm and len(rec.fills) == 1
    assert gw.positions[("DU1234567", "AAPL")] == 100
    [ex] = gw.executions
    assert (ex.client_id, ex.order_id, ex.symbol, ex.side, ex.shares, ex.price) == (1, 1, "AAPL", "BOT", 100, 200.0)


def test_open_order_fields_round_trip(gw: FakeGateway, client: RawClient) -> None:
    gw.set_price("MSFT", 400.0)
    client.placeOrder(1, stock("MSFT"), order("SELL", 7, "LMT", lmt=450.0, ref="keep", tif="GTC"))
    wait_status(client, 1, "Submitted")
    order_id, contract, o, state = client.named("openOrder")[0]
    assert order_id == 1 and contract.symbol == "MSFT" and contract.secType == "STK"
    assert (o.action, float(o.totalQuantity), o.orderType, o.lmtPrice, o.tif, o.orderRef) == (
        "SELL", 7, "LMT", 450.0, "GTC", "keep")
    assert o.clientId == 1 and o.permId > 0 and state.status == "Submitted"
    assert o.account == "DU1234567"


def test_limit_order_rests_until_the_price_crosses(gw: FakeGateway, client: RawClient) -> None:
    gw.set_price("AAPL", 200.0)
    client.placeOrder(1, stock(), order("BUY", 10, "LMT", lmt=190.0))
    wait_status(client, 1, "Submitted")
    assert gw.open_orders()[0].status == "Submitted"
    gw.set_price("AAPL", 189.5)
    wait_status(client, 1, "Filled")
    assert gw.orders[0].avg_fill_price == 189.5


def test_stop_and_stop_limit(gw: FakeGateway, client: RawClient) -> None:
    gw.set_price("SPY", 500.0)
    client.placeOrder(1, stock("SPY"), order("SELL", 5, "STP", aux=495.0))
    client.placeOrder(2, stock("SPY"), order("BUY", 5, "STP LMT", lmt=506.0, aux=505.0))
    wait_status(client, 2, "Submitted")
    gw.set_price("SPY", 494.0)
    wait_status(client, 1, "Filled")
    assert "Filled" not in statuses(client, 2)
    gw.set_price("SPY", 505.5)
    wait_status(client, 2, "Filled")


def test_bracket_children_held_until_the_last_transmit(gw: FakeGateway, client: RawClient) -> None:
    gw.set_price("AAPL", 200.0)
    client.placeOrder(10, stock(), order("BUY", 100, "LMT", lmt=199.0, transmit=False))
    client.placeOrder(11, stock(), order("SELL", 100, "LMT", lmt=210.0, parent=10, transmit=False))
    client.placeOrder(12, stock(), order("SELL", 100, "STP", aux=190.0, parent=10, transmit=True))
    wait_status(client, 12, "PreSubmitted")
    assert statuses(client, 10)[0] == "Submitted"
    assert client.named("openOrder")[0][0] == 10  # nothing went out before the last transmit
    gw.set_price("AAPL", 198.0)  # parent fills, children go live
    wait_status(client, 10, "Filled")
    wait_status(client, 11, "Submitted")
    wait_status(client, 12, "Submitted")
    gw.set_price("AAPL", 211.0)  # take-profit fills, stop-loss is cancelled
    wait_status(client, 11, "Filled")
    wait_status(client, 12, "Cancelled")
    assert gw.positions[("DU1234567", "AAPL")] == 0


def test_untransmitted_orders_send_nothing(gw: FakeGateway, client: RawClient) -> None:
    client.placeOrder(5, stock(), order("BUY", 1, "LMT", lmt=1.0, transmit=False))
    gw.wait_for(lambda: len(gw.orders) == 1)
    client.reqIds(1)
    client.wait_for(lambda: len(client.named("nextValidId")) == 2)
    assert not client.has("openOrder") and gw.orders[0].status == "Inactive"


def test_oca_group_one_fills_others_cancelled(gw: FakeGateway, client: RawClient) -> None:
    gw.set_price("QQQ", 440.0)
    client.placeOrder(1, stock("QQQ"), order("BUY", 1, "LMT", lmt=430.0, oca="g1"))
    client.placeOrder(2, stock("QQQ"), order("BUY", 1, "LMT", lmt=420.0, oca="g1"))
    client.placeOrder(3, stock("QQQ"), order("BUY", 1, "LMT", lmt=425.0))
    wait_status(client, 3, "Submitted")
    gw.set_price("QQQ", 429.0)
    wait_status(client, 1, "Filled")
    wait_status(client, 2, "Cancelled")
    assert (2, 202, "Order Canceled - reason:") in client.errors()
    assert "Cancelled" not in statuses(client, 3)


def test_bag_combo_order_fills_every_leg(gw: FakeGateway, client: RawClient) -> None:
    chain = gw.market.resolve(0, "SPY", "OPT", right="C")
    expiry = chain[0].expiry
    calls = [i for i in chain if i.expiry == expiry]
    long_leg, short_leg = calls[len(calls) // 2], calls[len(calls) // 2 + 1]
    bag = Contract()
    bag.symbol, bag.secType, bag.exchange, bag.currency = "SPY", "BAG", "SMART", "USD"
    legs = []
    for inst, action in ((long_leg, "BUY"), (short_leg, "SELL")):
        leg = ComboLeg()
        leg.conId, leg.ratio, leg.action, leg.exchange = inst.con_id, 1, action, "SMART"
        legs.append(leg)
    bag.comboLegs = legs
    client.placeOrder(1, bag, order("BUY", 2, "MKT"))
    wait_status(client, 1, "Filled")
    client.wait_for(lambda: len(client.named("commissionReport")) == 2)
    sides = sorted((ex.side, c.localSymbol) for _, c, ex in client.named("execDetails"))
    assert sides == sorted([("BOT", long_leg.local_symbol), ("SLD", short_leg.local_symbol)])
    positions = gw.positions
    assert positions[("DU1234567", long_leg.local_symbol)] == 2
    assert positions[("DU1234567", short_leg.local_symbol)] == -2
    _, contract, _, _ = client.named("openOrder")[-1]
    assert contract.secType == "BAG" and len(contract.comboLegs) == 2


def test_duplicate_order_id_gets_103_and_is_recorded(gw: FakeGateway, client: RawClient) -> None:
    client.placeOrder(5, stock(), order("BUY", 1, "LMT", lmt=1.0))
    wait_status(client, 5, "Submitted")
    client.placeOrder(4, stock(), order("BUY", 1, "LMT", lmt=1.0, ref="dup"))
    assert client.wait_error(103)[0] == 4
    assert [(o.order_id, o.status, o.error) for o in gw.orders] == [(5, "Submitted", None), (4, "Rejected", 103)]


@pytest.mark.skipif(not ETRADE_ON_THE_WIRE, reason="10.x always sends eTradeOnly/firmQuoteOnly as 0")
def test_etrade_only_and_firm_quote_only_are_rejected(gw: FakeGateway, client: RawClient) -> None:
    o = order("BUY", 1, "MKT")
    o.eTradeOnly = True
    client.placeOrder(1, stock(), o)
    assert client.wait_error(10268)[0] == 1
    o = order("BUY", 1, "MKT")
    o.firmQuoteOnly = True
    client.placeOrder(2, stock(), o)
    assert client.wait_error(10269)[0] == 2
    assert not client.has("openOrder")


def test_unknown_contract_gets_200(gw: FakeGateway, client: RawClient) -> None:
    client.placeOrder(1, stock("NOPE"), order())
    assert client.wait_error(200)[0] == 1


def test_cancel_202_unknown_10147_and_only_the_owner(gw: FakeGateway, client: RawClient, clients) -> None:
    client.placeOrder(1, stock(), order("BUY", 1, "LMT", lmt=1.0))
    wait_status(client, 1, "Submitted")
    other = clients()
    assert other.start(gw.port, client_id=2)
    other.cancel_order(1)
    assert other.wait_error(10147)[0] == 1  # not the owner: not found
    assert gw.open_orders()[0].order_id == 1
    client.cancel_order(1)
    assert client.wait_error(202)[0] == 1
    wait_status(client, 1, "Cancelled")
    client.cancel_order(99)
    assert client.wait_error(10147)[0] == 99
    assert gw.orders[0].status == "Cancelled"


def test_modify_an_open_order_in_place(gw: FakeGateway, client: RawClient) -> None:
    gw.set_price("AAPL", 200.0)
    client.placeOrder(1, stock(), order("BUY", 1, "LMT", lmt=150.0))
    wait_status(client, 1, "Submitted")
    client.placeOrder(1, stock(), order("BUY", 1, "LMT", lmt=201.0))  # now marketable
    wait_status(client, 1, "Filled")
    [rec] = gw.orders
    assert rec.modifications == 1 and rec.lmt_price == 201.0


def test_ids_persist_per_client_id_across_reconnects(gw: FakeGateway, clients) -> None:
    first = clients()
    assert first.start(gw.port, client_id=7)
    first.placeOrder(41, stock(), order("BUY", 1, "LMT", lmt=1.0))
    wait_status(first, 41, "Submitted")
    first.stop()
    gw.wait_for(lambda: not gw.connections)
    again = clients()
    assert again.start(gw.port, client_id=7)
    assert again.named("nextValidId")[0] == (42,)
    # the open order of this client id is re-sent after the startup burst
    again.wait_event("openOrder", lambda a: a[0] == 41)
    other = clients()
    assert other.start(gw.port, client_id=8)
    assert other.named("nextValidId")[0] == (1,)


def test_ids_and_orders_survive_a_restart(gw: FakeGateway, client: RawClient, clients) -> None:
    client.placeOrder(30, stock(), order("BUY", 1, "LMT", lmt=1.0, ref="before-restart"))
    wait_status(client, 30, "Submitted")
    gw.restart(0.2)
    client.wait_event("connectionClosed")
    gw.wait_for(lambda: gw.listening, timeout=10.0)
    again = clients()
    assert again.start(gw.port, client_id=1)
    assert again.named("nextValidId")[0] == (31,)
    again.placeOrder(30, stock(), order("BUY", 1, "LMT", lmt=1.0))  # 30 is open: a modification
    again.placeOrder(29, stock(), order("BUY", 1, "LMT", lmt=1.0))
    assert again.wait_error(103)[0] == 29
    assert [o.order_ref for o in gw.open_orders()] == ["before-restart"]


def test_hold_order_acks_books_without_acknowledging(gw: FakeGateway, client: RawClient) -> None:
    gw.set_price("AAPL", 200.0)
    gw.hold_order_acks(True)
    client.placeOrder(1, stock(), order(ref="held"))
    gw.wait_for(lambda: gw.orders and gw.orders[0].status == "Filled")
    client.reqCurrentTime()
    client.wait_event("currentTime")  # later replies arrive, the acknowledgement does not
    assert not client.has("openOrder") and not client.has("orderStatus")
    gw.hold_order_acks(False)
    wait_status(client, 1, "Filled")


def test_held_acks_are_lost_with_the_connection(gw: FakeGateway, client: RawClient, clients) -> None:
    gw.hold_order_acks(True)
    client.placeOrder(1, stock(), order("BUY", 1, "LMT", lmt=1.0, ref="lost-ack"))
    gw.wait_for(lambda: len(gw.orders) == 1)
    gw.drop_connections()
    client.wait_event("connectionClosed")
    gw.hold_order_acks(False)
    again = clients()
    assert again.start(gw.port, client_id=1)
    again.reqOpenOrders()
    again.wait_event("openOrderEnd")
    # once after the startup burst (a gateway re-sends open orders) and once for reqOpenOrders
    assert [a[2].orderRef for a in again.named("openOrder")] == ["lost-ack", "lost-ack"]
    assert not again.has("orderStatus", lambda a: a[1] == "Filled")


def test_fill_order_forces_a_fill(gw: FakeGateway, client: RawClient) -> None:
    client.placeOrder(1, stock(), order("BUY", 3, "LMT", lmt=1.0))
    wait_status(client, 1, "Submitted")
    gw.fill_order(1, price=1.0)
    wait_status(client, 1, "Filled")
    assert gw.orders[0].fills[0].price == 1.0


def test_recorded_981_order_with_default_etrade_only_gets_10268(gw: FakeGateway) -> None:
    """Any line: the exact 9.81 wire form of an Order() with its defaults is rejected."""
    from ib_resilience.sim.wire import encode_frame, split_fields

    assert len(PLACE_ORDER_981) == 110
    sock = ready_socket(gw.port, 3)
    try:
        sock.sendall(encode_frame(PLACE_ORDER_981))
        [frame] = recv_frames(sock, 1)
        assert split_fields(frame)[:4] == ["4", "2", "50", "10268"]
    finally:
        sock.close()
    assert gw.orders[0].error == 10268


def test_no_fills_during_an_upstream_outage(gw: FakeGateway, client: RawClient) -> None:
    gw.set_price("AAPL", 200.0)
    client.placeOrder(1, stock(), order("BUY", 1, "LMT", lmt=195.0))
    wait_status(client, 1, "Submitted")
    gw.upstream_outage(30.0, data_lost=False)
    client.wait_error(1100)
    gw.set_price("AAPL", 190.0)
    assert gw.orders[0].status == "Submitted"  # the exchange is out of reach


def test_fills_catch_up_when_the_outage_ends(gw: FakeGateway, client: RawClient) -> None:
    gw.set_price("AAPL", 200.0)
    client.placeOrder(1, stock(), order("BUY", 1, "LMT", lmt=195.0))
    wait_status(client, 1, "Submitted")
    gw.upstream_outage(0.3, data_lost=False)
    client.wait_error(1100)
    gw.set_price("AAPL", 190.0)
    client.wait_error(1102)
    wait_status(client, 1, "Filled")
