#!/usr/bin/env python3
"""The headline connection-resilience scenarios, against a real paper gateway or the simulator.

With ``IB_HOST`` and ``IB_PORT`` set (or ``--host``/``--port``) it runs against that gateway.
Faults cannot be injected into a real gateway, so it checks what can be checked there: connect,
status, heartbeat latency, a price, a reconnect forced by closing our own socket, and the
re-adoption of open orders across it. It is read-only (the client is configured
``read_only``) unless ``--allow-orders`` is given; then it also places one tiny bracket far
from the market (a BUY limit at half the price), checks that it survives a forced reconnect,
and cancels it.

Without them it starts an embedded simulator and runs the same checks plus the full fault set
of ``tests/test_connection_resilience.py``: drops before send, after send before the
acknowledgement, after the acknowledgement, between a bracket's parent and children, an
unknown fate, a cancel during a drop, a cancel of a filled order, ids across a restart, orders
held through an upstream outage (or refused at once when so configured), and streams restored
after a drop and after 1101.

Exit code 0 when every scenario passed (skips allowed), 1 otherwise.

    python scripts/test_connection_resilience_live.py                       # simulator
    IB_HOST=127.0.0.1 IB_PORT=4002 python scripts/test_connection_resilience_live.py
    IB_HOST=127.0.0.1 IB_PORT=4002 python scripts/test_connection_resilience_live.py --allow-orders
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import random
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from ib_resilience import (
    BracketResult,
    IBClient,
    IBConnectionError,
    IBRequestError,
    OrderCancelError,
    OrderStateUnknownError,
    RequestTimeoutError,
)
from ib_resilience.sim import FakeGateway
from ib_resilience.state import ConnectionState
from ib_resilience.subscriptions import Tick

log = logging.getLogger("resilience_live")

# Against the simulator: sub-second intervals, so every fault resolves quickly.
SIM_CONFIG: Dict[str, Any] = {
    "connect_timeout": 2.0,
    "max_reconnect_attempts": 0,
    "reconnect_delay_base": 0.05,
    "reconnect_delay_max": 0.2,
    "heartbeat_interval": 0.2,
    "heartbeat_timeout": 0.4,
    "request_timeout": 20.0,
    "stable_after": 60.0,
    "client_id_in_use_delay": 0.1,
}
# Against a real gateway: gentle on it, still quick to notice a dead link.
LIVE_CONFIG: Dict[str, Any] = {
    "connect_timeout": 15.0,
    "max_reconnect_attempts": 0,
    "reconnect_delay_base": 0.5,
    "reconnect_delay_max": 5.0,
    "heartbeat_interval": 5.0,
    "heartbeat_timeout": 5.0,
    "request_timeout": 15.0,
}
WAIT = 30.0  # how long any scenario waits for a state it expects


class Skip(Exception):
    """The scenario cannot run here (e.g. no price outside market hours)."""


# ------------------------------------------------------------------------------------ context


def generation(client: IBClient) -> int:
    """The live session's generation (it grows by one per connection)."""
    return int(client.get_connection_status()["generation"])


def wait_reconnected(client: IBClient, before: int) -> int:
    """Wait until a session newer than generation ``before`` is CONNECTED (ready, orders re-adopted)."""
    new = client._manager.wait_for_session_after(before, WAIT)
    if new is None:
        raise AssertionError(f"no new session after generation {before} within {WAIT:g} s "
                             f"(state {client.state.name})")
    return new


@dataclass
class Target:
    """Where the scenarios run: a real gateway (``gw`` None) or a fresh simulator per scenario."""

    host: str
    port: int
    client_id: int
    allow_orders: bool
    symbol: str
    gw: Optional[FakeGateway] = None
    clients: List[IBClient] = field(default_factory=list)

    @property
    def live(self) -> bool:
        return self.gw is None

    def client(self, **overrides: Any) -> IBClient:
        cfg: Dict[str, Any] = dict(LIVE_CONFIG if self.live else SIM_CONFIG)
        cfg.update(host=self.host, port=self.port, client_id=self.client_id)
        if self.live and not self.allow_orders:
            cfg["read_only"] = True  # the library itself refuses every order method
        cfg.update(overrides)
        client = IBClient(config=cfg, rng=random.Random(9))
        self.clients.append(client)
        if not client.connect(timeout=WAIT):
            raise AssertionError(f"could not connect to {self.host}:{self.port}: "
                                 f"{client.get_connection_status()['last_error']}")
        return client

    def close(self) -> None:
        for client in self.clients:
            client.disconnect()
        self.clients.clear()


