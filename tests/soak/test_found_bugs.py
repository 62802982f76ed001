"""Regression tests for library bugs the soak found, each as the smallest scenario that showed it.

Real ibapi client, real loopback sockets, the simulator; no mocks.
"""

from __future__ import annotations

import random

import pytest

from ib_resilience import IBClient, OrderStateUnknownError
from ib_resilience.sim import FakeGateway

from resilient import InThread, wait_until


@pytest.mark.timeout(120)
def test_a_cancel_held_by_the_pacer_across_a_drop_is_reconciled() -> None:
    # Found on 10.x: its EClient.cancelOrder turns the failed send into a client-side error 515,
    # which the cancel took for the gateway's answer (IBRequestError) instead of reconciling.
    gw = FakeGateway(seed=11, handshake_timeout=5.0, frame_timeout=2.0).start()
    # Two messages a second: the cancel waits in the pacer long enough to cut the line under it.
    client = IBClient(config={
        "port": gw.port, "client_id": 7, "connect_timeout": 20.0, "max_reconnect_attempts": 0,
        "reconnect_delay_base": 0.05, "reconnect_delay_max": 0.2, "heartbeat_interval": 30.0,
        "heartbeat_timeout": 5.0, "request_timeout": 60.0, "pacing": {"max_messages_per_second": 2.0, "burst": 1},
    }, rng=random.Random(9))
    try:
        assert client.connect(timeout=30)
        bracket = client.place_bracket_order("AAPL", "BUY", 10, 100.0, 110.0, 95.0)
        parent = bracket.parent.order_id
        pacer = client._manager.pacer
        reserved = pacer.stats()["messages_sent"]
        call = InThread(lambda: client.cancel_order(parent, timeout=60.0))
        # Once the cancel has taken its pacer slot it is past every connection check.
        wait_until(lambda: pacer.stats()["messages_sent"] > reserved, 10, interval=0.005)
        assert pacer.stats()["messages_sent"] > reserved
        gw.drop_connections()
        if any(o.order_id == parent and not o.is_open for o in gw.orders):
            pytest.skip("the cancel went out before the drop: nothing to show on this run")
        cancelled = call.join(90)  # re-raises what the cancel raised
        assert cancelled.status in ("Cancelled", "ApiCancelled")
        assert not any(o.order_id == parent and o.is_open for o in gw.orders)
    finally:
        client.disconnect()
        gw.close()


@pytest.mark.timeout(60)
def test_an_unacknowledged_order_on_a_live_connection_is_an_unknown_fate_with_its_key() -> None:
    gw = FakeGateway(seed=11, handshake_timeout=5.0, frame_timeout=2.0).start()
    # Slow heartbeats: the connection stays up, only the acknowledgements are missing.
    client = IBClient(config={"port": gw.port, "client_id": 7, "heartbeat_interval": 30.0,
                              "heartbeat_timeout": 10.0, "connect_timeout": 10.0}, rng=random.Random(9))
    try:
        assert client.connect(timeout=30)
        gw.hold_order_acks(True)
        with pytest.raises(OrderStateUnknownError) as info:
            client.place_bracket_order("AAPL", "BUY", 10, 100.0, 110.0, 95.0, timeout=1.0)
        booked = {o.order_ref for o in gw.orders}
        assert info.value.order_ref in booked, (info.value.order_ref, booked)
    finally:
        gw.hold_order_acks(False)
        client.disconnect()
        gw.close()
