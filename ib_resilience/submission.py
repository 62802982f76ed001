"""Sending orders and cancels so that none is sent twice and none's fate is left unknown.

An order call that loses its connection does not guess. It waits (within its deadline) for the
next session and for that session's re-sync — open orders, completed orders and executions,
all up to their end markers — and then looks its orders up by ``orderRef``:

* the gateway has them → the call returns them, nothing is sent again;
* the gateway definitely has not → it resubmits the missing ones once, with the same
  ``orderRef`` and the same order ids (``orders.on_unknown_after_reconnect: raise`` raises
  :class:`OrderNotPlacedError` instead). Re-placing an id the gateway already holds modifies
  that order rather than booking another, so even an order the re-sync cannot see (an
  untransmitted bracket parent) is never duplicated;
* the truth cannot be learned before the deadline → :class:`OrderStateUnknownError` carrying
  the ``orderRef``.

There are never two live orders with one key: a resubmission happens only after a complete
re-sync showed the key absent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import List, Optional

from ibapi.contract import Contract
from ibapi.order import Order

from .clock import Clock
from .config import Config
from .connection_manager import IBConnectionManager
from .error_codes import CANNOT_CANCEL, ErrorCategory, cancel_reject_state, classify
from .errors import (
    IBConnectionError,
    IBRequestError,
    OrderNotPlacedError,
    OrderRejectedError,
    OrderStateUnknownError,
)
from .order_tracker import OrderState, OrderTracker

log = logging.getLogger("ib_resilience.orders")

CANCEL_NOT_FOUND_CODES = frozenset({10147, 135})
CANCEL_REFUSED_CODES = frozenset({CANNOT_CANCEL, 161})
CANCELLED = frozenset({"Cancelled", "ApiCancelled"})


class OrderCancelError(IBRequestError):
    """A cancel was refused: the order is unknown, or already done (``state`` says which)."""

    def __init__(self, code: int, text: str, order_id: int, state: Optional[str]) -> None:
        super().__init__(code, text, order_id, classify(code, text))
        self.state = state


@dataclass
class Leg:
    """One order of a group sent together (a bracket's parent and children, a strangle's legs)."""

    contract: Contract
    order: Order
    is_parent: bool = False

    @property
    def ref(self) -> str:
        return str(self.order.orderRef)

    @property
    def order_id(self) -> int:
        return int(self.order.orderId)


class Submitter:
    """Places and cancels orders through one connection manager, reconciling after drops."""

    def __init__(
        self,
        manager: IBConnectionManager,
        tracker: OrderTracker,
        config: Config,
        clock: Clock,
    ) -> None:
        self._manager = manager
        self._tracker = tracker
        self._config = config
        self._clock = clock

    # ------------------------------------------------------------- helpers

    def _remaining(self, deadline: float) -> float:
        return max(0.0, deadline - self._clock.monotonic())

    def _generation(self) -> int:
        session = self._manager.session
        if session is None or not self._manager.is_connected():
            raise IBConnectionError("not connected")
        return session.generation

    def _lost(self, generation: int) -> bool:
        return self._manager.closed_generation() >= generation

    def wait_until_sendable(self, operation: str, deadline: float) -> int:
        """Wait out an upstream outage (1100) or, in a maintenance window with ``hold_orders``,
        a reconnect; return the live generation or raise IBConnectionError at the deadline."""
        manager = self._manager
        if not manager.is_connected():
            if not (manager.in_maintenance() and self._config.maintenance.hold_orders):
                raise IBConnectionError(f"{operation}: not connected (state {manager.state.name})")
            session = manager.session
            if manager.wait_for_session_after(session.generation if session else 0, self._remaining(deadline)) is None:
                raise IBConnectionError(f"{operation}: no session before the deadline (maintenance window)")
        if not manager.upstream_ok:
            if not self._config.orders.hold_during_upstream_outage:
                raise IBConnectionError(f"{operation}: the gateway has lost its connection to IB (1100)")
            log.info("%s waits for IB connectivity to return (1100)", operation)
            if not manager.wait_for_upstream(self._remaining(deadline)):
                raise IBConnectionError(f"{operation}: IB connectivity (1100) not restored before the deadline")
        return self._generation()

    def _send(self, legs: List[Leg], generation: int) -> None:
        """Send the legs on connection ``generation`` only: once it is gone, the rest wait for
        the reconciliation (a leg must never go out on the next session before the re-sync)."""
        bridge = self._manager.bridge
        for leg in legs:
            if self._lost(generation) or bridge.generation != generation:
                raise IBConnectionError(f"connection {generation} lost before order {leg.order_id} was sent")
            o = leg.order
            self._tracker.expect(o.orderId, o.orderRef, leg.contract.symbol, o.action, float(o.totalQuantity), o.orderType)
            bridge.placeOrder(o.orderId, leg.contract, o)

    def _await_acks(self, legs: List[Leg], generation: int, deadline: float, operation: str) -> bool:
        """True once all are acknowledged; False if the connection dropped first. Raises on a
        rejection or at the deadline."""
        ids = [leg.order_id for leg in legs]
        tracker = self._tracker

        def rejected(s: Optional[OrderState]) -> bool:
            # Any PERMANENT error for an order the gateway has not acknowledged rejects it
            # (201, 103, 110, 10268 …, but also 200 for an unknown contract); INFO notices such
            # as 399 and TRANSIENT ones such as 2102 leave it pending.
            return (
                s is not None and not s.acknowledged and s.error_code not in (None, 0)
                and classify(s.error_code, s.error_text) is ErrorCategory.PERMANENT
            )

        def settled() -> bool:
            states = [tracker.get(i) for i in ids]
            return (
                any(rejected(s) for s in states)
                or self._lost(generation)
                or all(s is not None and s.acknowledged for s in states)
            )

        if not tracker.wait_until(settled, self._remaining(deadline)):
            # Sent, but no word back: the gateway may or may not have them. That is an unknown
            # fate, and the caller gets the key to look them up with.
            raise OrderStateUnknownError(
                f"{operation}: orders {ids} sent but not acknowledged before the deadline; look them up by "
                f"orderRef {legs[0].ref!r}", order_ref=legs[0].ref,
            )
        states = [tracker.get(i) for i in ids]
        for s in states:
            if s is not None and rejected(s):
                assert s.error_code is not None
                raise OrderRejectedError(s.error_code, s.error_text, s.order_id, ErrorCategory.PERMANENT)
        return all(s is not None and s.acknowledged for s in states)

    def _resync(self, generation: int, deadline: float, operation: str, key: str) -> int:
        """Wait for the next session and its complete order re-sync; its generation."""
        new = self._manager.wait_for_session_after(generation, self._remaining(deadline))
        if new is None:
            raise OrderStateUnknownError(
                f"{operation}: connection lost and not back before the deadline; the gateway may or may not "
                f"have order {key!r}", order_ref=key,
            )
        synced = self._tracker.wait_until(lambda: self._tracker.synced_generation >= new, self._remaining(deadline))
        if not synced:
            raise OrderStateUnknownError(
                f"{operation}: reconnected but the order re-sync did not finish before the deadline; "
                f"order {key!r} unknown", order_ref=key,
            )
        return new

    def _gateway_has(self, leg: Leg) -> bool:
        state = self._tracker.by_ref(leg.ref)
        return state is not None and (state.acknowledged or bool(state.executions))

    # -------------------------------------------------------------- orders

    def submit(self, legs: List[Leg], operation: str, deadline: float) -> List[OrderState]:
        """Send a group of orders and return their states once the gateway has all of them."""
        key = legs[0].ref
        generation = self.wait_until_sendable(operation, deadline)
        resubmitted = False
        to_send = legs
        while True:
            try:
                self._send(to_send, generation)
            except IBConnectionError as exc:
                log.warning("%s: connection lost while sending %r: %s", operation, key, exc)
            if self._await_acks(legs, generation, deadline, operation):
                return [self._state_of(leg) for leg in legs]
            log.warning("%s: connection lost before %r was acknowledged; reconciling", operation, key)
            generation = self._resync(generation, deadline, operation, key)
            missing = [leg for leg in legs if not self._gateway_has(leg)]
            if not missing:
                log.info("%s: the gateway has %r; nothing resent", operation, key)
                return [self._state_of(leg) for leg in legs]
            if resubmitted or self._config.orders.on_unknown_after_reconnect == "raise":
                raise OrderNotPlacedError(
                    f"{operation}: the gateway does not have {[m.ref for m in missing]} after a reconnect"
                    + (" (already resubmitted once)" if resubmitted else ""), order_ref=key,
                )
            # Same order ids, on purpose: if the gateway holds an order the re-sync cannot show
            # (an untransmitted bracket parent), placing that id again modifies it instead of
            # booking a second one; if it truly never arrived, the id is still above every id
            # the gateway saw from us, so it is accepted as new.
            to_send = missing
            resubmitted = True
            log.warning("%s: resubmitting %s (same ids %s)", operation, [m.ref for m in missing],
                        [m.order_id for m in missing])

    def _state_of(self, leg: Leg) -> OrderState:
        state = self._tracker.by_ref(leg.ref) or self._tracker.get(leg.order_id)
        assert state is not None
        return state

    # -------------------------------------------------------------- cancel

    def cancel(self, order_id: int, operation: str, deadline: float) -> OrderState:
        """Cancel and return the cancelled order; raise OrderCancelError when it filled or is unknown."""
        known = self._tracker.get(order_id)
        if known is not None and known.status == "Filled":
            raise OrderCancelError(CANNOT_CANCEL, f"order {order_id} already filled; nothing was sent", order_id, "Filled")
        if known is not None and known.status in CANCELLED:
            return known
        generation = self.wait_until_sendable(operation, deadline)
        resent = False
        while True:
            self._tracker.on_error(order_id, 0, "")  # only this cancel's answer counts
            try:
                self._manager.bridge.cancel_order(order_id)
            except IBConnectionError as exc:
                log.warning("%s: connection lost while cancelling %d: %s", operation, order_id, exc)
            outcome = self._await_cancel(order_id, generation, deadline, operation)
            if outcome is not None:
                return outcome
            generation = self._resync(generation, deadline, operation, str(order_id))
            state = self._tracker.get(order_id)
            if state is not None and (state.status in CANCELLED or state.status == "Filled"):
                return self._cancel_outcome(order_id, state)
            if state is None or not state.acknowledged:
                raise OrderCancelError(10147, f"order {order_id} is not known to the gateway", order_id, None)
            if resent:
                raise OrderStateUnknownError(f"{operation}: order {order_id} still live after a resent cancel",
                                             order_ref=state.order_ref)
            resent = True

    def _await_cancel(self, order_id: int, generation: int, deadline: float, operation: str) -> Optional[OrderState]:
        tracker = self._tracker

        def gateway_answered(state: Optional[OrderState]) -> bool:
            if state is None:
                return False
            if state.status in CANCELLED or state.status == "Filled":
                return True
            code = state.error_code
            # 202 is the cancel's own notice; a CONNECTION-category code (10.x reports a failed
            # send as 5xx) is our socket failing, not the gateway's answer: reconcile instead.
            return code not in (None, 0, 202) and classify(code, state.error_text) is not ErrorCategory.CONNECTION

        def settled() -> bool:
            return self._lost(generation) or gateway_answered(tracker.get(order_id))

        if not tracker.wait_until(settled, self._remaining(deadline)):
            known = tracker.get(order_id)
            raise OrderStateUnknownError(
                f"{operation}: cancel of order {order_id} sent but not confirmed before the deadline; it may or "
                f"may not be cancelled", order_ref=known.order_ref if known is not None else None,
            )
        state = tracker.get(order_id)
        if state is not None and gateway_answered(state):
            return self._cancel_outcome(order_id, state)
        return None  # the connection dropped first

    @staticmethod
    def _cancel_outcome(order_id: int, state: OrderState) -> OrderState:
        if state.status in CANCELLED:
            return state
        if state.status == "Filled":
            raise OrderCancelError(CANNOT_CANCEL, f"order {order_id} filled before it could be cancelled", order_id,
                                   "Filled")
        code = state.error_code or 0
        if code in CANCEL_NOT_FOUND_CODES:
            raise OrderCancelError(code, f"order {order_id} does not exist: {state.error_text}", order_id, None)
        if code in CANCEL_REFUSED_CODES:
            st = cancel_reject_state(state.error_text)
            raise OrderCancelError(code, f"order {order_id} cannot be cancelled (state: {st}): {state.error_text}",
                                   order_id, st)
        raise IBRequestError(code, state.error_text, order_id, classify(code, state.error_text))