class InThread:
    """A blocking call on its own thread, joined with a deadline."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, args=(fn,), name="scenario-call", daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.result = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the scenario
            self.error = exc

    def join(self, timeout: float = WAIT) -> Any:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"the call did not return within {timeout:g} s")
        if self.error is not None:
            raise self.error
        return self.result


def force_reconnect(client: IBClient) -> int:
    """Close our own socket (the one fault a real gateway allows); the new session's generation."""
    before = generation(client)
    client._manager.bridge.close("forced by the resilience script")
    return wait_reconnected(client, before)


def live_refs(gw: FakeGateway) -> Dict[str, int]:
    counts: Dict[str, int] = collections.Counter()
    for order in gw.orders:
        if order.status != "Rejected" and order.order_ref:
            counts[order.order_ref] += 1
    return counts


def check_book(gw: FakeGateway, result: BracketResult) -> None:
    """The simulator's book holds the bracket's three orders exactly once each."""
    refs = live_refs(gw)
    expected = {result.order_ref + suffix for suffix in ("", "-tp", "-sl")}
    counts = {ref: refs.get(ref, 0) for ref in expected}
    if counts != {ref: 1 for ref in expected}:
        raise AssertionError(f"book holds {counts}, expected each once")
    booked = {o.order_id for o in gw.orders if o.order_ref in expected}
    if not set(result.order_ids) <= booked:
        raise AssertionError(f"ids {result.order_ids} not all booked ({sorted(booked)})")


def far_bracket(client: IBClient, target: Target, **kw: Any) -> BracketResult:
    """A 1-share BUY limit far below the market (it never fills), with its exits."""
    if target.live:
        price = client.get_current_price(target.symbol)
        entry = round(price * 0.5, 2)
    else:
        entry = 100.0
    return client.place_bracket_order(target.symbol, "BUY", 1, entry, round(entry * 1.2, 2), round(entry * 0.8, 2),
                                      **kw)


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


# ------------------------------------------------------------------ scenarios on either target


def connect_and_status(target: Target) -> str:
    client = target.client()
    status = client.get_connection_status()
    expect(status["state"] == "CONNECTED", f"state {status['state']}")
    expect(status["is_healthy"], f"not healthy: {status}")
    expect(status["next_order_id"] > 0, f"no order id from the gateway: {status['next_order_id']}")
    return f"generation {status['generation']}, next order id {status['next_order_id']}"


def heartbeat_latency(target: Target) -> str:
    client = target.client()
    rtts = []
    for _ in range(5):
        time.sleep(0.1)  # spaced out, so that the pacer's token bucket is not what gets measured
        start = time.monotonic()
        client.get_current_time()
        rtts.append((time.monotonic() - start) * 1000.0)
    # One heartbeat round trip at least, so that the average is a measurement (polled: no event).
    interval = client.config.heartbeat_interval + client.config.heartbeat_timeout
    deadline = time.monotonic() + 2 * interval
    while client.get_connection_status()["last_heartbeat_at"] is None and time.monotonic() < deadline:
        time.sleep(0.05)
    status = client.get_connection_status()
    return (f"reqCurrentTime round trip median {statistics.median(rtts):.1f} ms (max {max(rtts):.1f}); "
            f"heartbeat average {status['average_latency_ms']:.1f} ms, quality {status['connection_quality']}")


def current_price(target: Target) -> str:
    client = target.client()
    try:
        price = client.get_current_price(target.symbol)
    except (IBRequestError, RequestTimeoutError) as exc:
        if target.live:
            raise Skip(f"no price for {target.symbol} ({exc}); market closed or no data permissions?") from exc
        raise
    expect(price > 0, f"price {price}")
    return f"{target.symbol} {price:g}"


def forced_reconnect(target: Target) -> str:
    client = target.client()
    before = generation(client)
    after = force_reconnect(client)
    client.get_current_time()  # the new session answers
    return f"generation {before} -> {after}, healthy {client.get_connection_status()['is_healthy']}"


