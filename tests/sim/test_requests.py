"""Every market and account request round-trips with its callbacks and end marker."""

from __future__ import annotations

from ibapi.contract import Contract
from ibapi.execution import ExecutionFilter

from ib_resilience.sim import FakeGateway

from .rawclient import RawClient
from .test_orders import order, stock, wait_status


def option(symbol: str, expiry: str = "", strike: float = 0.0, right: str = "") -> Contract:
    c = Contract()
    c.symbol, c.secType, c.exchange, c.currency = symbol, "OPT", "SMART", "USD"
    c.lastTradeDateOrContractMonth, c.strike, c.right, c.multiplier = expiry, strike, right, "100"
    return c


def test_stock_contract_details(gw: FakeGateway, client: RawClient) -> None:
    client.reqContractDetails(3, stock("SPY"))
    client.wait_event("contractDetailsEnd", lambda a: a[0] == 3)
    [(req_id, details)] = client.named("contractDetails")
    c = details.contract
    assert req_id == 3 and c.symbol == "SPY" and c.secType == "STK" and c.conId > 0
    assert c.primaryExchange == "ARCA" and details.minTick == 0.01 and details.longName
    assert "LMT" in details.orderTypes.split(",")


def test_default_catalogue_has_a_dozen_liquid_names(gw: FakeGateway) -> None:
    assert {"AAPL", "MSFT", "SPY", "QQQ"} <= set(gw.market.symbols)
    assert len(gw.market.symbols) >= 12


def test_option_chain_with_expiries_and_strikes_around_the_price(gw: FakeGateway, client: RawClient) -> None:
    client.reqContractDetails(4, option("AAPL", right="C"))
    client.wait_event("contractDetailsEnd", lambda a: a[0] == 4)
    chain = [d.contract for _, d in client.named("contractDetails")]
    expiries = sorted({c.lastTradeDateOrContractMonth for c in chain})
    strikes = sorted({c.strike for c in chain})
    assert len(expiries) >= 2 and all(c.right == "C" and c.multiplier == "100" for c in chain)
    price = gw.market.price("AAPL")
    assert strikes[0] < price < strikes[-1]
    # one exact contract by expiry/strike/right, then by conId
    target = chain[0]
    client.reqContractDetails(5, option("AAPL", target.lastTradeDateOrContractMonth, target.strike, "C"))
    client.wait_event("contractDetailsEnd", lambda a: a[0] == 5)
    [exact] = [d for r, d in client.named("contractDetails") if r == 5]
    assert exact.contract.conId == target.conId and exact.underConId > 0
    by_id = Contract()
    by_id.conId = target.conId
    client.reqContractDetails(6, by_id)
    client.wait_event("contractDetailsEnd", lambda a: a[0] == 6)
    assert [d.contract.localSymbol for r, d in client.named("contractDetails") if r == 6] == [target.localSymbol]


def test_unknown_symbol_gets_200_and_no_end(gw: FakeGateway, client: RawClient) -> None:
    client.reqContractDetails(7, stock("ZZZZ"))
    assert client.wait_error(200)[0] == 7
    client.reqCurrentTime()
    client.wait_event("currentTime")
    assert not client.has("contractDetailsEnd")


def test_market_data_snapshot(gw: FakeGateway, client: RawClient) -> None:
    gw.set_price("AAPL", 201.0)
    client.reqMktData(9, stock(), "", True, False, [])
    client.wait_event("tickSnapshotEnd", lambda a: a[0] == 9)
    ticks = {t: p for r, t, p, _ in client.named("tickPrice") if r == 9}
    assert ticks[4] == 201.0 and ticks[1] < 201.0 < ticks[2]  # last inside bid/ask
    assert client.has("tickSize", lambda a: a[0] == 9 and a[1] == 8)  # volume
    assert client.named("tickReqParams")[0][0] == 9
    assert client.named("marketDataType")[0] == (9, 1)
    assert gw.market.subscription_count() == 0  # a snapshot ends itself


def test_streaming_market_data_and_cancel(gw: FakeGateway, client: RawClient) -> None:
    client.reqMktData(11, stock("MSFT"), "", False, False, [])
    client.wait_event("tickPrice", lambda a: a[0] == 11)
    gw.set_price("MSFT", 399.0)
    client.wait_event("tickPrice", lambda a: a[0] == 11 and a[1] == 4 and a[2] == 399.0)
    assert gw.market.subscription_count() == 1
    client.cancelMktData(11)
    gw.wait_for(lambda: gw.market.subscription_count() == 0)
    assert not client.has("tickSnapshotEnd")


