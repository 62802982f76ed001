from __future__ import annotations

import datetime as dt
import math
import socket
import struct
from decimal import Decimal

import pytest
from ibapi.client import EClient
from ibapi.comm import make_field
from ibapi.connection import Connection
from ibapi.contract import Contract
from ibapi.order import Order
from ibapi.wrapper import EWrapper

from ib_resilience import orders
from ib_resilience.config import SafetySettings
from ib_resilience.orders import (
    build_bracket,
    build_limit_order,
    build_market_order,
    build_strangle,
    check_limits,
    combo_contract,
    new_order_ref,
    opposite_action,
    option_contract,
    stock_contract,
    strangle_contracts,
)


def bracket(action="BUY", quantity=100, entry=150.0, tp=160.0, sl=140.0, **kwargs):
    kwargs.setdefault("parent_id", 10)
    kwargs.setdefault("order_ref", "ibr-abc")
    return build_bracket(action, quantity, entry, tp, sl, **kwargs)


# --- contracts ------------------------------------------------------------------------------


def test_stock_contract():
    c = stock_contract("AAPL")
    assert isinstance(c, Contract)
    assert (c.symbol, c.secType, c.exchange, c.currency) == ("AAPL", "STK", "SMART", "USD")
    assert stock_contract("BRK B", "NYSE", "USD").symbol == "BRK B"


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"symbol": ""}, "symbol"),
        ({"symbol": " AAPL"}, "symbol"),
        ({"symbol": 123}, "symbol"),
        ({"symbol": "ÄPFEL"}, "ASCII"),
        ({"symbol": "AAPL", "exchange": ""}, "exchange"),
        ({"symbol": "AAPL", "exchange": "SM ART"}, "exchange"),
        ({"symbol": "AAPL", "currency": "usd"}, "currency"),
        ({"symbol": "AAPL", "currency": "USDT"}, "currency"),
    ],
)
def test_stock_contract_validation(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        stock_contract(**kwargs)


def test_option_contract():
    c = option_contract("SPY", "20250117", 450, "call")
    assert (c.secType, c.lastTradeDateOrContractMonth, c.strike, c.right, c.multiplier) == (
        "OPT",
        "20250117",
        450.0,
        "C",
        "100",
    )
    assert isinstance(c.strike, float)
    assert option_contract("SPY", dt.date(2025, 1, 17), 450.5, "P").lastTradeDateOrContractMonth == "20250117"
    assert option_contract("SPY", "202501", 450, "PUT").right == "P"


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("SPY", "2025-01-17", 450, "C"), "expiry"),
        (("SPY", "20250230", 450, "C"), "real date"),
        (("SPY", 20250117, 450, "C"), "expiry"),
        (("SPY", "20250117", 0, "C"), "strike must be positive"),
        (("SPY", "20250117", -5, "C"), "strike must be positive"),
        (("SPY", "20250117", math.nan, "C"), "strike must be finite"),
        (("SPY", "20250117", "450", "C"), "strike must be a number"),
        (("SPY", "20250117", True, "C"), "strike must be a number"),
        (("SPY", "20250117", 450, "X"), "right"),
        (("SPY", "20250117", 450, "C", "SMART", "USD", 100), "multiplier"),
        (("", "20250117", 450, "C"), "symbol"),
    ],
)
def test_option_contract_validation(args, fragment):
    with pytest.raises(ValueError, match=fragment):
        option_contract(*args)


def test_strangle_contracts():
    call, put = strangle_contracts("SPY", "20250117", 460, 440)
    assert (call.right, call.strike, put.right, put.strike) == ("C", 460.0, "P", 440.0)


@pytest.mark.parametrize("call, put", [(440, 460), (450, 450)])
def test_strangle_needs_call_above_put(call, put):
    with pytest.raises(ValueError, match="call_strike > put_strike"):
        strangle_contracts("SPY", "20250117", call, put)


def test_combo_contract():
    c = combo_contract("SPY", [(111, "BUY", 1), (222, "sell", 2)])
    assert c.secType == "BAG" and c.symbol == "SPY"
    legs = [(leg.conId, leg.action, leg.ratio, leg.exchange) for leg in c.comboLegs]
    assert legs == [(111, "BUY", 1, "SMART"), (222, "SELL", 2, "SMART")]