def open_orders_readopted(target: Target) -> str:
    client = target.client()
    placed: Optional[BracketResult] = None
    if not target.live:
        placed = far_bracket(client, target)
    before = {o.order_id for o in client.open_orders()}
    force_reconnect(client)
    after = {o.order_id for o in client.open_orders()}
    expect(before <= after, f"open orders lost across the reconnect: {sorted(before - after)}")
    if placed is not None and target.gw is not None:
        check_book(target.gw, placed)
    return f"{len(before)} open order(s) before, {len(after)} after"


def bracket_survives_reconnect_then_cancel(target: Target) -> str:
    if target.live and not target.allow_orders:
        raise Skip("read-only: pass --allow-orders to place (and cancel) one tiny far-from-market bracket")
    client = target.client()
    try:
        result = far_bracket(client, target)
    except (IBRequestError, RequestTimeoutError) as exc:
        if target.live and "price" in str(exc):
            raise Skip(f"no price to place far from: {exc}") from exc
        raise
    try:
        force_reconnect(client)
        open_ids = {o.order_id for o in client.open_orders()}
        expect(set(result.order_ids) <= open_ids, f"bracket {result.order_ids} not re-adopted ({sorted(open_ids)})")
        if target.gw is not None:
            check_book(target.gw, result)
    finally:
        cancelled = client.cancel_order(result.parent.order_id)
    expect(cancelled.status in ("Cancelled", "ApiCancelled"), f"cancel ended {cancelled.status}")
    gone = client._orders.wait_until(
        lambda: not set(result.order_ids) & {o.order_id for o in client.open_orders()}, WAIT)
    expect(gone, f"bracket still working after the cancel: {[o.order_id for o in client.open_orders()]}")
    return f"bracket {result.order_ref} ids {result.order_ids} re-adopted, then cancelled"


# ------------------------------------------------------------------ simulator-only fault scenarios


def drop_before_send(target: Target) -> str:
    gw = sim(target)
    client = target.client(reconnect_delay_base=5.0, reconnect_delay_max=5.0)
    gw.refuse_connections(3.0)
    gw.drop_connections()
    expect(client.wait_for_state(ConnectionState.RECONNECTING, timeout=WAIT), "the drop went unnoticed")
    try:
        far_bracket(client, target)
    except IBConnectionError:
        pass
    else:
        raise AssertionError("an order call while reconnecting did not raise IBConnectionError")
    expect(live_refs(gw) == {}, f"something was booked: {live_refs(gw)}")
    return "IBConnectionError at once, nothing booked"


def drop_after_send_before_ack(target: Target) -> str:
    gw = sim(target)
    client = target.client()
    gw.hold_order_acks(True)
    call = InThread(lambda: far_bracket(client, target))
    gw.wait_for(lambda: len(gw.orders) == 3, timeout=10)
    gw.drop_connections()
    gw.hold_order_acks(False)
    result = call.join()
    check_book(gw, result)
    return f"returned the booked bracket {result.order_ids}, nothing resent"


def drop_after_ack(target: Target) -> str:
    gw = sim(target)
    client = target.client()
    result = far_bracket(client, target)
    before = generation(client)
    gw.drop_connections()
    wait_reconnected(client, before)
    open_ids = {o.order_id for o in client.open_orders()}
    expect(set(result.order_ids) <= open_ids, f"bracket {result.order_ids} not re-adopted ({sorted(open_ids)})")
    check_book(gw, result)
    return f"bracket {result.order_ids} re-adopted, booked once"


def drop_between_parent_and_children(target: Target) -> str:
    gw = sim(target)
    # A slow pacer holds the children back long enough to cut the line after the parent.
    client = target.client(pacing={"max_messages_per_second": 2.0, "burst": 1}, heartbeat_interval=30.0)
    before = len(gw.orders)
    call = InThread(lambda: far_bracket(client, target, timeout=30.0))
    gw.wait_for(lambda: len(gw.orders) >= before + 1, timeout=10)
    gw.drop_connections()
    result = call.join(60)
    check_book(gw, result)
    return f"bracket completed once: {result.order_ids}"


