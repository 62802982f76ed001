"""What the gateway has told us about each order: status, fills, rejections.

Written only from the reader thread (through the router); read by callers, who wait on it
with deadlines. Order ids and ``orderRef`` keys both index it, so an order can be found by its
idempotency key after a reconnect.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

# Statuses after which an order can no longer fill or be cancelled.
TERMINAL_STATUSES = frozenset({"Filled", "Cancelled", "ApiCancelled", "Inactive"})
# Statuses meaning the gateway has the order (it is acknowledged).
ACK_STATUSES = frozenset(
    {"PendingSubmit", "PreSubmitted", "Submitted", "Filled", "PendingCancel", "ApiPending", "Cancelled",
     "ApiCancelled", "Inactive"}
)


@dataclass(frozen=True)
class OrderState:
    """One order as last reported by the gateway."""

    order_id: int
    order_ref: str = ""
    symbol: str = ""
    sec_type: str = ""
    action: str = ""
    quantity: float = 0.0
    order_type: str = ""
    status: str = ""
    filled: float = 0.0
    remaining: float = 0.0
    avg_fill_price: float = 0.0
    perm_id: int = 0
    parent_id: int = 0
    client_id: int = 0
    error_code: Optional[int] = None
    error_text: str = ""
    executions: Tuple[str, ...] = field(default=())

    @property
    def acknowledged(self) -> bool:
        return self.status in ACK_STATUSES or self.perm_id != 0

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_STATUSES


class OrderTracker:
    """Thread-safe book of orders keyed by order id and by ``orderRef``."""

    def __init__(self, wake: Callable[[Callable[[], None]], None] = lambda fn: fn()) -> None:
        """``wake(notify)`` wakes the waiters after an update; ``IBClient`` passes
        ``Bridge.wake_later``, so the reader wakes them once per read, not per message."""
        self._wake = wake
        self._notify_due = False  # a deferred notify is already scheduled (one per read)
        self._cond = threading.Condition()
        self._orders: Dict[int, OrderState] = {}
        self._by_ref: Dict[str, int] = {}
        self._listeners: List[Callable[[OrderState], None]] = []
        # Re-sync after a (re)connect: which end markers of which generation are still due.
        self._sync_generation = 0
        self._sync_due: Set[str] = set()
        self.synced_generation = 0

    # ------------------------------------------------------------- updates

    def _update(self, order_id: int, **changes: Any) -> OrderState:
        with self._cond:
            old = self._orders.get(order_id) or OrderState(order_id)
            new = replace(old, **changes)
            self._orders[order_id] = new
            if new.order_ref:
                self._by_ref[new.order_ref] = order_id
            listeners = list(self._listeners)
        self._notify_soon()
        for fn in listeners:
            fn(new)
        return new

    def expect(self, order_id: int, order_ref: str, symbol: str, action: str, quantity: float, order_type: str) -> None:
        """Record an order we are about to send, so its key is known before any reply."""
        self._update(
            order_id, order_ref=order_ref, symbol=symbol, action=action, quantity=quantity, order_type=order_type,
            error_code=None, error_text="",
        )

    def on_open_order(self, order_id: int, contract: Any, order: Any, order_state: Any) -> None:
        self._update(
            order_id,
            order_ref=order.orderRef or "",
            symbol=contract.symbol,
            sec_type=contract.secType,
            action=order.action,
            quantity=float(order.totalQuantity),
            order_type=order.orderType,
            status=order_state.status or self.get_status(order_id),
            perm_id=int(order.permId or 0),
            parent_id=int(order.parentId or 0),
            client_id=int(order.clientId or 0),
        )

    def on_order_status(
        self, order_id: int, status: str, filled: Any, remaining: Any, avg_fill_price: float, perm_id: int,
        parent_id: int, client_id: int,
    ) -> None:
        self._update(
            order_id, status=status, filled=float(filled), remaining=float(remaining),
            avg_fill_price=float(avg_fill_price), perm_id=int(perm_id), parent_id=int(parent_id),
            client_id=int(client_id),
        )

    def on_completed_order(self, contract: Any, order: Any, order_state: Any) -> None:
        """A completed order (filled or cancelled, maybe while we were away). Completed orders
        may carry order id 0: find ours by id, else by ``orderRef``."""
        order_id = int(order.orderId or 0)
        with self._cond:
            if order_id not in self._orders and order.orderRef in self._by_ref:
                order_id = self._by_ref[order.orderRef]
        if order_id <= 0:
            return
        self._update(
            order_id, order_ref=order.orderRef or "", symbol=contract.symbol, sec_type=contract.secType,
            action=order.action, quantity=float(order.totalQuantity), order_type=order.orderType,
            status=order_state.status, perm_id=int(order.permId or 0),
        )

    def begin_sync(self, generation: int, due: Set[str]) -> None:
        """A re-sync of generation ``generation`` was requested; ``due`` names its end markers."""
        with self._cond:
            self._sync_generation = generation
            self._sync_due = set(due)

    def sync_end(self, marker: str) -> None:
        with self._cond:
            self._sync_due.discard(marker)
            if not self._sync_due and self._sync_generation > self.synced_generation:
                self.synced_generation = self._sync_generation
        self._notify_soon()

    def on_execution(self, order_id: int, exec_id: str) -> None:
        with self._cond:
            old = self._orders.get(order_id) or OrderState(order_id)
        if exec_id not in old.executions:
            self._update(order_id, executions=old.executions + (exec_id,))

    def on_error(self, order_id: int, code: int, text: str) -> None:
        """An error for an order id (recorded even for ids we never placed: a cancel of an
        unknown order is answered that way)."""
        self._update(order_id, error_code=code, error_text=text)

    # --------------------------------------------------------------- reads

    def open_orders(self) -> List[OrderState]:
        with self._cond:
            return [o for o in self._orders.values() if o.acknowledged and not o.done]

    def get(self, order_id: int) -> Optional[OrderState]:
        with self._cond:
            return self._orders.get(order_id)

    def get_status(self, order_id: int) -> str:
        state = self.get(order_id)
        return state.status if state else ""

    def by_ref(self, order_ref: str) -> Optional[OrderState]:
        with self._cond:
            order_id = self._by_ref.get(order_ref)
            return self._orders.get(order_id) if order_id is not None else None

    def add_listener(self, fn: Callable[[OrderState], None]) -> None:
        self._listeners.append(fn)

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until ``predicate()`` (evaluated under the book's lock) holds, or ``timeout``."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def _notify_soon(self) -> None:
        if not self._notify_due:
            self._notify_due = True
            self._wake(self._notify_now)

    def _notify_now(self) -> None:
        self._notify_due = False
        self.notify()

    def notify(self) -> None:
        """Wake every waiter (e.g. the connection dropped) so it re-checks its situation."""
        with self._cond:
            self._cond.notify_all()
