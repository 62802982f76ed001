"""The five trading operations, as blocking calls with deadlines.

Each call validates its arguments before anything is sent, registers what it waits for, sends
through the bridge (whose transport paces every message), and waits on a future or on the
order book with a deadline. The connection's end wakes every waiter at once.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from ibapi.contract import Contract
from ibapi.order import Order

from . import orders as builders
from .clock import Clock
from .config import Config
from .connection_manager import IBConnectionManager
from .errors import (
    IBConnectionError,
    IBRequestError,
    ReadOnlyError,
    RequestTimeoutError,
)
from .order_tracker import OrderState, OrderTracker
from .submission import Leg, Submitter

log = logging.getLogger("ib_resilience.operations")

# Tick types: live, then delayed (reqMarketDataType 3/4).
BID, ASK, LAST, CLOSE = 1, 2, 4, 9
DELAYED_BID, DELAYED_ASK, DELAYED_LAST, DELAYED_CLOSE = 66, 67, 68, 75
NOT_SUBSCRIBED_CODES = frozenset({354, 10089, 10090, 10167, 10168})


@dataclass(frozen=True)
class OrderResult:
    """What the gateway acknowledged for one order."""

    order_id: int
    order_ref: str
    status: str
    filled: float = 0.0
    avg_fill_price: float = 0.0
    perm_id: int = 0


@dataclass(frozen=True)
class BracketResult:
    """The three orders of a bracket, each acknowledged by the gateway."""

    parent: OrderResult
    take_profit: OrderResult
    stop_loss: OrderResult
    order_ref: str

    @property
    def order_ids(self) -> Tuple[int, int, int]:
        return (self.parent.order_id, self.take_profit.order_id, self.stop_loss.order_id)


@dataclass(frozen=True)
class StrangleResult:
    """A strangle placed as one BAG combo order, or as two single-leg orders."""

    orders: Tuple[OrderResult, ...]
    order_ref: str
    call_con_id: int
    put_con_id: int

    @property
    def order_ids(self) -> Tuple[int, ...]:
        return tuple(o.order_id for o in self.orders)


class OrderIds:
    """Order ids that never go backwards: above the gateway's next valid id and every id used."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = 0

    def sync(self, next_valid_id: int) -> None:
        with self._lock:
            self._next = max(self._next, next_valid_id)

    def take(self, count: int = 1) -> int:
        """Reserve ``count`` consecutive ids and return the first."""
        with self._lock:
            if self._next <= 0:
                raise IBConnectionError("no order id from the gateway yet")
            first = self._next
            self._next += count
            return first

    @property
    def next(self) -> int:
        return self._next


def _single_order(action: str, quantity: float, limit_price: Optional[float], order_ref: str, tif: str) -> Order:
    """A LMT order at ``limit_price``, or MKT when it is None."""
    if limit_price is None:
        return builders.build_market_order(action, quantity, order_ref, tif)
    return builders.build_limit_order(action, quantity, limit_price, order_ref, tif)