def unknown_fate(target: Target) -> str:
    gw = sim(target)
    client = target.client()
    gw.hold_order_acks(True)
    call = InThread(lambda: far_bracket(client, target, timeout=1.0))
    gw.wait_for(lambda: len(gw.orders) == 3, timeout=10)
    gw.refuse_connections(5.0)
    gw.drop_connections()
    try:
        call.join()
    except OrderStateUnknownError as exc:
        expect(bool(exc.order_ref), "OrderStateUnknownError without the orderRef")
        return f"OrderStateUnknownError carrying {exc.order_ref}"
    finally:
        gw.hold_order_acks(False)
    raise AssertionError("the call returned although the gateway was unreachable past its deadline")


def cancel_during_drop(target: Target) -> str:
    gw = sim(target)
    client = target.client()
    result = far_bracket(client, target)
    parent = result.parent.order_id
    gw.hold_order_acks(True)
    call = InThread(lambda: client.cancel_order(parent))
    gw.wait_for(lambda: any(o.order_id == parent and o.status.endswith("Cancelled") for o in gw.orders), timeout=10)
    gw.drop_connections()
    gw.hold_order_acks(False)
    cancelled = call.join()
    expect(cancelled.status in ("Cancelled", "ApiCancelled"), f"cancel ended {cancelled.status}")
    expect(not any(o.order_id == parent and o.is_open for o in gw.orders), "the parent is still working")
    return f"cancel reported {cancelled.status}"


def cancel_of_filled(target: Target) -> str:
    gw = sim(target)
    client = target.client()
    result = far_bracket(client, target)
    parent = result.parent.order_id
    gw.fill_order(parent, client_id=target.client_id)
    filled = client._orders.wait_until(lambda: getattr(client.order_status(parent), "status", "") == "Filled", WAIT)
    expect(filled, "the fill was never reported")
    try:
        client.cancel_order(parent)
    except OrderCancelError as exc:
        expect(exc.state == "Filled", f"OrderCancelError says {exc.state}")
        return "OrderCancelError(state Filled)"
    raise AssertionError("cancelling a filled order succeeded")


def ids_across_restart(target: Target) -> str:
    gw = sim(target)
    client = target.client()
    first = far_bracket(client, target)
    before = generation(client)
    gw.restart(0.2)
    wait_reconnected(client, before)
    second = far_bracket(client, target)
    expect(min(second.order_ids) > max(first.order_ids), f"ids went backwards: {first.order_ids} {second.order_ids}")
    expect(gw.errors_sent.get(103, 0) == 0, "the gateway sent 103 (duplicate order id)")
    check_book(gw, second)
    return f"{first.order_ids} then {second.order_ids}, no 103"


def orders_wait_out_an_upstream_outage(target: Target) -> str:
    gw = sim(target)
    client = target.client()
    gw.upstream_outage(1.0, data_lost=False)
    expect(client._manager.wait_for_upstream(WAIT, ok=False), "1100 never arrived")
    expect(client.state is ConnectionState.CONNECTED, f"state {client.state.name} during 1100")
    call = InThread(lambda: far_bracket(client, target))  # held until 1102, then placed
    while gw.upstream_down:
        expect(gw.orders == [], "an order reached the gateway during the outage")
        time.sleep(0.01)  # sampling the book while the outage lasts
    result = call.join()
    check_book(gw, result)
    return f"held through 1100, placed after 1102: {result.order_ids}"


def orders_fail_at_once_during_an_outage_when_configured(target: Target) -> str:
    gw = sim(target)
    client = target.client(orders={"hold_during_upstream_outage": False})
    gw.upstream_outage(30.0, data_lost=True)
    expect(client._manager.wait_for_upstream(WAIT, ok=False), "1100 never arrived")
    try:
        far_bracket(client, target)
    except IBConnectionError as exc:
        expect("1100" in str(exc), f"IBConnectionError without the reason: {exc}")
    else:
        raise AssertionError("an order call during 1100 did not raise IBConnectionError")
    expect(live_refs(gw) == {}, f"something was booked: {live_refs(gw)}")
    return "IBConnectionError (1100) at once, nothing booked"