@pytest.mark.parametrize(
    "legs, fragment",
    [
        ([], "two legs"),
        ([(111, "BUY", 1)], "two legs"),
        ([(111, "BUY", 1), (111, "BUY", 1)], "twice"),
        ([(0, "BUY", 1), (222, "BUY", 1)], "con_id"),
        ([(111, "HOLD", 1), (222, "BUY", 1)], "action"),
        ([(111, "BUY", 0), (222, "BUY", 1)], "ratio"),
        ([(111, "BUY"), (222, "BUY", 1)], r"\(con_id, action, ratio\)"),
    ],
)
def test_combo_contract_validation(legs, fragment):
    with pytest.raises(ValueError, match=fragment):
        combo_contract("SPY", legs)


# --- simple orders ------------------------------------------------------------------------------


def test_market_and_limit_orders():
    mkt = build_market_order("sell", 5, "ref-1")
    assert isinstance(mkt, Order)
    assert (mkt.action, mkt.orderType, mkt.orderRef, mkt.tif, mkt.transmit) == ("SELL", "MKT", "ref-1", "DAY", True)
    lmt = build_limit_order("BUY", 5, 12.5, "ref-2", tif="gtc")
    assert (lmt.orderType, lmt.lmtPrice, lmt.tif) == ("LMT", 12.5, "GTC")
    for order in (mkt, lmt):
        assert order.eTradeOnly is False and order.firmQuoteOnly is False


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("HOLD", 5, "r"), "action"),
        (("BUY", 0, "r"), "quantity must be positive"),
        (("BUY", -1, "r"), "quantity must be positive"),
        (("BUY", math.inf, "r"), "quantity must be finite"),
        (("BUY", math.nan, "r"), "quantity must be finite"),
        (("BUY", "5", "r"), "quantity must be a number"),
        (("BUY", True, "r"), "quantity must be a number"),
        (("BUY", 5, ""), "order_ref"),
        (("BUY", 5, "has space"), "order_ref"),
        (("BUY", 5, "r", "NEVER"), "tif"),
    ],
)
def test_market_order_validation(args, fragment):
    with pytest.raises(ValueError, match=fragment):
        build_market_order(*args)


@pytest.mark.parametrize("price", [0, -1.0, math.inf, math.nan, None, "1.5"])
def test_limit_price_validation(price):
    with pytest.raises(ValueError, match="limit_price"):
        build_limit_order("BUY", 1, price, "r")


def test_opposite_action():
    assert opposite_action("BUY") == "SELL"
    assert opposite_action("sell") == "BUY"
    with pytest.raises(ValueError):
        opposite_action("SHORT")


def test_new_order_ref_is_unique_and_safe():
    refs = {new_order_ref() for _ in range(1000)}
    assert len(refs) == 1000
    ref = new_order_ref("bot1")
    assert ref.startswith("bot1-") and len(ref) == len("bot1-") + 16
    with pytest.raises(ValueError):
        new_order_ref("bad prefix")


# --- brackets -----------------------------------------------------------------------------------


def test_buy_bracket_structure():
    parent, tp, sl = bracket()
    assert (parent.orderId, tp.orderId, sl.orderId) == (10, 11, 12)
    assert (parent.action, parent.orderType, parent.lmtPrice) == ("BUY", "LMT", 150.0)
    assert (tp.action, tp.orderType, tp.lmtPrice) == ("SELL", "LMT", 160.0)
    assert (sl.action, sl.orderType, sl.auxPrice) == ("SELL", "STP", 140.0)
    assert (parent.parentId, tp.parentId, sl.parentId) == (0, 10, 10)
    assert (parent.transmit, tp.transmit, sl.transmit) == (False, False, True)
    assert tp.ocaGroup == sl.ocaGroup == "ibr-abc-oca" and tp.ocaType == sl.ocaType == 1
    assert parent.ocaGroup == ""
    assert (parent.orderRef, tp.orderRef, sl.orderRef) == ("ibr-abc", "ibr-abc-tp", "ibr-abc-sl")
    for order in (parent, tp, sl):
        assert order.eTradeOnly is False and order.firmQuoteOnly is False
        assert order.tif == "DAY"
        assert make_field(order.totalQuantity) == "100\0"


