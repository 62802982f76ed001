"""get_current_price end to end against the simulator."""

from __future__ import annotations

import math
from typing import Callable

import pytest

from ib_resilience.client import IBClient
from ib_resilience.errors import IBRequestError
from ib_resilience.sim import FakeGateway


def test_price_of_a_known_symbol_follows_the_simulated_market(client: IBClient, gw: FakeGateway) -> None:
    gw.set_price("AAPL", 187.25)
    price = client.get_current_price("AAPL")
    assert math.isfinite(price) and price == pytest.approx(187.25, abs=0.5)


def test_unknown_symbol_raises_code_200(client: IBClient) -> None:
    with pytest.raises(IBRequestError) as info:
        client.get_current_price("NOSUCHSYM")
    assert info.value.code == 200
    # PERMANENT errors neither count towards nor open the breaker
    assert client.get_connection_status()["circuit_breakers"]["get_current_price"]["failure_count"] == 0


@pytest.mark.parametrize(
    "kwargs",
    [{"symbol": ""}, {"symbol": "  "}, {"symbol": None}, {"symbol": "AAPL", "timeout": -1}, {"symbol": "AAPL", "exchange": ""}],
)
def test_bad_arguments_raise_value_error_before_sending(client: IBClient, gw: FakeGateway, kwargs: dict) -> None:
    before = gw.messages_received(1)
    with pytest.raises(ValueError):
        client.get_current_price(**kwargs)
    assert gw.messages_received(1) == before


def test_falls_back_to_delayed_data_when_live_is_not_subscribed(client: IBClient, gw: FakeGateway) -> None:
    gw.set_live_data_subscribed("AAPL", False)
    assert client.get_current_price("AAPL") > 0
    assert gw.errors_sent.get(354, 0) == 1  # tried live once, then delayed


def test_no_fallback_when_disabled(make_client: Callable[..., IBClient], gw: FakeGateway) -> None:
    client = make_client(market_data={"delayed_fallback": False})
    gw.set_live_data_subscribed("AAPL", False)
    with pytest.raises(IBRequestError) as info:
        client.get_current_price("AAPL")
    assert info.value.code == 354


def test_delayed_fallback_is_requested_again_on_a_new_session(client: IBClient, gw: FakeGateway) -> None:
    # The market data type belongs to the connection: a reconnect is back to live data.
    gw.set_live_data_subscribed("AAPL", False)
    assert client.get_current_price("AAPL") > 0
    generation = client.get_connection_status()["generation"]
    gw.drop_connections()
    assert client._manager.wait_for_session_after(generation, 10) is not None
    assert client.get_current_price("AAPL") > 0
    assert gw.errors_sent.get(354, 0) == 2  # live tried once per session, then delayed