def test_random_walk_streams_by_itself(gw: FakeGateway, client: RawClient) -> None:
    gw.set_tick_interval(0.02)
    client.reqMktData(12, stock("QQQ"), "", False, False, [])
    client.wait_for(lambda: len({a[2] for a in client.named("tickPrice") if a[0] == 12 and a[1] == 4}) >= 3)


def test_live_data_not_subscribed_is_354_and_delayed_is_served(gw: FakeGateway, client: RawClient) -> None:
    gw.set_live_data_subscribed("AAPL", False)
    client.reqMktData(15, stock(), "", True, False, [])
    assert client.wait_error(354)[0] == 15
    client.reqMarketDataType(3)
    client.reqMktData(16, stock(), "", True, False, [])
    client.wait_event("tickSnapshotEnd", lambda a: a[0] == 16)
    assert {t for r, t, _, _ in client.named("tickPrice") if r == 16} >= {66, 67, 68}


def test_a_silenced_stream_stops_without_a_word(gw: FakeGateway, client: RawClient) -> None:
    client.reqMktData(17, stock("MSFT"), "", False, False, [])
    client.wait_event("tickPrice", lambda a: a[0] == 17)
    assert gw.silence_market_data("MSFT") == 1
    assert gw.market.subscription_count() == 0
    assert not client.has("error", lambda a: a[0] == 17)


def test_market_data_type_delayed(gw: FakeGateway, client: RawClient) -> None:
    client.reqMarketDataType(3)
    client.reqMktData(13, stock(), "", True, False, [])
    client.wait_event("tickSnapshotEnd", lambda a: a[0] == 13)
    assert client.named("marketDataType")[0] == (13, 3)
    assert {t for r, t, _, _ in client.named("tickPrice") if r == 13} >= {66, 67, 68}


def test_market_data_for_an_option(gw: FakeGateway, client: RawClient) -> None:
    inst = gw.market.resolve(0, "SPY", "OPT", right="P")[0]
    client.reqMktData(14, option("SPY", inst.expiry, inst.strike, "P"), "", True, False, [])
    client.wait_event("tickSnapshotEnd", lambda a: a[0] == 14)
    assert client.has("tickPrice", lambda a: a[0] == 14 and a[1] == 4 and a[2] > 0)


def test_positions_round_trip_and_update(gw: FakeGateway, client: RawClient) -> None:
    client.reqPositions()
    client.wait_event("positionEnd")
    assert not client.has("position")  # nothing yet, but the end marker came
    gw.set_price("AAPL", 200.0)
    client.placeOrder(1, stock(), order("BUY", 50))
    wait_status(client, 1, "Filled")
    account, contract, qty, avg = client.wait_event("position")
    assert (account, contract.symbol, float(qty), avg) == ("DU1234567", "AAPL", 50, 200.0)
    client.cancelPositions()


def test_open_orders_all_open_orders_and_completed_orders(gw: FakeGateway, client: RawClient, clients) -> None:
    gw.set_price("AAPL", 200.0)
    client.placeOrder(1, stock(), order("BUY", 1, "LMT", lmt=100.0, ref="resting"))
    client.placeOrder(2, stock(), order("BUY", 1, "MKT", ref="done"))
    wait_status(client, 2, "Filled")
    other = clients()
    assert other.start(gw.port, client_id=2)
    other.reqOpenOrders()
    other.wait_event("openOrderEnd")
    assert not other.has("openOrder")  # only this client id's orders
    other.reqAllOpenOrders()
    other.wait_for(lambda: len(other.named("openOrderEnd")) == 2)
    assert [a[2].orderRef for a in other.named("openOrder")] == ["resting"]
    other.reqCompletedOrders(True)
    other.wait_event("completedOrdersEnd")
    [(contract, o, state)] = other.named("completedOrder")
    assert contract.symbol == "AAPL" and o.orderRef == "done" and state.status == "Filled"
    assert state.completedStatus == "Filled" and float(o.filledQuantity) == 1