def streams_restored(target: Target) -> str:
    gw = sim(target)
    client = target.client()
    ticks = threading.Condition()
    seen: List[float] = []

    def on_tick(tick: Tick) -> None:
        with ticks:
            seen.append(tick.time)
            ticks.notify_all()

    def ticks_after(moment: float) -> None:
        with ticks:
            if not ticks.wait_for(lambda: any(t > moment for t in seen), WAIT):
                raise AssertionError("no tick after the recovery")

    sub = client.subscribe_market_data(target.symbol, on_tick)
    before = generation(client)
    gw.drop_connections()
    wait_reconnected(client, before)
    ticks_after(time.time())
    gw.upstream_outage(0.3, data_lost=True)
    gw.wait_for(lambda: not gw.upstream_down, timeout=10)
    ticks_after(time.time())
    expect(sub.restores >= 2, f"restored {sub.restores} time(s), expected after the drop and after 1101")
    expect(not sub.blind, f"gap still open: {sub.gaps[-1:]}")
    return f"restored {sub.restores} times, {len(sub.gaps)} gap(s), all closed"


def sim(target: Target) -> FakeGateway:
    assert target.gw is not None, "a simulator-only scenario"
    return target.gw


COMMON: List[Callable[[Target], str]] = [
    connect_and_status, heartbeat_latency, current_price, forced_reconnect, open_orders_readopted,
    bracket_survives_reconnect_then_cancel,
]
SIM_ONLY: List[Callable[[Target], str]] = [
    drop_before_send, drop_after_send_before_ack, drop_after_ack, drop_between_parent_and_children, unknown_fate,
    cancel_during_drop, cancel_of_filled, ids_across_restart, orders_wait_out_an_upstream_outage,
    orders_fail_at_once_during_an_outage_when_configured, streams_restored,
]


# ------------------------------------------------------------------------------------ runner


def run_scenario(scenario: Callable[[Target], str], make_target: Callable[[], Target]) -> Tuple[str, str]:
    """(PASS|SKIP|FAIL, detail) for one scenario on a fresh target (a fresh simulator in sim mode)."""
    target = make_target()
    try:
        return "PASS", scenario(target)
    except Skip as exc:
        return "SKIP", str(exc)
    except Exception as exc:  # a scenario's failure is reported, the others still run
        log.debug("scenario %s failed", scenario.__name__, exc_info=True)
        return "FAIL", f"{type(exc).__name__}: {exc}"
    finally:
        target.close()
        if target.gw is not None:
            target.gw.close()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=os.environ.get("IB_HOST"), help="gateway host (default $IB_HOST)")
    parser.add_argument("--port", type=int, default=int(os.environ["IB_PORT"]) if os.environ.get("IB_PORT") else None,
                        help="gateway port (default $IB_PORT)")
    parser.add_argument("--client-id", type=int, default=int(os.environ.get("IB_CLIENT_ID", "917")))
    parser.add_argument("--symbol", default="SPY", help="the stock priced (and, with --allow-orders, bought far "
                                                        "below the market) (default SPY)")
    parser.add_argument("--allow-orders", action="store_true",
                        help="live: place one 1-share bracket at half the market price, then cancel it")
    parser.add_argument("--only", action="append", default=[], help="run only this scenario (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO to stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.CRITICAL, stream=sys.stderr,
                        format="%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s")

    live = bool(args.host) and args.port is not None
    scenarios = COMMON if live else COMMON + SIM_ONLY
    if args.list:
        for s in scenarios:
            print(s.__name__)
        return 0
    if args.only:
        unknown = set(args.only) - {s.__name__ for s in COMMON + SIM_ONLY}
        if unknown:
            parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
        scenarios = [s for s in scenarios if s.__name__ in args.only]

    def make_target() -> Target:
        if live:
            return Target(args.host, args.port, args.client_id, args.allow_orders, args.symbol)
        gw = FakeGateway(seed=11, handshake_timeout=5.0, frame_timeout=2.0).start()
        return Target("127.0.0.1", gw.port, args.client_id, True, args.symbol, gw)

    where = f"the gateway at {args.host}:{args.port}" if live else "an embedded simulator"
    mode = "orders allowed" if (args.allow_orders or not live) else "read-only"
    print(f"connection resilience scenarios against {where} ({mode})")
    failures = 0
    for scenario in scenarios:
        started = time.monotonic()
        verdict, detail = run_scenario(scenario, make_target)
        failures += verdict == "FAIL"
        print(f"{verdict:<4} {scenario.__name__:<52} {time.monotonic() - started:6.2f} s  {detail}", flush=True)
    print(f"{len(scenarios) - failures} of {len(scenarios)} passed or skipped; {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