def test_sell_bracket_and_market_entry():
    parent, tp, sl = bracket("SELL", 3, None, 90.0, 110.0, oca_group="my-oca", tif="GTC")
    assert (parent.action, parent.orderType) == ("SELL", "MKT")
    assert (tp.action, sl.action) == ("BUY", "BUY")
    assert tp.ocaGroup == sl.ocaGroup == "my-oca"
    assert {o.tif for o in (parent, tp, sl)} == {"GTC"}


@pytest.mark.parametrize(
    "action, entry, tp, sl, fragment",
    [
        ("BUY", 150.0, 160.0, 150.0, "stop_loss_price < entry_price < take_profit_price"),
        ("BUY", 150.0, 150.0, 140.0, "stop_loss_price < entry_price < take_profit_price"),
        ("BUY", 150.0, 140.0, 160.0, "stop_loss_price < entry_price < take_profit_price"),
        ("SELL", 150.0, 160.0, 140.0, "take_profit_price < entry_price < stop_loss_price"),
        ("SELL", 150.0, 140.0, 150.0, "take_profit_price < entry_price < stop_loss_price"),
        ("BUY", None, 140.0, 160.0, "stop_loss_price < take_profit_price"),
        ("SELL", None, 160.0, 140.0, "take_profit_price < stop_loss_price"),
        ("BUY", 0.0, 160.0, 140.0, "entry_price must be positive"),
        ("BUY", math.nan, 160.0, 140.0, "entry_price must be finite"),
        ("BUY", 150.0, math.inf, 140.0, "take_profit_price must be finite"),
        ("BUY", 150.0, 160.0, -1.0, "stop_loss_price must be positive"),
        ("BUY", 150.0, "160", 140.0, "take_profit_price must be a number"),
        ("HOLD", 150.0, 160.0, 140.0, "action"),
    ],
)
def test_bracket_price_validation(action, entry, tp, sl, fragment):
    with pytest.raises(ValueError, match=fragment):
        bracket(action, 100, entry, tp, sl)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"quantity": 0}, "quantity"),
        ({"quantity": -10}, "quantity"),
        ({"quantity": math.inf}, "quantity"),
        ({"parent_id": 0}, "parent_id"),
        ({"parent_id": True}, "parent_id"),
        ({"parent_id": 1.0}, "parent_id"),
        ({"order_ref": ""}, "order_ref"),
        ({"oca_group": "a b"}, "oca_group"),
        ({"tif": "SOMETIMES"}, "tif"),
    ],
)
def test_bracket_argument_validation(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        bracket(**kwargs)


# --- strangles ----------------------------------------------------------------------------------


def test_strangle_combo():
    contract, order = build_strangle("SPY", 111, 222, "SELL", 2, 3.25, order_ref="ibr-s")
    assert contract.secType == "BAG"
    assert [(leg.conId, leg.action, leg.ratio) for leg in contract.comboLegs] == [(111, "BUY", 1), (222, "BUY", 1)]
    assert (order.action, order.orderType, order.lmtPrice, order.orderRef) == ("SELL", "LMT", 3.25, "ibr-s")
    assert make_field(order.totalQuantity) == "2\0"
    assert order.eTradeOnly is False and order.firmQuoteOnly is False
    _, mkt = build_strangle("SPY", 111, 222, "BUY", 1, order_ref="ibr-s")
    assert mkt.orderType == "MKT"


@pytest.mark.parametrize(
    "args, kwargs, fragment",
    [
        (("SPY", 111, 111, "SELL", 1), {}, "must differ"),
        (("SPY", 0, 222, "SELL", 1), {}, "call_con_id"),
        (("SPY", 111, -2, "SELL", 1), {}, "put_con_id"),
        (("SPY", 111, 222, "SELL", 1.5), {}, "whole number"),
        (("SPY", 111, 222, "SELL", 0), {}, "quantity"),
        (("SPY", 111, 222, "SELL", 1, -1.0), {}, "limit_price"),
        (("SPY", 111, 222, "WRITE", 1), {}, "action"),
    ],
)
def test_strangle_validation(args, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        build_strangle(*args, order_ref="ibr-s", **kwargs)


# --- safety limits ----------------------------------------------------------------------------------


def test_check_limits():
    check_limits(100, 50.0, SafetySettings())  # unlimited
    limits = SafetySettings(max_order_quantity=100, max_order_notional=10_000)
    check_limits(100, 100.0, limits)  # exactly at both limits
    with pytest.raises(ValueError, match="max_order_quantity"):
        check_limits(101, 1.0, limits)
    with pytest.raises(ValueError, match="max_order_notional"):
        check_limits(100, 100.01, limits)
    with pytest.raises(ValueError, match="max_order_notional"):
        check_limits(2, 60.0, limits, multiplier=100)  # an option: 2 × 60 × 100
    with pytest.raises(ValueError, match="price is needed"):
        check_limits(1, None, limits)
    check_limits(1, None, SafetySettings(max_order_quantity=5))  # no notional limit: no price needed
    with pytest.raises(ValueError, match="quantity"):
        check_limits(0, 1.0, limits)


# --- encoding on the installed ibapi line --------------------------------------------------


@pytest.mark.parametrize(
    "quantity, text",
    [(100, "100"), (100.0, "100"), (Decimal("100"), "100"), (Decimal("100.00"), "100"), (0.5, "0.5"), (1.25, "1.25")],
)
def test_quantity_encoding(quantity, text):
    order = build_market_order("BUY", quantity, "r")
    assert make_field(order.totalQuantity) == text + "\0"
    if orders.DECIMAL_QUANTITIES:
        assert isinstance(order.totalQuantity, Decimal)


def _place_order_fields(order_id, contract, order):
    """The fields the real official client writes to a real loopback socket for placeOrder."""
    server = socket.create_server(("127.0.0.1", 0))
    try:
        client = EClient(EWrapper())
        client.conn = Connection("127.0.0.1", server.getsockname()[1])
        client.conn.connect()
        peer, _ = server.accept()
        try:
            peer.settimeout(10)
            client.connState = EClient.CONNECTED
            client.serverVersion_ = 157
            client.placeOrder(order_id, contract, order)
            header = _recv_exactly(peer, 4)
            payload = _recv_exactly(peer, struct.unpack(">I", header)[0])
        finally:
            client.conn.disconnect()
            peer.close()
    finally:
        server.close()
    return payload.decode("ascii").split("\0")[:-1]


def _recv_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "connection closed early"
        data += chunk
    return data


def test_wire_encoding_of_a_bracket_parent():
    parent, _, sl = bracket(quantity=100)
    fields = _place_order_fields(parent.orderId, stock_contract("AAPL"), parent)
    i = fields.index("BUY")
    assert fields[i : i + 3] == ["BUY", "100", "LMT"]  # quantity as an integer string
    sl_fields = _place_order_fields(sl.orderId, stock_contract("AAPL"), sl)
    i = sl_fields.index("SELL")
    assert sl_fields[i : i + 3] == ["SELL", "100", "STP"]


def test_wire_encoding_sends_etradeonly_and_firmquoteonly_false():
    ours = build_limit_order("BUY", 100, 150.0, "r")
    defaults = build_limit_order("BUY", 100, 150.0, "r")
    defaults.eTradeOnly = True
    defaults.firmQuoteOnly = True
    a = _place_order_fields(1, stock_contract("AAPL"), ours)
    b = _place_order_fields(1, stock_contract("AAPL"), defaults)
    assert len(a) == len(b)
    differing = [(x, y) for x, y in zip(a, b) if x != y]
    if orders.DECIMAL_QUANTITIES:
        assert differing == []  # 10.x no longer sends them
    else:
        assert differing == [("0", "1"), ("0", "1")]


def test_wire_encoding_of_a_strangle_combo():
    contract, order = build_strangle("SPY", 111, 222, "SELL", 2, 3.25, order_ref="ibr-s")
    fields = _place_order_fields(5, contract, order)
    assert "BAG" in fields
    i = fields.index("SELL")
    assert fields[i : i + 3] == ["SELL", "2", "LMT"]
    j = fields.index("111")
    assert fields[j : j + 4] == ["111", "1", "BUY", "SMART"]  # conId, ratio, action, exchange
