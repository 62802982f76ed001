"""IBClient: the blocking facade users call."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import random
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar, Union, cast

from ibapi.execution import ExecutionFilter

from .bridge import HandshakeInfo
from .circuit_breaker import BreakerRegistry, circuit
from .clock import SYSTEM_CLOCK, Clock
from .config import Config, load_config
from .connection_manager import IBConnectionManager, StateListener
from .error_codes import ErrorCategory, exception_for
from .errors import IBConnectionError, IBRequestError, RequestTimeoutError
from .operations import BracketResult, Operations, OrderIds, OrderResult, StrangleResult, resolve_timeout
from .order_tracker import OrderState, OrderTracker
from .router import Router
from .state import ConnectionState
from .subscriptions import MarketDataSubscription, SubscriptionManager, Tick

log = logging.getLogger("ib_resilience.client")

F = TypeVar("F", bound=Callable[..., Any])
ConfigSource = Union[None, str, "os.PathLike[str]", Dict[str, Any], Config]


def with_connection_check(method: F) -> F:
    """Raise IBConnectionError at once (nothing sent) while not connected; on a CONNECTION-category
    failure of the call, wake the watchdog to check the socket now."""

    holds = getattr(method, "_holds_in_maintenance", False)

    @functools.wraps(method)
    def wrapper(self: IBClient, *args: Any, **kwargs: Any) -> Any:
        manager = self._manager
        if not manager.is_connected() and not (
            holds and manager.config.maintenance.hold_orders and manager.in_maintenance()
        ):
            raise IBConnectionError(
                f"{method.__name__}: not connected (state {manager.state.name})",
                host=manager.config.host,
                port=manager.config.port,
            )
        try:
            return method(self, *args, **kwargs)
        except IBConnectionError as exc:
            manager.probe(f"{method.__name__} failed: {exc}")
            raise
        except IBRequestError as exc:
            if exc.category is ErrorCategory.CONNECTION:
                manager.probe(f"{method.__name__} failed: {exc}")
            raise

    return cast(F, wrapper)


def holds_in_maintenance(method: F) -> F:
    """Mark an order method that, inside a maintenance window with ``maintenance.hold_orders``,
    waits for the session (to its deadline) instead of failing at once."""
    method._holds_in_maintenance = True  # type: ignore[attr-defined]
    return method


class IBClient:
    """A resilient, synchronous client for TWS / IB Gateway.

    ``connect()`` blocks until the session is ready; afterwards a watchdog keeps it alive and
    reconnects with backoff. Every blocking call has a deadline.
    """

    def __init__(
        self,
        host: Optional[str] = None,
        port: Optional[int] = None,
        client_id: Optional[int] = None,
        config: ConfigSource = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        rng: Optional[random.Random] = None,
    ) -> None:
        overrides = {k: v for k, v in (("host", host), ("port", port), ("client_id", client_id)) if v is not None}
        self.config: Config = load_config(config, **overrides)
        self._router = Router()
        self._manager = IBConnectionManager(self.config, sink=self._router, clock=clock, rng=rng)
        self._orders = OrderTracker(wake=self._manager.bridge.wake_later)
        self._order_ids = OrderIds()
        bridge = self._manager.bridge
        self._subs = SubscriptionManager(
            self._manager.dispatcher,
            send=lambda req_id, contract: bridge.reqMktData(req_id, contract, "", False, False, []),
            cancel=bridge.cancelMktData,
            next_req_id=self._manager.pending.next_id,
            clock=clock,
            staleness_timeout=self.config.subscriptions.staleness_timeout,
            wake=bridge.wake_later,
        )
        self._router.attach(self._manager, self._orders, self._order_ids, self._subs)
        self._manager.add_ready_hook(self._on_session_ready)
        self._manager.add_periodic(self._subs.check_staleness)
        self._ops = Operations(self._manager, self._orders, self._order_ids, self.config, clock)
        self._breakers = BreakerRegistry(
            self.config.breakers,
            clock,
            on_connection_failure=lambda name, exc: self._manager.probe(f"{name} failed: {exc}"),
            on_rate_limit=lambda name, exc: self._manager.pacer.slow_down(),
            expected_disconnects=self._manager.in_maintenance,
        )

    @classmethod
    def from_yaml(cls, path: Union[str, os.PathLike[str]], **overrides: Any) -> IBClient:
        """Build a client from a YAML config file, with keyword overrides on top."""
        clock = overrides.pop("clock", SYSTEM_CLOCK)
        rng = overrides.pop("rng", None)
        return cls(config=load_config(path, **overrides), clock=clock, rng=rng)

    def _on_session_ready(self, info: HandshakeInfo) -> None:
        """On the watchdog thread, before CONNECTED is announced: sync ids and re-adopt orders
        (open, completed, executions — waiting for their end markers); market data streams are
        restored just after."""
        self._order_ids.sync(info.next_valid_id)
        bridge = self._manager.bridge
        self._orders.begin_sync(info.generation, {"open", "completed", "executions"})
        exec_req = self._manager.pending.next_id()
        self._router.sync_exec_req_id = exec_req
        bridge.reqOpenOrders()
        bridge.reqCompletedOrders(True)
        exec_filter = ExecutionFilter()
        exec_filter.clientId = self._manager.client_id
        bridge.reqExecutions(exec_req, exec_filter)
        # Streams are restored right after CONNECTED (on the watchdog), not before: restoring many
        # is paced, and calls need not wait for it.
        self._manager.call_soon(
            lambda: self._subs.restore_all(f"session {info.generation} ready", only_lost=True)
        )
        # Ready means re-adopted: wait (bounded) for the three end markers before CONNECTED.
        synced = self._orders.wait_until(
            lambda: self._orders.synced_generation >= info.generation, self.config.connect_timeout
        )
        if not synced:
            log.warning("order re-sync of session %d incomplete after %.1f s; continuing", info.generation,
                        self.config.connect_timeout)

    # ------------------------------------------------------------ connection

    def connect(self, timeout: Optional[float] = None) -> bool:
        """Connect, retrying with backoff per config; True once ready, False if it gave up
        (state ERROR) or ``timeout`` passed first (the watchdog then keeps trying)."""
        return self._manager.connect(timeout)

    def disconnect(self) -> None:
        """Close the session and join every thread this client started. Idempotent."""
        self._manager.disconnect()

    def is_connected(self) -> bool:
        return self._manager.is_connected()

    @property
    def state(self) -> ConnectionState:
        return self._manager.state

    def add_state_listener(self, fn: StateListener) -> None:
        """``fn(old, new, reason)`` on every transition; called on the dispatcher thread."""
        self._manager.add_state_listener(fn)

    def wait_for_state(self, *states: ConnectionState, timeout: float) -> bool:
        """Block until the state is one of ``states`` or ``timeout`` passes."""
        return self._manager.wait_for_state(tuple(states), timeout)

    def get_connection_status(self) -> Dict[str, Any]:
        """A snapshot of the connection's health, statistics and circuit breakers."""
        status = self._manager.status()
        status.update(self._router.stats())
        status["next_order_id"] = self._order_ids.next
        status["circuit_breakers"] = self._breakers.stats()
        status["subscriptions"] = self._subs.stats()
        status["open_orders"] = len(self._orders.open_orders())
        status["orders_synced_generation"] = self._orders.synced_generation
        status["bridge"] = dataclasses.asdict(self._manager.bridge.counters())
        status["pacer"] = self._manager.pacer.stats()
        return status

    def __enter__(self) -> IBClient:
        if not self.connect():
            raise IBConnectionError(
                f"could not connect: {self._manager.stats.last_error}",
                host=self.config.host,
                port=self.config.port,
            )
        return self

    def __exit__(self, *exc: Any) -> None:
        self.disconnect()

    # -------------------------------------------------------------- requests

    @with_connection_check
    def get_current_time(self, timeout: Optional[float] = None) -> int:
        """The gateway's clock, in epoch seconds."""
        deadline = resolve_timeout(timeout, self.config.request_timeout)
        pending = self._manager.register("current_time")
        self._manager.bridge.reqCurrentTime()
        return cast(int, self._manager.pending.wait(pending, deadline, "get_current_time"))

    # ------------------------------------------------------------ operations

    @with_connection_check
    @circuit("get_current_price")
    def get_current_price(
        self,
        symbol: str,
        sec_type: str = "STK",
        exchange: str = "SMART",
        currency: str = "USD",
        timeout: Optional[float] = None,
    ) -> float:
        """Last trade, else the bid/ask midpoint, else the close, from a snapshot. Falls back to
        delayed data when live data is not subscribed (``market_data.delayed_fallback``)."""
        return self._ops.get_current_price(symbol, sec_type, exchange, currency, timeout)

    @with_connection_check
    @circuit("place_bracket_order")
    @holds_in_maintenance
    def place_bracket_order(
        self,
        symbol: str,
        action: str,
        quantity: float,
        entry_price: Optional[float],
        take_profit_price: float,
        stop_loss_price: float,
        *,
        tif: str = "DAY",
        exchange: str = "SMART",
        currency: str = "USD",
        timeout: Optional[float] = None,
    ) -> BracketResult:
        """Entry (LMT, or MKT when ``entry_price`` is None), take-profit LMT and stop-loss STP in
        one OCA group; returns once the gateway acknowledged all three."""
        return self._ops.place_bracket_order(
            symbol, action, quantity, entry_price, take_profit_price, stop_loss_price,
            tif=tif, exchange=exchange, currency=currency, timeout=timeout,
        )

    @with_connection_check
    @circuit("place_strangle")
    @holds_in_maintenance
    def place_strangle(
        self,
        symbol: str,
        expiry: str,
        call_strike: float,
        put_strike: float,
        quantity: float,
        action: str = "SELL",
        limit_price: Optional[float] = None,
        *,
        exchange: str = "SMART",
        currency: str = "USD",
        tif: str = "DAY",
        timeout: Optional[float] = None,
    ) -> StrangleResult:
        """Qualify both options, then place them as one BAG combo (or two legs when
        ``orders.strangle_as_combo`` is false); returns once acknowledged."""
        return self._ops.place_strangle(
            symbol, expiry, call_strike, put_strike, quantity, action, limit_price,
            exchange=exchange, currency=currency, tif=tif, timeout=timeout,
        )

    @with_connection_check
    @circuit("cancel_order")
    @holds_in_maintenance
    def cancel_order(self, order_id: int, timeout: Optional[float] = None) -> OrderResult:
        """Cancel and return once the gateway reports it cancelled. An order that filled or does
        not exist raises OrderCancelError saying which."""
        return self._ops.cancel_order(order_id, timeout)

    @with_connection_check
    @circuit("close_position_at_market")
    @holds_in_maintenance
    def close_position_at_market(self, symbol: str, timeout: Optional[float] = None) -> Optional[OrderResult]:
        """Send a market order for the opposite side and size of the stock position in
        ``symbol``; None, with nothing sent, when there is no position."""
        return self._ops.close_position_at_market(symbol, timeout)

    @with_connection_check
    def positions(self, timeout: Optional[float] = None) -> List[Tuple[str, Any, float, float]]:
        """Every position: (account, contract, size, average cost)."""
        return self._ops.positions(timeout)

    def order_status(self, order_id: int) -> Optional[OrderState]:
        """The last state the gateway reported for ``order_id`` (None if never seen)."""
        return self._orders.get(order_id)

    def open_orders(self) -> List[OrderState]:
        """Orders the gateway has acknowledged and that are not yet done; kept across reconnects
        (they are re-adopted after every reconnect)."""
        return self._orders.open_orders()

    def add_order_listener(self, fn: Callable[[OrderState], None]) -> None:
        """``fn(order_state)`` on every order update, on the dispatcher thread (never dropped)."""
        dispatcher = self._manager.dispatcher
        self._orders.add_listener(lambda state: dispatcher.submit(fn, state))

    # ----------------------------------------------------------- market data

    @with_connection_check
    def subscribe_market_data(
        self,
        symbol: str,
        on_tick: Callable[[Tick], None],
        sec_type: str = "STK",
        exchange: str = "SMART",
        currency: str = "USD",
        timeout: Optional[float] = None,
    ) -> MarketDataSubscription:
        """Stream ticks for ``symbol`` to ``on_tick`` (called on the dispatcher thread). The stream
        is restored after every reconnect and after 1101; the handle's ``gaps`` tell when it was
        blind. Returns once the gateway accepted the request."""
        if not callable(on_tick):
            raise ValueError(f"on_tick must be callable, got {on_tick!r}")
        contract = Operations.contract_for(symbol, sec_type, exchange, currency)
        deadline = resolve_timeout(timeout, self.config.request_timeout)
        sub = self._subs.subscribe(contract, on_tick, connected=True)
        if not sub._accepted.wait(deadline):
            sub.cancel()
            raise RequestTimeoutError(
                f"subscribe_market_data({symbol}): no answer within {deadline:g} s",
                operation="subscribe_market_data", timeout=deadline,
            )
        if sub.error is not None:
            code, text = sub.error
            exc = exception_for(code, text, sub.req_id or -1)
            if exc.category is not ErrorCategory.INFO:
                sub.cancel()
                raise exc
        return sub

    def subscriptions(self) -> List[MarketDataSubscription]:
        return self._subs.active()