def test_auto_open_orders_for_client_zero(gw: FakeGateway, clients) -> None:
    zero = clients()
    assert zero.start(gw.port, client_id=0)
    zero.reqAutoOpenOrders(True)
    zero.reqCurrentTime()
    zero.wait_event("currentTime")
    assert set(zero.error_codes()) <= {2104, 2106, 2158}


def test_executions_with_commission_reports_and_filters(gw: FakeGateway, client: RawClient) -> None:
    client.reqExecutions(20, ExecutionFilter())
    client.wait_event("execDetailsEnd", lambda a: a[0] == 20)
    assert not client.has("execDetails")
    gw.set_price("AAPL", 200.0)
    gw.set_price("MSFT", 400.0)
    client.placeOrder(1, stock(), order("BUY", 10))
    client.placeOrder(2, stock("MSFT"), order("SELL", 5))
    wait_status(client, 2, "Filled")
    client.reqExecutions(21, ExecutionFilter())
    client.wait_event("execDetailsEnd", lambda a: a[0] == 21)
    mine = [a for a in client.named("execDetails") if a[0] == 21]
    assert [(c.symbol, e.side) for _, c, e in mine] == [("AAPL", "BOT"), ("MSFT", "SLD")]
    reported = {r.execId for (r,) in client.named("commissionReport")}
    assert {e.execId for _, _, e in mine} <= reported
    only_msft = ExecutionFilter()
    only_msft.symbol = "MSFT"
    client.reqExecutions(22, only_msft)
    client.wait_event("execDetailsEnd", lambda a: a[0] == 22)
    assert [c.symbol for r, c, _ in client.named("execDetails") if r == 22] == ["MSFT"]


def test_account_updates(gw: FakeGateway, client: RawClient) -> None:
    gw.set_price("AAPL", 200.0)
    client.placeOrder(1, stock(), order("BUY", 10))
    wait_status(client, 1, "Filled")
    client.reqAccountUpdates(True, "DU1234567")
    client.wait_event("accountDownloadEnd")
    values = {k: v for k, v, cur, acct in client.named("updateAccountValue")}
    assert float(values["NetLiquidation"]) > 0 and "TotalCashValue" in values
    [portfolio] = client.named("updatePortfolio")
    assert portfolio[0].symbol == "AAPL" and float(portfolio[1]) == 10
    assert client.has("updateAccountTime")
    client.reqAccountUpdates(False, "DU1234567")


def test_account_summary(gw: FakeGateway, client: RawClient) -> None:
    client.reqAccountSummary(30, "All", "NetLiquidation,BuyingPower,AccountType")
    client.wait_event("accountSummaryEnd", lambda a: a[0] == 30)
    tags = {tag: (value, cur) for r, acct, tag, value, cur in client.named("accountSummary")}
    assert set(tags) == {"NetLiquidation", "BuyingPower", "AccountType"}
    assert tags["NetLiquidation"] == ("1000000.00", "USD")
    client.cancelAccountSummary(30)


def test_account_updates_multi(gw: FakeGateway, client: RawClient) -> None:
    client.reqAccountUpdatesMulti(40, "DU1234567", "", True)
    client.wait_event("accountUpdateMultiEnd", lambda a: a[0] == 40)
    keys = {a[3] for a in client.named("accountUpdateMulti") if a[0] == 40}
    assert "NetLiquidation" in keys
    client.cancelAccountUpdatesMulti(40)


def test_every_end_marker_on_a_fresh_gateway(gw: FakeGateway, clients) -> None:
    """What independent clients send right after connecting: each gets its end marker."""
    zero = clients()
    assert zero.start(gw.port, client_id=0)
    zero.reqAutoOpenOrders(True)
    zero.reqPositions()
    zero.reqOpenOrders()
    zero.reqCompletedOrders(False)
    zero.reqAccountUpdates(True, "")
    zero.reqAccountUpdatesMulti(2, "DU1234567", "", True)
    zero.reqExecutions(3, ExecutionFilter())
    zero.reqAccountSummary(4, "All", "NetLiquidation")
    for name in ("positionEnd", "openOrderEnd", "completedOrdersEnd", "accountDownloadEnd",
                 "accountUpdateMultiEnd", "execDetailsEnd", "accountSummaryEnd"):
        zero.wait_event(name)