def resolve_timeout(value: Optional[float], default: float) -> float:
    """A caller's per-call deadline, or ``default``; ValueError unless finite and positive."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise ValueError(f"timeout must be a finite positive number of seconds, got {value!r}")
    return float(value)


class Operations:
    """The trading operations over one connection manager. IBClient exposes them."""

    def __init__(
        self, manager: IBConnectionManager, tracker: OrderTracker, order_ids: OrderIds, config: Config, clock: Clock
    ) -> None:
        self._manager = manager
        self._tracker = tracker
        self._ids = order_ids
        self._config = config
        self._clock = clock
        self._submitter = Submitter(manager, tracker, config, clock)
        self._positions_lock = threading.Lock()
        # The session (generation) on which the market data type was switched to delayed: the
        # type belongs to the connection, so a new session starts live again.
        self._delayed_generation = 0

    # ------------------------------------------------------------- helpers

    def _check_writable(self, operation: str) -> None:
        if self._config.read_only:
            raise ReadOnlyError(f"{operation}: the client is configured read_only; nothing was sent")

    def _request(
        self, kind: str, send: Any, timeout: float, operation: str, on_timeout: Optional[Any] = None
    ) -> Any:
        """Register, send, wait. ``on_timeout(req_id)`` (e.g. a cancel) runs if the deadline passes
        while still connected."""
        pending = self._manager.register(kind)
        try:
            send(pending.key)
            return self._manager.pending.wait(pending, timeout, operation)
        except RequestTimeoutError:
            if on_timeout is not None and self._manager.is_connected():
                on_timeout(pending.key)
            raise
        finally:
            self._manager.pending.discard(pending)

    @staticmethod
    def _result(state: OrderState) -> OrderResult:
        return OrderResult(
            order_id=state.order_id, order_ref=state.order_ref, status=state.status, filled=state.filled,
            avg_fill_price=state.avg_fill_price, perm_id=state.perm_id,
        )

    # --------------------------------------------------------- market data

    def get_current_price(
        self, symbol: str, sec_type: str = "STK", exchange: str = "SMART", currency: str = "USD",
        timeout: Optional[float] = None,
    ) -> float:
        contract = self.contract_for(symbol, sec_type, exchange, currency)
        deadline = resolve_timeout(timeout, self._config.market_data.snapshot_timeout)
        try:
            ticks = self._snapshot(contract, deadline)
        except IBRequestError as exc:
            session = self._manager.session
            generation = session.generation if session is not None else 0
            if (exc.code not in NOT_SUBSCRIBED_CODES or not self._config.market_data.delayed_fallback
                    or self._delayed_generation == generation):
                raise
            log.info("live data not subscribed for %s (%d); falling back to delayed data", symbol, exc.code)
            self._manager.bridge.reqMarketDataType(3)  # delayed when live is not subscribed
            self._delayed_generation = generation
            ticks = self._snapshot(contract, deadline)
        return self._pick_price(symbol, ticks)

    @staticmethod
    def contract_for(symbol: str, sec_type: str, exchange: str, currency: str) -> Contract:
        for name, value in (("symbol", symbol), ("sec_type", sec_type), ("exchange", exchange), ("currency", currency)):
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        contract = Contract()
        contract.symbol = symbol.strip().upper()
        contract.secType = sec_type.strip().upper()
        contract.exchange = exchange.strip().upper()
        contract.currency = currency.strip().upper()
        return contract

    def _snapshot(self, contract: Contract, timeout: float) -> Dict[int, float]:
        bridge = self._manager.bridge
        ticks = self._request(
            "snapshot", lambda req_id: bridge.reqMktData(req_id, contract, "", True, False, []), timeout,
            "get_current_price", on_timeout=bridge.cancelMktData,
        )
        return dict(ticks)

    @staticmethod
    def _pick_price(symbol: str, ticks: Dict[int, float]) -> float:
        def usable(tick: int) -> Optional[float]:
            value = ticks.get(tick)
            return value if value is not None and value > 0 and math.isfinite(value) else None

        for last in (LAST, DELAYED_LAST):
            if usable(last) is not None:
                return float(ticks[last])
        for bid, ask in ((BID, ASK), (DELAYED_BID, DELAYED_ASK)):
            b, a = usable(bid), usable(ask)
            if b is not None and a is not None:
                return (b + a) / 2.0
        for close in (CLOSE, DELAYED_CLOSE):
            if usable(close) is not None:
                return float(ticks[close])
        raise IBRequestError(-1, f"no price available for {symbol}: the snapshot carried no last, bid/ask or close")

    # -------------------------------------------------------------- orders

    def place_bracket_order(
        self, symbol: str, action: str, quantity: float, entry_price: Optional[float], take_profit_price: float,
        stop_loss_price: float, *, tif: str = "DAY", exchange: str = "SMART", currency: str = "USD",
        timeout: Optional[float] = None,
    ) -> BracketResult:
        self._check_writable("place_bracket_order")
        contract = builders.stock_contract(symbol, exchange=exchange, currency=currency)
        deadline = resolve_timeout(timeout, self._config.request_timeout)
        order_ref = builders.new_order_ref()
        # Validate everything with a placeholder id before an id is consumed or a byte is sent.
        builders.build_bracket(action, quantity, entry_price, take_profit_price, stop_loss_price,
                               parent_id=1, order_ref=order_ref, tif=tif)
        prices = [p for p in (entry_price, take_profit_price, stop_loss_price) if p is not None]
        builders.check_limits(quantity, max(prices), self._config.safety)
        start = self._clock.monotonic()
        self._submitter.wait_until_sendable("place_bracket_order", start + deadline)
        parent_id = self._ids.take(3)
        legs = builders.build_bracket(action, quantity, entry_price, take_profit_price, stop_loss_price,
                                      parent_id=parent_id, order_ref=order_ref, tif=tif)
        group = [Leg(contract, legs[0], is_parent=True), Leg(contract, legs[1]), Leg(contract, legs[2])]
        states = self._submitter.submit(group, "place_bracket_order", start + deadline)
        parent, take_profit, stop_loss = (self._result(s) for s in states)
        log.info("bracket %s placed: ids %s", order_ref, [s.order_id for s in states])
        return BracketResult(parent, take_profit, stop_loss, order_ref)

    def place_strangle(
        self, symbol: str, expiry: str, call_strike: float, put_strike: float, quantity: float,
        action: str = "SELL", limit_price: Optional[float] = None, *, exchange: str = "SMART", currency: str = "USD",
        tif: str = "DAY", timeout: Optional[float] = None,
    ) -> StrangleResult:
        self._check_writable("place_strangle")
        call, put = builders.strangle_contracts(symbol, expiry, call_strike, put_strike, exchange=exchange,
                                                currency=currency)
        deadline = resolve_timeout(timeout, self._config.request_timeout)
        order_ref = builders.new_order_ref()
        as_combo = self._config.orders.strangle_as_combo
        # Validate the order(s) with placeholder con ids before qualifying sends anything.
        if as_combo:
            builders.build_strangle(symbol, 1, 2, action, quantity, limit_price, order_ref=order_ref,
                                    exchange=exchange, currency=currency, tif=tif)
        else:
            _single_order(action, quantity, limit_price, order_ref, tif)
        # The notional of a strangle is its underlying exposure: the higher strike × 100 × quantity.
        builders.check_limits(quantity, max(call.strike, put.strike), self._config.safety, multiplier=100)
        start = self._clock.monotonic()
        call_id = self._qualify(call, deadline)
        put_id = self._qualify(put, deadline)
        self._submitter.wait_until_sendable("place_strangle", start + deadline)
        if as_combo:
            combo, order = builders.build_strangle(
                symbol, call_id, put_id, action, quantity, limit_price, order_ref=order_ref, exchange=exchange,
                currency=currency, tif=tif,
            )
            order.orderId = self._ids.take(1)
            group = [Leg(combo, order)]
        else:
            first = self._ids.take(2)
            group = []
            for offset, (contract, con_id, suffix) in enumerate(((call, call_id, "-c"), (put, put_id, "-p"))):
                contract.conId = con_id
                leg = _single_order(action, quantity, limit_price, order_ref + suffix, tif)
                leg.orderId = first + offset
                group.append(Leg(contract, leg))
        states = self._submitter.submit(group, "place_strangle", start + deadline)
        return StrangleResult(tuple(self._result(s) for s in states), order_ref, call_id, put_id)

    def _qualify(self, contract: Contract, timeout: float) -> int:
        bridge = self._manager.bridge
        rows = self._request("contract_details", lambda req_id: bridge.reqContractDetails(req_id, contract),
                             timeout, "contract details")
        if len(rows) != 1:
            raise IBRequestError(200, f"{len(rows)} contracts match {contract.symbol} {contract.lastTradeDateOrContractMonth} "
                                      f"{contract.strike} {contract.right}; expected exactly one")
        return int(rows[0].contract.conId)

    def cancel_order(self, order_id: int, timeout: Optional[float] = None) -> OrderResult:
        self._check_writable("cancel_order")
        if isinstance(order_id, bool) or not isinstance(order_id, int) or order_id <= 0:
            raise ValueError(f"order_id must be a positive integer, got {order_id!r}")
        deadline = resolve_timeout(timeout, self._config.request_timeout)
        state = self._submitter.cancel(order_id, "cancel_order", self._clock.monotonic() + deadline)
        return self._result(state)

    def positions(self, timeout: Optional[float] = None) -> List[Tuple[str, Contract, float, float]]:
        """Every position: (account, contract, size, average cost)."""
        deadline = resolve_timeout(timeout, self._config.request_timeout)
        bridge = self._manager.bridge
        with self._positions_lock:  # positions have no request id: one request at a time
            try:
                return list(self._request("positions", lambda _key: bridge.reqPositions(), deadline, "positions"))
            finally:
                if self._manager.is_connected():
                    bridge.cancelPositions()

    def close_position_at_market(self, symbol: str, timeout: Optional[float] = None) -> Optional[OrderResult]:
        self._check_writable("close_position_at_market")
        if not isinstance(symbol, str) or not symbol.strip():
            raise ValueError(f"symbol must be a non-empty string, got {symbol!r}")
        symbol = symbol.strip().upper()
        deadline = resolve_timeout(timeout, self._config.request_timeout)
        rows = [r for r in self.positions(deadline) if r[1].symbol == symbol and r[1].secType == "STK"]
        size = sum(float(r[2]) for r in rows)
        if size == 0:
            log.info("close_position_at_market(%s): no position; nothing sent", symbol)
            return None
        action = "SELL" if size > 0 else "BUY"
        quantity = abs(size)
        # No size limit here: closing only ever reduces exposure, and refusing it would trap the user.
        contract = builders.stock_contract(symbol, exchange="SMART", currency=rows[0][1].currency or "USD")
        start = self._clock.monotonic()
        self._submitter.wait_until_sendable("close_position_at_market", start + deadline)
        order = builders.build_market_order(action, quantity, builders.new_order_ref())
        order.orderId = self._ids.take(1)
        (state,) = self._submitter.submit([Leg(contract, order)], "close_position_at_market", start + deadline)
        return self._result(state)
